package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/internal/testkit"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
)

// TestNodeRecordsPolicy installs deploy/'s admission policy and the node
// plugin's role in a real API server, and writes records as the node
// plugin of node-1 and of node-2, with ServiceAccount tokens bound to
// their pods as kubelet mounts them: each may write the records of its
// own node only, and a token bound to no pod (no node claim) none.
func TestNodeRecordsPolicy(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	applyFile(t, env, filepath.Join("..", "..", "deploy", "policy", "records.yaml"))
	role := createClusterRole(t, env, "node")
	const ns, sa = "artifacts-csi", "artifacts-csi-node"
	namespace(t, env, ns)
	namespace(t, env, "team-a")
	mustCreate(t, env, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}})
	mustCreate(t, env, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa}}})

	kube := kubernetes.NewForConfigOrDie(env.Config)
	// token returns a client authenticating as the node plugin with a
	// token bound to its pod on node, or to nothing when node is "".
	token := func(node string) client.Client {
		t.Helper()
		req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{}}
		if node != "" {
			mustCreate(t, env, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}})
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "plugin-" + node},
				Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "plugin"}}}}
			mustCreate(t, env, p)
			req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}
		}
		tok, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, req, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := rest.AnonymousClientConfig(env.Config)
		cfg.BearerToken = tok.Status.Token
		c, err := client.New(cfg, client.Options{Scheme: env.Client.Scheme()})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	node1, node2, unbound := token("node-1"), token("node-2"), token("")

	record := func(name, node string) *v1alpha1.ArtifactRecord {
		return &v1alpha1.ArtifactRecord{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name},
			Spec: v1alpha1.ArtifactRecordSpec{Direction: v1alpha1.Output, Artifact: "bin", Pod: v1alpha1.ObjectReference{Name: "p", UID: "u"},
				NodeName: node, Repository: "reg.example/a"}}
	}
	denied := func(what string, err error, says string) {
		t.Helper()
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), says) {
			t.Errorf("%s: %v, want refused saying %q", what, err, says)
		}
	}
	// The API server applies a new policy within a second or so.
	testkit.Eventually(t, "the policy to apply", 30*time.Second, func() (bool, error) {
		err := node1.Create(ctx, record("theirs", "node-2"), client.DryRunAll)
		return apierrors.IsForbidden(err) || apierrors.IsInvalid(err), err
	})
	own := record("own", "node-1")
	if err := node1.Create(ctx, own); err != nil {
		t.Fatalf("node-1 writing its own record: %v", err)
	}
	own.Status.Phase = v1alpha1.Pushed
	if err := node1.Status().Update(ctx, own); err != nil {
		t.Errorf("node-1 updating its own record: %v", err)
	}
	denied("node-1 writing node-2's record", node1.Create(ctx, record("theirs", "node-2")), "of its own node only, not of node node-2")
	denied("node-1 writing a record of no node", node1.Create(ctx, record("none", "")), "not of no node")
	theirs := own.DeepCopy()
	theirs.Status.Phase = v1alpha1.Failed
	denied("node-2 updating node-1's record", node2.Status().Update(ctx, theirs), "of its own node only, not of node node-1")
	denied("node-1 deleting its record", node1.Delete(ctx, own), "forbidden")
	denied("a token bound to no pod", unbound.Create(ctx, record("unbound", "node-1")), "bound to its pod")
	if err := node2.Create(ctx, record("node-2s", "node-2")); err != nil {
		t.Errorf("node-2 writing its own record: %v", err)
	}
	// Only the controller writes a provenance: a node may neither add one
	// nor change or drop the controller's.
	forged := own.DeepCopy()
	forged.Status.Provenance = &v1alpha1.Provenance{Digest: "sha256:" + strings.Repeat("a", 64)}
	denied("node-1 adding a provenance", node1.Status().Update(ctx, forged), "only the controller writes status.provenance")
	got := &v1alpha1.ArtifactRecord{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(own), got); err != nil {
		t.Fatal(err)
	}
	got.Status.Provenance = &v1alpha1.Provenance{Digest: "sha256:" + strings.Repeat("b", 64), KeyID: "k"}
	if err := env.Client.Status().Update(ctx, got); err != nil {
		t.Fatalf("the controller (administrator) adding a provenance: %v", err)
	}
	changed := got.DeepCopy()
	changed.Status.Provenance.KeyID = "other"
	denied("node-1 changing the provenance", node1.Status().Update(ctx, changed), "only the controller writes status.provenance")
	dropped := got.DeepCopy()
	dropped.Status.Provenance = nil
	denied("node-1 dropping the provenance", node1.Status().Update(ctx, dropped), "only the controller writes status.provenance")
	kept := got.DeepCopy()
	kept.Status.Message = "still there"
	if err := node1.Status().Update(ctx, kept); err != nil {
		t.Errorf("node-1 updating its record, provenance kept as it is: %v", err)
	}
	// The spec is immutable for everyone, the administrator too.
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(own), got); err != nil {
		t.Fatal(err)
	}
	got.Spec.NodeName = "node-2"
	denied("changing a record's node", env.Client.Update(ctx, got), "spec is immutable")
}

// applyFile creates every object of a YAML file as the administrator.
func applyFile(t *testing.T, env *testenv.Env, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if err.Error() == "EOF" {
				return
			}
			t.Fatal(err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		if err := env.Client.Create(t.Context(), obj); err != nil {
			t.Fatalf("create %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
}
