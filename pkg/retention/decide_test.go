package retention

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var (
		keep     = config.Retention{Policy: config.RetainKeep}
		onDelete = config.Retention{Policy: config.RetainOnRunDeletion}
		week     = config.Retention{Policy: config.RetainKeep, MaxAge: 7 * 24 * time.Hour}
		both     = config.Retention{Policy: config.RetainOnRunDeletion, MaxAge: 7 * 24 * time.Hour}
	)
	// rec builds an output record created age ago; options change it.
	type opt func(*v1alpha1.ArtifactRecord)
	var (
		held    opt = func(r *v1alpha1.ArtifactRecord) { r.Finalizers = []string{v1alpha1.RetentionFinalizer} }
		input   opt = func(r *v1alpha1.ArtifactRecord) { r.Spec.Direction, r.Status.Phase = v1alpha1.Input, v1alpha1.Consumed }
		onDisk  opt = func(r *v1alpha1.ArtifactRecord) { r.Spec.Backend = "filesystem" }
		pending opt = func(r *v1alpha1.ArtifactRecord) { r.Status.Phase, r.Status.Digest = v1alpha1.Pending, "" }
		failed  opt = func(r *v1alpha1.ArtifactRecord) { r.Status.Phase, r.Status.Digest = v1alpha1.Failed, "" }
		deleted     = func(ago time.Duration) opt {
			return func(r *v1alpha1.ArtifactRecord) { r.DeletionTimestamp = &metav1.Time{Time: now.Add(-ago)} }
		}
	)
	rec := func(age time.Duration, opts ...opt) *v1alpha1.ArtifactRecord {
		r := &v1alpha1.ArtifactRecord{
			ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.Time{Time: now.Add(-age)}},
			Spec:       v1alpha1.ArtifactRecordSpec{Direction: v1alpha1.Output, Backend: v1alpha1.BackendOCI, Repository: "reg.example/team", Tag: "t"},
			Status:     v1alpha1.ArtifactRecordStatus{Phase: v1alpha1.Pushed, Digest: "sha256:aa"},
		}
		for _, o := range opts {
			o(r)
		}
		return r
	}
	const hour = time.Hour
	for _, tc := range []struct {
		name    string
		rec     *v1alpha1.ArtifactRecord
		policy  config.Retention
		runGone bool
		want    Action
		requeue time.Duration
	}{
		// Live records.
		{"Keep: nothing, looked at again at resync", rec(hour), keep, false, Nothing, 10 * time.Minute},
		{"Keep, run gone: nothing (not even asked)", rec(hour), keep, true, Nothing, 10 * time.Minute},
		{"an input is never held", rec(hour, input), both, true, Nothing, 0},
		{"a provider's output is never held", rec(hour, onDisk), both, true, Nothing, 0},
		{"retention on: held first", rec(hour), onDelete, false, Hold, 0},
		{"held, run lives", rec(hour, held), onDelete, false, Nothing, 10 * time.Minute},
		{"held, run gone: the record is deleted", rec(hour, held), onDelete, true, DeleteRecord, 0},
		{"held, younger than maxAge: looked at again when it expires, if before resync", rec(7*24*hour-time.Minute, held), week, false, Nothing, time.Minute},
		{"held, older than maxAge, run lives: deleted", rec(8*24*hour, held), week, false, DeleteRecord, 0},
		{"held, policy turned off: released", rec(hour, held), keep, false, Release, 0},
		{"held input (an older version): released", rec(hour, held, input), onDelete, false, Release, 0},
		// Records being deleted.
		{"deleted, not held: not ours", rec(hour, deleted(0)), onDelete, true, Nothing, 0},
		{"deleted, its run gone: cleaned", rec(hour, held, deleted(0)), onDelete, true, Clean, 0},
		{"deleted, older than maxAge: cleaned, run or not", rec(8*24*hour, held, deleted(0)), week, false, Clean, 0},
		{"deleted, both policies, run gone: cleaned", rec(hour, held, deleted(0)), both, true, Clean, 0},
		{"deleted while its run lives (by hand): released, the run still references it", rec(hour, held, deleted(0)), onDelete, false, Release, 0},
		{"deleted with its run under Keep with maxAge, younger: released", rec(hour, held, deleted(0)), week, true, Release, 0},
		{"deleted, policy turned off since: released", rec(hour, held, deleted(0)), keep, true, Release, 0},
		{"deleted, push pending: wait until the give-up time", rec(hour, held, pending, deleted(10*time.Minute)), onDelete, true, Wait, 50 * time.Minute},
		{"deleted, push pending past the give-up time: given up", rec(3*hour, held, pending, deleted(hour)), onDelete, true, GiveUp, 0},
		{"deleted, push failed: nothing to delete", rec(hour, held, failed, deleted(0)), onDelete, true, Release, 0},
		{"deleted provider output that was held: released", rec(hour, held, onDisk, deleted(0)), onDelete, true, Release, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := Facts{Retention: tc.policy, Now: now, RunGone: tc.runGone, GiveUpAfter: hour, Resync: 10 * time.Minute}
			if !NeedsRun(tc.rec, tc.policy) {
				f.RunGone = false // what Reconcile does not ask, Decide must not need
			}
			d := Decide(tc.rec, f)
			if d.Action != tc.want || d.RequeueAfter != tc.requeue {
				t.Errorf("Decide = %s after %s (%s), want %s after %s", d.Action, d.RequeueAfter, d.Reason, tc.want, tc.requeue)
			}
			if d.Action != Nothing && d.Reason == "" {
				t.Errorf("%s without a reason", d.Action)
			}
		})
	}
}
