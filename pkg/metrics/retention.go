package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Objects of an output that retention deletes from a registry.
const (
	ObjectTag      = "tag"
	ObjectManifest = "manifest"
	ObjectGroup    = "group" // a PipelineRun's group manifest
)

// What retention did with one object.
const (
	RetentionDeleted     = "deleted"     // the registry deleted it
	RetentionAbsent      = "absent"      // already gone, or a tag that names another manifest now
	RetentionReferenced  = "referenced"  // kept: a live run still references it
	RetentionUnsupported = "unsupported" // kept: the registry does not allow deletion
	RetentionError       = "error"       // the attempt failed; retried with backoff
)

// What retention did with a record it held (v1alpha1.RetentionFinalizer).
const (
	RecordCleaned  = "cleaned"  // its output was deleted, or kept for a reason counted above
	RecordReleased = "released" // let go without deleting anything: Keep, a live run, no push
	RecordGaveUp   = "gaveup"   // let go after deletion kept failing
)

// Retention holds the controller's retention metrics. Labels are bounded
// (object, result). Every method is safe on a nil *Retention, which
// records nothing, and safe for concurrent use.
type Retention struct {
	deletions *prometheus.CounterVec
	records   *prometheus.CounterVec
}

// NewRetention registers the retention metrics with reg (the
// controller's: controller-runtime's metrics.Registry). When they are
// registered already, as by an earlier controller in the same process,
// it uses those.
func NewRetention(reg prometheus.Registerer) (*Retention, error) {
	r := &Retention{
		deletions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "retention_deletions_total",
			Help: "Objects of outputs (tag, manifest, group) retention acted on, by result (deleted, absent, referenced, unsupported, error).",
		}, []string{"object", "result"}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "retention_records_total",
			Help: "Records retention let go of, by result (cleaned, released, gaveup).",
		}, []string{"result"}),
	}
	for _, c := range []**prometheus.CounterVec{&r.deletions, &r.records} {
		if err := reg.Register(*c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			*c = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	return r, nil
}

// Deletion counts what was done with one object: an Object* and a
// Retention* result.
func (r *Retention) Deletion(object, result string) {
	if r != nil {
		r.deletions.WithLabelValues(object, result).Inc()
	}
}

// Record counts a record let go of: RecordCleaned, RecordReleased or
// RecordGaveUp.
func (r *Retention) Record(result string) {
	if r != nil {
		r.records.WithLabelValues(result).Inc()
	}
}
