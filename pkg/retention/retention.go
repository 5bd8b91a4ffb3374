// Package retention removes outputs from their OCI registry when their
// namespace's configuration asks for it: once their run is deleted
// (retention.policy: OnRunDeletion), or once they are older than
// retention.maxAge. It deletes an output's tag, its manifest where the
// registry allows deletion, and its PipelineRun's group manifest, never
// a manifest that the record of a live run (an output, or an input that
// consumed it, in any namespace) still references.
//
// The trigger is the deletion of the output's ArtifactRecord, never a
// finalizer on Tekton's objects: the record, owned by its TaskRun (or
// plain pod), is deleted by Kubernetes' garbage collector when the run
// is, or by this controller when the run is gone without it (orphaned
// records, clusters without the collector) or when the record is older
// than maxAge. The retention finalizer (v1alpha1.RetentionFinalizer),
// which the node plugin sets when it creates the record, keeps the
// record until its output is dealt with, so no deletion is lost while
// the controller is down; the record's owner reference does not block
// its owner's deletion (no blockOwnerDeletion), so Tekton's objects
// disappear at once. A record is held at most GiveUpAfter after its
// deletion, and only one attempt is made in a namespace being deleted:
// no registry outage can keep a namespace from going away.
package retention

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/metrics"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
)

// Event reasons, on the ArtifactRecord (its run is gone by then).
const (
	// ReasonDeleted (Normal): the output's tag, manifest or group were
	// deleted from the registry.
	ReasonDeleted = "ArtifactDeleted"
	// ReasonRetained (Normal): something of a due output stays: a live
	// run references it, or the registry does not allow deletion.
	ReasonRetained = "ArtifactRetained"
	// ReasonDeleteFailed (Warning): deletion kept failing until the
	// record was let go; the output stays in the registry.
	ReasonDeleteFailed = "ArtifactDeleteFailed"
)

// Options configures retention. Zero values are not defaults: use
// NewOptions, then AddFlags, then Validate.
type Options struct {
	// GiveUpAfter bounds how long a deleted record is held for its
	// output's removal (a registry down, credentials refused, a push that
	// does not finish): then it is let go with an ArtifactDeleteFailed
	// Warning, and the output stays. Default 1h.
	GiveUpAfter time.Duration
	// Resync is how often every record is looked at again, to notice a
	// configuration change or a run deleted while no event said so.
	// Default 10m.
	Resync time.Duration
	// Now is the clock that ages records against retention.maxAge. Not a
	// flag. Default time.Now.
	Now func() time.Time
}

// NewOptions returns Options with their defaults.
func NewOptions() *Options {
	return &Options{GiveUpAfter: time.Hour, Resync: 10 * time.Minute, Now: time.Now}
}

// AddFlags registers a flag for every option that has one.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&o.GiveUpAfter, "retention-give-up-after", o.GiveUpAfter, "how long a deleted ArtifactRecord is held for its output's removal from the registry before it is let go (the output then stays)")
	fs.DurationVar(&o.Resync, "retention-resync", o.Resync, "how often every ArtifactRecord is looked at again for retention")
}

// Validate reports every invalid option at once.
func (o *Options) Validate() error {
	var errs []error
	if o.GiveUpAfter <= 0 {
		errs = append(errs, fmt.Errorf("--retention-give-up-after must be positive, got %s", o.GiveUpAfter))
	}
	if o.Resync <= 0 {
		errs = append(errs, fmt.Errorf("--retention-resync must be positive, got %s", o.Resync))
	}
	return errors.Join(errs...)
}

// EventRecorder posts Events; client-go's record.EventRecorder is one.
type EventRecorder interface {
	Event(object runtime.Object, eventtype, reason, message string)
}

// Reconciler applies the retention configuration to ArtifactRecords.
// Reconcile is idempotent: every registry step treats what is gone as
// done. It is safe for concurrent use on different records; the
// controller never reconciles one record in two workers at once.
type Reconciler struct {
	Options
	// Client is the manager's: records, indexed, and TaskRuns' metadata
	// from its cache; writes records (finalizers, deletion).
	Client client.Client
	// Reader reads from the API server, uncached: it confirms that a run
	// is gone before that deletes anything, reads plain pods and
	// namespaces.
	Reader client.Reader
	// Config gives a namespace's configuration.
	Config ConfigSource
	// Registries opens a namespace's registry.
	Registries Registries
	// Events receives the Events on records. Default: none.
	Events EventRecorder
	// Metrics counts what was done. Default: nothing.
	Metrics *metrics.Retention

	warned sync.Map // backends whose outputs retention skips, logged once
}

// SetupWithManager indexes records in mgr's cache and registers r as the
// controller of ArtifactRecords, triggered by every change of a record
// and by the deletion of a TaskRun (its records). Call it once per
// manager.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	for field, extract := range indexes {
		if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.ArtifactRecord{}, field, extract); err != nil {
			return fmt.Errorf("index ArtifactRecords by %s: %w", field, err)
		}
	}
	const name = "artifact-retention"
	deleted := predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false },
		UpdateFunc:  func(event.UpdateEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return true },
	}
	return ctrl.NewControllerManagedBy(mgr).Named(name).
		For(&v1alpha1.ArtifactRecord{}).
		Watches(tekton.NewTaskRun(), handler.EnqueueRequestsFromMapFunc(r.recordsOf), builder.OnlyMetadata, builder.WithPredicates(deleted)).
		WithOptions(controller.Options{
			// Registry errors back off from 1 s to 5 min.
			RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](time.Second, 5*time.Minute),
		}).
		WithLogConstructor(func(req *reconcile.Request) klog.Logger {
			log := mgr.GetLogger().WithValues("controller", name)
			if req != nil {
				log = log.WithValues("record", klog.KRef(req.Namespace, req.Name))
			}
			return log
		}).
		Complete(r)
}

// recordsOf maps a deleted TaskRun to the records written for it.
func (r *Reconciler) recordsOf(ctx context.Context, tr client.Object) []reconcile.Request {
	var list v1alpha1.ArtifactRecordList
	if err := r.Client.List(ctx, &list, client.InNamespace(tr.GetNamespace())); err != nil {
		klog.FromContext(ctx).Error(err, "List the records of a deleted TaskRun", "taskRun", klog.KObj(tr))
		return nil
	}
	var reqs []reconcile.Request
	for _, rec := range list.Items {
		if rec.Spec.TaskRun != nil && types.UID(rec.Spec.TaskRun.UID) == tr.GetUID() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&rec)})
		}
	}
	return reqs
}

func (r *Reconciler) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

// Reconcile applies the namespace's retention configuration to the
// record req (see Decide): holds or releases it, deletes it when its
// output is due, and removes a deleted record's output from the registry
// before letting it go.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := klog.FromContext(ctx)
	rec := &v1alpha1.ArtifactRecord{}
	if err := r.Client.Get(ctx, req.NamespacedName, rec); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	c, err := r.Config.Config(ctx, rec.Namespace)
	if err != nil {
		return ctrl.Result{}, err
	}
	if rec.Spec.Direction == v1alpha1.Output && !Managed(rec) && c.Retention.Enabled() {
		if _, seen := r.warned.LoadOrStore(rec.Spec.Backend, true); !seen {
			log.Info("Retention does not remove outputs of storage providers: the provider API has no delete", "backend", rec.Spec.Backend)
		}
	}
	f := Facts{Retention: c.Retention, Now: r.now(), GiveUpAfter: r.GiveUpAfter, Resync: r.Resync}
	if NeedsRun(rec, c.Retention) {
		if f.RunGone, err = r.runGone(ctx, rec); err != nil {
			return ctrl.Result{}, err
		}
	}
	d := Decide(rec, f)
	if d.Action != Nothing {
		log.V(2).Info("Retention", "action", d.Action, "reason", d.Reason, "phase", rec.Status.Phase, "digest", rec.Status.Digest)
	}
	switch d.Action {
	case Nothing, Wait:
		return ctrl.Result{RequeueAfter: d.RequeueAfter}, nil
	case Hold:
		return ctrl.Result{}, r.setFinalizer(ctx, rec, true)
	case DeleteRecord:
		err := r.Client.Delete(ctx, rec, client.Preconditions{UID: &rec.UID})
		if err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("delete ArtifactRecord %s: %w", req.NamespacedName, err)
		}
		return ctrl.Result{}, nil
	case Release:
		if err := r.setFinalizer(ctx, rec, false); err != nil {
			return ctrl.Result{}, err
		}
		if rec.DeletionTimestamp != nil {
			r.Metrics.Record(metrics.RecordReleased)
		}
		return ctrl.Result{}, nil
	case GiveUp:
		return ctrl.Result{}, r.giveUp(ctx, rec, d.Reason)
	}

	outs, err := r.cleanup(ctx, rec, c, &liveness{r: r, runs: map[types.UID]bool{}})
	if err != nil {
		if !errdefs.Retryable(err) || f.Now.Sub(rec.DeletionTimestamp.Time) >= r.GiveUpAfter || r.namespaceGoing(ctx, rec.Namespace) {
			return ctrl.Result{}, r.giveUp(ctx, rec, err.Error())
		}
		return ctrl.Result{}, fmt.Errorf("remove the output of ArtifactRecord %s from the registry (retried with backoff until %s after its deletion): %w",
			req.NamespacedName, r.GiveUpAfter, err)
	}
	var deleted, kept []outcome
	for _, o := range outs {
		r.Metrics.Deletion(o.object, o.result)
		switch o.result {
		case metrics.RetentionDeleted:
			deleted = append(deleted, o)
		case metrics.RetentionReferenced, metrics.RetentionUnsupported:
			kept = append(kept, o)
		}
	}
	if len(deleted) > 0 {
		r.event(rec, corev1.EventTypeNormal, ReasonDeleted, fmt.Sprintf("Output %q deleted (%s): %s", rec.Spec.Artifact, d.Reason, describe(deleted)))
	}
	if len(kept) > 0 {
		r.event(rec, corev1.EventTypeNormal, ReasonRetained, fmt.Sprintf("Output %q is due (%s), but stays: %s", rec.Spec.Artifact, d.Reason, describe(kept)))
	}
	log.V(2).Info("Removed an output from the registry", "deleted", len(deleted), "kept", len(kept), "outcome", describe(outs))
	if err := r.setFinalizer(ctx, rec, false); err != nil {
		return ctrl.Result{}, err
	}
	r.Metrics.Record(metrics.RecordCleaned)
	return ctrl.Result{}, nil
}

// giveUp lets rec go with a Warning: its output stays in the registry.
func (r *Reconciler) giveUp(ctx context.Context, rec *v1alpha1.ArtifactRecord, reason string) error {
	if err := r.setFinalizer(ctx, rec, false); err != nil {
		return err
	}
	r.Metrics.Record(metrics.RecordGaveUp)
	msg := fmt.Sprintf("Output %q stays in %s (digest %s): retention gave up removing it: %s", rec.Spec.Artifact, rec.Spec.Repository, rec.Status.Digest, reason)
	klog.FromContext(ctx).Info("Gave up removing an output from the registry", "repository", rec.Spec.Repository, "digest", rec.Status.Digest, "reason", reason)
	r.event(rec, corev1.EventTypeWarning, ReasonDeleteFailed, msg)
	return nil
}

// namespaceGoing reports whether namespace is being deleted (or gone):
// then one attempt is all a record gets, so that the namespace's deletion
// never waits on a registry.
func (r *Reconciler) namespaceGoing(ctx context.Context, namespace string) bool {
	ns := &corev1.Namespace{}
	err := r.Reader.Get(ctx, client.ObjectKey{Name: namespace}, ns)
	return apierrors.IsNotFound(err) || err == nil && ns.DeletionTimestamp != nil
}

// setFinalizer adds (hold) or removes the retention finalizer of rec,
// with a patch that fails on a concurrent change (and is retried): a
// merge patch replaces the whole list of finalizers.
func (r *Reconciler) setFinalizer(ctx context.Context, rec *v1alpha1.ArtifactRecord, hold bool) error {
	orig := rec.DeepCopy()
	if hold && !controllerutil.AddFinalizer(rec, v1alpha1.RetentionFinalizer) || !hold && !controllerutil.RemoveFinalizer(rec, v1alpha1.RetentionFinalizer) {
		return nil
	}
	err := r.Client.Patch(ctx, rec, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("update the finalizers of ArtifactRecord %s/%s: %w", rec.Namespace, rec.Name, err)
	}
	return nil
}

func (r *Reconciler) event(rec *v1alpha1.ArtifactRecord, eventtype, reason, msg string) {
	if r.Events != nil {
		r.Events.Event(rec, eventtype, reason, msg)
	}
}

var _ reconcile.Reconciler = (*Reconciler)(nil)
