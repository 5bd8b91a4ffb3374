package integration

import (
	"archive/tar"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/tektoncd/artifacts-csi-driver/internal/testkit"
	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
)

// memoryBound is the node plugin's stated peak RSS with every fill and
// every upload worker at its worst at once (docs/design.md, "Memory").
// deploy/ sets GOMEMLIMIT a little under the DaemonSet's limit, above it.
const memoryBound = 512 << 20

// TestMemoryBound drives the plugin process at its worst: four fills at
// once (--fill-workers), each of an artifact whose manifest is just under
// the 4 MiB cap and whose layer is zstd with the largest window accepted
// (32 MiB), while four outputs of 20,000 entries with long names each are
// packed and pushed (--upload-workers). Its peak RSS, as the kernel
// counts it (VmHWM), stays under memoryBound.
func TestMemoryBound(t *testing.T) {
	if testing.Short() {
		t.Skip("moves hundreds of MiB")
	}
	host := testregistry.InMemory(t, true)
	refs := make([]string, 4)
	for i := range refs {
		refs[i] = worstInput(t, host, i)
	}
	pl := newPlugin(t, registryConfig(host), "--fill-workers=4", "--upload-workers=4")
	pl.bin = plainPlugin(t) // the race detector's memory is not the plugin's
	pl.start()

	producers := make([]pod, 4)
	for i := range producers {
		producers[i] = newPod(fmt.Sprint("producer-", i))
		mustOK(t, "publish output", pl.publish(t.Context(), producers[i], "out", output("build")))
		longNames(t, pl.target(producers[i], "out"), 20_000, i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i, p := range producers {
		wg.Go(func() { errs <- pl.unpublish(t.Context(), p, "out") })
		wg.Go(func() {
			errs <- pl.publish(t.Context(), newPod(fmt.Sprint("consumer-", i)), "in", input("src", refs[i]))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		mustOK(t, "publish or unpublish", err)
	}
	waitUploaded(t, pl)

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pl.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	peak := statusKiB(t, string(status), "VmHWM") << 10
	t.Logf("peak RSS of the node plugin: %d MiB (bound %d MiB)", peak>>20, memoryBound>>20)
	if peak > memoryBound {
		t.Errorf("peak RSS %d MiB over the stated bound of %d MiB", peak>>20, memoryBound>>20)
	}
}

// worstInput pushes an artifact that costs a fill the most memory the
// plugin allows: a manifest just under its 4 MiB cap (a large
// annotation) and a layer of zstd frames with a 32 MiB window over 64 MiB
// of content that only matches 24 MiB back.
func worstInput(t *testing.T, host string, seed int) string {
	t.Helper()
	chunk := make([]byte, 24<<20)
	r := rand.New(rand.NewPCG(uint64(seed), 1))
	for i := range chunk {
		chunk[i] = byte(r.IntN(16)) + 'a'
	}
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	content := bytes.Repeat(chunk, 3)[:64<<20]
	tw.WriteHeader(&tar.Header{Name: "big", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
	tw.Write(content)
	tw.Close()
	var layer bytes.Buffer
	zw, err := zstd.NewWriter(&layer, zstd.WithWindowSize(32<<20), zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(tarball.Bytes())
	zw.Close()
	l := static.NewLayer(layer.Bytes(), artifact.LayerMediaType(archive.Zstd))
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: l, Annotations: map[string]string{
		"org.opencontainers.image.title": "src",
		"padding":                        strings.Repeat("p", 4<<20-4096),
	}})
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	ref, err := name.ParseReference(fmt.Sprintf("%s/team-a/worst:%d", host, seed), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref.Context().Digest(d.String()).String()
}

// longNames writes n empty files with names of about 200 bytes, 500 to a
// directory.
func longNames(t *testing.T, dir string, n, seed int) {
	t.Helper()
	pad := strings.Repeat("x", 190)
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("d%d-%03d", seed, i/500))
		if i%500 == 0 {
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("%s-%06d", pad, i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// waitUploaded waits until the plugin's spool is empty: every output
// pushed.
func waitUploaded(t *testing.T, pl *plugin) {
	t.Helper()
	spool := filepath.Join(pl.stateDir, "spool")
	testkit.Eventually(t, "every output pushed", 2*time.Minute, func() (bool, error) {
		entries, err := os.ReadDir(spool)
		return len(entries) == 0, err
	})
}

func statusKiB(t *testing.T, status, field string) int64 {
	t.Helper()
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/PID/status", field)
	return 0
}

// plainPlugin returns the node plugin built without the race detector:
// pluginBin when the tests are not, else one built for the test.
func plainPlugin(t *testing.T) string {
	t.Helper()
	if !raceEnabled {
		return pluginBin
	}
	bin := filepath.Join(t.TempDir(), "artifacts-csi-node")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/tektoncd/artifacts-csi-driver/cmd/artifacts-csi-node").CombinedOutput()
	if err != nil {
		t.Fatalf("build the node plugin: %v\n%s", err, out)
	}
	return bin
}
