package driver

import (
	"context"
	"fmt"
	"slices"
	"time"

	artifactsv1alpha1 "github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/cluster"
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
// has not pushed, FailedPrecondition once it cannot.
func (d *Driver) resolveFrom(ctx context.Context, spec *volume.Spec, labels map[string]string) (*artifactsv1alpha1.ArtifactRecord, error) {
	if d.deps.Cluster == nil {
		return nil, fmt.Errorf("%w: input %q: from: %s needs artifact records, and this node plugin has no API client; use ref: with the producer's digest",
			errNotConfigured, spec.Artifact, spec.From)
	}
	run := labels[volume.LabelPipelineRun]
	if run == "" {
		return nil, fmt.Errorf("%w: input %q: from: %s names a task of the same PipelineRun, but pod %s/%s has no %s label",
			volume.ErrInvalid, spec.Artifact, spec.From, spec.Pod.Namespace, spec.Pod.Name, volume.LabelPipelineRun)
	}
	ns, task := spec.Pod.Namespace, spec.From.PipelineTask
	producer, err := d.deps.Cluster.Producer(ctx, ns, run, task)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNotYet, err)
	}
	records, err := d.deps.Cluster.Outputs(ctx, ns, run, task, spec.From.Artifact)
	if err != nil {
		return nil, fmt.Errorf("%w: list artifact records: %w", errNotYet, err)
	}
	rec, outcome := decideFrom(records, producer, time.Now())
	switch outcome {
	case fromPushed:
		return rec, nil
	case fromFailed:
		return nil, fmt.Errorf("%w: input %q: %s of PipelineRun %s could not be pushed: %s",
			errNotConfigured, spec.Artifact, spec.From, run, rec.Status.Message)
	case fromNever:
		return nil, fmt.Errorf("%w: input %q: the TaskRun of task %q in PipelineRun %s finished at %s without producing output %q: does its Task mount an output volume with artifact %q?",
			errNotConfigured, spec.Artifact, task, run, producer.FinishedAt.UTC().Format(time.RFC3339), spec.From.Artifact, spec.From.Artifact)
	}
	return nil, fmt.Errorf("%w: input %q: waiting for %s of PipelineRun %s to be pushed", errNotYet, spec.Artifact, spec.From, run)
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
// producer task, the one that answers it, as of now. When Tekton has
// TaskRuns for the task, only the records of the pods they name in
// status.podName count: a retried TaskRun's earlier attempts pushed
// outputs too, and the consumer must get the last attempt's (and wait for
// it). Of the records left, the latest Pushed one wins, then a Failed one;
// Pending or none means waiting, until the producer has been finished for
// longer than producerGrace without any record.
func decideFrom(records []artifactsv1alpha1.ArtifactRecord, producer cluster.Producer, now time.Time) (*artifactsv1alpha1.ArtifactRecord, fromOutcome) {
	if producer.TaskRuns > 0 {
		records = slices.DeleteFunc(slices.Clone(records), func(r artifactsv1alpha1.ArtifactRecord) bool {
			return !slices.Contains(producer.Pods, r.Spec.Pod.Name)
		})
	}
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
	switch {
	case pushed != nil:
		return pushed, fromPushed
	case failed != nil:
		return failed, fromFailed
	case len(records) == 0 && producer.Done && now.Sub(producer.FinishedAt) > producerGrace:
		return nil, fromNever
	}
	return nil, fromWaiting
}
