package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
	"github.com/tektoncd/artifacts-csi-driver/pkg/retention"
	"github.com/tektoncd/artifacts-csi-driver/pkg/signing"
	"github.com/tektoncd/artifacts-csi-driver/pkg/status"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
)

// Reasons of the Events the Attestor posts on records.
const (
	ReasonProvenanceSigned  = "ProvenanceSigned"
	ReasonProvenanceRefused = "ProvenanceRefused"
	ReasonProvenanceFailed  = "ProvenanceFailed"
)

// RegistryClients opens the registry client of a namespace, with the
// credentials its configuration names. *retention.SecretRegistries is
// one.
type RegistryClients interface {
	Registry(ctx context.Context, namespace string, c config.Config) (*oci.Client, error)
}

var _ RegistryClients = (*retention.SecretRegistries)(nil)

// Attestor signs the provenance of every Pushed output record, once the
// record is confirmed against Tekton's state as the TaskRun reconciler
// confirms it before merging (its TaskRun names its pod, and the pod ran
// on the record's node), and stores it where a verifier finds it: as a
// referrer of the artifact in its OCI repository, or, for a storage
// provider, which holds no referrers and which the controller cannot
// reach, in the record's status. It then writes status.provenance.
//
// Reconcile is idempotent: a record whose status names a provenance is
// left alone, and an artifact that already has a provenance signed by
// Signer (the controller died before writing the status) gets that one
// again, not a second. It is safe for concurrent use on different
// records.
type Attestor struct {
	// Client reads records from the manager's cache and patches their
	// status.
	Client client.Client
	// Reader reads TaskRuns, PipelineRuns and pods from the API server.
	Reader client.Reader
	// Config gives a namespace's configuration (its credentials Secret,
	// oci.plainHTTP).
	Config retention.ConfigSource
	// Registries opens the registry of a namespace.
	Registries RegistryClients
	// Signer signs statements. Keys are the trusted keys (Signer's and
	// those it replaced): a provenance one of them signed, found attached
	// already, is not signed again.
	Signer signing.Signer
	Keys   signing.Keys
	// Version is the driver's, the builder version statements name.
	Version string
	// Events receives Events on records. Default: none.
	Events retention.EventRecorder
	// Retry is how long an output whose provenance could not be stored
	// (the registry refused the controller's credentials) waits before
	// the next attempt. Default 10m.
	Retry time.Duration
}

// SetupWithManager registers a as the controller of output
// ArtifactRecords that are Pushed and not yet signed.
func (a *Attestor) SetupWithManager(mgr manager.Manager, concurrency int) error {
	const name = "provenance"
	// Every unsigned output at start and when its node pushes it; not the
	// updates that only say why it is not signed yet (this reconciler's
	// own), which RequeueAfter retries.
	unsigned := predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return wantsProvenance(e.Object) },
		UpdateFunc: func(e event.UpdateEvent) bool {
			rec, ok := e.ObjectNew.(*v1alpha1.ArtifactRecord)
			return ok && wantsProvenance(rec) && rec.Status.Provenance == nil
		},
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(e event.GenericEvent) bool { return wantsProvenance(e.Object) },
	}
	return builder.ControllerManagedBy(mgr).Named(name).
		For(&v1alpha1.ArtifactRecord{}, builder.WithPredicates(unsigned)).
		WithOptions(controller.Options{MaxConcurrentReconciles: concurrency}).
		WithLogConstructor(logConstructor(mgr, name, "artifactRecord")).
		Complete(a)
}

// wantsProvenance: a Pushed output without a signed provenance.
func wantsProvenance(o client.Object) bool {
	rec, ok := o.(*v1alpha1.ArtifactRecord)
	return ok && rec.DeletionTimestamp == nil && rec.Spec.Direction == v1alpha1.Output && rec.Status.Phase == v1alpha1.Pushed &&
		!rec.Status.Provenance.Signed()
}

// errUnconfirmed: Tekton's state does not confirm the record.
var errUnconfirmed = errdefs.New("not confirmed by Tekton's state", errdefs.ErrPrecondition)

// Reconcile implements reconcile.Reconciler.
func (a *Attestor) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	log := klog.FromContext(ctx)
	rec := &v1alpha1.ArtifactRecord{}
	if err := a.Client.Get(ctx, req.NamespacedName, rec); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !wantsProvenance(rec) {
		return reconcile.Result{}, nil
	}
	start := time.Now()
	facts, err := a.facts(ctx, rec)
	if errors.Is(err, errUnconfirmed) {
		// Final: Tekton's state will not change its mind.
		msg := "not signed: " + err.Error()
		a.eventOnce(rec, corev1.EventTypeWarning, ReasonProvenanceRefused, msg)
		return reconcile.Result{}, a.setStatus(ctx, rec, &v1alpha1.Provenance{Message: msg})
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	st, err := provenance.Statement(facts)
	if err != nil {
		return reconcile.Result{}, a.setStatus(ctx, rec, &v1alpha1.Provenance{Message: "not signed: " + err.Error()})
	}
	prov, err := a.store(ctx, rec, st)
	if err != nil {
		switch errdefs.ClassOf(err) {
		case errdefs.ErrUnavailable, nil:
			return reconcile.Result{}, err // the registry or the API server: soon again
		}
		// The registry's answer (denied, not found, invalid): an Event, and
		// again later, once someone may have fixed it.
		msg := fmt.Sprintf("not signed yet, retrying in %s: %v", a.retry(), err)
		a.eventOnce(rec, corev1.EventTypeWarning, ReasonProvenanceFailed, msg)
		return reconcile.Result{RequeueAfter: a.retry()}, a.setStatus(ctx, rec, &v1alpha1.Provenance{Message: msg})
	}
	if err := a.setStatus(ctx, rec, prov); err != nil {
		return reconcile.Result{}, err
	}
	log.V(2).Info("Signed provenance", "digest", rec.Status.Digest, "provenance", prov.Digest, "keyID", prov.KeyID,
		"inputs", len(facts.Inputs), "duration", time.Since(start))
	a.event(rec, corev1.EventTypeNormal, ReasonProvenanceSigned, "signed provenance "+prov.Digest+" by key "+prov.KeyID)
	return reconcile.Result{}, nil
}

func (a *Attestor) retry() time.Duration {
	if a.Retry > 0 {
		return a.Retry
	}
	return 10 * time.Minute
}

// store signs st and puts the bundle where verifiers look: attached to
// the artifact (OCI), or in the returned status (a provider).
func (a *Attestor) store(ctx context.Context, rec *v1alpha1.ArtifactRecord, st *intoto.Statement) (*v1alpha1.Provenance, error) {
	hint := string(a.Signer.GetHint())
	now := metav1.Now()
	if rec.Spec.StoreBackend() != v1alpha1.BackendOCI {
		bundle, err := signing.Sign(st, a.Signer)
		if err != nil {
			return nil, err
		}
		return &v1alpha1.Provenance{Bundle: string(bundle), KeyID: hint, SignedAt: now}, nil
	}
	cfg, err := a.Config.Config(ctx, rec.Namespace)
	if err != nil {
		return nil, err
	}
	reg, err := a.Registries.Registry(ctx, rec.Namespace, cfg)
	if err != nil {
		return nil, err
	}
	repo, _, err := oci.ParseRepositoryTag(rec.Spec.Repository, oci.SchemeOf(cfg.PlainHTTP))
	if err != nil {
		return nil, fmt.Errorf("%w: repository %q: %w", errdefs.ErrInvalid, rec.Spec.Repository, err)
	}
	subject, err := v1.NewHash(rec.Status.Digest)
	if err != nil {
		return nil, fmt.Errorf("%w: digest %q: %w", errdefs.ErrInvalid, rec.Status.Digest, err)
	}
	// Signed before, and the status not written? Then that one.
	if v, err := attest.Verify(ctx, reg, repo, subject, a.Keys); err == nil {
		return &v1alpha1.Provenance{Digest: v.Bundle.String(), KeyID: v.KeyHint, SignedAt: now}, nil
	} else if !errors.Is(err, attest.ErrNone) {
		return nil, err
	}
	bundle, err := signing.Sign(st, a.Signer)
	if err != nil {
		return nil, err
	}
	desc, err := attest.Push(ctx, reg, repo, subject, bundle, now.Time)
	if err != nil {
		return nil, err
	}
	return &v1alpha1.Provenance{Digest: desc.Digest.String(), KeyID: hint, SignedAt: now}, nil
}

// setStatus writes p as rec's status.provenance, with a patch that fails
// on a concurrent change (and is then retried).
func (a *Attestor) setStatus(ctx context.Context, rec *v1alpha1.ArtifactRecord, p *v1alpha1.Provenance) error {
	if old := rec.Status.Provenance; old != nil && !p.Signed() && old.Message == p.Message {
		return nil // said already
	}
	orig := rec.DeepCopy()
	rec.Status.Provenance = p
	if err := a.Client.Status().Patch(ctx, rec, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return client.IgnoreNotFound(fmt.Errorf("patch the status of ArtifactRecord %s/%s: %w", rec.Namespace, rec.Name, err))
	}
	return nil
}

// eventOnce posts an Event saying msg unless rec's status says it
// already.
func (a *Attestor) eventOnce(rec *v1alpha1.ArtifactRecord, eventtype, reason, msg string) {
	if p := rec.Status.Provenance; p == nil || p.Message != msg {
		a.event(rec, eventtype, reason, msg)
	}
}

func (a *Attestor) event(rec *v1alpha1.ArtifactRecord, eventtype, reason, msg string) {
	if a.Events != nil {
		a.Events.Event(rec, eventtype, reason, msg)
	}
}

// facts gathers what the provenance of rec states, from Tekton's state
// and the pod's other records. errUnconfirmed when Tekton's state does
// not confirm that the record's pod ran for the TaskRun it names.
func (a *Attestor) facts(ctx context.Context, rec *v1alpha1.ArtifactRecord) (provenance.Facts, error) {
	f := provenance.Facts{
		Repository: rec.Spec.Repository, Digest: rec.Status.Digest, Artifact: rec.Spec.Artifact, Namespace: rec.Namespace,
		Pod: provenance.Ref{Name: rec.Spec.Pod.Name, UID: rec.Spec.Pod.UID}, Node: rec.Spec.NodeName,
		BuilderVersion: a.Version, BuildOutput: rec.Spec.BuildOutput,
	}
	if rec.Spec.StoreBackend() != v1alpha1.BackendOCI && rec.Status.Location != "" {
		f.Repository = rec.Status.Location
	}
	pods := podLookup(ctx, a.Reader, rec.Namespace)
	if rec.Spec.TaskRun == nil {
		if err := a.podFacts(rec, pods, &f); err != nil {
			return f, err
		}
	} else if err := a.taskRunFacts(ctx, rec, pods, &f); err != nil {
		return f, err
	}
	inputs, err := a.inputs(ctx, rec)
	if err != nil {
		return f, err
	}
	f.Inputs = inputs
	return f, nil
}

// podFacts fills f for the output of a plain pod: the pod, if still
// there, must be the record's (UID) and have run on its node.
func (a *Attestor) podFacts(rec *v1alpha1.ArtifactRecord, pods func(string) (*corev1.Pod, error), f *provenance.Facts) error {
	p, err := pods(rec.Spec.Pod.Name)
	switch {
	case err != nil:
		return err
	case p == nil:
		// Gone (a plain pod's volumes are unpublished as it is deleted):
		// the record's node, which admission checked, is all there is.
		f.StartedOn = rec.CreationTimestamp.Time
		return nil
	case string(p.UID) != rec.Spec.Pod.UID:
		return fmt.Errorf("%w: pod %s is another pod now (uid %s)", errUnconfirmed, p.Name, p.UID)
	case p.Spec.NodeName != rec.Spec.NodeName:
		return fmt.Errorf("%w: pod %s runs on node %q, not on %q, whose plugin wrote the record", errUnconfirmed, p.Name, p.Spec.NodeName, rec.Spec.NodeName)
	}
	f.ServiceAccount = p.Spec.ServiceAccountName
	if p.Status.StartTime != nil {
		f.StartedOn = p.Status.StartTime.Time
	}
	return nil
}

// taskRunFacts fills f from the record's TaskRun, once it confirms the
// record as the TaskRun reconciler does, and from its PipelineRun, once
// that lists the TaskRun for the record's pipeline task.
func (a *Attestor) taskRunFacts(ctx context.Context, rec *v1alpha1.ArtifactRecord, pods func(string) (*corev1.Pod, error), f *provenance.Facts) error {
	tr := tekton.NewTaskRun()
	if err := a.Reader.Get(ctx, client.ObjectKey{Namespace: rec.Namespace, Name: rec.Spec.TaskRun.Name}, tr); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("%w: TaskRun %s is gone", errUnconfirmed, rec.Spec.TaskRun.Name)
		}
		return fmt.Errorf("get TaskRun %s/%s: %w", rec.Namespace, rec.Spec.TaskRun.Name, err)
	}
	ok, why, err := belongs(rec, tr, pods)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s", errUnconfirmed, why)
	}
	f.TaskRun = &provenance.Ref{Name: tr.GetName(), UID: string(tr.GetUID())}
	f.TaskRef = nestedMap(tr, "spec", "taskRef")
	f.Params = params(tr)
	f.ServiceAccount, _, _ = unstructured.NestedString(tr.Object, "spec", "serviceAccountName")
	f.StartedOn = timestamp(tr, "status", "startTime")
	f.FinishedOn = timestamp(tr, "status", "completionTime")
	if rec.Spec.PipelineRunUID == "" {
		return nil
	}
	pr := tekton.NewPipelineRun()
	err = a.Reader.Get(ctx, client.ObjectKey{Namespace: rec.Namespace, Name: rec.Spec.PipelineRun}, pr)
	switch {
	case apierrors.IsNotFound(err) || err == nil && string(pr.GetUID()) != rec.Spec.PipelineRunUID:
		return fmt.Errorf("%w: PipelineRun %s is gone or was replaced", errUnconfirmed, rec.Spec.PipelineRun)
	case err != nil:
		return fmt.Errorf("get PipelineRun %s/%s: %w", rec.Namespace, rec.Spec.PipelineRun, err)
	}
	listed := false
	for _, c := range tekton.Children(pr) {
		listed = listed || c.Name == tr.GetName() && c.PipelineTask == rec.Spec.PipelineTask
	}
	if !listed || tekton.Ambiguous(pr, rec.Spec.PipelineTask) {
		return fmt.Errorf("%w: PipelineRun %s does not list TaskRun %s alone for task %q", errUnconfirmed, pr.GetName(), tr.GetName(), rec.Spec.PipelineTask)
	}
	f.PipelineRun = &provenance.Ref{Name: pr.GetName(), UID: string(pr.GetUID())}
	f.PipelineTask = rec.Spec.PipelineTask
	f.PipelineRef = nestedMap(pr, "spec", "pipelineRef")
	f.PipelineParams = params(pr)
	return nil
}

// inputs are the inputs rec's pod consumed, as its node recorded them:
// the Consumed input records of the same pod (UID) and node.
func (a *Attestor) inputs(ctx context.Context, rec *v1alpha1.ArtifactRecord) ([]provenance.Dependency, error) {
	opts := []client.ListOption{client.InNamespace(rec.Namespace)}
	if rec.Spec.TaskRun != nil {
		opts = append(opts, client.MatchingFields{taskRunNameField: rec.Spec.TaskRun.Name})
	}
	var list v1alpha1.ArtifactRecordList
	if err := a.Client.List(ctx, &list, opts...); err != nil {
		return nil, fmt.Errorf("list the ArtifactRecords of namespace %s: %w", rec.Namespace, err)
	}
	var deps []provenance.Dependency
	for _, in := range list.Items {
		if in.Spec.Direction != v1alpha1.Input || in.Status.Phase != v1alpha1.Consumed || in.Spec.Pod.UID != rec.Spec.Pod.UID ||
			in.Spec.NodeName != rec.Spec.NodeName {
			continue
		}
		v, err := status.ValueOf(&in)
		if err != nil {
			continue // malformed: the TaskRun reconciler leaves it out too
		}
		deps = append(deps, provenance.Dependency{Artifact: in.Spec.Artifact, URI: v.URI, Digest: in.Status.Digest})
	}
	return deps, nil
}

// nestedMap returns a copy of obj's map at fields, or nil.
func nestedMap(obj *unstructured.Unstructured, fields ...string) map[string]any {
	m, _, _ := unstructured.NestedMap(obj.Object, fields...)
	return m
}

// params turns a run's spec.params ([{name, value}]) into a map of name
// to value, as given (a string, an array or an object).
func params(obj *unstructured.Unstructured) map[string]any {
	list, _, _ := unstructured.NestedSlice(obj.Object, "spec", "params")
	out := map[string]any{}
	for _, p := range list {
		m, _ := p.(map[string]any)
		if n, _ := m["name"].(string); n != "" {
			out[n] = m["value"]
		}
	}
	return out
}

// timestamp parses the RFC 3339 time at fields, or returns zero.
func timestamp(obj *unstructured.Unstructured, fields ...string) time.Time {
	s, _, _ := unstructured.NestedString(obj.Object, fields...)
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

var _ reconcile.Reconciler = (*Attestor)(nil)
