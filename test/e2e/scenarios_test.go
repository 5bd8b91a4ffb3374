package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
)

// produceScript writes a small tree into /artifacts/outputs/out and prints
// its listing.
const produceScript = `set -e
cd /artifacts/outputs/out
mkdir -p docs bin
echo "hello from $(hostname)" > hello.txt
dd if=/dev/urandom of=bin/blob bs=64k count=20 2>/dev/null
echo readme > docs/README
echo --- listing
` + "(find . -type f | sort | xargs sha256sum)"

// TestProducerConsumer: a producer pod's output is pushed, recorded and
// written on its TaskRun's status; a consumer pod of the same run reads it
// with from:, byte-identical and read-only; both pods delete cleanly.
func TestProducerConsumer(t *testing.T) {
	ns := newNamespace(t)
	r := newRun(t, ns)
	buildRun, buildLabels := r.taskRun(t, "build")
	producer := podSpec{ns: ns, name: "build", labels: buildLabels, script: produceScript, volumes: []corev1.Volume{
		csiVolume("out", map[string]string{"direction": "output", "artifact": "bin", "buildOutput": "true"}),
	}}.create(t)
	want := section(waitSucceeded(t, producer), "listing")
	if want == "" {
		t.Fatal("the producer printed no listing")
	}
	rec := waitRecord(t, producer, "bin", v1alpha1.Pushed)
	if rec.Spec.Repository != registry+"/artifacts" || rec.Spec.TaskRun == nil || rec.Spec.TaskRun.Name != buildRun.GetName() {
		t.Errorf("record spec = %+v", rec.Spec)
	}

	wantURI := "pkg:oci/artifacts@" + rec.Status.Digest + "?repository_url=" + registry + "/artifacts"
	waitFor(t, "the build TaskRun's status.artifacts", time.Minute, func() (bool, error) {
		tr := buildRun.DeepCopy()
		if err := c.Get(t.Context(), client.ObjectKeyFromObject(tr), tr); err != nil {
			return false, err
		}
		outs, _, _ := unstructured.NestedSlice(tr.Object, "status", "artifacts", "outputs")
		if len(outs) == 1 && strings.Contains(fmt.Sprint(outs), wantURI) && strings.Contains(fmt.Sprint(outs), "buildOutput:true") {
			b, _ := json.MarshalIndent(tr.Object["status"], "", "  ")
			t.Logf("TaskRun %s/%s status:\n%s", tr.GetNamespace(), tr.GetName(), b)
			return true, nil
		}
		return false, nil
	})

	_, testLabels := r.taskRun(t, "test")
	consumer := podSpec{ns: ns, name: "test", labels: testLabels, script: `set -e
echo --- listing
` + listing("/artifacts/inputs/in") + `
echo --- write
touch /artifacts/inputs/in/new 2>/dev/null && echo writable || echo read-only
echo ---`, volumes: []corev1.Volume{
		csiVolume("in", map[string]string{"direction": "input", "artifact": "bin", "from": "tasks.build.outputs.bin"}),
	}}.create(t)
	log := waitSucceeded(t, consumer)
	if got := section(log, "listing"); got != want {
		t.Errorf("the consumer read\n%s\nwant\n%s", got, want)
	}
	if got := strings.TrimSpace(section(log, "write")); got != "read-only" {
		t.Errorf("the input was %s", got)
	}
	waitRecord(t, consumer, "bin", v1alpha1.Consumed)
	deleteAndWait(t, consumer)
	deleteAndWait(t, producer)
}

// TestPlainPodRef: a pod outside Tekton reads an artifact by digest.
func TestPlainPodRef(t *testing.T) {
	ns := newNamespace(t)
	producer := podSpec{ns: ns, name: "producer", script: produceScript, volumes: []corev1.Volume{
		csiVolume("out", map[string]string{"direction": "output", "artifact": "data"}),
	}}.create(t)
	want := section(waitSucceeded(t, producer), "listing")
	rec := waitRecord(t, producer, "data", v1alpha1.Pushed)
	if rec.OwnerReferences[0].Kind != "Pod" {
		t.Errorf("a plain pod's record is owned by %s", rec.OwnerReferences[0].Kind)
	}
	consumer := podSpec{ns: ns, name: "consumer", script: "echo --- listing\n" + listing("/artifacts/inputs/in"), volumes: []corev1.Volume{
		csiVolume("in", map[string]string{"direction": "input", "artifact": "data", "ref": rec.Spec.Repository + "@" + rec.Status.Digest}),
	}}.create(t)
	if got := section(waitSucceeded(t, consumer), "listing"); got != want {
		t.Errorf("the consumer read\n%s\nwant\n%s", got, want)
	}
}

// TestNamespaceConfig: a namespace's labelled ConfigMap sends its outputs
// to another repository; a PipelineRun annotation on the pod wins over it.
func TestNamespaceConfig(t *testing.T) {
	ns := newNamespace(t)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: config.ConfigMapName,
			Labels: map[string]string{config.LabelConfigType: config.ConfigTypeArtifactStorage}},
		Data: map[string]string{config.KeyRepository: registry + "/team/" + ns, config.KeyCompression: "zstd"},
	}
	if err := c.Create(t.Context(), cm); err != nil {
		t.Fatal(err)
	}
	// The plugin's informer sees the ConfigMap within moments; give it one.
	time.Sleep(2 * time.Second)
	for name, tt := range map[string]struct {
		annotations map[string]string
		wantRepo    string
	}{
		"namespace-level": {nil, registry + "/team/" + ns},
		"run-level":       {map[string]string{config.AnnotationRepository: registry + "/runs/" + ns}, registry + "/runs/" + ns},
	} {
		pod := podSpec{ns: ns, name: name, annotations: tt.annotations, script: produceScript, volumes: []corev1.Volume{
			csiVolume("out", map[string]string{"direction": "output", "artifact": "data"}),
		}}.create(t)
		waitSucceeded(t, pod)
		if rec := waitRecord(t, pod, "data", v1alpha1.Pushed); rec.Spec.Repository != tt.wantRepo || !strings.Contains(rec.Status.MediaType, "zstd") {
			t.Errorf("%s: pushed to %s as %s, want %s as zstd", name, rec.Spec.Repository, rec.Status.MediaType, tt.wantRepo)
		}
	}
}

// TestNonRootOutput: a pod running as an unprivileged user, without an
// fsGroup, writes its output.
func TestNonRootOutput(t *testing.T) {
	ns := newNamespace(t)
	user := int64(1234)
	pod := podSpec{ns: ns, name: "nonroot", user: &user, script: "id && " + strings.ReplaceAll(produceScript, "set -e\n", "set -e; "),
		volumes: []corev1.Volume{csiVolume("out", map[string]string{"direction": "output", "artifact": "data"})}}.create(t)
	if log := waitSucceeded(t, pod); !strings.Contains(log, "uid=1234") {
		t.Errorf("the pod did not run as uid 1234:\n%s", log)
	}
	waitRecord(t, pod, "data", v1alpha1.Pushed)
}

// TestProviderBackend: a namespace whose backend is the filesystem
// provider (its DaemonSet deployed next to the node plugin) has its
// outputs stored there; a consumer of the same run reads them back
// byte-identical with from:, and the TaskRun status carries the provider's
// reference.
func TestProviderBackend(t *testing.T) {
	ns := newNamespace(t)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: config.ConfigMapName,
			Labels: map[string]string{config.LabelConfigType: config.ConfigTypeArtifactStorage}},
		Data: map[string]string{config.KeyBackend: "filesystem"},
	}
	if err := c.Create(t.Context(), cm); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // as in TestNamespaceConfig
	r := newRun(t, ns)
	buildRun, buildLabels := r.taskRun(t, "build")
	producer := podSpec{ns: ns, name: "build", labels: buildLabels, script: produceScript, volumes: []corev1.Volume{
		csiVolume("out", map[string]string{"direction": "output", "artifact": "dist"}),
	}}.create(t)
	want := section(waitSucceeded(t, producer), "listing")
	rec := waitRecord(t, producer, "dist", v1alpha1.Pushed)
	if rec.Spec.Backend != "filesystem" || rec.Spec.Repository != ns || !strings.HasPrefix(rec.Status.Location, "file:///var/lib/artifacts-provider-filesystem/"+ns+"/blobs/sha256/") {
		t.Errorf("record spec %+v, location %q", rec.Spec, rec.Status.Location)
	}
	wantURI := "pkg:generic/dist@" + rec.Status.Digest + "?backend=filesystem&repository=" + ns
	waitFor(t, "the build TaskRun's status.artifacts", time.Minute, func() (bool, error) {
		tr := buildRun.DeepCopy()
		if err := c.Get(t.Context(), client.ObjectKeyFromObject(tr), tr); err != nil {
			return false, err
		}
		outs, _, _ := unstructured.NestedSlice(tr.Object, "status", "artifacts", "outputs")
		if strings.Contains(fmt.Sprint(outs), wantURI) {
			b, _ := json.MarshalIndent(tr.Object["status"], "", "  ")
			t.Logf("TaskRun %s/%s status:\n%s", tr.GetNamespace(), tr.GetName(), b)
			return true, nil
		}
		return false, nil
	})
	_, testLabels := r.taskRun(t, "test")
	consumer := podSpec{ns: ns, name: "test", labels: testLabels, script: "echo --- listing\n" + listing("/artifacts/inputs/in"), volumes: []corev1.Volume{
		csiVolume("in", map[string]string{"direction": "input", "artifact": "dist", "from": "tasks.build.outputs.dist"}),
	}}.create(t)
	if got := section(waitSucceeded(t, consumer), "listing"); got != want {
		t.Errorf("the consumer read\n%s\nwant\n%s", got, want)
	}
	waitRecord(t, consumer, "dist", v1alpha1.Consumed)
}
