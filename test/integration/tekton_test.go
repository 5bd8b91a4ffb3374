package integration

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
)

// These tests run no Tekton controller (the e2e suite does): this file
// writes, into a real API server, what Tekton's would. A PipelineRun
// controls its TaskRuns and lists them in status.childReferences; a
// TaskRun controls its pod, labelled as Tekton labels it, and names it in
// status.podName.

// pipelineRun is a PipelineRun being run by the test.
type pipelineRun struct {
	t   testing.TB
	env *testenv.Env
	obj *unstructured.Unstructured
}

// newPipelineRun creates PipelineRun ns/name with annotations.
func newPipelineRun(t testing.TB, env *testenv.Env, ns, name string, annotations map[string]string) *pipelineRun {
	t.Helper()
	namespace(t, env, ns)
	obj := tekton.NewPipelineRun()
	obj.SetNamespace(ns)
	obj.SetName(name)
	obj.SetAnnotations(annotations)
	mustCreate(t, env, obj)
	return &pipelineRun{t: t, env: env, obj: obj}
}

// ref is the PipelineRun's name and UID.
func (r *pipelineRun) ref() tekton.Ref {
	return tekton.Ref{Name: r.obj.GetName(), UID: string(r.obj.GetUID())}
}

// task starts pipeline task name: its TaskRun <run>-<name>, listed in the
// PipelineRun's childReferences, and the TaskRun's pod <run>-<name>-pod.
func (r *pipelineRun) task(name string) (*unstructured.Unstructured, pod) {
	r.t.Helper()
	tr := r.taskRun(name)
	return tr, taskRunPod(r.t, r.env, tr, tr.GetName()+"-pod")
}

// taskRun creates the TaskRun of pipeline task name, without a pod yet.
func (r *pipelineRun) taskRun(name string) *unstructured.Unstructured {
	r.t.Helper()
	tr := tekton.NewTaskRun()
	tr.SetNamespace(r.obj.GetNamespace())
	tr.SetName(r.obj.GetName() + "-" + name)
	tr.SetLabels(map[string]string{tekton.LabelPipelineRun: r.obj.GetName(), tekton.LabelPipelineTask: name})
	tr.SetAnnotations(r.obj.GetAnnotations())
	tr.SetOwnerReferences([]metav1.OwnerReference{controlledBy(r.obj)})
	mustCreate(r.t, r.env, tr)
	children, _, _ := unstructured.NestedSlice(r.obj.Object, "status", "childReferences")
	children = append(children, map[string]any{"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": tr.GetName(), "pipelineTaskName": name})
	r.setStatus(r.obj, "childReferences", children)
	return tr
}

// finish marks a run (the PipelineRun or one of its TaskRuns) Succeeded,
// ago ago.
func (r *pipelineRun) finish(run *unstructured.Unstructured, ago time.Duration) {
	r.t.Helper()
	at := time.Now().Add(-ago).UTC().Format(time.RFC3339)
	r.setStatus(run, "completionTime", at)
	r.setStatus(run, "conditions", []any{map[string]any{"type": "Succeeded", "status": "True", "lastTransitionTime": at}})
}

// setStatus writes status.<field> of run through the status subresource,
// as only Tekton's controller may.
func (r *pipelineRun) setStatus(run *unstructured.Unstructured, field string, value any) {
	r.t.Helper()
	setStatus(r.t, r.env, run, field, value)
}

// setStatus writes status.<field> of run, again on a conflict: the
// artifacts controller writes the status of TaskRuns too.
func setStatus(t testing.TB, env *testenv.Env, run *unstructured.Unstructured, field string, value any) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := env.Client.Get(t.Context(), client.ObjectKeyFromObject(run), run); err != nil {
			return err
		}
		if err := unstructured.SetNestedField(run.Object, value, "status", field); err != nil {
			return err
		}
		return env.Client.Status().Update(t.Context(), run)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// standaloneTaskRun creates TaskRun ns/name, labelled and owned as given
// (which Tekton does not check), and its pod <name>-pod.
func standaloneTaskRun(t testing.TB, env *testenv.Env, ns, name string, labels map[string]string, owners ...metav1.OwnerReference) (*unstructured.Unstructured, pod) {
	t.Helper()
	namespace(t, env, ns)
	tr := tekton.NewTaskRun()
	tr.SetNamespace(ns)
	tr.SetName(name)
	tr.SetLabels(labels)
	tr.SetOwnerReferences(owners)
	mustCreate(t, env, tr)
	return tr, taskRunPod(t, env, tr, name+"-pod")
}

// taskRunPod creates the pod of TaskRun tr, bound to the plugin's node, as
// Tekton does, and names it in the TaskRun's status.podName.
func taskRunPod(t testing.TB, env *testenv.Env, tr *unstructured.Unstructured, name string) pod {
	t.Helper()
	labels := map[string]string{tekton.LabelTaskRun: tr.GetName(), tekton.LabelTaskRunUID: string(tr.GetUID())}
	for k, v := range tr.GetLabels() {
		labels[k] = v
	}
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: tr.GetNamespace(), Name: name, Labels: labels, Annotations: tr.GetAnnotations(),
			OwnerReferences: []metav1.OwnerReference{controlledBy(tr)}},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "step", Image: "busybox"}}},
	}
	mustCreate(t, env, obj)
	setStatus(t, env, tr, "podName", name)
	return pod{Name: name, Namespace: obj.Namespace, UID: string(obj.UID)}
}

// forgedPod creates a plain pod that claims TaskRun tr by its labels,
// which anyone who can read the TaskRun can copy.
func forgedPod(t testing.TB, env *testenv.Env, tr *unstructured.Unstructured, name string) pod {
	t.Helper()
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: tr.GetNamespace(), Name: name, Labels: map[string]string{
			tekton.LabelTaskRun: tr.GetName(), tekton.LabelTaskRunUID: string(tr.GetUID()),
			tekton.LabelPipelineRun: tr.GetLabels()[tekton.LabelPipelineRun]}},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "step", Image: "busybox"}}},
	}
	mustCreate(t, env, obj)
	return pod{Name: name, Namespace: obj.Namespace, UID: string(obj.UID)}
}

// controlledBy is the controller owner reference Tekton sets to o.
func controlledBy(o *unstructured.Unstructured) metav1.OwnerReference {
	yes := true
	return metav1.OwnerReference{APIVersion: o.GetAPIVersion(), Kind: o.GetKind(), Name: o.GetName(), UID: o.GetUID(), Controller: &yes, BlockOwnerDeletion: &yes}
}

// TestForgedIdentity: labels and owner references that anyone who can
// create a pod or a TaskRun sets give nothing. A plain pod labelled as a
// finished TaskRun's pod gets a plain pod's record, with an Event, and the
// controller leaves it out of the TaskRun's status; a standalone TaskRun
// labelled as a task of a running PipelineRun cannot supply a from: input
// of that run, even when it pushes after the real producer.
func TestForgedIdentity(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	dist := testregistry.StartDistribution(t)
	pl := newPlugin(t, registryConfig(dist.Host), "--kubeconfig="+nodeKubeconfig(t, env))
	pl.start()
	startController(t, env)

	run := newPipelineRun(t, env, "team-a", "release", nil)
	build, producer := run.task("build")
	genuine := produceIn(t, env, pl, producer, "binary", 3)
	run.finish(build, 0)

	// A plain pod with the finished TaskRun's labels.
	forger := forgedPod(t, env, build, "forger")
	forged := produceIn(t, env, pl, forger, "binary", 4)
	if forged.Spec.TaskRun != nil || forged.Spec.PipelineRun != "" || forged.OwnerReferences[0].Kind != "Pod" {
		t.Errorf("forged pod's record: %+v, owner %+v; want a plain pod's", forged.Spec, forged.OwnerReferences)
	}
	waitForEvent(t, env, forger, record.ReasonIdentityRefused, "does not name pod forger")

	// A standalone TaskRun labelled as a task of the running PipelineRun
	// pushes after the real producer. (One also owned by the run, which
	// Tekton itself would adopt, is TestAdoptedIntruder's, in e2e.)
	_, intruder := standaloneTaskRun(t, env, "team-a", "intruder",
		map[string]string{tekton.LabelPipelineRun: "release", tekton.LabelPipelineRunUID: run.ref().UID, tekton.LabelPipelineTask: "build"})
	poisoned := produceIn(t, env, pl, intruder, "binary", 5)
	if poisoned.Spec.PipelineRun != "" || poisoned.Spec.TaskRun == nil {
		t.Errorf("intruder's record: %+v; want its own TaskRun's, in no PipelineRun", poisoned.Spec)
	}

	_, consumer := run.task("test")
	mustOK(t, "publish from: input", pl.publish(ctx, consumer, "in",
		map[string]string{"direction": "input", "artifact": "bin", "from": "tasks.build.outputs.binary"}))
	want := t.TempDir()
	testtree.Write(t, want, 3)
	testtree.EqualMounted(t, want, pl.target(consumer, "in"))

	// The TaskRun's status lists its own output only.
	waitForArtifacts(t, env, build, "outputs", []any{map[string]any{"name": "binary", "values": []any{map[string]any{
		"uri":    "pkg:oci/artifacts@" + genuine.Status.Digest + "?repository_url=" + dist.Host + "/team-a/artifacts",
		"digest": map[string]any{"sha256": strings.TrimPrefix(genuine.Status.Digest, "sha256:")},
	}}}})
}

// produceIn publishes output artifact for p, writes a tree with seed into
// it, unpublishes it and returns its Pushed record.
func produceIn(t *testing.T, env *testenv.Env, pl *plugin, p pod, artifact string, seed uint64) *v1alpha1.ArtifactRecord {
	t.Helper()
	mustOK(t, "publish output of "+p.Name, pl.publish(t.Context(), p, "out", output(artifact)))
	testtree.Write(t, pl.target(p, "out"), seed)
	mustOK(t, "unpublish output of "+p.Name, pl.unpublish(t.Context(), p, "out"))
	return waitForRecord(t, env, p, v1alpha1.Pushed)
}
