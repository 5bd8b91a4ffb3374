// Package tekton says which TaskRun and PipelineRun a pod runs for, from
// what only Tekton's controller and the API server write: object UIDs, a
// TaskRun's status.podName (and its retries'), a PipelineRun's
// status.childReferences. Labels, annotations and owner references, which
// whoever creates a pod or a TaskRun may set to anything, only say where
// to look: a claim they make holds only once the status of the object they
// name confirms it. Status is safe to trust because Tekton's CRDs have the
// status subresource and no aggregated role (edit, admin) grants it.
//
// Tekton's Go types are not needed: TaskRuns and PipelineRuns are read as
// unstructured tekton.dev/v1 objects.
package tekton

import (
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Kinds of Tekton's runs, read unstructured.
var (
	TaskRunGVK     = schema.GroupVersionKind{Group: "tekton.dev", Version: "v1", Kind: "TaskRun"}
	PipelineRunGVK = schema.GroupVersionKind{Group: "tekton.dev", Version: "v1", Kind: "PipelineRun"}
)

// Labels Tekton puts on the pods and TaskRuns it creates. They say where to
// look, never who a pod is.
const (
	LabelTaskRun        = "tekton.dev/taskRun"
	LabelTaskRunUID     = "tekton.dev/taskRunUID"
	LabelPipelineRun    = "tekton.dev/pipelineRun"
	LabelPipelineRunUID = "tekton.dev/pipelineRunUID"
	LabelPipelineTask   = "tekton.dev/pipelineTask"
)

// Ref names an object of the pod's namespace, and the one object of that
// name it was when it was checked.
type Ref struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

// Identity is what a pod runs for, as Tekton's state confirms it. The zero
// value is a plain pod: one that no TaskRun names.
type Identity struct {
	// TaskRun names the pod in status.podName (or in a retry's).
	TaskRun *Ref `json:"taskRun,omitempty"`
	// PipelineRun lists TaskRun in status.childReferences, as
	// PipelineTask.
	PipelineRun  *Ref   `json:"pipelineRun,omitempty"`
	PipelineTask string `json:"pipelineTask,omitempty"`
}

// TaskRunName is the name of the TaskRun, or "".
func (id Identity) TaskRunName() string { return refName(id.TaskRun) }

// PipelineRunName is the name of the PipelineRun, or "".
func (id Identity) PipelineRunName() string { return refName(id.PipelineRun) }

func refName(r *Ref) string {
	if r == nil {
		return ""
	}
	return r.Name
}

// NewTaskRun returns an empty TaskRun to read into.
func NewTaskRun() *unstructured.Unstructured { return newObject(TaskRunGVK) }

// NewPipelineRun returns an empty PipelineRun to read into.
func NewPipelineRun() *unstructured.Unstructured { return newObject(PipelineRunGVK) }

func newObject(gvk schema.GroupVersionKind) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	return u
}

// Pods returns the pods a TaskRun names as its own: status.podName, the
// current attempt's, first, then those of its earlier attempts
// (status.retriesStatus[].podName).
func Pods(tr *unstructured.Unstructured) []string {
	var pods []string
	if p, _, _ := unstructured.NestedString(tr.Object, "status", "podName"); p != "" {
		pods = append(pods, p)
	}
	retries, _, _ := unstructured.NestedSlice(tr.Object, "status", "retriesStatus")
	for _, r := range retries {
		if m, ok := r.(map[string]any); ok {
			if p, _ := m["podName"].(string); p != "" && !slices.Contains(pods, p) {
				pods = append(pods, p)
			}
		}
	}
	return pods
}

// CurrentPod is the pod of a TaskRun's current attempt, or "".
func CurrentPod(tr *unstructured.Unstructured) string {
	p, _, _ := unstructured.NestedString(tr.Object, "status", "podName")
	return p
}

// Done reads the Succeeded condition of a run (TaskRun or PipelineRun):
// done once it is True or False, at its completionTime (else the
// condition's transition time; zero when neither parses).
func Done(run *unstructured.Unstructured) (bool, time.Time) {
	conditions, _, _ := unstructured.NestedSlice(run.Object, "status", "conditions")
	for _, c := range conditions {
		m, _ := c.(map[string]any)
		if m["type"] != "Succeeded" || (m["status"] != "True" && m["status"] != "False") {
			continue
		}
		stamp, _, _ := unstructured.NestedString(run.Object, "status", "completionTime")
		if stamp == "" {
			stamp, _ = m["lastTransitionTime"].(string)
		}
		var t metav1.Time
		if err := t.UnmarshalQueryParameter(stamp); err != nil {
			return true, time.Time{}
		}
		return true, t.Time
	}
	return false, time.Time{}
}

// Child is a TaskRun a PipelineRun lists in status.childReferences.
type Child struct {
	Name, PipelineTask string
}

// Children returns the TaskRuns a PipelineRun lists in
// status.childReferences (CustomRuns are left out).
func Children(pr *unstructured.Unstructured) []Child {
	refs, _, _ := unstructured.NestedSlice(pr.Object, "status", "childReferences")
	var out []Child
	for _, r := range refs {
		m, _ := r.(map[string]any)
		name, _ := m["name"].(string)
		task, _ := m["pipelineTaskName"].(string)
		if kind, _ := m["kind"].(string); kind == TaskRunGVK.Kind && name != "" {
			out = append(out, Child{Name: name, PipelineTask: task})
		}
	}
	return out
}

// Ambiguous reports whether a PipelineRun lists more than one TaskRun for
// a pipeline task that has no matrix (its status.pipelineSpec says so):
// Tekton creates one TaskRun per such task, but adopts into
// childReferences any TaskRun labelled with the run's name and UID and
// owned by it (its recovery of lost status updates), so a second one was
// created by someone else to join the run. Without a pipelineSpec in the
// status it cannot tell, and answers false.
func Ambiguous(pr *unstructured.Unstructured, task string) bool {
	n := 0
	for _, c := range Children(pr) {
		if c.PipelineTask == task {
			n++
		}
	}
	if n < 2 {
		return false
	}
	for _, list := range []string{"tasks", "finally"} {
		tasks, _, _ := unstructured.NestedSlice(pr.Object, "status", "pipelineSpec", list)
		for _, t := range tasks {
			m, _ := t.(map[string]any)
			if m["name"] == task {
				return m["matrix"] == nil
			}
		}
	}
	return false
}

// ownerRun returns the controller owner reference of o of kind (a Tekton
// kind), if any: where Tekton's objects say their run is, to be checked.
func ownerRun(o metav1.Object, kind string) (metav1.OwnerReference, bool) {
	for _, ref := range o.GetOwnerReferences() {
		gv, err := schema.ParseGroupVersion(ref.APIVersion)
		if err == nil && gv.Group == TaskRunGVK.Group && ref.Kind == kind && ref.Controller != nil && *ref.Controller {
			return ref, true
		}
	}
	return metav1.OwnerReference{}, false
}
