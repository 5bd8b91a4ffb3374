package driver

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// recordTimeout bounds the record an output's publish writes, so that a
// slow API server does not hold the pod's start.
const recordTimeout = 5 * time.Second

// publishOutput creates the output volume of spec, or finds it on a
// repeat, and bind-mounts its directory read-write at the target path.
func (d *Driver) publishOutput(ctx context.Context, req *csi.NodePublishVolumeRequest, spec *volume.Spec, fp string) error {
	// A repeat needs neither configuration nor credentials, which may have
	// changed since.
	if dir, found, err := d.deps.Outputs.Lookup(req.GetVolumeId(), fp); found || err != nil {
		if err != nil {
			return err
		}
		return d.mount(dir, req.GetTargetPath(), false)
	}
	s, err := d.settings(ctx, req, spec)
	if err != nil {
		return err
	}
	cfg, labels := s.cfg, s.labels
	meta := artifact.Metadata{Name: spec.Artifact, Namespace: spec.Pod.Namespace, BuildOutput: spec.BuildOutput,
		TaskRun: labels[volume.LabelTaskRun], PipelineRun: labels[volume.LabelPipelineRun]}
	v := outputs.Volume{
		ID: req.GetVolumeId(), Fingerprint: fp, Pod: spec.Pod,
		Backend: cfg.Backend, Repository: cfg.RepositoryFor(spec.Pod.Namespace), PlainHTTP: cfg.PlainHTTP,
		Compression: cfg.Compression, MediaType: spec.MediaType, MaxBytes: cfg.MaxArtifactBytes, Metadata: meta,
	}
	if err := name(&v, cfg, spec, labels); err != nil {
		return err
	}
	gid := -1
	if g := req.GetVolumeCapability().GetMount().GetVolumeMountGroup(); g != "" {
		if gid, err = strconv.Atoi(g); err != nil || gid < 0 {
			return fmt.Errorf("%w: volume mount group %q is not a group id", errInvalidRequest, g)
		}
	}
	dir, err := d.deps.Outputs.Publish(ctx, v, s.creds, gid)
	if err != nil {
		return err
	}
	// Pending from now, so that a from: consumer knows to wait. Best
	// effort, and bounded: the seal records it again.
	rctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	if err := d.deps.Recorder.Record(rctx, record.Record{VolumeID: v.ID, Direction: volume.Output, Artifact: spec.Artifact, Pod: spec.Pod,
		Backend: v.Backend, Repository: v.Repository, Tag: v.Tag, BuildOutput: spec.BuildOutput, Phase: record.Pending, Time: time.Now().UTC()}); err != nil {
		klog.FromContext(ctx).Error(err, "Could not record output")
	}
	return d.mount(dir, req.GetTargetPath(), false)
}

// name checks that output v has a repository and names it beyond its
// digest: the tag and the PipelineRun group its manifest refers to, in a
// registry. A storage provider is content-addressed only: no tag, no
// referrers.
func name(v *outputs.Volume, cfg config.Config, spec *volume.Spec, labels map[string]string) error {
	if v.Repository == "" {
		return fmt.Errorf("%w: output %q: no repository for namespace %s: set %s in the config-artifact-storage ConfigMap",
			errNotConfigured, spec.Artifact, spec.Pod.Namespace, config.KeyRepository)
	}
	if cfg.IsProvider() {
		return nil
	}
	tag, err := artifact.Tag(cfg.TagPattern, artifact.TagVars{"namespace": spec.Pod.Namespace, "pod": spec.Pod.Name,
		"artifact": spec.Artifact, "taskrun": v.Metadata.TaskRun, "pipelinerun": v.Metadata.PipelineRun})
	if err != nil {
		return fmt.Errorf("%w: %s: %w", errNotConfigured, config.KeyTagPattern, err)
	}
	v.Tag = tag
	if uid := labels[volume.LabelPipelineRunUID]; cfg.GroupByPipelineRun && v.Metadata.PipelineRun != "" && uid != "" {
		v.Group = &artifact.Group{Namespace: spec.Pod.Namespace, PipelineRun: v.Metadata.PipelineRun, UID: uid}
	}
	return nil
}
