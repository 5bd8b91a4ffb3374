// Package e2e drives the dev cluster of hack/local-up.sh (a real kubelet,
// containerd, Tekton Pipelines and the driver deployed from
// deploy/overlays/dev) through client-go: real Tasks, Pipelines,
// PipelineRuns and TaskRuns that Tekton's controller runs, and plain pods
// and Jobs. `make e2e` brings the cluster up and runs these tests; without
// E2E_KUBECONFIG they are skipped. When a test fails, its namespace's
// Tekton objects, records and events, and the logs of Tekton's controller
// and of the driver, are written to its output.
package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/internal/testkit"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
)

const (
	driver   = "artifacts.csi.tekton.dev"
	registry = "127.0.0.1:5000"
	busybox  = registry + "/busybox:dev"
	// nodeStateDir is the node plugin's --state-dir on the dev cluster's
	// node, this machine (deploy/base/node.yaml).
	nodeStateDir = "/var/lib/artifacts-csi"
)

var (
	kube kubernetes.Interface
	c    client.Client
	// restConfig is the administrator's.
	restConfig *rest.Config
)

func TestMain(m *testing.M) {
	path := os.Getenv("E2E_KUBECONFIG")
	if path == "" {
		fmt.Println("skipping e2e tests: E2E_KUBECONFIG is not set (make e2e sets it)")
		os.Exit(0)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		panic(err)
	}
	restConfig = cfg
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	if c, err = client.New(cfg, client.Options{Scheme: s}); err != nil {
		panic(err)
	}
	if kube, err = kubernetes.NewForConfig(cfg); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}

// newNamespace creates a namespace for one test, deleted at its end, and
// waits for its default ServiceAccount; if the test failed, what explains
// it is written to its output first.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-"}}
	if err := c.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	t.Cleanup(func() {
		if t.Failed() {
			diagnose(t, ns.Name, start)
		}
		c.Delete(context.Background(), ns)
	})
	// The controller manager makes a namespace's default ServiceAccount a
	// moment later; Tekton fails a TaskRun whose pod it cannot make yet.
	waitFor(t, "the default ServiceAccount of "+ns.Name, time.Minute, func() (bool, error) {
		err := c.Get(t.Context(), client.ObjectKey{Namespace: ns.Name, Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, client.IgnoreNotFound(err)
	})
	return ns.Name
}

// csiVolume is an inline volume of the driver.
func csiVolume(name string, attrs map[string]string) corev1.Volume {
	ro := attrs["direction"] == "input"
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver: driver, ReadOnly: &ro, VolumeAttributes: attrs}}}
}

// podSpec is a plain one-step pod running script with the volumes
// mounted at /artifacts/<direction>s/<volume name>.
type podSpec struct {
	ns, name string
	script   string
	volumes  []corev1.Volume
}

func (p podSpec) create(t *testing.T) *corev1.Pod {
	t.Helper()
	pod := p.pod()
	if err := c.Create(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

// job runs the pod as a Job (no retries) and returns its pod once the Job
// controller has created it.
func (p podSpec) job(t *testing.T) *corev1.Pod {
	t.Helper()
	template := p.pod()
	backoff := int32(0)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name},
		Spec:       batchv1.JobSpec{BackoffLimit: &backoff, Template: corev1.PodTemplateSpec{Spec: template.Spec}},
	}
	if err := c.Create(t.Context(), job); err != nil {
		t.Fatal(err)
	}
	var pod *corev1.Pod
	waitFor(t, "the pod of Job "+p.name, time.Minute, func() (bool, error) {
		pods := &corev1.PodList{}
		if err := c.List(t.Context(), pods, client.InNamespace(p.ns), client.MatchingLabels{"batch.kubernetes.io/job-name": p.name}); err != nil || len(pods.Items) == 0 {
			return false, err
		}
		pod = &pods.Items[0]
		return true, nil
	})
	return pod
}

// pod is the pod p describes.
func (p podSpec) pod() *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "step", Image: busybox, Command: []string{"sh", "-c", p.script}}},
			Volumes:       p.volumes,
		},
	}
	for _, v := range p.volumes {
		pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{
			Name: v.Name, MountPath: "/artifacts/" + v.CSI.VolumeAttributes["direction"] + "s/" + v.Name})
	}
	return pod
}

// waitFor polls cond for up to timeout (testkit.Eventually).
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	testkit.Eventually(t, what, timeout, cond)
}

// waitSucceeded waits for a pod to succeed and returns its log.
func waitSucceeded(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	waitFor(t, "pod "+pod.Name+" to succeed", 3*time.Minute, func() (bool, error) {
		if err := c.Get(t.Context(), client.ObjectKeyFromObject(pod), pod); err != nil {
			return false, err
		}
		if pod.Status.Phase == corev1.PodFailed {
			t.Fatalf("pod %s failed: %s\n%s", pod.Name, pod.Status.Message, podLog(t, pod))
		}
		return pod.Status.Phase == corev1.PodSucceeded, nil
	})
	return podLog(t, pod)
}

// podLog returns what a one-container pod printed.
func podLog(t *testing.T, pod *corev1.Pod) string {
	return containerLog(t, pod.Namespace, pod.Name, "")
}

// listing is the script that prints a checksum of every file under dir,
// sorted: two equal listings mean byte-identical trees.
func listing(dir string) string {
	return fmt.Sprintf("(cd %s && find . -type f | sort | xargs sha256sum)", dir)
}

// section returns the lines of log between "--- name" and the next "---".
func section(log, name string) string {
	_, after, ok := strings.Cut(log, "--- "+name+"\n")
	if !ok {
		return ""
	}
	before, _, _ := strings.Cut(after, "---")
	return before
}

// events returns the messages of the Events on pod with reason.
func events(t *testing.T, pod *corev1.Pod, reason string) []string {
	list, err := kube.CoreV1().Events(pod.Namespace).List(t.Context(), metav1.ListOptions{
		FieldSelector: "involvedObject.uid=" + string(pod.UID)})
	if err != nil {
		return nil
	}
	var msgs []string
	for _, e := range list.Items {
		if e.Reason == reason {
			msgs = append(msgs, e.Message)
		}
	}
	return msgs
}

// deleteAndWait deletes a pod and waits until it is gone: a pod that
// kubelet cannot tear down stays Terminating.
func deleteAndWait(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if err := c.Delete(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pod "+pod.Name+" to be deleted", 2*time.Minute, func() (bool, error) {
		err := c.Get(t.Context(), client.ObjectKeyFromObject(pod), &corev1.Pod{})
		return apierrors.IsNotFound(err), err
	})
}
