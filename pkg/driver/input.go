package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/go-containerregistry/pkg/name"
	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/internal/atomicfile"
	artifactsv1alpha1 "github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/cache"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/metrics"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/store"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
	"github.com/tektoncd/artifacts-csi-driver/pkg/trust"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// inputVolume is the record of a published input volume, kept in
// <state>/inputs/<id>.json so that a restarted plugin knows which cache
// entries are mounted and can tell a repeated publish from a conflict.
type inputVolume struct {
	ID          string     `json:"volumeID"`
	Fingerprint string     `json:"fingerprint"`
	Target      string     `json:"targetPath"`
	Ref         string     `json:"ref"`
	CacheKey    string     `json:"cacheKey"`
	Pod         volume.Pod `json:"pod"`

	pinned bool // holds a pin on CacheKey
}

// inputsDir holds one record per published input volume.
func (d *Driver) inputsDir() string { return filepath.Join(d.o.StateDir, "inputs") }

// loadInputs reads the input volume records and pins the cache entries
// they mount. A record whose entry is gone (the node rebooted) stays
// unpinned; a repeated publish fetches it again.
func (d *Driver) loadInputs(ctx context.Context) error {
	if err := os.MkdirAll(d.inputsDir(), 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(d.inputsDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(d.inputsDir(), e.Name())
		if atomicfile.IsTemp(e.Name()) {
			os.Remove(p)
			continue
		}
		in := &inputVolume{}
		if err := atomicfile.ReadJSON(p, in); err != nil {
			klog.FromContext(ctx).Error(err, "Ignoring an unreadable input volume record", "path", p)
			continue
		}
		in.pinned = d.deps.Cache.Pin(in.CacheKey)
		d.inputs[in.ID] = in
	}
	klog.FromContext(ctx).V(2).Info("Loaded input volumes", "count", len(d.inputs))
	return nil
}

// hasInput reports whether id is a published input volume.
func (d *Driver) hasInput(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inputs[id] != nil
}

// publishInput makes the input artifact of spec appear at the request's
// target path: from the cache, or fetched into it, and bind-mounted
// read-only. Its record, in <state>/inputs, pins the cache entry until
// unpublishInput.
func (d *Driver) publishInput(ctx context.Context, req *csi.NodePublishVolumeRequest, spec *volume.Spec, fp string) error {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	d.mu.Lock()
	in := d.inputs[id]
	d.mu.Unlock()
	if in != nil && in.Fingerprint != fp {
		return fmt.Errorf("%w: volume %s", volume.ErrConflict, id)
	}
	if in != nil && in.pinned {
		return d.mount(d.deps.Cache.Path(in.CacheKey), target, true)
	}

	s, err := d.settings(ctx, req, spec)
	if err != nil {
		return err
	}
	cfg := s.cfg
	src, err := d.inputSource(ctx, spec, s)
	if err != nil {
		return err
	}
	key := src.ref.CacheKey()
	// Tenants matter only where a hit may skip the check: naming one
	// resolves the pod's credentials, work a publish need not do.
	var who string
	if !cfg.VerifyAccess {
		if who, err = d.tenant(ctx, spec, s, src); err != nil {
			return err
		}
	}
	if cfg.VerifyAccess || !d.grants.allowed(key, who) || !d.deps.Cache.Has(key) || src.ref.Backend != store.OCI {
		// Also on a cache hit: the cache must never give a pod what its
		// own credentials (or namespace) cannot read. (A miss is checked
		// here too, for a clear error before the fetch starts; a
		// provider, a local call away, is always asked, for the location
		// the record names.)
		if src.location, err = src.store.Check(ctx, src.ref); err != nil {
			return fmt.Errorf("input %q (%s): %w", spec.Artifact, src.ref, err)
		}
		d.grants.grant(key, who)
	}
	if err := d.verifyInput(ctx, spec, cfg, src); err != nil {
		return err
	}
	path, hit, err := d.deps.Cache.AcquireUsage(ctx, key, d.fill(src, cfg.MaxArtifactBytes))
	if err != nil {
		return fmt.Errorf("input %q (%s): %w", spec.Artifact, src.ref, err)
	}
	d.deps.Metrics.CacheLookup(hit)
	rec := &inputVolume{ID: id, Fingerprint: fp, Target: target, Ref: src.ref.String(), CacheKey: key, Pod: spec.Pod, pinned: true}
	// Not fsynced: mounts do not survive a node crash either.
	err = atomicfile.WriteJSON(d.inputPath(id), rec, 0o600, atomicfile.BestEffort)
	if err == nil {
		err = d.mount(path, target, true)
	}
	if err != nil {
		os.Remove(d.inputPath(id))
		d.deps.Cache.Release(key)
		return err
	}
	d.mu.Lock()
	d.inputs[id] = rec // replacing at most an unpinned record
	d.mu.Unlock()
	d.recordInput(ctx, rec, spec, s.id, src)
	klog.FromContext(ctx).V(4).Info("Input ready", "ref", src.ref, "cacheHit", hit)
	return nil
}

// unpublishInput forgets input volume id, already unmounted, and unpins
// its cache entry. It is idempotent.
func (d *Driver) unpublishInput(id string) error {
	if err := os.Remove(d.inputPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	d.mu.Lock()
	in := d.inputs[id]
	delete(d.inputs, id)
	d.mu.Unlock()
	if in != nil && in.pinned {
		d.deps.Cache.Release(in.CacheKey)
	}
	return nil
}

// inputPath is where input volume id's record is.
func (d *Driver) inputPath(id string) string { return filepath.Join(d.inputsDir(), id+".json") }

// source is where an input comes from: an artifact and the store that
// holds it, opened with the pod's identity.
type source struct {
	store    store.Store
	ref      store.Ref
	location string // where the store says the artifact is, once checked
	// producer is the record a from: input resolved to.
	producer *artifactsv1alpha1.ArtifactRecord
}

// inputSource returns what an input names, in the store it names it in:
// its ref: in the store the configuration gives, or the artifact its from:
// resolves to, in the store of the producer's record.
func (d *Driver) inputSource(ctx context.Context, spec *volume.Spec, s settings) (source, error) {
	kc, err := s.creds.Keychain(ctx)
	if err != nil {
		return source{}, err
	}
	id := store.Identity{Backend: s.cfg.Backend, Keychain: kc, PlainHTTP: s.cfg.PlainHTTP, Namespace: spec.Pod.Namespace}
	raw := spec.Ref
	wrongRef := volume.ErrInvalid // the Task author's to fix
	var rec *artifactsv1alpha1.ArtifactRecord
	if spec.From != nil {
		rec, err = d.resolveFrom(ctx, spec, s.id)
		if errors.Is(err, errNotConfigured) {
			d.warn(spec.Pod, record.ReasonInputFailed, err.Error())
		}
		if err != nil {
			return source{}, err
		}
		// The producer's backend, whatever the consumer's namespace says.
		id.Backend, raw = rec.Spec.StoreBackend(), rec.Spec.Repository+"@"+rec.Status.Digest
		wrongRef = fmt.Errorf("%w: record %s", errNotConfigured, rec.Name)
	}
	st, err := d.deps.Stores.Open(id)
	if err != nil {
		return source{}, fmt.Errorf("%w: input %q: %w", errNotConfigured, spec.Artifact, err)
	}
	ref, err := st.Parse(raw)
	if err != nil {
		return source{}, fmt.Errorf("%w: %s: %w", wrongRef, volume.AttrRef, err)
	}
	src := source{store: st, ref: ref}
	if spec.From != nil {
		src.producer = rec
	}
	return src, nil
}

// tenant names who reads src for the pod of spec: its repository, the
// pod's namespace and the credentials it presents there ("" without
// credentials, or for a provider, which is always asked).
func (d *Driver) tenant(ctx context.Context, spec *volume.Spec, s settings, src source) (string, error) {
	if src.ref.Backend != store.OCI {
		return "", nil
	}
	repo, err := name.NewRepository(src.ref.Repository)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", volume.ErrInvalid, volume.AttrRef, err)
	}
	fp, err := s.creds.Fingerprint(ctx, repo)
	if err != nil {
		return "", err
	}
	return tenant(src.ref.Repository, spec.Pod.Namespace, fp), nil
}

// fill returns what fetches an input into the cache, within maxBytes,
// once one of the FillWorkers slots is free.
func (d *Driver) fill(src source, maxBytes int64) cache.FillUsageFunc {
	return func(ctx context.Context, dest string) (archive.Usage, error) {
		// At most FillWorkers at once: each holds a stream, a decompressor
		// and extraction buffers.
		select {
		case d.fills <- struct{}{}:
			defer func() { <-d.fills }()
		case <-ctx.Done():
			return archive.Usage{}, ctx.Err()
		}
		local, release := d.chunks.forFill()
		defer release()
		res, err := src.store.Pull(ctx, src.ref, dest, store.PullOptions{Limits: archive.Limits{MaxBytes: maxBytes}, Local: local})
		if err != nil {
			return archive.Usage{}, err
		}
		d.deps.Metrics.Pulled(res.Fetched)
		d.chunks.add(src.ref.CacheKey(), res.Contents)
		return res.Stats.Usage, nil
	}
}

func (d *Driver) recordInput(ctx context.Context, in *inputVolume, spec *volume.Spec, id tekton.Identity, src source) {
	r := record.Record{VolumeID: in.ID, Direction: volume.Input, Artifact: spec.Artifact, Pod: spec.Pod, Owner: id,
		Backend: src.ref.Backend, Repository: src.ref.Repository, Digest: src.ref.Digest, Location: src.location,
		Phase: record.Consumed, Time: time.Now().UTC()}
	if err := d.deps.Recorder.Record(ctx, r); err != nil {
		klog.FromContext(ctx).Error(err, "Could not record input")
	}
}

// verifyInput checks, before src becomes visible, that a provenance
// signed by a trusted key exists for its exact digest and meets the
// policy of cfg and spec: provenance.required and
// provenance.sameNamespace, the volume's producerTask, and for a from:
// input the producer TaskRun it resolved to. A storage provider's
// artifact is verified by the bundle on its producer's record. A refusal
// is a failed precondition, reported on the pod with what to fix.
func (d *Driver) verifyInput(ctx context.Context, spec *volume.Spec, cfg config.Config, src source) error {
	p := trust.Policy{Required: cfg.Provenance.Enabled(), Task: spec.ProducerTask}
	if cfg.Provenance.SameNamespace {
		p.Namespace = spec.Pod.Namespace
	}
	if !p.Active() {
		return nil
	}
	var (
		res trust.Result
		err error
	)
	rec := src.producer
	if rec != nil && rec.Spec.TaskRun != nil {
		p.Invocation = "taskrun/" + rec.Spec.TaskRun.UID
	}
	switch {
	case rec != nil && rec.Status.Provenance == nil:
		// The controller signs once the output is pushed: a from: input
		// waits for it, as it waited for the push.
		return fmt.Errorf("%w: input %q: waiting for the controller to sign the provenance of %s (ArtifactRecord %s)", errNotYet, spec.Artifact, src.ref, rec.Name)
	case rec != nil && !rec.Status.Provenance.Signed():
		err = fmt.Errorf("%w: the controller has not signed it (ArtifactRecord %s): %s", trust.ErrNoProvenance, rec.Name, rec.Status.Provenance.Message)
	case rec != nil && src.ref.Backend != store.OCI:
		res, err = d.deps.Trust.VerifyBundle(ctx, src.ref.Digest, p, []byte(rec.Status.Provenance.Bundle))
	default:
		res, err = d.deps.Trust.Verify(ctx, src.ref.Digest, p, func(ctx context.Context) ([]attest.Bundle, error) {
			return src.store.Bundles(ctx, src.ref)
		})
	}
	if err != nil {
		err = fmt.Errorf("input %q (%s): %w%s", spec.Artifact, src.ref, err, provenanceFix(err, src))
		if errdefs.ClassOf(err) == errdefs.ErrPrecondition {
			d.deps.Metrics.ProvenanceCheck(metrics.ProvenanceRefused)
			d.warn(spec.Pod, record.ReasonProvenanceRefused, err.Error())
		}
		return err
	}
	d.deps.Metrics.ProvenanceCheck(map[bool]string{true: metrics.ProvenanceCached, false: metrics.ProvenanceVerified}[res.Cached])
	klog.FromContext(ctx).V(4).Info("Input provenance verified", "ref", src.ref, "keyID", res.Claim.KeyID, "producer", res.Claim.Invocation, "cached", res.Cached)
	return nil
}

// provenanceFix says how to fix a refusal of verifyInput.
func provenanceFix(err error, src source) string {
	switch {
	case errors.Is(err, trust.ErrNoKeys):
		return ": the node plugin reads the trusted keys from ConfigMap artifacts-signing-keys (--trusted-keys), which the controller publishes when it runs with --sign-provenance"
	case errors.Is(err, trust.ErrNoProvenance) && src.producer != nil && src.producer.Status.Provenance != nil && src.producer.Status.Provenance.Message != "":
		return "" // the controller's message says why
	case errors.Is(err, trust.ErrNoProvenance) && src.ref.Backend != store.OCI && src.producer == nil:
		return ": a storage provider's artifact carries its provenance on its producer's ArtifactRecord; name the input with from:, not ref:"
	case errors.Is(err, trust.ErrNoProvenance):
		return ": only outputs of this driver's output volumes get a provenance, signed by the controller once Tekton's state confirms their producer; an artifact pushed by other means (artifacts push, oras, a registry copy) has none"
	case errors.Is(err, trust.ErrUntrusted):
		return ": its provenance must be signed by a key of ConfigMap artifacts-signing-keys, and not altered since"
	}
	return ""
}
