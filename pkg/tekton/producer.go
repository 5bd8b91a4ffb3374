package tekton

import (
	"context"
	"fmt"
	"time"

	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
)

// ErrAmbiguous says a PipelineRun lists a TaskRun for a task that only
// Tekton should have created (see Ambiguous).
var ErrAmbiguous = errdefs.New("a TaskRun not created by Tekton joined the PipelineRun", errdefs.ErrPrecondition)

// ErrRunReplaced says a PipelineRun no longer exists as the object a pod
// was verified against: deleted, or replaced by another of the same name.
var ErrRunReplaced = errdefs.New("the PipelineRun is gone or was replaced", errdefs.ErrPrecondition)

// Producer is what Tekton says of a pipeline task of a PipelineRun.
type Producer struct {
	// Runs are the TaskRuns the PipelineRun lists for the task, as
	// status.childReferences does: several for a matrix task, none before
	// the task started (or when it was skipped).
	Runs []ProducerRun
	// PipelineRunDone: the PipelineRun has finished, so no more Runs will
	// come.
	PipelineRunDone bool
}

// ProducerRun is one TaskRun of a producer task.
type ProducerRun struct {
	TaskRun Ref
	// Pod is the pod of its current attempt (status.podName): only that
	// pod's outputs are the TaskRun's (a retried attempt's are not).
	Pod string
	// Done: it finished (Succeeded True or False), at FinishedAt.
	Done       bool
	FinishedAt time.Time
}

// Done reports whether every run of the task has finished, and when the
// last did. A task that no run was listed for is done when its
// PipelineRun is.
func (p Producer) Done() (bool, time.Time) {
	if len(p.Runs) == 0 {
		return p.PipelineRunDone, time.Time{}
	}
	var last time.Time
	for _, r := range p.Runs {
		if !r.Done {
			return false, time.Time{}
		}
		if r.FinishedAt.After(last) {
			last = r.FinishedAt
		}
	}
	return true, last
}

// Producer reads, from the API server, the TaskRuns that PipelineRun run
// (checked by UID) lists for task in status.childReferences. A TaskRun
// that is not controlled by that PipelineRun (the name was reused) is
// left out; several for a task without a matrix are ErrAmbiguous.
func (r *Resolver) Producer(ctx context.Context, namespace string, run Ref, task string) (Producer, error) {
	pr := NewPipelineRun()
	found, err := r.get(ctx, namespace, run.Name, run.UID, pr)
	switch {
	case err != nil:
		return Producer{}, err
	case !found:
		return Producer{}, fmt.Errorf("%w: PipelineRun %s/%s", ErrRunReplaced, namespace, describe(run.Name, run.UID))
	}
	if Ambiguous(pr, task) {
		return Producer{}, fmt.Errorf("%w: PipelineRun %s lists several TaskRuns for task %q, which has no matrix", ErrAmbiguous, run.Name, task)
	}
	p := Producer{}
	p.PipelineRunDone, _ = Done(pr)
	for _, c := range Children(pr) {
		if c.PipelineTask != task {
			continue
		}
		tr := NewTaskRun()
		found, err := r.get(ctx, namespace, c.Name, "", tr)
		if err != nil {
			return Producer{}, err
		}
		if owner, ok := ownerRun(tr, PipelineRunGVK.Kind); !found || !ok || string(owner.UID) != run.UID {
			continue
		}
		done, at := Done(tr)
		p.Runs = append(p.Runs, ProducerRun{TaskRun: Ref{Name: tr.GetName(), UID: string(tr.GetUID())},
			Pod: CurrentPod(tr), Done: done, FinishedAt: at})
	}
	return p, nil
}
