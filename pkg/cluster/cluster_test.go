package cluster

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

func TestTaskRunDone(t *testing.T) {
	at := "2026-11-28T10:00:00Z"
	want, _ := time.Parse(time.RFC3339, at)
	cond := func(status string) map[string]any {
		return map[string]any{"type": "Succeeded", "status": status, "lastTransitionTime": at}
	}
	tests := []struct {
		name     string
		status   map[string]any
		wantDone bool
	}{
		{"no status", nil, false},
		{"running", map[string]any{"conditions": []any{cond("Unknown")}}, false},
		{"succeeded", map[string]any{"conditions": []any{cond("True")}, "completionTime": at}, true},
		{"failed, transition time only", map[string]any{"conditions": []any{cond("False")}}, true},
		{"other condition", map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": "True"}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := map[string]any{}
			if tt.status != nil {
				obj["status"] = tt.status
			}
			done, when := taskRunDone(obj)
			if done != tt.wantDone || done && !when.Equal(want) {
				t.Errorf("taskRunDone = %v, %v", done, when)
			}
		})
	}
}

// TestView runs the view against a real API server: it sees this node's
// pods (and reads others once), only labelled config ConfigMaps, records
// by PipelineRun, and TaskRuns by their labels.
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
	rec := func(name, run, task, artifact string, dir v1alpha1.Direction) {
		create(&v1alpha1.ArtifactRecord{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name},
			Spec: v1alpha1.ArtifactRecordSpec{Direction: dir, Artifact: artifact, Pod: v1alpha1.ObjectReference{Name: "p"},
				PipelineRun: run, PipelineTask: task, Repository: "reg.example/a"}})
	}
	rec("r1", "release", "build", "bin", v1alpha1.Output)
	rec("r2", "release", "build", "bin", v1alpha1.Input)
	rec("r3", "release", "build", "docs", v1alpha1.Output)
	rec("r4", "nightly", "build", "bin", v1alpha1.Output)
	tr := &unstructured.Unstructured{}
	tr.SetAPIVersion("tekton.dev/v1")
	tr.SetKind("TaskRun")
	tr.SetNamespace("team-a")
	tr.SetName("release-build")
	tr.SetLabels(map[string]string{volume.LabelPipelineRun: "release", volume.LabelPipelineTask: "build"})
	create(tr)

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
	if got, err := v.Outputs(ctx, "team-a", "release", "build", "bin"); err != nil || len(got) != 1 || got[0].Name != "r1" {
		t.Errorf("outputs = %v, %v; want r1", got, err)
	}
	if p, err := v.Producer(ctx, "team-a", "release", "build"); err != nil || p.TaskRuns != 1 || p.Done || len(p.Pods) != 0 {
		t.Errorf("TaskRun without a pod yet: %+v, %v", p, err)
	}
	if p, err := v.Producer(ctx, "team-a", "release", "absent"); err != nil || p.TaskRuns != 0 || p.Done {
		t.Errorf("absent TaskRun: %+v, %v", p, err)
	}
	// A retried TaskRun that succeeded names its last attempt's pod.
	finished := "2026-01-02T03:04:05Z"
	if err := unstructured.SetNestedField(tr.Object, map[string]any{
		"podName": "release-build-pod-retry1", "completionTime": finished,
		"conditions": []any{map[string]any{"type": "Succeeded", "status": "True"}},
	}, "status"); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Status().Update(ctx, tr); err != nil {
		t.Fatal(err)
	}
	p, err := v.Producer(ctx, "team-a", "release", "build")
	if err != nil || !p.Done || p.FinishedAt.UTC().Format(time.RFC3339) != finished || !slices.Equal(p.Pods, []string{"release-build-pod-retry1"}) {
		t.Errorf("finished TaskRun: %+v, %v", p, err)
	}
}
