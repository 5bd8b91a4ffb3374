package integration

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

// TestWriteThrough: on an ext4 node, a pushed output becomes the cache
// entry of its digest. A consumer on the same node then downloads nothing
// and gets exactly the tree an extraction of the pushed artifact gives,
// metadata included, though the producer wrote it with another owner,
// private and setuid modes and extended attributes. With --write-through
// off, it downloads the artifact.
func TestWriteThrough(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("ext4 output filesystems need root")
	}
	for _, tc := range []struct {
		name         string
		writeThrough bool
	}{{"on", true}, {"off", false}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			dist := testregistry.StartDistribution(t)
			httpAddr := freeAddr(t)
			pl := newPlugin(t, registryConfig(dist.Host), "--http-address="+httpAddr, "--output-filesystem=ext4",
				"--write-through="+strconv.FormatBool(tc.writeThrough))
			pl.start()

			p := newPod("producer")
			mustOK(t, "publish output", pl.publish(ctx, p, "out", output("build")))
			out := pl.target(p, "out")
			testtree.Write(t, out, 5)
			private := filepath.Join(out, "private")
			mustOK(t, "write", os.WriteFile(private, []byte("secret of uid 1000"), 0o600))
			mustOK(t, "chown", os.Lchown(private, 1000, 1000))
			mustOK(t, "chmod", os.Chmod(private, 0o4700))
			if err := unix.Lsetxattr(private, "user.origin", []byte("producer"), 0); err != nil {
				t.Logf("no user xattrs here: %v", err)
			}
			mustOK(t, "unpublish output", pl.unpublish(ctx, p, "out"))
			ref := waitForTag(t, dist.Host+"/team-a/artifacts:team-a.producer.build", 30*time.Second)
			metrics := "http://" + httpAddr + "/metrics"
			want := `artifacts_csi_write_through_total{result="adopted"} 1`
			if !tc.writeThrough {
				want = `artifacts_csi_uploads_total{result="pushed"} 1`
			}
			waitFor(t, want, func() bool { return strings.Contains(scrape(t, metrics), want+"\n") })

			consumer := newPod("consumer")
			mustOK(t, "publish input", pl.publish(ctx, consumer, "in", input("source", ref)))
			pulled := metric(t, metrics, "artifacts_csi_pulled_bytes_total")
			if tc.writeThrough && pulled != 0 || !tc.writeThrough && pulled == 0 {
				t.Errorf("pulled %v bytes with write-through %v", pulled, tc.writeThrough)
			}

			// What an extraction of the pushed artifact gives.
			parsed, err := oci.ParseReference(ref, oci.PlainHTTP)
			mustOK(t, "parse", err)
			extracted := filepath.Join(t.TempDir(), "extracted")
			_, err = oci.New(oci.Options{Modes: archive.ReadOnlyModes}).Pull(ctx, parsed, extracted)
			mustOK(t, "pull", err)
			got, wantTree := describe(t, pl.target(consumer, "in")), describe(t, extracted)
			for k, v := range wantTree {
				if got[k] != v {
					t.Errorf("%s: %s, want %s as extracted", k, got[k], v)
				}
			}
			for k, v := range got {
				if _, ok := wantTree[k]; !ok {
					t.Errorf("%s: %s, not in the artifact", k, v)
				}
			}
			if b, err := os.ReadFile(filepath.Join(pl.target(consumer, "in"), "private")); err != nil || string(b) != "secret of uid 1000" {
				t.Errorf("private = %q, %v", b, err)
			}
			mustOK(t, "unpublish input", pl.unpublish(ctx, consumer, "in"))

			// A restart keeps the entry, mounted again.
			pl.stop()
			pl.start()
			again := newPod("consumer-2")
			mustOK(t, "publish input after restart", pl.publish(ctx, again, "in", input("source", ref)))
			testtree.Equal(t, extracted, pl.target(again, "in"))
		})
	}
}

// describe lists a tree's entries with what a pod sees of each: type,
// permission bits, owner, content digest or link target, and extended
// attribute names.
func describe(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		names := make([]byte, 1024)
		n, _ := unix.Llistxattr(p, names)
		desc := fmt.Sprintf("%o %d:%d xattrs[%s]", st.Mode, st.Uid, st.Gid, strings.ReplaceAll(string(names[:max(n, 0)]), "\x00", " "))
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// metric returns the value of the metric series named exactly series
// ("name" or "name{labels}"), 0 when absent.
func metric(t testing.TB, url, series string) float64 {
	t.Helper()
	for line := range strings.Lines(scrape(t, url)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

// TestWriteThroughChunked: a kept output of the chunked layout serves the
// chunks of its next version, pushed from elsewhere: the consumer of that
// version downloads what changed, not the tree.
func TestWriteThroughChunked(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("ext4 output filesystems need root")
	}
	ctx := t.Context()
	dist := testregistry.StartDistribution(t)
	cfg := registryConfig(dist.Host)
	cfg["format"] = "chunked"
	httpAddr := freeAddr(t)
	metrics := "http://" + httpAddr + "/metrics"
	pl := newPlugin(t, cfg, "--http-address="+httpAddr, "--output-filesystem=ext4")
	pl.start()

	big := make([]byte, 32<<20)
	rnd := rand.New(rand.NewPCG(5, 6))
	for i := range big {
		big[i] = byte(rnd.Uint32())
	}
	p := newPod("v1")
	mustOK(t, "publish output", pl.publish(ctx, p, "out", output("build")))
	mustOK(t, "write", os.WriteFile(filepath.Join(pl.target(p, "out"), "big"), big, 0o644))
	mustOK(t, "unpublish output", pl.unpublish(ctx, p, "out"))
	waitForTag(t, dist.Host+"/team-a/artifacts:team-a.v1.build", 30*time.Second)
	want := `artifacts_csi_write_through_total{result="adopted"}`
	waitFor(t, "the adoption", func() bool { return metric(t, metrics, want) == 1 })

	// Version 2, 1 MiB changed, pushed by another node (here, the test).
	copy(big[8<<20:], make([]byte, 1<<20))
	v2 := t.TempDir()
	mustOK(t, "write", os.WriteFile(filepath.Join(v2, "big"), big, 0o644))
	repo, _, err := oci.ParseRepositoryTag(dist.Host+"/team-a/artifacts", oci.PlainHTTP)
	mustOK(t, "parse", err)
	res, err := oci.New(oci.Options{}).Push(ctx, oci.PushRequest{Dir: v2, Repository: repo, Format: oci.FormatChunked,
		Compression: archive.Zstd, Metadata: artifact.Metadata{Name: "build"}})
	mustOK(t, "push v2", err)

	consumer := newPod("consumer")
	mustOK(t, "publish v2", pl.publish(ctx, consumer, "in", input("source", res.Ref.Name())))
	testtree.EqualMounted(t, v2, pl.target(consumer, "in"))
	pulled := metric(t, metrics, "artifacts_csi_pulled_bytes_total")
	if pulled == 0 || pulled > 8<<20 {
		t.Errorf("pulled %v bytes of a 32 MiB tree with its previous version kept", pulled)
	}
	t.Logf("pulled %v bytes of 32 MiB, 1 MiB changed, with v1 kept by write-through", pulled)
}
