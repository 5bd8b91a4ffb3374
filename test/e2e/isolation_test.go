package e2e

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/internal/testkit"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
)

// The attacks of tenant isolation, each against real Tekton: who can
// create pods, TaskRuns or Pipelines in a namespace copies what labels and
// annotations say, and gains nothing by it.

// TestForgedLabels: once a PipelineRun finished, a plain pod carrying the
// labels of its build TaskRun's pod (anyone who can read that pod can copy
// them) writes an output. It is recorded as the pod's own, with an
// ArtifactIdentityRefused Warning, and the TaskRun's status.artifacts
// keeps only the TaskRun's own output.
func TestForgedLabels(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	create(t, ns, tasks+"---"+pipeline("victim", "", "    runAfter: [build]"))
	pr := create(t, ns, pipelineRun("victim", ""))[0]
	wantSucceeded(t, pr)
	build := taskRun(t, pr, "build")
	genuine := records(t, ns, "out", v1alpha1.Output, v1alpha1.Pushed, 1)[0]
	artifacts(t, build, "outputs", "out")

	tektonPod := &corev1.Pod{}
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: podName(build)}, tektonPod); err != nil {
		t.Fatal(err)
	}
	forger := podSpec{ns: ns, name: "forger", script: "echo forged > /artifacts/outputs/out/file",
		volumes: []corev1.Volume{csiVolume("out", map[string]string{"direction": "output", "artifact": "out", "buildOutput": "true"})}}.pod()
	forger.Labels = maps.Clone(tektonPod.Labels)
	if err := c.Create(t.Context(), forger); err != nil {
		t.Fatal(err)
	}
	waitSucceeded(t, forger)
	forged := testkit.WaitForRecords(t, c, ns, 1, 2*time.Minute, func(r *v1alpha1.ArtifactRecord) bool {
		return r.Spec.Pod.Name == "forger" && r.Status.Phase == v1alpha1.Pushed
	})[0]
	if forged.Spec.TaskRun != nil || forged.Spec.PipelineRun != "" || forged.OwnerReferences[0].Kind != "Pod" {
		t.Errorf("the forged pod's record: %+v owned by %+v; want a plain pod's", forged.Spec, forged.OwnerReferences)
	}
	waitFor(t, "the ArtifactIdentityRefused Warning", time.Minute, func() (bool, error) {
		return len(events(t, forger, record.ReasonIdentityRefused)) > 0, nil
	})
	// The controller had the forged record in its watch before this:
	// a few seconds more, and the status must still hold the genuine one only.
	time.Sleep(5 * time.Second)
	outs := fmt.Sprint(artifacts(t, get(t, build), "outputs", "out"))
	if !strings.Contains(outs, strings.TrimPrefix(genuine.Status.Digest, "sha256:")) || strings.Contains(outs, strings.TrimPrefix(forged.Status.Digest, "sha256:")) {
		t.Errorf("status.artifacts.outputs of %s = %s; want %s only", build.GetName(), outs, genuine.Status.Digest)
	}
}

// TestPoisonedFrom: while a PipelineRun's build task runs (30 s), a
// standalone TaskRun labelled as that run's build task produces the same
// output and pushes it first; the run's test task (no runAfter: it waits
// on from:) still reads what the genuine build wrote.
func TestPoisonedFrom(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	create(t, ns, tasks+"---"+pipeline("victim", "    params: [{name: sleep, value: \"30\"}]", ""))
	pr := create(t, ns, pipelineRun("victim", ""))[0]
	intruder := create(t, ns, intruderTaskRun(pr, false))[0]
	wantSucceeded(t, intruder)
	wantSucceeded(t, pr)
	wantHandover(t, pr)
}

// TestAdoptedIntruder: a TaskRun labelled and owned as a running
// PipelineRun's build task is adopted by Tekton itself into the run's
// status.childReferences (its recovery of lost status updates). The
// driver then sees two TaskRuns for a task without a matrix, and refuses
// the test task's from: with an Event rather than guess which is genuine.
func TestAdoptedIntruder(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	create(t, ns, tasks+"---"+pipeline("victim", "    params: [{name: sleep, value: \"30\"}]", ""))
	pr := create(t, ns, pipelineRun("victim", "  timeouts: {pipeline: 3m}"))[0]
	// Created before Tekton made the build task's own TaskRun, the intruder
	// would be adopted as the task itself, by Tekton: nothing left to tell
	// them apart (docs/design.md, "What is left"). After, both are listed.
	waitFor(t, "Tekton to start the build task", time.Minute, func() (bool, error) {
		children, _, _ := unstructured.NestedSlice(get(t, pr).Object, "status", "childReferences")
		return slices.ContainsFunc(children, func(ch any) bool { m, _ := ch.(map[string]any); return m["pipelineTaskName"] == "build" }), nil
	})
	create(t, ns, intruderTaskRun(pr, true))
	waitForTaskEvent(t, pr, "test", record.ReasonInputFailed, "not created by Tekton", 3*time.Minute)
}

// waitForTaskEvent waits until the pod of pr's pipeline task has an Event
// of reason whose message holds text.
func waitForTaskEvent(t *testing.T, pr *unstructured.Unstructured, task, reason, text string, timeout time.Duration) {
	t.Helper()
	waitFor(t, fmt.Sprintf("a %s Event on the pod of task %s", reason, task), timeout, func() (bool, error) {
		children, _, _ := unstructured.NestedSlice(get(t, pr).Object, "status", "childReferences")
		if !slices.ContainsFunc(children, func(ch any) bool { m, _ := ch.(map[string]any); return m["pipelineTaskName"] == task }) {
			return false, nil
		}
		name := podName(taskRun(t, pr, task))
		if name == "" {
			return false, nil
		}
		pod := &corev1.Pod{}
		if err := c.Get(t.Context(), client.ObjectKey{Namespace: pr.GetNamespace(), Name: name}, pod); err != nil {
			return false, err
		}
		return slices.ContainsFunc(events(t, pod, reason), func(m string) bool { return strings.Contains(m, text) }), nil
	})
}

// intruderTaskRun is a TaskRun of the produce Task labelled as pr's build
// task, and, when owned, with pr as its controller, as Tekton's own are.
func intruderTaskRun(pr *unstructured.Unstructured, owned bool) string {
	owner := ""
	if owned {
		owner = fmt.Sprintf(`
  ownerReferences:
  - {apiVersion: tekton.dev/v1, kind: PipelineRun, name: %s, uid: %s, controller: true}`, pr.GetName(), pr.GetUID())
	}
	return fmt.Sprintf(`
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: intruder
  labels: {tekton.dev/pipelineRun: %s, tekton.dev/pipelineRunUID: %s, tekton.dev/pipelineTask: build, tekton.dev/pipeline: victim}%s
spec:
  taskRef: {name: produce}
  params: [{name: megabytes, value: "1"}]
`, pr.GetName(), pr.GetUID(), owner)
}

// TestAnnotationRedirect: a PipelineRun's annotation that sends outputs
// outside the cluster's oci.allowedRepositories (the dev cluster allows
// 127.0.0.1:5000 and the soak's 127.0.0.1:5001 only) fails the build's output volume with an Event
// naming the key, the level and why; nothing is pushed.
func TestAnnotationRedirect(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	create(t, ns, tasks+"---"+pipeline("victim", "", "    runAfter: [build]"))
	pr := create(t, ns, strings.Replace(pipelineRun("victim", "  timeouts: {pipeline: 2m}"), "metadata: {generateName: victim-}",
		"metadata: {generateName: victim-, annotations: {'"+config.AnnotationRepository+"': 'localhost:5000/loot'}}", 1))[0]
	waitForTaskEvent(t, pr, "build", record.ReasonInvalidConfig, string(config.LevelAnnotation)+": "+config.KeyRepository+
		`="localhost:5000/loot": not under a repository the cluster allows (`+config.KeyAllowedRepositories, 2*time.Minute)
	list := &v1alpha1.ArtifactRecordList{}
	if err := c.List(t.Context(), list, client.InNamespace(ns)); err != nil || len(list.Items) != 0 {
		t.Errorf("records: %d, %v; want none", len(list.Items), err)
	}
}

// TestRecordsRBAC asks the API server, with Kubernetes' and Tekton's
// aggregated roles in place: a namespace's viewers, editors and admins
// may read its ArtifactRecords, and none of them may write one.
func TestRecordsRBAC(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	for user, role := range map[string]string{"e2e-viewer": "view", "e2e-editor": "edit", "e2e-admin": "admin"} {
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}}}
		if err := c.Create(t.Context(), rb); err != nil {
			t.Fatal(err)
		}
	}
	can := func(user, verb, subresource string) bool {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: v1alpha1.SchemeGroupVersion.Group,
				Resource: "artifactrecords", Subresource: subresource}}}
		res, err := kube.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return res.Status.Allowed
	}
	// Aggregation is the controller manager's work: give it a moment.
	waitFor(t, "view to aggregate the records' read access", time.Minute, func() (bool, error) {
		return can("e2e-viewer", "list", ""), nil
	})
	for _, user := range []string{"e2e-viewer", "e2e-editor", "e2e-admin"} {
		for _, verb := range []string{"get", "list", "watch"} {
			if !can(user, verb, "") {
				t.Errorf("%s may not %s records", user, verb)
			}
		}
		for _, verb := range []string{"create", "update", "patch", "delete", "deletecollection"} {
			for _, sub := range []string{"", "status"} {
				if can(user, verb, sub) {
					t.Errorf("%s may %s records%s", user, verb, map[string]string{"": "", "status": "/status"}[sub])
				}
			}
		}
	}
}

// TestSecondPluginIdentity: the admission policy of deploy/policy on the
// dev cluster. With a token bound to the real node plugin's pod, the node
// plugin's ServiceAccount writes a record of its node and no other; with
// a token bound to a pod on another node (a Node object without a
// kubelet), it cannot write a record of the real node.
func TestSecondPluginIdentity(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	const pluginNS, sa = "artifacts-csi", "artifacts-csi-node"
	pods := &corev1.PodList{}
	if err := c.List(t.Context(), pods, client.InNamespace(pluginNS), client.MatchingLabels{"app.kubernetes.io/name": sa}); err != nil || len(pods.Items) == 0 {
		t.Fatalf("node plugin pods: %d, %v", len(pods.Items), err)
	}
	plugin := pods.Items[0]
	realNode := plugin.Spec.NodeName

	fake := &corev1.Node{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-no-kubelet-"},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "e2e/no-kubelet", Effect: corev1.TaintEffectNoExecute}}}}
	if err := c.Create(t.Context(), fake); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Delete(t.Context(), fake) })
	impostor := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: pluginNS, GenerateName: "e2e-impostor-"},
		Spec: corev1.PodSpec{NodeName: fake.Name, ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: busybox}}}}
	if err := c.Create(t.Context(), impostor); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Delete(t.Context(), impostor, client.GracePeriodSeconds(0)) })

	as := func(pod *corev1.Pod) client.Client {
		t.Helper()
		tok, err := kube.CoreV1().ServiceAccounts(pluginNS).CreateToken(t.Context(), sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{
				Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := rest.AnonymousClientConfig(restConfig)
		cfg.BearerToken = tok.Status.Token
		cl, err := client.New(cfg, client.Options{Scheme: c.Scheme()})
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	genuine, other := as(&plugin), as(impostor)
	rec := func(name, node string) *v1alpha1.ArtifactRecord {
		return &v1alpha1.ArtifactRecord{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: v1alpha1.ArtifactRecordSpec{Direction: v1alpha1.Output, Artifact: "bin", NodeName: node,
				Pod: v1alpha1.ObjectReference{Name: "p", UID: "u"}, Repository: registry + "/x"}}
	}
	own := rec("own", realNode)
	if err := genuine.Create(t.Context(), own); err != nil {
		t.Fatalf("the node plugin writing a record of its node: %v", err)
	}
	own.Status.Phase = v1alpha1.Failed
	for what, err := range map[string]error{
		"the node plugin writing another node's record":     genuine.Create(t.Context(), rec("theirs", fake.Name)),
		"another node's plugin writing this node's record":  other.Create(t.Context(), rec("forged", realNode)),
		"another node's plugin updating this node's record": other.Status().Update(t.Context(), own),
	} {
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "of its own node only") {
			t.Errorf("%s: %v, want refused by the admission policy", what, err)
		}
	}
}
