package driver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/internal/atomicfile"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
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

// NodeGetInfo returns the node id; the driver has no topology and no
// volume limit.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.o.NodeID}, nil
}

// NodeGetCapabilities advertises VOLUME_MOUNT_GROUP: kubelet then passes
// the pod's fsGroup, which output directories are given to.
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{{
		Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP}},
	}}}, nil
}

// NodePublishVolume makes an input artifact or an empty output directory
// appear at the target path. It is idempotent: the same request again
// returns OK (mounting again what a crash left unmounted); the same volume
// with other arguments gets ALREADY_EXISTS.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (resp *csi.NodePublishVolumeResponse, err error) {
	start, direction := time.Now(), "unknown"
	defer func() { d.d.Metrics.Operation("publish", direction, status.Code(err).String(), time.Since(start)) }()

	spec, err := d.checkPublish(req)
	if err != nil {
		return nil, toStatus(err)
	}
	direction = string(spec.Direction)
	unlock, ok := d.lock(req.GetVolumeId())
	if !ok {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %s is in progress", req.GetVolumeId())
	}
	defer unlock()

	logger := klog.FromContext(ctx).WithValues("pod", klog.KRef(spec.Pod.Namespace, spec.Pod.Name), "direction", spec.Direction, "artifact", spec.Artifact)
	ctx = klog.NewContext(ctx, logger)
	fp := fingerprint(req)
	if spec.Direction == volume.Input {
		err = d.publishInput(ctx, req, spec, fp)
	} else {
		err = d.publishOutput(ctx, req, spec, fp)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	logger.V(2).Info("Published volume", "duration", time.Since(start))
	return &csi.NodePublishVolumeResponse{}, nil
}

// checkPublish validates everything a publish request says.
func (d *Driver) checkPublish(req *csi.NodePublishVolumeRequest) (*volume.Spec, error) {
	switch {
	case req.GetVolumeId() == "":
		return nil, fmt.Errorf("%w: volume id is required", errInvalidRequest)
	case !outputs.ValidID(req.GetVolumeId()):
		return nil, fmt.Errorf("%w: volume id %q: want at most 128 letters, digits, '.', '_' or '-'", errInvalidRequest, req.GetVolumeId())
	case req.GetTargetPath() == "":
		return nil, fmt.Errorf("%w: target path is required", errInvalidRequest)
	case req.GetVolumeCapability() == nil:
		return nil, fmt.Errorf("%w: volume capability is required", errInvalidRequest)
	case req.GetVolumeCapability().GetMount() == nil:
		return nil, fmt.Errorf("%w: only filesystem (mount) volumes are supported, not block", errInvalidRequest)
	}
	spec, err := volume.Parse(req.GetVolumeContext(), false)
	if err != nil {
		return nil, err
	}
	if _, err := volume.CheckTargetPath(d.o.KubeletDir, req.GetTargetPath(), spec.Pod.UID); err != nil {
		return nil, err
	}
	if spec.Direction == volume.Output && req.GetReadonly() {
		return nil, fmt.Errorf("%w: output volume %q is declared readOnly: remove readOnly, the pod must write its output", volume.ErrInvalid, spec.Artifact)
	}
	return spec, nil
}

// fingerprint identifies a publish request by everything but its secrets
// and the service-account tokens, which kubelet may refresh between calls.
func fingerprint(req *csi.NodePublishVolumeRequest) string {
	h := sha256.New()
	field := func(s string) { fmt.Fprintf(h, "%d:%s;", len(s), s) }
	field(req.GetTargetPath())
	field(strconv.FormatBool(req.GetReadonly()))
	m := req.GetVolumeCapability().GetMount()
	field(m.GetFsType())
	field(strings.Join(m.GetMountFlags(), ","))
	field(m.GetVolumeMountGroup())
	field(req.GetVolumeCapability().GetAccessMode().GetMode().String())
	keys := make([]string, 0, len(req.GetVolumeContext()))
	for k := range req.GetVolumeContext() {
		if k != volume.KeyServiceAccountTok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		field(k)
		field(req.GetVolumeContext()[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// settings resolves the configuration of a pod with annotations, and its
// credentials. An invalid value anywhere fails the volume, and is reported
// on the pod with its level, key and reason.
func (d *Driver) settings(ctx context.Context, req *csi.NodePublishVolumeRequest, spec *volume.Spec, annotations map[string]string) (config.Config, credentials.Snapshot, error) {
	cfg, err := d.d.Config.Config(ctx, spec.Pod.Namespace, annotations)
	if err != nil {
		var ke *config.KeyError
		if !errors.As(err, &ke) {
			return config.Config{}, credentials.Snapshot{}, fmt.Errorf("%w: configuration of namespace %s: %w", errNotYet, spec.Pod.Namespace, err)
		}
		err = fmt.Errorf("invalid artifact storage configuration for pod %s/%s: %w", spec.Pod.Namespace, spec.Pod.Name, err)
		d.warn(spec.Pod, record.ReasonInvalidConfig, err.Error())
		return config.Config{}, credentials.Snapshot{}, fmt.Errorf("%w: %w", errNotConfigured, err)
	}
	if d.d.Kube == nil || cfg.IsProvider() {
		// A provider trusts the namespace, not registry credentials: only
		// the volume's own secrets are kept (for a from: input whose
		// producer still pushed to a registry).
		creds, err := credentials.FromPublishSecrets(req.GetSecrets())
		return cfg, creds, err
	}
	creds, err := credentials.Collect(ctx, d.d.Kube, credentials.Sources{
		Publish: req.GetSecrets(), Namespace: spec.Pod.Namespace,
		CredentialsSecret: cfg.CredentialsSecret, ServiceAccount: spec.Pod.ServiceAccount,
	})
	switch {
	case err == nil, errors.Is(err, credentials.ErrInvalid):
	case apierrors.IsNotFound(err):
		err = fmt.Errorf("%w: %w", errNotConfigured, err)
	default:
		err = fmt.Errorf("%w: %w", errNotYet, err) // the API server will answer later
	}
	return cfg, creds, err
}

// warn reports a Warning on the pod, when the driver has an event sink.
func (d *Driver) warn(pod volume.Pod, reason, message string) {
	if d.d.Events != nil {
		d.d.Events.Warn(pod, reason, message)
	}
}

func (d *Driver) publishInput(ctx context.Context, req *csi.NodePublishVolumeRequest, spec *volume.Spec, fp string) error {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	d.mu.Lock()
	in := d.inputs[id]
	d.mu.Unlock()
	if in != nil && in.Fingerprint != fp {
		return fmt.Errorf("%w: volume %s is published already with different arguments", outputs.ErrConflict, id)
	}
	if in != nil && in.pinned {
		return d.mount(d.d.Cache.Path(in.CacheKey), target, true)
	}

	pod, err := d.pod(ctx, spec.Pod)
	if err != nil {
		return err
	}
	cfg, creds, err := d.settings(ctx, req, spec, pod.Annotations)
	if err != nil {
		return err
	}
	src, err := d.inputSource(ctx, req, spec, cfg, pod.Labels)
	if err != nil {
		return err
	}
	kc, err := creds.Keychain(ctx)
	if err != nil {
		return err
	}
	key := src.cacheKey()
	if cfg.VerifyAccess || !d.d.Cache.Has(key) || src.backend != "" {
		// Also on a cache hit: the cache must never give a pod what its
		// own credentials (or namespace) cannot read. (A miss is checked
		// here too, for a clear error before the fetch starts; a
		// provider, a local call away, is always asked, for the location
		// the record names.)
		if err := d.check(ctx, &src, kc); err != nil {
			return fmt.Errorf("input %q (%s): %w", spec.Artifact, src, err)
		}
	}
	path, hit, err := d.d.Cache.Acquire(ctx, key, d.fill(src, kc, cfg))
	if err != nil {
		return fmt.Errorf("input %q (%s): %w", spec.Artifact, src, err)
	}
	d.d.Metrics.CacheLookup(hit)
	rec := &inputVolume{ID: id, Fingerprint: fp, Target: target, Ref: src.String(), CacheKey: key, Pod: spec.Pod, pinned: true}
	// Not fsynced: mounts do not survive a node crash either.
	err = atomicfile.WriteJSON(filepath.Join(d.inputsDir(), id+".json"), rec, 0o600, false)
	if err == nil {
		err = d.mount(path, target, true)
	}
	if err != nil {
		os.Remove(filepath.Join(d.inputsDir(), id+".json"))
		d.d.Cache.Release(key)
		return err
	}
	d.mu.Lock()
	d.inputs[id] = rec // replacing at most an unpinned record
	d.mu.Unlock()
	d.recordInput(ctx, rec, spec, src)
	klog.FromContext(ctx).V(4).Info("Input ready", "ref", src, "cacheHit", hit)
	return nil
}

// inputSource returns what an input names: its ref, parsed for the
// configured backend (and scheme), or the artifact its from: resolves to.
func (d *Driver) inputSource(ctx context.Context, req *csi.NodePublishVolumeRequest, spec *volume.Spec, cfg config.Config, labels map[string]string) (source, error) {
	if spec.From != nil {
		src, err := d.resolveFrom(ctx, spec, cfg, labels)
		if errors.Is(err, errNotConfigured) {
			d.warn(spec.Pod, record.ReasonInputFailed, err.Error())
		}
		return src, err
	}
	raw := req.GetVolumeContext()[volume.AttrRef]
	switch {
	case cfg.IsProvider():
		return providerSource(cfg.Backend, spec.Pod.Namespace, raw)
	case !cfg.PlainHTTP:
		return source{oci: *spec.Ref}, nil
	}
	ref, err := oci.ParseReference(raw, true)
	if err != nil {
		return source{}, fmt.Errorf("%w: %w", volume.ErrInvalid, err)
	}
	return source{oci: ref}, nil
}

// recordTimeout bounds the record an output's publish writes, so that a
// slow API server does not hold the pod's start.
const recordTimeout = 5 * time.Second

func (d *Driver) recordInput(ctx context.Context, in *inputVolume, spec *volume.Spec, src source) {
	r := record.Record{VolumeID: in.ID, Direction: volume.Input, Artifact: spec.Artifact, Pod: spec.Pod,
		Backend: src.backend, Repository: src.Repository(), Digest: src.Digest(), Location: src.location, Phase: record.Consumed, Time: time.Now().UTC()}
	if err := d.d.Recorder.Record(ctx, r); err != nil {
		klog.FromContext(ctx).Error(err, "Could not record input")
	}
}

func (d *Driver) publishOutput(ctx context.Context, req *csi.NodePublishVolumeRequest, spec *volume.Spec, fp string) error {
	// A repeat needs neither configuration nor credentials, which may have
	// changed since.
	if dir, found, err := d.d.Outputs.Lookup(req.GetVolumeId(), fp); found || err != nil {
		if err != nil {
			return err
		}
		return d.mount(dir, req.GetTargetPath(), false)
	}
	pod, err := d.pod(ctx, spec.Pod)
	if err != nil {
		return err
	}
	cfg, creds, err := d.settings(ctx, req, spec, pod.Annotations)
	if err != nil {
		return err
	}
	labels := pod.Labels
	meta := artifact.Metadata{Name: spec.Artifact, Namespace: spec.Pod.Namespace, BuildOutput: spec.BuildOutput,
		TaskRun: labels[volume.LabelTaskRun], PipelineRun: labels[volume.LabelPipelineRun]}
	v := outputs.Volume{
		ID: req.GetVolumeId(), Fingerprint: fp, Pod: spec.Pod,
		Compression: cfg.Compression, MediaType: spec.MediaType, MaxBytes: cfg.MaxArtifactBytes, Metadata: meta,
	}
	if cfg.IsProvider() {
		// Content-addressed only: no tag, no registry, no referrers.
		v.Backend, v.Repository = cfg.Backend, cfg.ProviderScope(spec.Pod.Namespace).Repository
	} else if err := ociTarget(&v, cfg, spec, labels); err != nil {
		return err
	}
	gid := -1
	if g := req.GetVolumeCapability().GetMount().GetVolumeMountGroup(); g != "" {
		if gid, err = strconv.Atoi(g); err != nil || gid < 0 {
			return fmt.Errorf("%w: volume mount group %q is not a group id", errInvalidRequest, g)
		}
	}
	dir, err := d.d.Outputs.Publish(ctx, v, creds, gid)
	if err != nil {
		return err
	}
	// Pending from now, so that a from: consumer knows to wait. Best
	// effort, and bounded: the seal records it again.
	rctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	if err := d.d.Recorder.Record(rctx, record.Record{VolumeID: v.ID, Direction: volume.Output, Artifact: spec.Artifact, Pod: spec.Pod,
		Backend: v.Backend, Repository: v.Repository, Tag: v.Tag, BuildOutput: spec.BuildOutput, Phase: record.Pending, Time: time.Now().UTC()}); err != nil {
		klog.FromContext(ctx).Error(err, "Could not record output")
	}
	return d.mount(dir, req.GetTargetPath(), false)
}

// ociTarget sets where in a registry output v goes: the repository, its
// tag and the PipelineRun group its manifest refers to.
func ociTarget(v *outputs.Volume, cfg config.Config, spec *volume.Spec, labels map[string]string) error {
	if cfg.Repository == "" {
		return fmt.Errorf("%w: output %q: no repository for namespace %s: set %s in the config-artifact-storage ConfigMap",
			errNotConfigured, spec.Artifact, spec.Pod.Namespace, config.KeyRepository)
	}
	tag, err := artifact.Tag(cfg.TagPattern, artifact.TagVars{"namespace": spec.Pod.Namespace, "pod": spec.Pod.Name,
		"artifact": spec.Artifact, "taskrun": v.Metadata.TaskRun, "pipelinerun": v.Metadata.PipelineRun})
	if err != nil {
		return fmt.Errorf("%w: %s: %w", errNotConfigured, config.KeyTagPattern, err)
	}
	v.Repository, v.PlainHTTP, v.Tag = cfg.Repository, cfg.PlainHTTP, tag
	if uid := labels[volume.LabelPipelineRunUID]; cfg.GroupByPipelineRun && v.Metadata.PipelineRun != "" && uid != "" {
		v.Group = &artifact.Group{Namespace: spec.Pod.Namespace, PipelineRun: v.Metadata.PipelineRun, UID: uid}
	}
	return nil
}

// pod returns the pod of a volume from the cluster view: its labels say
// which TaskRun and PipelineRun it runs, its annotations carry the
// PipelineRun's configuration. Without an API client, or for a pod gone or
// replaced by another of the same name, it is empty.
func (d *Driver) pod(ctx context.Context, p volume.Pod) (*corev1.Pod, error) {
	if d.d.Cluster == nil {
		return &corev1.Pod{}, nil
	}
	pod, err := d.d.Cluster.Pod(ctx, p.Namespace, p.Name)
	switch {
	case apierrors.IsNotFound(err):
		return &corev1.Pod{}, nil
	case err != nil:
		return nil, fmt.Errorf("%w: read pod %s/%s: %w", errNotYet, p.Namespace, p.Name, err)
	case p.UID != "" && string(pod.UID) != p.UID:
		return &corev1.Pod{}, nil
	}
	return pod, nil
}

// mount bind-mounts source on target unless it is mounted there already,
// creating target if kubelet has not.
func (d *Driver) mount(source, target string, readOnly bool) error {
	if err := os.MkdirAll(target, 0o750); err != nil {
		return fmt.Errorf("create target path: %w", err)
	}
	mounted, err := d.d.Mounter.IsMountPoint(target)
	if err != nil || mounted {
		return err
	}
	return d.d.Mounter.BindMount(source, target, readOnly)
}

// NodeUnpublishVolume unmounts the target and removes it. An output is
// then sealed for upload, which runs in the background; an input's cache
// entry is unpinned. Unknown volumes and missing targets are fine: kubelet
// retries NOT_FOUND forever, so the call succeeds whenever nothing is left
// to do.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (resp *csi.NodeUnpublishVolumeResponse, err error) {
	start, direction := time.Now(), "unknown"
	defer func() { d.d.Metrics.Operation("unpublish", direction, status.Code(err).String(), time.Since(start)) }()
	id, target := req.GetVolumeId(), req.GetTargetPath()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume id is required")
	case target == "":
		return nil, status.Error(codes.InvalidArgument, "target path is required")
	case !underDir(filepath.Join(d.o.KubeletDir, "pods"), target):
		return nil, status.Errorf(codes.InvalidArgument, "target path %q is not under kubelet's pods directory %s", target, filepath.Join(d.o.KubeletDir, "pods"))
	}
	unlock, ok := d.lock(id)
	if !ok {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %s is in progress", id)
	}
	defer unlock()

	if err := d.d.Mounter.Unmount(target); err != nil {
		return nil, toStatus(fmt.Errorf("unmount %s: %w", target, err))
	}
	d.mu.Lock()
	in := d.inputs[id]
	d.mu.Unlock()
	switch {
	case in != nil:
		direction = string(volume.Input)
		if err := os.Remove(filepath.Join(d.inputsDir(), id+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, toStatus(err)
		}
		d.mu.Lock()
		delete(d.inputs, id)
		d.mu.Unlock()
		if in.pinned {
			d.d.Cache.Release(in.CacheKey)
		}
	case d.d.Outputs.Has(id):
		direction = string(volume.Output)
		if _, err := d.d.Outputs.Seal(ctx, id); err != nil {
			return nil, toStatus(err)
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, toStatus(fmt.Errorf("remove target path: %w", err))
	}
	klog.FromContext(ctx).V(2).Info("Unpublished volume", "direction", direction, "duration", time.Since(start))
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// underDir reports whether p is a clean absolute path strictly inside dir.
func underDir(dir, p string) bool {
	return filepath.IsAbs(p) && filepath.Clean(p) == p && strings.HasPrefix(p, filepath.Clean(dir)+string(filepath.Separator))
}
