package tekton

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
)

// DefaultWait is Resolver.Wait's default.
const DefaultWait = time.Minute

// ErrNotRecorded says Tekton has not yet written the status that would
// confirm (or refute) what a pod claims; asking again later will tell.
var ErrNotRecorded = errdefs.New("not recorded by Tekton yet", errdefs.ErrUnavailable)

// Resolver identifies pods by reading Tekton's runs from the API server.
// It is safe for concurrent use.
type Resolver struct {
	// Reader reads TaskRuns and PipelineRuns. It should read the API
	// server, not a cache, so that a status Tekton just wrote is seen.
	// Required.
	Reader client.Reader
	// Wait bounds how long after a pod (or its TaskRun) was created
	// Identify keeps answering ErrNotRecorded while the run it claims is
	// still running and has not recorded it yet (a TaskRun naming no pod,
	// as while it starts or retries; a PipelineRun not listing the
	// TaskRun); after that the claim is refused and the pod is plain (the
	// TaskRun standalone). A TaskRun that names another pod refutes the
	// claim at once. Tekton writes status.podName in the
	// reconcile that creates the pod, and childReferences in the one that
	// creates the TaskRun, normally well within a second. Default
	// DefaultWait.
	Wait time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
}

// Result is what Identify found.
type Result struct {
	Identity
	// Annotations are the configuration annotations of the verified run:
	// the PipelineRun's (Tekton merges its Pipeline's under them), else
	// the TaskRun's, else, for a plain pod, the pod's own.
	Annotations map[string]string
	// Refused explains a claim that Tekton's state contradicts (the pod's
	// labels or owner name a TaskRun that does not name it, or a TaskRun
	// names a PipelineRun that does not list it); "" when there was none
	// or it held.
	Refused string
}

// Identify says which TaskRun and PipelineRun pod runs for. A pod is a
// TaskRun's only when that TaskRun, found by the pod's controller owner
// reference (else its tekton.dev/taskRun label) and of the same UID when
// the reference gives one, names the pod in its status; the TaskRun is a
// PipelineRun's only when that PipelineRun, found the same way from the
// TaskRun, lists it in status.childReferences. A claim by owner reference
// (Tekton always sets one) that Tekton's state does not confirm yet, while
// the run is young and still running, gets ErrNotRecorded; a claim by
// label alone, or one Tekton's state contradicts, is refused
// (Result.Refused) and leaves the pod plain or the TaskRun standalone.
// Without Tekton's CRDs every pod is plain.
func (r *Resolver) Identify(ctx context.Context, pod *corev1.Pod) (Result, error) {
	res := Result{Annotations: pod.Annotations}
	name, uid, owned := claim(pod, "TaskRun", LabelTaskRun)
	if name == "" {
		return res, nil
	}
	tr := NewTaskRun()
	found, err := r.get(ctx, pod.Namespace, name, uid, tr)
	switch {
	case err != nil:
		return Result{}, err
	case !found:
		res.Refused = fmt.Sprintf("pod claims TaskRun %s, which does not exist", describe(name, uid))
		return res, nil
	}
	if !slices.Contains(Pods(tr), pod.Name) {
		// Tekton clears status.podName when it retries, and names the new
		// pod in the reconcile that creates it.
		if done, _ := Done(tr); owned && !done && CurrentPod(tr) == "" && r.young(pod.CreationTimestamp) {
			return Result{}, fmt.Errorf("%w: TaskRun %s does not name pod %s in status.podName", ErrNotRecorded, name, pod.Name)
		}
		res.Refused = fmt.Sprintf("TaskRun %s does not name pod %s as its own (status.podName)", name, pod.Name)
		return res, nil
	}
	res.TaskRun = &Ref{Name: tr.GetName(), UID: string(tr.GetUID())}
	res.Annotations = tr.GetAnnotations()

	name, uid, owned = claim(tr, "PipelineRun", LabelPipelineRun)
	if name == "" {
		return res, nil
	}
	pr := NewPipelineRun()
	if found, err = r.get(ctx, pod.Namespace, name, uid, pr); err != nil {
		return Result{}, err
	}
	children, i := Children(pr), -1
	if found {
		i = slices.IndexFunc(children, func(c Child) bool { return c.Name == tr.GetName() })
	}
	if i < 0 {
		if done, _ := Done(pr); owned && found && !done && r.young(tr.GetCreationTimestamp()) {
			return Result{}, fmt.Errorf("%w: PipelineRun %s does not list TaskRun %s in status.childReferences", ErrNotRecorded, name, tr.GetName())
		}
		res.Refused = fmt.Sprintf("TaskRun %s claims PipelineRun %s, which does not list it (status.childReferences)", tr.GetName(), describe(name, uid))
		return res, nil
	}
	task := children[i].PipelineTask
	if Ambiguous(pr, task) {
		res.Refused = fmt.Sprintf("PipelineRun %s lists several TaskRuns for task %q, which has no matrix: one was not created by Tekton", name, task)
		return res, nil
	}
	res.PipelineRun = &Ref{Name: pr.GetName(), UID: string(pr.GetUID())}
	res.PipelineTask = task
	res.Annotations = pr.GetAnnotations()
	return res, nil
}

// claim returns the run o says it belongs to: its controller owner
// reference of kind (with the UID; owned), else its label.
func claim(o metav1.Object, kind, label string) (name, uid string, owned bool) {
	if ref, ok := ownerRun(o, kind); ok {
		return ref.Name, string(ref.UID), true
	}
	return o.GetLabels()[label], "", false
}

// get reads run namespace/name into obj, and reports whether it exists
// with uid (any UID when uid is ""). No Tekton CRDs means no run.
func (r *Resolver) get(ctx context.Context, namespace, name, uid string, obj *unstructured.Unstructured) (bool, error) {
	err := r.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, obj)
	switch {
	case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
		return false, nil
	case err != nil:
		return false, errdefs.Classify(fmt.Errorf("read %s %s/%s: %w", obj.GetKind(), namespace, name, err), errdefs.ErrUnavailable)
	}
	return uid == "" || string(obj.GetUID()) == uid, nil
}

// young reports whether an object created at t is within the wait.
func (r *Resolver) young(t metav1.Time) bool {
	now, wait := time.Now, r.Wait
	if r.Now != nil {
		now = r.Now
	}
	if wait <= 0 {
		wait = DefaultWait
	}
	return now().Sub(t.Time) < wait
}

func describe(name, uid string) string {
	if uid == "" {
		return name
	}
	return fmt.Sprintf("%s (uid %s)", name, uid)
}
