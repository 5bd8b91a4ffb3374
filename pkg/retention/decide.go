package retention

import (
	"time"

	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
)

// Action is what to do next with a record.
type Action int

// Actions, in the order a record goes through them.
const (
	// Nothing: leave the record; look again after RequeueAfter (0: only
	// when it changes).
	Nothing Action = iota
	// Hold: add v1alpha1.RetentionFinalizer, so that the record outlives
	// its run's deletion until its output is dealt with.
	Hold
	// DeleteRecord: the output is due (its run is gone, or it is older
	// than maxAge) while its record is not being deleted: delete the
	// record, which the finalizer keeps until Clean is done.
	DeleteRecord
	// Wait: the record is being deleted and its output is due, but its
	// push has not finished; look again after RequeueAfter, or when the
	// node plugin writes the record's status.
	Wait
	// Clean: delete the output's tag, manifest and group from the
	// registry as far as no live run references them, then let go.
	Clean
	// Release: remove the finalizer without touching the registry.
	Release
	// GiveUp: the record has been held for longer than the give-up time:
	// remove the finalizer and warn; the output stays in the registry.
	GiveUp
)

var actionNames = [...]string{"Nothing", "Hold", "DeleteRecord", "Wait", "Clean", "Release", "GiveUp"}

func (a Action) String() string { return actionNames[a] }

// Facts is what Decide needs to know besides the record.
type Facts struct {
	// Retention is the configuration of the record's namespace.
	Retention config.Retention
	// Now is the time of the decision.
	Now time.Time
	// RunGone says the record's run (its TaskRun, or its pod for a plain
	// pod) is deleted or being deleted. Decide reads it only for a held
	// record under RetainOnRunDeletion (see NeedsRun).
	RunGone bool
	// GiveUpAfter bounds how long a record being deleted is held.
	GiveUpAfter time.Duration
	// Resync is how often a record is looked at again when nothing else
	// makes it change.
	Resync time.Duration
}

// Decision is what Decide says to do, and why (for logs and Events).
type Decision struct {
	Action       Action
	Reason       string
	RequeueAfter time.Duration
}

// Managed reports whether retention ever removes rec's artifact: it is
// an output in an OCI registry. Inputs belong to their producer, and the
// storage provider API has no delete.
func Managed(rec *v1alpha1.ArtifactRecord) bool {
	return rec.Spec.Direction == v1alpha1.Output && rec.Spec.StoreBackend() == v1alpha1.BackendOCI
}

// NeedsRun reports whether Decide reads f.RunGone for rec under
// retention r, so that the caller asks the API server only then.
func NeedsRun(rec *v1alpha1.ArtifactRecord, r config.Retention) bool {
	return Managed(rec) && r.OnRunDeletion() && controllerutil.ContainsFinalizer(rec, v1alpha1.RetentionFinalizer)
}

// Decide says what to do with rec, given f. It is pure: the same record
// and facts give the same decision.
//
// A record of an output in an OCI registry is held (a finalizer) while
// its namespace's retention is enabled, and released when it is turned
// off. Its output becomes due when its run is gone under OnRunDeletion,
// or when the record is older than maxAge. A due record is deleted, and
// a record being deleted whose output is due is cleaned once its push
// has finished (Pushed), released when nothing was pushed (Failed), and
// given up on GiveUpAfter after its deletion if its push never finished.
// A record being deleted whose output is not due (its run lives, under
// Keep or before maxAge) is released: the output stays.
func Decide(rec *v1alpha1.ArtifactRecord, f Facts) Decision {
	held := controllerutil.ContainsFinalizer(rec, v1alpha1.RetentionFinalizer)
	dueRun := held && f.Retention.OnRunDeletion() && f.RunGone
	dueAge := f.Retention.Expired(rec.CreationTimestamp.Time, f.Now)
	why := "its run was deleted"
	if !dueRun {
		why = "it is older than " + config.KeyRetentionMaxAge + " " + config.FormatAge(f.Retention.MaxAge)
	}

	if rec.DeletionTimestamp != nil {
		switch {
		case !held:
			return Decision{Action: Nothing}
		case !Managed(rec):
			return Decision{Action: Release, Reason: "retention removes only outputs in an OCI registry"}
		case !f.Retention.Enabled():
			return Decision{Action: Release, Reason: "the namespace keeps its outputs (" + config.KeyRetentionPolicy + " Keep, no " + config.KeyRetentionMaxAge + ")"}
		case !dueRun && !dueAge:
			return Decision{Action: Release, Reason: "its run lives and it is not older than " + config.KeyRetentionMaxAge}
		}
		switch rec.Status.Phase {
		case v1alpha1.Pushed:
			if rec.Status.Digest == "" {
				return Decision{Action: Release, Reason: "the record names no digest"}
			}
			return Decision{Action: Clean, Reason: why}
		case v1alpha1.Pending, "":
			deadline := rec.DeletionTimestamp.Add(f.GiveUpAfter)
			if !f.Now.Before(deadline) {
				return Decision{Action: GiveUp, Reason: "its push did not finish within " + f.GiveUpAfter.String() + " of the record's deletion"}
			}
			return Decision{Action: Wait, Reason: "its push has not finished", RequeueAfter: deadline.Sub(f.Now)}
		}
		return Decision{Action: Release, Reason: "nothing was pushed (" + string(rec.Status.Phase) + ")"}
	}

	switch {
	case !Managed(rec) && held:
		return Decision{Action: Release, Reason: "retention removes only outputs in an OCI registry"}
	case !Managed(rec):
		return Decision{Action: Nothing}
	case !f.Retention.Enabled() && held:
		return Decision{Action: Release, Reason: "the namespace keeps its outputs now"}
	case !f.Retention.Enabled():
		// The configuration may change: look again now and then.
		return Decision{Action: Nothing, RequeueAfter: f.Resync}
	case !held:
		return Decision{Action: Hold, Reason: "the namespace's retention removes outputs"}
	case dueRun || dueAge:
		return Decision{Action: DeleteRecord, Reason: why}
	}
	next := f.Resync
	if f.Retention.MaxAge > 0 {
		if until := rec.CreationTimestamp.Add(f.Retention.MaxAge).Sub(f.Now); until < next {
			next = until
		}
	}
	return Decision{Action: Nothing, RequeueAfter: next}
}
