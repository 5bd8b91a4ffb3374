package v1alpha1_test

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	. "github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
)

// TestCRD installs the generated CRD in a real API server and checks that
// it stores a record, status through its subresource, and rejects what
// its schema forbids.
func TestCRD(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	rec := &ArtifactRecord{
		ObjectMeta: metav1.ObjectMeta{Name: "build-pod.report", Namespace: "default"},
		Spec: ArtifactRecordSpec{Direction: Output, Artifact: "report", Pod: ObjectReference{Name: "build-pod", UID: "uid-1"},
			Repository: "registry.example/team/artifacts", Tag: "default.build.report"},
	}
	if err := env.Client.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	rec.Status = ArtifactRecordStatus{Phase: Pushed, Digest: "sha256:aa", Size: 10}
	if err := env.Client.Status().Update(ctx, rec); err != nil {
		t.Fatal(err)
	}
	got := &ArtifactRecord{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(rec), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != Pushed || got.Spec.Artifact != "report" || got.Spec.Pod.UID != "uid-1" {
		t.Errorf("stored record = %+v", got)
	}

	bad := rec.DeepCopy()
	bad.ObjectMeta = metav1.ObjectMeta{Name: "bad", Namespace: "default"}
	bad.Spec.Direction = "Sideways"
	if err := env.Client.Create(ctx, bad); err == nil {
		t.Error("a record with direction Sideways was accepted")
	}
}
