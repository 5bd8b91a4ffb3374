package driver

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	artifactsv1alpha1 "github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
)

func TestDecideFrom(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	type R = artifactsv1alpha1.ArtifactRecord
	// rec is a record of pod, written for TaskRun uid (none when "").
	rec := func(name, uid, pod string, phase artifactsv1alpha1.Phase, age time.Duration) R {
		r := R{}
		r.Name, r.Spec.Pod.Name, r.Status.Phase = name, pod, phase
		if uid != "" {
			r.Spec.TaskRun = &artifactsv1alpha1.ObjectReference{Name: "build", UID: uid}
		}
		r.Status.LastUpdateTime = metav1.NewTime(now.Add(-age))
		return r
	}
	run := func(uid, pod string, finishedAgo time.Duration) tekton.ProducerRun {
		r := tekton.ProducerRun{TaskRun: tekton.Ref{Name: "build", UID: uid}, Pod: pod}
		if finishedAgo >= 0 {
			r.Done, r.FinishedAt = true, now.Add(-finishedAgo)
		}
		return r
	}
	producer := func(runs ...tekton.ProducerRun) tekton.Producer { return tekton.Producer{Runs: runs} }
	const running = -1
	var (
		pushed = artifactsv1alpha1.Pushed
		failed = artifactsv1alpha1.Failed
	)
	for _, tc := range []struct {
		name     string
		records  []R
		producer tekton.Producer
		want     fromOutcome
		wantRec  string
	}{
		{"task not started, no record", nil, producer(), fromWaiting, ""},
		{"running, no record", nil, producer(run("u1", "build-pod", running)), fromWaiting, ""},
		{"running, pending", []R{rec("a", "u1", "build-pod", artifactsv1alpha1.Pending, 0)}, producer(run("u1", "build-pod", running)), fromWaiting, ""},
		{"pushed", []R{rec("a", "u1", "build-pod", pushed, 0)}, producer(run("u1", "build-pod", time.Second)), fromPushed, "a"},
		{"failed", []R{rec("a", "u1", "build-pod", failed, 0)}, producer(run("u1", "build-pod", time.Hour)), fromFailed, "a"},
		{"finished within the grace period, no record", nil, producer(run("u1", "build-pod", producerGrace-time.Second)), fromWaiting, ""},
		{"finished without a record", nil, producer(run("u1", "build-pod", producerGrace+time.Second)), fromNever, ""},
		{"PipelineRun finished without running the task", nil, tekton.Producer{PipelineRunDone: true}, fromNever, ""},
		{"pushed wins over failed", []R{rec("f", "u1", "build-pod", failed, 0), rec("p", "u1", "build-pod", pushed, time.Minute)},
			producer(run("u1", "build-pod", time.Hour)), fromPushed, "p"},
		{"latest pushed wins", []R{rec("old", "u1", "build-pod", pushed, time.Minute), rec("new", "u1", "build-pod", pushed, 0),
			rec("older", "u1", "build-pod", pushed, time.Hour)}, producer(run("u1", "build-pod", time.Hour)), fromPushed, "new"},
		{"retry running: the failed attempt's output is not the input", []R{rec("first", "u1", "build-pod", pushed, time.Minute)},
			producer(run("u1", "build-pod-retry1", running)), fromWaiting, ""},
		{"retry pending: wait for it", []R{rec("first", "u1", "build-pod", pushed, time.Minute), rec("retry", "u1", "build-pod-retry1", artifactsv1alpha1.Pending, 0)},
			producer(run("u1", "build-pod-retry1", time.Second)), fromWaiting, ""},
		{"retry pushed, even before the first attempt's", []R{rec("retry", "u1", "build-pod-retry1", pushed, time.Minute), rec("first", "u1", "build-pod", pushed, 0)},
			producer(run("u1", "build-pod-retry1", time.Second)), fromPushed, "retry"},
		{"retry finished without the output the first attempt pushed", []R{rec("first", "u1", "build-pod", pushed, time.Hour)},
			producer(run("u1", "build-pod-retry1", time.Hour)), fromNever, ""},
		{"Tekton has not named a pod yet", []R{rec("first", "u1", "build-pod", pushed, time.Minute)}, producer(run("u1", "", running)), fromWaiting, ""},
		{"a plain pod's record never counts", []R{rec("forged", "", "build-pod", pushed, 0)}, producer(run("u1", "build-pod", running)), fromWaiting, ""},
		{"another TaskRun's record never counts", []R{rec("forged", "u2", "build-pod", pushed, 0)}, producer(run("u1", "build-pod", running)), fromWaiting, ""},
		{"matrix: one pushed, one still running", []R{rec("a", "u1", "build-0-pod", pushed, 0)},
			producer(run("u1", "build-0-pod", time.Second), run("u2", "build-1-pod", running)), fromPushed, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			records := append([]R(nil), tc.records...)
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
