package e2e

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tektoncd/artifacts-csi-driver/internal/testkit"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
)

// create creates the objects of a YAML stream (documents separated by
// "---" lines) in ns and returns them as the API server stored them.
func create(t *testing.T, ns, manifest string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	for doc := range strings.SplitSeq(manifest, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		obj.SetNamespace(ns)
		if err := c.Create(t.Context(), obj); err != nil {
			t.Fatalf("create %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
		objs = append(objs, obj)
	}
	return objs
}

// get reads obj again from the API server.
func get(t *testing.T, obj *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	return obj
}

// condition returns the status and reason of a Tekton object's Succeeded
// condition ("" while it has none).
func condition(obj *unstructured.Unstructured) (status, reason string) {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, cond := range conds {
		if m, _ := cond.(map[string]any); m["type"] == "Succeeded" {
			status, _ = m["status"].(string)
			reason, _ = m["reason"].(string)
		}
	}
	return status, reason
}

// waitDone waits for a PipelineRun or TaskRun to finish and returns the
// reason of its Succeeded condition (Succeeded, Failed, TaskRunCancelled,
// TaskRunTimeout, ...).
func waitDone(t *testing.T, obj *unstructured.Unstructured, timeout time.Duration) string {
	t.Helper()
	var reason string
	waitFor(t, obj.GetKind()+" "+obj.GetName()+" to finish", timeout, func() (bool, error) {
		if err := c.Get(t.Context(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return false, err
		}
		var status string
		status, reason = condition(obj)
		return status == "True" || status == "False", nil
	})
	return reason
}

// wantSucceeded waits for a PipelineRun or TaskRun and fails the test
// unless it succeeded.
func wantSucceeded(t *testing.T, obj *unstructured.Unstructured) {
	t.Helper()
	if reason := waitDone(t, obj, 5*time.Minute); reason != "Succeeded" && reason != "Completed" {
		t.Fatalf("%s %s finished with %s", obj.GetKind(), obj.GetName(), reason)
	}
}

// taskRun returns the TaskRun of a PipelineRun's pipeline task, as the
// PipelineRun lists it in status.childReferences.
func taskRun(t *testing.T, pr *unstructured.Unstructured, pipelineTask string) *unstructured.Unstructured {
	t.Helper()
	children, _, _ := unstructured.NestedSlice(get(t, pr).Object, "status", "childReferences")
	for _, child := range children {
		m, _ := child.(map[string]any)
		if m["pipelineTaskName"] == pipelineTask && m["kind"] == "TaskRun" {
			tr := &unstructured.Unstructured{}
			tr.SetAPIVersion("tekton.dev/v1")
			tr.SetKind("TaskRun")
			tr.SetNamespace(pr.GetNamespace())
			tr.SetName(m["name"].(string))
			return get(t, tr)
		}
	}
	t.Fatalf("PipelineRun %s has no TaskRun for %s: %v", pr.GetName(), pipelineTask, children)
	return nil
}

// podName is the pod a TaskRun runs in now (its last attempt's).
func podName(tr *unstructured.Unstructured) string {
	name, _, _ := unstructured.NestedString(tr.Object, "status", "podName")
	return name
}

// stepLog returns what a step of a TaskRun's current pod printed.
func stepLog(t *testing.T, tr *unstructured.Unstructured, step string) string {
	t.Helper()
	return containerLog(t, tr.GetNamespace(), podName(get(t, tr)), "step-"+step)
}

func containerLog(t *testing.T, ns, pod, container string) string {
	b, err := kube.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(t.Context())
	if err != nil {
		return fmt.Sprintf("(no log of %s/%s: %v)", pod, container, err)
	}
	return string(b)
}

// artifacts returns a TaskRun's status.artifacts.<field> (inputs or
// outputs) once the controller has written the named artifacts there.
func artifacts(t *testing.T, tr *unstructured.Unstructured, field string, names ...string) []any {
	t.Helper()
	var list []any
	waitFor(t, fmt.Sprintf("%v in status.artifacts.%s of TaskRun %s", names, field, tr.GetName()), 2*time.Minute, func() (bool, error) {
		if err := c.Get(t.Context(), client.ObjectKeyFromObject(tr), tr); err != nil {
			return false, err
		}
		list, _, _ = unstructured.NestedSlice(tr.Object, "status", "artifacts", field)
		var got []string
		for _, a := range list {
			m, _ := a.(map[string]any)
			got = append(got, fmt.Sprint(m["name"]))
		}
		for _, n := range names {
			if !slices.Contains(got, n) {
				return false, nil
			}
		}
		return true, nil
	})
	return list
}

// records returns a namespace's ArtifactRecords of a direction and
// artifact, waiting until count of them are in phase.
func records(t *testing.T, ns, artifact string, dir v1alpha1.Direction, phase v1alpha1.Phase, count int) []v1alpha1.ArtifactRecord {
	t.Helper()
	return testkit.WaitForRecords(t, c, ns, count, 2*time.Minute, func(r *v1alpha1.ArtifactRecord) bool {
		return r.Spec.Artifact == artifact && r.Spec.Direction == dir && r.Status.Phase == phase
	})
}

// diagnose writes what explains a failed test: the namespace's Tekton
// objects, records and events, and the logs of Tekton's controller and of
// the driver's pods since the test started.
func diagnose(t *testing.T, ns string, since time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var b strings.Builder
	for _, kind := range []string{"PipelineRun", "TaskRun"} {
		list := &unstructured.UnstructuredList{}
		list.SetAPIVersion("tekton.dev/v1")
		list.SetKind(kind + "List")
		if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
			fmt.Fprintf(&b, "--- %ss: %v\n", kind, err)
			continue
		}
		for _, obj := range list.Items {
			obj.SetManagedFields(nil)
			y, _ := yaml.Marshal(obj.Object)
			fmt.Fprintf(&b, "--- %s %s/%s\n%s", kind, ns, obj.GetName(), y)
		}
	}
	recs := &v1alpha1.ArtifactRecordList{}
	if err := c.List(ctx, recs, client.InNamespace(ns)); err == nil {
		fmt.Fprintf(&b, "--- ArtifactRecords in %s\n", ns)
		for _, r := range recs.Items {
			fmt.Fprintf(&b, "%s %s %s pod=%s %s@%s %s %s\n", r.Name, r.Spec.Direction, r.Spec.Artifact, r.Spec.Pod.Name,
				r.Spec.Repository, r.Status.Digest, r.Status.Phase, r.Status.Message)
		}
	}
	if events, err := kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{}); err == nil {
		fmt.Fprintf(&b, "--- events in %s\n", ns)
		for _, e := range events.Items {
			fmt.Fprintf(&b, "%s %s %s/%s %s: %s\n", e.LastTimestamp.Format(time.TimeOnly), e.Type,
				e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
		}
	}
	sinceTime := metav1.NewTime(since.Add(-5 * time.Second))
	for _, component := range []struct{ ns, selector string }{
		{"tekton-pipelines", "app.kubernetes.io/part-of=tekton-pipelines"},
		{"artifacts-csi", ""},
	} {
		pods, err := kube.CoreV1().Pods(component.ns).List(ctx, metav1.ListOptions{LabelSelector: component.selector})
		if err != nil {
			fmt.Fprintf(&b, "--- pods of %s: %v\n", component.ns, err)
			continue
		}
		for _, p := range pods.Items {
			for _, ctr := range p.Spec.Containers {
				fmt.Fprintf(&b, "--- log of %s/%s %s since the test started\n", p.Namespace, p.Name, ctr.Name)
				rc, err := kube.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: ctr.Name, SinceTime: &sinceTime}).Stream(ctx)
				if err != nil {
					fmt.Fprintf(&b, "(%v)\n", err)
					continue
				}
				io.Copy(&b, io.LimitReader(rc, 256<<10))
				rc.Close()
			}
		}
	}
	t.Logf("diagnostics of %s:\n%s", t.Name(), b.String())
}
