package driver

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/go-containerregistry/pkg/name"
	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/store"
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
	if dir, found, err := d.deps.Outputs.Lookup(ctx, req.GetVolumeId(), fp); found || err != nil {
		if err != nil {
			return err
		}
		return d.mount(dir, req.GetTargetPath(), false)
	}
	s, err := d.settings(ctx, req, spec)
	if err != nil {
		return err
	}
	cfg := s.cfg
	meta := artifact.Metadata{Name: spec.Artifact, Namespace: spec.Pod.Namespace, BuildOutput: spec.BuildOutput,
		TaskRun: s.id.TaskRunName(), PipelineRun: s.id.PipelineRunName()}
	v := outputs.Volume{
		ID: req.GetVolumeId(), Fingerprint: fp, Pod: spec.Pod, Owner: s.id,
		Backend: cfg.Backend, Repository: cfg.RepositoryFor(spec.Pod.Namespace), PlainHTTP: cfg.PlainHTTP,
		Compression: cfg.Compression, Format: cfg.Format, MediaType: spec.MediaType, MaxBytes: cfg.MaxArtifactBytes, Metadata: meta,
	}
	if err := nameOutput(&v, cfg, spec); err != nil {
		return err
	}
	gid := -1
	if g := req.GetVolumeCapability().GetMount().GetVolumeMountGroup(); g != "" {
		if gid, err = strconv.Atoi(g); err != nil || gid < 0 {
			return fmt.Errorf("%w: volume mount group %q is not a group id", errInvalidRequest, g)
		}
	}
	creds, err := pushCredentials(ctx, v, s.creds)
	if err != nil {
		return err
	}
	dir, err := d.deps.Outputs.Publish(ctx, v, creds, gid)
	if err != nil {
		return err
	}
	// Pending from now, so that a from: consumer knows to wait. Best
	// effort, and bounded: the seal records it again.
	rctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	if err := d.deps.Recorder.Record(rctx, record.Record{VolumeID: v.ID, Direction: volume.Output, Artifact: spec.Artifact, Pod: spec.Pod, Owner: v.Owner,
		Backend: v.Backend, Repository: v.Repository, Tag: v.Tag, BuildOutput: spec.BuildOutput, Phase: record.Pending, Time: time.Now().UTC()}); err != nil {
		klog.FromContext(ctx).Error(err, "Could not record output")
	}
	return d.mount(dir, req.GetTargetPath(), false)
}

// pushCredentials returns what of creds output v's push needs: for a
// registry, the one entry that authenticates to its repository (kept on
// disk until the push, so the less the better); for a provider, nothing.
func pushCredentials(ctx context.Context, v outputs.Volume, creds credentials.Snapshot) (credentials.Snapshot, error) {
	if v.Backend != store.OCI {
		return credentials.Snapshot{}, nil
	}
	repo, err := name.NewRepository(v.Repository)
	if err != nil {
		return credentials.Snapshot{}, fmt.Errorf("%w: %s: %w", errNotConfigured, config.KeyRepository, err)
	}
	return creds.For(ctx, repo)
}

// nameOutput checks that output v has a repository and names it beyond its
// digest: the tag and the PipelineRun group its manifest refers to, in a
// registry, both from the verified identity (v.Owner). A storage provider
// is content-addressed only: no tag, no referrers.
func nameOutput(v *outputs.Volume, cfg config.Config, spec *volume.Spec) error {
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
	if run := v.Owner.PipelineRun; cfg.GroupByPipelineRun && run != nil {
		v.Group = &artifact.Group{Namespace: spec.Pod.Namespace, PipelineRun: run.Name, UID: run.UID}
	}
	return nil
}
