package integration

import (
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/broker"
)

// startController runs the controller binary against env as a user bound
// only to its generated roles, with its credentials broker on a free
// port, and waits for /healthz. It returns the broker's URL.
func startController(t *testing.T, env *testenv.Env) string {
	t.Helper()
	namespace(t, env, driverNamespace)
	health, brokerAddr := freeAddr(t), freeAddr(t)
	startProcess(t, "controller", controllerBin, "--kubeconfig="+roleKubeconfig(t, env, "controller"), "--metrics-bind-address=0",
		"--health-probe-bind-address="+health, "--leader-elect=true", "--leader-election-namespace=default", "-v=4",
		"--namespace="+driverNamespace, "--broker-address="+brokerAddr, "--broker-hosts=127.0.0.1")
	waitFor(t, "the controller's /healthz", func() bool {
		resp, err := http.Get("http://" + health + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return "https://" + brokerAddr
}

// driverNamespace is where the controller keeps the broker's certificate
// and looks for the node plugin's ServiceAccount.
const driverNamespace = "artifacts-csi"

// brokerArgs starts the controller and returns the node plugin's flags
// for its broker: a token of the broker's audience for the plugin's
// ServiceAccount, bound to a pod on node-1 as kubelet would mount it, and
// the certificate the controller published.
func brokerArgs(t *testing.T, env *testenv.Env) []string {
	t.Helper()
	url := startController(t, env)
	const sa = "artifacts-csi-node"
	mustCreate(t, env, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: driverNamespace, Name: sa}})
	mustCreate(t, env, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}})
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: driverNamespace, Name: "plugin"},
		Spec: corev1.PodSpec{NodeName: "node-1", ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "plugin"}}}}
	mustCreate(t, env, p)
	kube := kubernetes.NewForConfigOrDie(env.Config)
	tok, err := kube.CoreV1().ServiceAccounts(driverNamespace).CreateToken(t.Context(), sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{broker.Audience},
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	token, ca := filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(token, []byte(tok.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the broker's certificate", func() bool {
		cm, err := kube.CoreV1().ConfigMaps(driverNamespace).Get(t.Context(), broker.CAConfigMap, metav1.GetOptions{})
		return err == nil && os.WriteFile(ca, []byte(cm.Data[broker.CAKey]), 0o644) == nil
	})
	return []string{"--broker-url=" + url, "--broker-token-file=" + token, "--broker-ca-file=" + ca}
}

// TestTaskRunStatus runs the node plugin and the controller as processes
// against a real API server: a producer's pushed output and a consumer's
// from: input land on their TaskRuns' status.artifacts in the TEP-0147
// shape Tekton's schema keeps, and come back after another writer drops
// them.
func TestTaskRunStatus(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	dist := testregistry.StartDistribution(t)
	pl := newPlugin(t, registryConfig(dist.Host), "--kubeconfig="+nodeKubeconfig(t, env))
	pl.start()
	startController(t, env)

	run := newPipelineRun(t, env, "team-a", "release", nil)
	build, producer := run.task("build")
	out := output("binary")
	out["buildOutput"] = "true"
	mustOK(t, "publish output", pl.publish(ctx, producer, "out", out))
	testtree.Write(t, pl.target(producer, "out"), 13)
	mustOK(t, "unpublish output", pl.unpublish(ctx, producer, "out"))
	rec := waitForRecord(t, env, producer, v1alpha1.Pushed)

	repo := dist.Host + "/team-a/artifacts"
	value := map[string]any{
		"uri":    "pkg:oci/artifacts@" + rec.Status.Digest + "?repository_url=" + repo,
		"digest": map[string]any{"sha256": strings.TrimPrefix(rec.Status.Digest, "sha256:")},
	}
	wantOutputs := []any{map[string]any{"name": "binary", "buildOutput": true, "values": []any{value}}}
	waitForArtifacts(t, env, build, "outputs", wantOutputs)

	test, consumer := run.task("test")
	mustOK(t, "publish from: input", pl.publish(ctx, consumer, "in",
		map[string]string{"direction": "input", "artifact": "bin", "from": "tasks.build.outputs.binary"}))
	waitForArtifacts(t, env, test, "inputs", []any{map[string]any{"name": "bin", "values": []any{value}}})

	// Tekton writes the whole status from its own copy: ours is dropped,
	// then restored next to what Tekton wrote.
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(build.GroupVersionKind())
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(build), got); err != nil {
		t.Fatal(err)
	}
	tekton := map[string]any{"name": "tekton-own", "values": []any{map[string]any{"uri": "pkg:generic/x", "digest": map[string]any{"sha256": strings.Repeat("0", 64)}}}}
	got.Object["status"] = map[string]any{
		"podName":    producer.Name,
		"conditions": []any{map[string]any{"type": "Succeeded", "status": "True", "reason": "Succeeded"}},
		"artifacts":  map[string]any{"outputs": []any{tekton}},
	}
	if err := env.Client.Status().Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	status := waitForArtifacts(t, env, build, "outputs", append([]any{tekton}, wantOutputs...))
	b, _ := json.MarshalIndent(status, "", "  ")
	t.Logf("TaskRun %s/%s status:\n%s", build.GetNamespace(), build.GetName(), b)
}

// waitForArtifacts waits until a TaskRun's status.artifacts.<field> is
// want, and returns the whole status.
func waitForArtifacts(t *testing.T, env *testenv.Env, tr *unstructured.Unstructured, field string, want []any) map[string]any {
	t.Helper()
	var status map[string]any
	var got []any
	defer func() {
		if t.Failed() {
			t.Logf("last seen: %v\nwant: %v", got, want)
		}
	}()
	waitFor(t, "status.artifacts."+field+" of TaskRun "+tr.GetName(), func() bool {
		obj := &unstructured.Unstructured{}
		obj.SetGroupVersionKind(tr.GroupVersionKind())
		if err := env.Client.Get(t.Context(), client.ObjectKeyFromObject(tr), obj); err != nil {
			return false
		}
		status, _, _ = unstructured.NestedMap(obj.Object, "status")
		got, _, _ = unstructured.NestedSlice(obj.Object, "status", "artifacts", field)
		return reflect.DeepEqual(got, want)
	})
	return maps.Clone(status)
}
