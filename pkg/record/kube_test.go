package record_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/klog/v2/ktesting"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/store"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// TestKubernetes writes records into a real API server.
func TestKubernetes(t *testing.T) {
	env := testenv.Start(t)
	_, ctx := ktesting.NewTestContext(t)
	mkPod := func(name string) volume.Pod {
		t.Helper()
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
		}
		if err := env.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		return volume.Pod{Name: name, Namespace: "default", UID: string(p.UID)}
	}
	// Labels a pod author could set say nothing: the record's Owner is
	// what the node plugin checked against Tekton's state.
	build := mkPod("build-pod")
	plain := mkPod("plain-pod")
	k := &record.Kubernetes{Client: env.Client, Node: "node-1", Next: record.Log{}}

	owner := tekton.Identity{TaskRun: &tekton.Ref{Name: "build", UID: "tr-uid"},
		PipelineRun: &tekton.Ref{Name: "release", UID: "pr-uid"}, PipelineTask: "compile"}
	out := record.Record{VolumeID: "csi-1", Direction: volume.Output, Artifact: "binary", Pod: build, Owner: owner,
		Repository: "reg.example/team/artifacts", Tag: "default.build.binary", BuildOutput: true, Phase: record.Pending, Time: time.Now()}
	for _, r := range []record.Record{out, out} { // recording twice is fine
		if err := k.Record(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	out.Phase, out.Digest, out.LayerDigest, out.Size = record.Pushed, "sha256:aa", "sha256:bb", 42
	if err := k.Record(ctx, out); err != nil {
		t.Fatal(err)
	}
	got := &v1alpha1.ArtifactRecord{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: record.RecordName(out)}, got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != v1alpha1.Pushed || got.Status.Digest != "sha256:aa" || got.Status.Size != 42 ||
		got.Spec.Direction != v1alpha1.Output || !got.Spec.BuildOutput || got.Spec.TaskRun == nil || got.Spec.TaskRun.UID != "tr-uid" ||
		got.Spec.PipelineRun != "release" || got.Spec.PipelineRunUID != "pr-uid" || got.Spec.PipelineTask != "compile" || got.Spec.NodeName != "node-1" {
		t.Errorf("record = %+v", got)
	}
	if o := got.OwnerReferences; len(o) != 1 || o[0].Kind != "TaskRun" || o[0].Name != "build" || o[0].UID != "tr-uid" {
		t.Errorf("owner = %+v, want the TaskRun", o)
	}

	in := record.Record{VolumeID: "csi-2", Direction: volume.Input, Artifact: "src", Pod: plain,
		Repository: "reg.example/team/artifacts", Digest: "sha256:cc", Phase: record.Consumed, Time: time.Now()}
	if err := k.Record(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: record.RecordName(in)}, got); err != nil {
		t.Fatal(err)
	}
	if o := got.OwnerReferences; len(o) != 1 || o[0].Kind != "Pod" || string(o[0].UID) != plain.UID || got.Spec.TaskRun != nil || got.Status.Phase != v1alpha1.Consumed {
		t.Errorf("plain pod's record = %+v (owner %+v)", got, o)
	}
	// The spec is written once: the API server refuses a change.
	got.Spec.Repository = "elsewhere.example/x"
	if err := env.Client.Update(ctx, got); err == nil || !strings.Contains(err.Error(), "spec is immutable") {
		t.Errorf("spec update: %v, want refused as immutable", err)
	}
	list := &v1alpha1.ArtifactRecordList{}
	if err := env.Client.List(ctx, list, client.InNamespace("default")); err != nil || len(list.Items) != 2 {
		t.Errorf("records = %d, %v; want 2", len(list.Items), err)
	}
}

// TestRetentionFinalizer: where retention removes outputs, a new record
// of an output to an OCI registry carries the retention finalizer from
// its creation; an input's, a provider's, and any record elsewhere do
// not.
func TestRetentionFinalizer(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&v1alpha1.ArtifactRecord{}).Build()
	k := &record.Kubernetes{Client: c, Node: "node-1", Next: record.Log{}, Retained: func(_ context.Context, ns string) bool { return ns == "cleaned" }}
	for i, tc := range []struct {
		namespace string
		direction volume.Direction
		backend   string
		want      bool
	}{
		{"cleaned", volume.Output, store.OCI, true},
		{"cleaned", volume.Output, "", true}, // records of earlier versions: oci
		{"cleaned", volume.Input, store.OCI, false},
		{"cleaned", volume.Output, "filesystem", false},
		{"kept", volume.Output, store.OCI, false},
	} {
		r := record.Record{VolumeID: fmt.Sprintf("csi-%d", i), Direction: tc.direction, Artifact: "a", Backend: tc.backend,
			Pod: volume.Pod{Name: "p", Namespace: tc.namespace, UID: "uid"}, Repository: "reg.example/team", Phase: record.Pending, Time: time.Now()}
		if err := k.Record(ctx, r); err != nil {
			t.Fatal(err)
		}
		got := &v1alpha1.ArtifactRecord{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: tc.namespace, Name: record.RecordName(r)}, got); err != nil {
			t.Fatal(err)
		}
		if has := slices.Contains(got.Finalizers, v1alpha1.RetentionFinalizer); has != tc.want {
			t.Errorf("%+v: finalizers %v", tc, got.Finalizers)
		}
	}
}
