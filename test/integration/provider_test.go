package integration

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
)

// startFilesystemProvider runs the reference provider binary serving
// <providers>/filesystem.sock, storing under root.
func startFilesystemProvider(t *testing.T, providers, root string) {
	t.Helper()
	sock := filepath.Join(providers, "filesystem.sock")
	startProcess(t, "provider", providerBin, "--endpoint="+sock, "--root="+root, "--http-address=", "-v=4")
	waitFor(t, "the provider's socket", func() bool {
		st, err := os.Stat(sock)
		return err == nil && st.Mode().Type() == os.ModeSocket
	})
}

// TestProviderBackend: a namespace whose backend is the filesystem
// provider has its outputs stored there and recorded with the backend and
// location, on the ArtifactRecord and, in the package URL, on the TaskRun;
// a from: consumer and a plain pod's ref: read them back byte-identical;
// a corrupted blob is caught, leaving the target empty; an absent provider
// is a clear, retryable error.
func TestProviderBackend(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	dist := testregistry.StartDistribution(t)
	providers, store := t.TempDir(), t.TempDir()
	startFilesystemProvider(t, providers, store)
	labelled := map[string]string{config.LabelConfigType: config.ConfigTypeArtifactStorage}
	configMap(t, env, "team-p", labelled, map[string]string{config.KeyBackend: "filesystem"})
	configMap(t, env, "team-q", labelled, map[string]string{config.KeyBackend: "nothing"})
	// The cluster level says OCI: the namespace's backend wins. No
	// write-through: the consumers must fetch from the provider.
	pl := newPlugin(t, registryConfig(dist.Host), "--kubeconfig="+nodeKubeconfig(t, env), "--providers-dir="+providers, "--write-through=false")
	pl.start()
	startController(t, env)

	run := newPipelineRun(t, env, "team-p", "run", nil)
	build, producer := run.task("build")
	mustOK(t, "publish output", pl.publish(ctx, producer, "out", output("dist")))
	testtree.Write(t, pl.target(producer, "out"), 21)
	mustOK(t, "unpublish output", pl.unpublish(ctx, producer, "out"))
	rec := waitForRecord(t, env, producer, v1alpha1.Pushed)
	blobs := filepath.Join(store, "team-p", "blobs", "sha256")
	wantLocation := "file://" + filepath.Join(blobs, strings.TrimPrefix(rec.Status.Digest, "sha256:"))
	if rec.Spec.Backend != "filesystem" || rec.Spec.Repository != "team-p" || rec.Status.Location != wantLocation || rec.Spec.Tag != "" {
		t.Errorf("record spec %+v, location %q: want backend filesystem, repository team-p, location %s, no tag", rec.Spec, rec.Status.Location, wantLocation)
	}
	value := map[string]any{
		"uri":    "pkg:generic/dist@" + rec.Status.Digest + "?backend=filesystem&repository=team-p&download_url=" + wantLocation,
		"digest": map[string]any{"sha256": strings.TrimPrefix(rec.Status.Digest, "sha256:")},
	}
	st := waitForArtifacts(t, env, build, "outputs", []any{map[string]any{"name": "dist", "values": []any{value}}})
	b, _ := json.MarshalIndent(st, "", "  ")
	t.Logf("TaskRun %s/%s status:\n%s", build.GetNamespace(), build.GetName(), b)

	want := filepath.Join(t.TempDir(), "want")
	testtree.Write(t, want, 21)

	// Corrupt the layer on the provider's disk: the consumer fails with
	// DATA_LOSS and sees nothing.
	layer := filepath.Join(blobs, strings.TrimPrefix(rec.Status.LayerDigest, "sha256:"))
	orig, err := os.ReadFile(layer)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), orig...)
	bad[len(bad)/2] ^= 0xff
	if err := os.WriteFile(layer, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	test, consumer := run.task("test")
	from := map[string]string{"direction": "input", "artifact": "dist", "from": "tasks.build.outputs.dist"}
	err = pl.publish(ctx, consumer, "in", from)
	wantCode(t, "publish from a corrupted blob", err, codes.DataLoss)
	if entries, _ := os.ReadDir(pl.target(consumer, "in")); len(entries) != 0 {
		t.Errorf("the target of a corrupted input holds %d entries", len(entries))
	}

	if err := os.WriteFile(layer, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	mustOK(t, "publish from: input", pl.publish(ctx, consumer, "in", from))
	testtree.EqualMounted(t, want, pl.target(consumer, "in"))
	waitForArtifacts(t, env, test, "inputs", []any{map[string]any{"name": "dist", "values": []any{value}}})

	plain := kubePod(t, env, "team-p", "plain", nil, nil)
	mustOK(t, "publish ref: input", pl.publish(ctx, plain, "in", input("dist", "team-p@"+rec.Status.Digest)))
	testtree.EqualMounted(t, want, pl.target(plain, "in"))

	// Another namespace cannot read team-p's blobs by naming them.
	configMap(t, env, "team-r", labelled, map[string]string{config.KeyBackend: "filesystem", config.KeyProviderRepository: "team-p"})
	other := kubePod(t, env, "team-r", "other", nil, nil)
	waitFor(t, "team-r's configuration", func() bool {
		err := pl.publish(ctx, other, "in", input("dist", "team-p@"+rec.Status.Digest))
		return status.Code(err) == codes.PermissionDenied
	})

	absent := kubePod(t, env, "team-q", "absent", nil, nil)
	err = pl.publish(ctx, absent, "in", input("dist", "team-q@"+rec.Status.Digest))
	wantCode(t, "publish from an absent provider", err, codes.Unavailable)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, `provider "nothing" is not running on this node`) {
		t.Errorf("message %q does not say the provider is absent", msg)
	}
	if _, err := url.Parse(rec.Status.Location); err != nil {
		t.Error(err)
	}
}
