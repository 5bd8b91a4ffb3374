package integration

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/chunked"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

// TestChunkedHandover: with format: chunked, the plugin process pushes an
// output in the chunked layout to a real registry process, and a consumer
// pod gets the same tree, read-only, from it. A second version, 1 MiB
// changed in a 32 MiB file, is then published on the same node: the
// plugin downloads the packs of what changed, not the tree, and links
// the unchanged file from the first version's cache entry.
func TestChunkedHandover(t *testing.T) {
	ctx := t.Context()
	dist := testregistry.StartDistribution(t)
	cfg := registryConfig(dist.Host)
	cfg["format"] = "chunked"
	httpAddr := freeAddr(t)
	// No write-through: the versions are to be pulled.
	pl := newPlugin(t, cfg, "--http-address="+httpAddr, "--write-through=false")
	pl.start()
	produce(t, pl, "producer", 21)
	ref := waitForTag(t, dist.Host+"/team-a/artifacts:team-a.producer.build", 30*time.Second)

	parsed, err := oci.ParseReference(ref, oci.PlainHTTP)
	mustOK(t, "parse", err)
	d, err := oci.New(oci.Options{}).Inspect(ctx, parsed)
	mustOK(t, "inspect", err)
	if len(d.Layers) < 2 || d.Layers[0].MediaType != chunked.IndexMediaType {
		t.Fatalf("pushed layers %+v, want the chunked index and packs", d.Layers)
	}

	consumer := newPod("consumer")
	mustOK(t, "publish input", pl.publish(ctx, consumer, "in", input("source", ref)))
	want := t.TempDir()
	testtree.Write(t, want, 21)
	testtree.EqualMounted(t, want, pl.target(consumer, "in"))
	mustOK(t, "unpublish input", pl.unpublish(ctx, consumer, "in"))

	// Two versions of a tree with a 32 MiB file, 1 MiB apart.
	big := make([]byte, 32<<20)
	rnd := rand.New(rand.NewPCG(3, 4))
	for i := range big {
		big[i] = byte(rnd.Uint32())
	}
	version := func(name string) (string, string) {
		t.Helper()
		p := newPod(name)
		mustOK(t, "publish output", pl.publish(ctx, p, "out", output("build")))
		src := t.TempDir()
		for _, dir := range []string{pl.target(p, "out"), src} {
			mustOK(t, "write", os.WriteFile(filepath.Join(dir, "big"), big, 0o644))
			mustOK(t, "write", os.WriteFile(filepath.Join(dir, "same"), big[:4<<20], 0o755))
		}
		mustOK(t, "unpublish output", pl.unpublish(ctx, p, "out"))
		return waitForTag(t, dist.Host+"/team-a/artifacts:team-a."+name+".build", 30*time.Second), src
	}
	pulled := func() int64 {
		return int64(metric(t, "http://"+httpAddr+"/metrics", "artifacts_csi_pulled_bytes_total"))
	}
	v1, _ := version("v1")
	copy(big[16<<20:], bytes.Repeat([]byte{9}, 1<<20))
	v2, src2 := version("v2")
	before := pulled()
	readV1 := newPod("read-v1")
	mustOK(t, "publish v1", pl.publish(ctx, readV1, "in", input("source", v1)))
	cold := pulled() - before
	before = pulled()
	reader := newPod("read-v2")
	mustOK(t, "publish v2", pl.publish(ctx, reader, "in", input("source", v2)))
	warm := pulled() - before
	testtree.EqualMounted(t, src2, pl.target(reader, "in"))
	// The unchanged file is v1's, linked: no byte of it written again.
	a, _ := os.Stat(filepath.Join(pl.target(readV1, "in"), "same"))
	b, _ := os.Stat(filepath.Join(pl.target(reader, "in"), "same"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Errorf("the unchanged file of v2 is not v1's")
	}
	if cold < 32<<20 || warm > cold/4 {
		t.Errorf("v1 pulled %d bytes; v2, with v1 in the cache, %d", cold, warm)
	}
	t.Logf("v1 pulled %d bytes; v2, 1 MiB changed, with v1 in the cache: %d (%.1f%%)", cold, warm, 100*float64(warm)/float64(cold))
}
