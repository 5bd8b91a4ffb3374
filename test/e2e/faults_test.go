package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
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

// localUpDir is hack/local-up.sh's directory: the registry's storage and
// the components' PIDs, for the tests that break them.
func localUpDir(t *testing.T) string {
	dir := os.Getenv("E2E_LOCAL_UP_DIR")
	if dir == "" {
		t.Skip("E2E_LOCAL_UP_DIR is not set")
	}
	return dir
}

// TestTamperedBlob: an artifact whose content was altered in the registry
// never reaches the pod: it stays in ContainerCreating with an Event
// saying the digest did not match, and its target stays empty. The
// artifact is pushed from outside the cluster: an output produced on the
// dev cluster's one node would be that node's cache entry (write-through),
// and no consumer there would fetch it.
func TestTamperedBlob(t *testing.T) {
	dir := localUpDir(t)
	ns := newNamespace(t)
	repo, err := name.NewRepository(registry+"/artifacts", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	testtree.Write(t, src, 99)
	res, err := oci.New(oci.Options{}).Push(t.Context(), oci.PushRequest{Dir: src, Repository: repo, Metadata: artifact.Metadata{Name: "data", Namespace: ns}})
	if err != nil {
		t.Fatal(err)
	}

	hex := res.Layer.Digest.Hex
	blob := filepath.Join(dir, "registry", "data", "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	tampered := append([]byte(nil), b...)
	tampered[len(tampered)/2] ^= 0xff
	if err := os.WriteFile(blob, tampered, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(blob, b, 0o644) })

	consumer := podSpec{ns: ns, name: "consumer", script: "ls -R /artifacts/inputs/in", volumes: []corev1.Volume{
		csiVolume("in", map[string]string{"direction": "input", "artifact": "data", "ref": res.Ref.Name()}),
	}}.create(t)
	waitFor(t, "a FailedMount event naming the digest mismatch", 2*time.Minute, func() (bool, error) {
		for _, m := range events(t, consumer, "FailedMount") {
			if strings.Contains(m, "DataLoss") {
				return true, nil
			}
		}
		return false, nil
	})
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(consumer), consumer); err != nil {
		t.Fatal(err)
	}
	if consumer.Status.Phase != corev1.PodPending {
		t.Errorf("consumer is %s, want Pending", consumer.Status.Phase)
	}
	target := filepath.Join("/var/lib/kubelet/pods", string(consumer.UID), "volumes/kubernetes.io~csi/in/mount")
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Errorf("the consumer's target holds %d entries", len(entries))
	}
	deleteAndWait(t, consumer)
}

// TestPluginRestartMidUpload: the node plugin pod is deleted while an
// output waits for the registry; the DaemonSet's new pod resumes the
// upload from the node's spool and the output is delivered.
func TestPluginRestartMidUpload(t *testing.T) {
	dir := localUpDir(t)
	pidText, err := os.ReadFile(filepath.Join(dir, "pids", "registry.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidText)))
	resume := func() { syscall.Kill(pid, syscall.SIGCONT) }
	t.Cleanup(resume)

	ns := newNamespace(t)
	producer := podSpec{ns: ns, name: "producer", script: produceScript + "\necho ---; echo written; sleep 5", volumes: []corev1.Volume{
		csiVolume("out", map[string]string{"direction": "output", "artifact": "data"}),
	}}.create(t)
	want := ""
	waitFor(t, "the producer to write its output", 2*time.Minute, func() (bool, error) {
		log := podLog(t, producer)
		want = section(log, "listing")
		return strings.Contains(log, "written"), nil
	})
	// The registry stops answering before the pod ends: the upload waits.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitSucceeded(t, producer)
	// Unpublished and sealed: the output waits in the node's spool.
	waitFor(t, "the output in the node plugin's spool", time.Minute, func() (bool, error) {
		entries, err := os.ReadDir("/var/lib/artifacts-csi/spool")
		return len(entries) > 0, err
	})

	plugins := &corev1.PodList{}
	if err := c.List(t.Context(), plugins, client.InNamespace("artifacts-csi"), client.MatchingLabels{"app.kubernetes.io/name": "artifacts-csi-node"}); err != nil || len(plugins.Items) != 1 {
		t.Fatalf("node plugin pods: %d, %v", len(plugins.Items), err)
	}
	old := &plugins.Items[0]
	deleteAndWait(t, old)
	waitFor(t, "the DaemonSet's new plugin pod to be ready", 2*time.Minute, func() (bool, error) {
		if err := c.List(t.Context(), plugins, client.InNamespace("artifacts-csi"), client.MatchingLabels{"app.kubernetes.io/name": "artifacts-csi-node"}); err != nil {
			return false, err
		}
		for _, p := range plugins.Items {
			for _, cs := range p.Status.ContainerStatuses {
				if p.UID != old.UID && cs.Ready {
					return true, nil
				}
			}
		}
		return false, nil
	})
	resume()
	rec := records(t, ns, "data", v1alpha1.Output, v1alpha1.Pushed, 1)[0]

	consumer := podSpec{ns: ns, name: "consumer", script: "echo --- listing\n" + listing("/artifacts/inputs/in"), volumes: []corev1.Volume{
		csiVolume("in", map[string]string{"direction": "input", "artifact": "data", "ref": rec.Spec.Repository + "@" + rec.Status.Digest}),
	}}.create(t)
	if got := section(waitSucceeded(t, consumer), "listing"); got != want {
		t.Errorf("after the restart the consumer read\n%s\nwant\n%s", got, want)
	}
}
