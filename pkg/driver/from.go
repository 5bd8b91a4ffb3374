package driver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	artifactsv1alpha1 "github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// producerGrace is how long after its producer's TaskRun finished a from:
// input waits for a record that was never written. The record is written
// when the producer's volume is published, so this only covers an API
// server that refused it then; the seal, about a second after the TaskRun
// finishes, writes it again.
const producerGrace = 30 * time.Second

// resolveFrom finds the producer's output record in the consumer's
// PipelineRun (decideFrom says which, and what the answer is): the record
// of the pushed output, Unavailable (kubelet retries) while the producer
// has not pushed, FailedPrecondition once it cannot. The PipelineRun is
// the one Tekton's state confirmed for the consumer (id), by UID; the
// producers are only the TaskRuns it lists in status.childReferences.
func (d *Driver) resolveFrom(ctx context.Context, spec *volume.Spec, id tekton.Identity) (*artifactsv1alpha1.ArtifactRecord, error) {
	if d.deps.Cluster == nil || d.deps.Tekton == nil {
		return nil, fmt.Errorf("%w: input %q: from: %s needs artifact records, and this node plugin has no API client; use ref: with the producer's digest",
			errNotConfigured, spec.Artifact, spec.From)
	}
	run := id.PipelineRun
	if run == nil {
		return nil, fmt.Errorf("%w: input %q: from: %s names a task of the same PipelineRun, but pod %s/%s is not part of one (no PipelineRun lists its TaskRun in status.childReferences)",
			volume.ErrInvalid, spec.Artifact, spec.From, spec.Pod.Namespace, spec.Pod.Name)
	}
	ns, task := spec.Pod.Namespace, spec.From.PipelineTask
	producer, err := d.deps.Tekton.Producer(ctx, ns, *run, task)
	if errors.Is(err, tekton.ErrAmbiguous) || errors.Is(err, tekton.ErrRunReplaced) {
		return nil, fmt.Errorf("%w: input %q: %w", errNotConfigured, spec.Artifact, err)
	}
	if err != nil {
		return nil, fmt.Errorf("input %q: %w", spec.Artifact, err)
	}
	var records []artifactsv1alpha1.ArtifactRecord
	for _, r := range producer.Runs {
		rs, err := d.deps.Cluster.Outputs(ctx, ns, r.TaskRun.UID, spec.From.Artifact)
		if err != nil {
			return nil, fmt.Errorf("%w: list artifact records: %w", errNotYet, err)
		}
		records = append(records, rs...)
	}
	rec, outcome := decideFrom(records, producer, time.Now())
	switch outcome {
	case fromPushed:
		return rec, nil
	case fromFailed:
		return nil, fmt.Errorf("%w: input %q: %s of PipelineRun %s could not be pushed: %s",
			errNotConfigured, spec.Artifact, spec.From, run.Name, rec.Status.Message)
	case fromNever:
		return nil, fmt.Errorf("%w: input %q: task %q of PipelineRun %s finished without producing output %q: does its Task mount an output volume with artifact %q?",
			errNotConfigured, spec.Artifact, task, run.Name, spec.From.Artifact, spec.From.Artifact)
	}
	return nil, fmt.Errorf("%w: input %q: waiting for %s of PipelineRun %s to be pushed", errNotYet, spec.Artifact, spec.From, run.Name)
}

// fromOutcome is what a from: input's producer has done so far.
type fromOutcome int

const (
	// fromWaiting: the output will be pushed, or may still be.
	fromWaiting fromOutcome = iota
	// fromPushed: the record names the output to mount.
	fromPushed
	// fromFailed: the record says the push failed for good.
	fromFailed
	// fromNever: the producer finished more than producerGrace ago
	// without a record of that output.
	fromNever
)

// decideFrom chooses, among the output records of a from: input's
// producer task, the one that answers it, as of now. Only the records of
// the producer's TaskRuns (by UID) written for the pod of their current
// attempt count: a retried TaskRun's earlier attempts pushed outputs too,
// and the consumer must get the last attempt's (and wait for it). Of
// those, the latest Pushed one wins, then a Failed one; Pending or none
// means waiting, until every producer TaskRun has been finished for longer
// than producerGrace without any record (or the PipelineRun finished
// without running the task).
func decideFrom(records []artifactsv1alpha1.ArtifactRecord, producer tekton.Producer, now time.Time) (*artifactsv1alpha1.ArtifactRecord, fromOutcome) {
	records = slices.DeleteFunc(slices.Clone(records), func(r artifactsv1alpha1.ArtifactRecord) bool {
		return r.Spec.TaskRun == nil || !slices.ContainsFunc(producer.Runs, func(p tekton.ProducerRun) bool {
			return p.TaskRun.UID == r.Spec.TaskRun.UID && p.Pod != "" && p.Pod == r.Spec.Pod.Name
		})
	})
	var pushed, failed *artifactsv1alpha1.ArtifactRecord
	for i := range records {
		r := &records[i]
		switch r.Status.Phase {
		case artifactsv1alpha1.Pushed:
			if pushed == nil || pushed.Status.LastUpdateTime.Before(&r.Status.LastUpdateTime) {
				pushed = r
			}
		case artifactsv1alpha1.Failed:
			failed = r
		}
	}
	done, at := producer.Done()
	switch {
	case pushed != nil:
		return pushed, fromPushed
	case failed != nil:
		return failed, fromFailed
	case len(records) == 0 && done && now.Sub(at) > producerGrace:
		return nil, fromNever
	}
	return nil, fromWaiting
}
