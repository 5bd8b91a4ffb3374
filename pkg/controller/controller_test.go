package controller_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/internal/testkit"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/controller"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
)

const (
	ns   = "team-a"
	repo = "registry.example:5000/team-a/artifacts"
)

var hexA, hexB = strings.Repeat("a", 64), strings.Repeat("b", 64)

// eventually polls cond until it returns nil, failing the test with its
// last error after 30 s.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	testkit.Eventually(t, what, 30*time.Second, func() (bool, error) { err := cond(); return err == nil, err })
}

// startController runs the controller in-process against env, with
// leader election in namespace default and short leases.
// adjust, if any, changes the options last.
func startController(t *testing.T, env *testenv.Env, adjust ...func(*controller.Options)) {
	ctrl.SetLogger(klog.Background())
	o := controller.NewOptions()
	o.MetricsBindAddress, o.HealthProbeBindAddress, o.LeaderElectionNamespace, o.BrokerAddress = "0", "127.0.0.1:0", "default", "0"
	o.SignProvenance = false // TestProvenance's
	for _, f := range adjust {
		f(o)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	mgr, err := controller.NewManager(ctx, env.Config, o, func(mo *manager.Options) {
		mo.LeaseDuration, mo.RenewDeadline, mo.RetryPeriod = ptr(5*time.Second), ptr(4*time.Second), ptr(500*time.Millisecond)
		mo.Controller.SkipNameValidation = ptr(true) // a manager per test, in one process
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	eventually(t, "leader election", func() error {
		lease := &coordinationv1.Lease{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: o.LeaderElectionID}, lease); err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return fmt.Errorf("lease %s has no holder", lease.Name)
		}
		return nil
	})
}

func ptr[T any](v T) *T { return &v }

// createTaskRun creates a TaskRun and writes, as Tekton does, the name of
// its pod in its status.
func createTaskRun(t *testing.T, env *testenv.Env, name, pod string) *unstructured.Unstructured {
	tr := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"taskRef": map[string]any{"name": "build"}}}}
	tr.SetGroupVersionKind(tekton.TaskRunGVK)
	tr.SetNamespace(ns)
	tr.SetName(name)
	if err := env.Client.Create(t.Context(), tr); err != nil {
		t.Fatal(err)
	}
	tr.Object["status"] = map[string]any{"podName": pod}
	if err := env.Client.Status().Update(t.Context(), tr); err != nil {
		t.Fatal(err)
	}
	return tr
}

// createPod creates a pod bound to node.
func createPod(t *testing.T, env *testenv.Env, name, node string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	if err := env.Client.Create(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// writer is who a record says it is of: a TaskRun, a pod, and the node
// whose plugin wrote it.
type writer struct {
	taskRun, taskRunUID string
	pod                 *corev1.Pod
	node                string
}

// createRecord creates an ArtifactRecord of w, then sets its status
// through the status subresource, as the node plugin does.
func createRecord(t *testing.T, env *testenv.Env, name string, dir v1alpha1.Direction, artifact string, w writer, phase v1alpha1.Phase, digest string) {
	rec := &v1alpha1.ArtifactRecord{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.ArtifactRecordSpec{
			Direction: dir, Artifact: artifact, Pod: v1alpha1.ObjectReference{Name: w.pod.Name, UID: string(w.pod.UID)}, NodeName: w.node,
			Repository: repo, TaskRun: &v1alpha1.ObjectReference{Name: w.taskRun, UID: w.taskRunUID}, BuildOutput: dir == v1alpha1.Output,
		},
	}
	if err := env.Client.Create(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	rec.Status = v1alpha1.ArtifactRecordStatus{Phase: phase, Digest: digest, LastUpdateTime: metav1.Now()}
	if err := env.Client.Status().Update(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
}

func value(hex string) map[string]any {
	return map[string]any{
		"uri":    "pkg:oci/artifacts@sha256:" + hex + "?repository_url=" + repo,
		"digest": map[string]any{"sha256": hex},
	}
}

// waitForStatus waits until a fresh GET of the TaskRun shows want at each
// status path, and returns the TaskRun. Reading back from the API server
// proves that every field written survives the CRD's pruning.
func waitForStatus(t *testing.T, env *testenv.Env, name string, want map[string]any) *unstructured.Unstructured {
	t.Helper()
	tr := &unstructured.Unstructured{}
	tr.SetGroupVersionKind(tekton.TaskRunGVK)
	eventually(t, "status of TaskRun "+name, func() error {
		if err := env.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, tr); err != nil {
			return err
		}
		for path, w := range want {
			got, _, _ := unstructured.NestedFieldNoCopy(tr.Object, strings.Split(path, ".")...)
			if !reflect.DeepEqual(got, w) {
				return fmt.Errorf("%s is %v, want %v", path, got, w)
			}
		}
		return nil
	})
	return tr
}

// TestController runs the controller against a real API server whose
// TaskRun CRD prunes status.artifacts like Tekton's: records become
// TEP-0147 artifacts, only Pushed outputs and Consumed inputs of the
// TaskRun's UID written for its pod by the plugin of that pod's node, and
// come back next to another writer's after it drops them.
func TestController(t *testing.T) {
	env := testenv.Start(t)
	if err := env.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	startController(t, env)

	build := createTaskRun(t, env, "build", "build-pod")
	uid := string(build.GetUID())
	pod := createPod(t, env, "build-pod", "node-1")
	forger := createPod(t, env, "forged-pod", "node-1")
	own := writer{taskRun: "build", taskRunUID: uid, pod: pod, node: "node-1"}
	// Records left out go first: once the others show, these were seen.
	createRecord(t, env, "pending", v1alpha1.Output, "pending", own, v1alpha1.Pending, "sha256:"+hexB)
	createRecord(t, env, "failed", v1alpha1.Output, "failed", own, v1alpha1.Failed, "sha256:"+hexB)
	createRecord(t, env, "old-taskrun", v1alpha1.Output, "old", writer{"build", "uid-of-an-older-build", pod, "node-1"}, v1alpha1.Pushed, "sha256:"+hexB)
	createRecord(t, env, "forged-pod", v1alpha1.Output, "forged", writer{"build", uid, forger, "node-1"}, v1alpha1.Pushed, "sha256:"+hexB)
	createRecord(t, env, "other-node", v1alpha1.Output, "other-node", writer{"build", uid, pod, "node-2"}, v1alpha1.Pushed, "sha256:"+hexB)
	createRecord(t, env, "no-node", v1alpha1.Output, "no-node", writer{"build", uid, pod, ""}, v1alpha1.Pushed, "sha256:"+hexB)
	createRecord(t, env, "binary", v1alpha1.Output, "binary", own, v1alpha1.Pushed, "sha256:"+hexA)
	createRecord(t, env, "source", v1alpha1.Input, "source", own, v1alpha1.Consumed, "sha256:"+hexB)

	ours := map[string]any{"name": "binary", "buildOutput": true, "values": []any{value(hexA)}}
	inputs := []any{map[string]any{"name": "source", "values": []any{value(hexB)}}}
	waitForStatus(t, env, "build", map[string]any{
		"status.artifacts.outputs": []any{ours},
		"status.artifacts.inputs":  inputs,
	})

	// Tekton writes the whole status from its own copy, dropping ours; the
	// controller adds ours back next to Tekton's.
	tr := waitForStatus(t, env, "build", nil)
	tekton := map[string]any{"name": "tekton-own", "values": []any{map[string]any{"uri": "pkg:generic/x", "digest": map[string]any{"sha256": hexB}}}}
	conditions := []any{map[string]any{"type": "Succeeded", "status": "True", "reason": "Succeeded"}}
	tr.Object["status"] = map[string]any{"podName": "build-pod", "conditions": conditions, "artifacts": map[string]any{"outputs": []any{tekton}}}
	if err := env.Client.Status().Update(t.Context(), tr); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := unstructured.NestedSlice(tr.Object, "status", "artifacts", "outputs"); !reflect.DeepEqual(got, []any{tekton}) {
		t.Fatalf("the second writer's update left outputs %v", got)
	}
	waitForStatus(t, env, "build", map[string]any{
		"status.conditions":        conditions,
		"status.artifacts.outputs": []any{tekton, ours},
		"status.artifacts.inputs":  inputs,
	})
}
