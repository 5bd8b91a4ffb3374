package cluster

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
)

// TestView runs the view against a real API server: it sees this node's
// pods (and reads others once), only labelled config ConfigMaps, and
// output records by TaskRun UID.
func TestView(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	create := func(o client.Object) {
		t.Helper()
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"team-a", "team-b"} {
		create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	create(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: config.ConfigMapName,
		Labels: map[string]string{config.LabelConfigType: config.ConfigTypeArtifactStorage}}, Data: map[string]string{"compression": "zstd"}})
	create(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: config.ConfigMapName},
		Data: map[string]string{"compression": "zstd"}})
	for _, p := range []struct{ name, node string }{{"here", "node-1"}, {"elsewhere", "node-2"}} {
		create(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: p.name},
			Spec: corev1.PodSpec{NodeName: p.node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}})
	}
	rec := func(name, taskRunUID, artifact string, dir v1alpha1.Direction) {
		r := &v1alpha1.ArtifactRecord{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name},
			Spec: v1alpha1.ArtifactRecordSpec{Direction: dir, Artifact: artifact, Pod: v1alpha1.ObjectReference{Name: "p"},
				Repository: "reg.example/a"}}
		if taskRunUID != "" {
			r.Spec.TaskRun = &v1alpha1.ObjectReference{Name: "build", UID: taskRunUID}
		}
		create(r)
	}
	rec("r1", "uid-1", "bin", v1alpha1.Output)
	rec("r2", "uid-1", "bin", v1alpha1.Input)
	rec("r3", "uid-1", "docs", v1alpha1.Output)
	rec("r4", "uid-2", "bin", v1alpha1.Output)
	rec("r5", "", "bin", v1alpha1.Output)

	s := scheme.Scheme
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	v, err := New(env.Config, s, "node-1", env.Client)
	if err != nil {
		t.Fatal(err)
	}
	go v.Start(ctx)
	if !v.Synced(ctx) {
		t.Fatal("not synced")
	}

	if data, err := v.NamespaceConfig(ctx, "team-a"); err != nil || data["compression"] != "zstd" {
		t.Errorf("team-a config = %v, %v", data, err)
	}
	if data, err := v.NamespaceConfig(ctx, "team-b"); err != nil || data != nil {
		t.Errorf("team-b's unlabelled ConfigMap read: %v, %v", data, err)
	}
	for _, name := range []string{"here", "elsewhere"} {
		if p, err := v.Pod(ctx, "team-a", name); err != nil || p.Name != name {
			t.Errorf("pod %s: %v, %v", name, p, err)
		}
	}
	if _, err := v.Pod(ctx, "team-a", "missing"); err == nil {
		t.Error("a missing pod was found")
	}
	if got, err := v.Outputs(ctx, "team-a", "uid-1", "bin"); err != nil || len(got) != 1 || got[0].Name != "r1" {
		t.Errorf("outputs = %v, %v; want r1", got, err)
	}
}
