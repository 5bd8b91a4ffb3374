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

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

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
	defer func() { d.deps.Metrics.Operation("publish", direction, status.Code(err).String(), time.Since(start)) }()

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
		d.limitHit(spec.Pod, err)
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
	case !volume.ValidID(req.GetVolumeId()):
		return nil, fmt.Errorf("%w: volume id %q: want at most 128 letters, digits, '.', '_' or '-'", errInvalidRequest, req.GetVolumeId())
	case req.GetTargetPath() == "":
		return nil, fmt.Errorf("%w: target path is required", errInvalidRequest)
	case req.GetVolumeCapability() == nil:
		return nil, fmt.Errorf("%w: volume capability is required", errInvalidRequest)
	case req.GetVolumeCapability().GetMount() == nil:
		return nil, fmt.Errorf("%w: only filesystem (mount) volumes are supported, not block", errInvalidRequest)
	}
	spec, err := volume.Parse(req.GetVolumeContext())
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

// settings is what a publish learns from the cluster about a volume's
// pod.
type settings struct {
	// id is what the pod runs for, as Tekton's state confirms it.
	id    tekton.Identity
	cfg   config.Config
	creds credentials.Snapshot
}

// settings reads the volume's pod, identifies it from Tekton's state,
// resolves its configuration (with its run's annotations) and collects
// its credentials. An invalid value anywhere fails the volume, and is
// reported on the pod with its level, key and reason.
func (d *Driver) settings(ctx context.Context, req *csi.NodePublishVolumeRequest, spec *volume.Spec) (settings, error) {
	pod, err := d.pod(ctx, spec.Pod)
	if err != nil {
		return settings{}, err
	}
	who, err := d.identify(ctx, spec.Pod, pod)
	if err != nil {
		return settings{}, err
	}
	s := settings{id: who.Identity}
	if s.cfg, err = d.deps.Config.Config(ctx, spec.Pod.Namespace, who.Annotations); err != nil {
		var ke *config.KeyError
		if !errors.As(err, &ke) {
			return settings{}, fmt.Errorf("%w: configuration of namespace %s: %w", errNotYet, spec.Pod.Namespace, err)
		}
		err = fmt.Errorf("invalid artifact storage configuration for pod %s/%s: %w", spec.Pod.Namespace, spec.Pod.Name, err)
		d.warn(spec.Pod, record.ReasonInvalidConfig, err.Error())
		return settings{}, fmt.Errorf("%w: %w", errNotConfigured, err)
	}
	if s.creds, err = credentials.FromPublishSecrets(req.GetSecrets()); err != nil || d.deps.Credentials == nil || s.cfg.IsProvider() {
		// A provider trusts the namespace, not registry credentials: only
		// the volume's own secrets are kept (for a from: input whose
		// producer still pushed to a registry).
		return s, err
	}
	more, err := d.deps.Credentials.Credentials(ctx, spec.Pod)
	if err != nil {
		return settings{}, fmt.Errorf("credentials of pod %s/%s: %w", spec.Pod.Namespace, spec.Pod.Name, err)
	}
	s.creds = s.creds.Join(more)
	return s, nil
}

// identify says what pod runs for, from Tekton's state (never from its
// labels alone); a claim Tekton's state refutes is reported on the pod and
// ignored. Without Tekton (no API client), every pod is plain.
func (d *Driver) identify(ctx context.Context, p volume.Pod, pod *corev1.Pod) (tekton.Result, error) {
	if d.deps.Tekton == nil || pod.UID == "" {
		return tekton.Result{Annotations: pod.Annotations}, nil
	}
	who, err := d.deps.Tekton.Identify(ctx, pod)
	if err != nil {
		return tekton.Result{}, fmt.Errorf("identify pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	if who.Refused != "" {
		klog.FromContext(ctx).Info("Ignoring what the pod claims to run for", "reason", who.Refused)
		d.warn(p, record.ReasonIdentityRefused, who.Refused+"; the claim is ignored")
	}
	return who, nil
}

// limitHit counts err and reports it on the pod when it hit one of the
// driver's bounds (errdefs.Limit, or an artifact's limits): which bound,
// and how to raise it.
func (d *Driver) limitHit(pod volume.Pod, err error) {
	if errors.Is(err, archive.ErrLimitExceeded) {
		if _, _, ok := errdefs.LimitOf(err); !ok {
			err = errdefs.Limit("artifact limits", "maxArtifactBytes, in the namespace's config-artifact-storage ConfigMap, raises the size bound up to the cluster's ceiling; the entry and path-length bounds are fixed", err)
		}
	}
	if bound, _, ok := errdefs.LimitOf(err); ok {
		d.deps.Metrics.LimitHit(bound)
		d.warn(pod, record.ReasonLimitExceeded, err.Error())
	}
}

// warn reports a Warning on the pod, when the driver has an event sink.
func (d *Driver) warn(pod volume.Pod, reason, message string) {
	if d.deps.Events != nil {
		d.deps.Events.Warn(pod, reason, message)
	}
}

// pod returns the pod of a volume from the cluster view. Without an API
// client, or for a pod gone or replaced by another of the same name, it is
// empty.
func (d *Driver) pod(ctx context.Context, p volume.Pod) (*corev1.Pod, error) {
	if d.deps.Cluster == nil {
		return &corev1.Pod{}, nil
	}
	pod, err := d.deps.Cluster.Pod(ctx, p.Namespace, p.Name)
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
	mounted, err := d.deps.Mounter.IsMountPoint(target)
	if err != nil || mounted {
		return err
	}
	return d.deps.Mounter.BindMount(source, target, readOnly)
}

// NodeUnpublishVolume unmounts the target and removes it. An output is
// then sealed for upload, which runs in the background; an input's cache
// entry is unpinned. Unknown volumes and missing targets are fine: kubelet
// retries NOT_FOUND forever, so the call succeeds whenever nothing is left
// to do.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (resp *csi.NodeUnpublishVolumeResponse, err error) {
	start, direction := time.Now(), "unknown"
	defer func() { d.deps.Metrics.Operation("unpublish", direction, status.Code(err).String(), time.Since(start)) }()
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

	if err := d.deps.Mounter.Unmount(target); err != nil {
		return nil, toStatus(fmt.Errorf("unmount %s: %w", target, err))
	}
	switch {
	case d.hasInput(id):
		direction = string(volume.Input)
		if err := d.unpublishInput(id); err != nil {
			return nil, toStatus(err)
		}
	case d.deps.Outputs.Has(id):
		direction = string(volume.Output)
		if _, err := d.deps.Outputs.Seal(ctx, id); err != nil {
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
