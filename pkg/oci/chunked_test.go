package oci_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/chunked"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

// countingRegistry is the in-memory registry behind a handler that counts
// the bytes of blob uploads.
func countingRegistry(t *testing.T) (string, *atomic.Int64) {
	var up atomic.Int64
	host := testregistry.Handler(t, true, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if (r.Method == http.MethodPut || r.Method == http.MethodPatch) && strings.Contains(r.URL.Path, "/blobs/uploads/") {
				r.Body = countingBody{r.Body, &up}
			}
			next.ServeHTTP(w, r)
		})
	})
	return host, &up
}

// TestChunkedPushPull: a tree pushed in the chunked layout comes back
// identical (also read-only, as the node mounts it); the same tree pushed
// again gives the same manifest and uploads no pack; a 1 MiB change in a
// 24 MiB file uploads a few packs, not the tree.
func TestChunkedPushPull(t *testing.T) {
	host, uploaded := countingRegistry(t)
	ctx := context.Background()
	src := t.TempDir()
	testtree.Write(t, src, 11)
	big := make([]byte, 24<<20)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rnd.Uint32())
	}
	if err := os.WriteFile(filepath.Join(src, "data/large"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	r := repo(t, host, "team/chunked")
	c := oci.New(oci.Options{})
	meta := artifact.Metadata{Name: "cache", Namespace: "ns"}
	push := func() *oci.PushResult {
		t.Helper()
		res, err := c.Push(ctx, oci.PushRequest{Dir: src, Repository: r, Metadata: meta, Format: oci.FormatChunked})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := push()
	if first.Layer.MediaType != chunked.IndexMediaType || first.Reused {
		t.Errorf("first push: layer %s, reused %v", first.Layer.MediaType, first.Reused)
	}
	cold := uploaded.Load()

	for _, modes := range []archive.Modes{archive.ArchiveModes, archive.ReadOnlyModes} {
		dest := filepath.Join(t.TempDir(), "out")
		if err := os.Mkdir(dest, 0o755); err != nil { // an empty destination is fine
			t.Fatal(err)
		}
		ref, _ := oci.ParseReference(first.Ref.Name(), oci.PlainHTTP)
		pr, err := oci.New(oci.Options{Modes: modes}).Pull(ctx, ref, dest)
		if err != nil {
			t.Fatal(err)
		}
		if pr.Metadata == nil || pr.Metadata.Name != "cache" || pr.Stats.Bytes == 0 || pr.Stats.Usage.Inodes == 0 || pr.Stats.Usage.Bytes < pr.Stats.Bytes {
			t.Errorf("pull result %+v", pr)
		}
		if modes == archive.ReadOnlyModes {
			testtree.EqualMounted(t, src, dest)
		} else {
			testtree.Equal(t, src, dest)
		}
	}

	uploaded.Store(0)
	if again := push(); again.Ref != first.Ref || !again.Reused {
		t.Errorf("re-push: %s (reused %v), first %s", again.Ref, again.Reused, first.Ref)
	}
	if n := uploaded.Load(); n > 64<<10 {
		t.Errorf("re-push of the same tree uploaded %d bytes", n)
	}

	copy(big[12<<20:], bytes.Repeat([]byte{1}, 1<<20))
	if err := os.WriteFile(filepath.Join(src, "data/large"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	uploaded.Store(0)
	changed := push()
	if changed.Ref == first.Ref {
		t.Fatal("a changed tree gave the same manifest")
	}
	if n := uploaded.Load(); n > cold/2 || n > 3*8<<20 {
		t.Errorf("a 1 MiB change uploaded %d bytes; the cold push %d", n, cold)
	}
	t.Logf("cold push uploaded %d bytes; after a 1 MiB change, %d", cold, uploaded.Load())
}
