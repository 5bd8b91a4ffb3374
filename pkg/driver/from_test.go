package driver

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	artifactsv1alpha1 "github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/cluster"
)

func TestDecideFrom(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	rec := func(name, pod string, phase artifactsv1alpha1.Phase, age time.Duration) artifactsv1alpha1.ArtifactRecord {
		r := artifactsv1alpha1.ArtifactRecord{}
		r.Name, r.Spec.Pod.Name, r.Status.Phase = name, pod, phase
		r.Status.LastUpdateTime = metav1.NewTime(now.Add(-age))
		return r
	}
	running := cluster.Producer{TaskRuns: 1, Pods: []string{"build-pod"}}
	retried := cluster.Producer{TaskRuns: 1, Pods: []string{"build-pod-retry1"}}
	finished := func(ago time.Duration, pods ...string) cluster.Producer {
		return cluster.Producer{TaskRuns: 1, Pods: pods, Done: true, FinishedAt: now.Add(-ago)}
	}
	for _, tc := range []struct {
		name     string
		records  []artifactsv1alpha1.ArtifactRecord
		producer cluster.Producer
		want     fromOutcome
		wantRec  string
	}{
		{"no TaskRun yet, no record", nil, cluster.Producer{}, fromWaiting, ""},
		{"running, no record", nil, running, fromWaiting, ""},
		{"running, pending", []artifactsv1alpha1.ArtifactRecord{rec("a", "build-pod", artifactsv1alpha1.Pending, 0)}, running, fromWaiting, ""},
		{"pushed", []artifactsv1alpha1.ArtifactRecord{rec("a", "build-pod", artifactsv1alpha1.Pushed, 0)}, finished(time.Second, "build-pod"), fromPushed, "a"},
		{"failed", []artifactsv1alpha1.ArtifactRecord{rec("a", "build-pod", artifactsv1alpha1.Failed, 0)}, finished(time.Hour, "build-pod"), fromFailed, "a"},
		{"finished within the grace period, no record", nil, finished(producerGrace-time.Second, "build-pod"), fromWaiting, ""},
		{"finished without a record", nil, finished(producerGrace+time.Second, "build-pod"), fromNever, ""},
		{"pushed wins over failed", []artifactsv1alpha1.ArtifactRecord{
			rec("f", "build-pod", artifactsv1alpha1.Failed, 0), rec("p", "build-pod", artifactsv1alpha1.Pushed, time.Minute)}, finished(time.Hour, "build-pod"), fromPushed, "p"},
		{"latest pushed wins", []artifactsv1alpha1.ArtifactRecord{
			rec("old", "build-pod", artifactsv1alpha1.Pushed, time.Minute), rec("new", "build-pod", artifactsv1alpha1.Pushed, 0),
			rec("older", "build-pod", artifactsv1alpha1.Pushed, time.Hour)}, finished(time.Hour, "build-pod"), fromPushed, "new"},
		{"retry running: the failed attempt's output is not the input", []artifactsv1alpha1.ArtifactRecord{
			rec("first", "build-pod", artifactsv1alpha1.Pushed, time.Minute)}, retried, fromWaiting, ""},
		{"retry pending: wait for it", []artifactsv1alpha1.ArtifactRecord{
			rec("first", "build-pod", artifactsv1alpha1.Pushed, time.Minute), rec("retry", "build-pod-retry1", artifactsv1alpha1.Pending, 0)}, finished(time.Second, "build-pod-retry1"), fromWaiting, ""},
		{"retry pushed, even before the first attempt's", []artifactsv1alpha1.ArtifactRecord{
			rec("retry", "build-pod-retry1", artifactsv1alpha1.Pushed, time.Minute), rec("first", "build-pod", artifactsv1alpha1.Pushed, 0)}, finished(time.Second, "build-pod-retry1"), fromPushed, "retry"},
		{"retry finished without the output the first attempt pushed", []artifactsv1alpha1.ArtifactRecord{
			rec("first", "build-pod", artifactsv1alpha1.Pushed, time.Hour)}, finished(time.Hour, "build-pod-retry1"), fromNever, ""},
		{"Tekton has not named a pod yet", []artifactsv1alpha1.ArtifactRecord{
			rec("first", "build-pod", artifactsv1alpha1.Pushed, time.Minute)}, cluster.Producer{TaskRuns: 1}, fromWaiting, ""},
		{"pods labelled without Tekton: any record counts", []artifactsv1alpha1.ArtifactRecord{
			rec("a", "by-hand", artifactsv1alpha1.Pushed, 0)}, cluster.Producer{}, fromPushed, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			records := append([]artifactsv1alpha1.ArtifactRecord(nil), tc.records...)
			got, outcome := decideFrom(tc.records, tc.producer, now)
			name := ""
			if got != nil {
				name = got.Name
			}
			if outcome != tc.want || name != tc.wantRec {
				t.Errorf("decideFrom = %q, %d; want %q, %d", name, outcome, tc.wantRec, tc.want)
			}
			for i := range records {
				if records[i].Name != tc.records[i].Name {
					t.Errorf("decideFrom reordered its argument: %v", tc.records)
				}
			}
		})
	}
}
