package integration

import (
	"testing"
	"time"

	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/chunked"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

// TestChunkedHandover: with format: chunked, the plugin process pushes an
// output in the chunked layout to a real registry process, and a consumer
// pod gets the same tree, read-only, from it.
func TestChunkedHandover(t *testing.T) {
	ctx := t.Context()
	dist := testregistry.StartDistribution(t)
	cfg := registryConfig(dist.Host)
	cfg["format"] = "chunked"
	pl := newPlugin(t, cfg)
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
}
