package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
)

// TestRecordsAndEvents gives the plugin an API client (a real
// kube-apiserver): a pushed output gets an ArtifactRecord owned by its
// TaskRun and an ArtifactPushed Event on its pod; a consumed input gets a
// record too.
func TestRecordsAndEvents(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	kubeconfig := nodeKubeconfig(t, env)
	dist := testregistry.StartDistribution(t)
	pl := newPlugin(t, registryConfig(dist.Host), "--kubeconfig="+kubeconfig)
	pl.start()

	run := newPipelineRun(t, env, "team-a", "release", nil)
	build, producer := run.task("compile")
	mustOK(t, "publish output", pl.publish(ctx, producer, "out", output("binary")))
	testtree.Write(t, pl.target(producer, "out"), 21)
	mustOK(t, "unpublish output", pl.unpublish(ctx, producer, "out"))

	var rec *v1alpha1.ArtifactRecord
	waitFor(t, "the Pushed record", func() bool {
		list := &v1alpha1.ArtifactRecordList{}
		if err := env.Client.List(ctx, list, client.InNamespace("team-a")); err != nil || len(list.Items) != 1 {
			return false
		}
		rec = &list.Items[0]
		return rec.Status.Phase == v1alpha1.Pushed
	})
	if rec.Spec.Artifact != "binary" || rec.Spec.TaskRun == nil || rec.Spec.TaskRun.UID != string(build.GetUID()) ||
		rec.OwnerReferences[0].Kind != "TaskRun" || rec.Status.Digest == "" || rec.Status.Size == 0 || rec.Spec.NodeName != "node-1" {
		t.Errorf("record = %+v", rec)
	}
	// The runs Tekton's state confirms name the tag, the provenance and
	// the group.
	if rec.Spec.Tag != "team-a.release-compile.binary" || rec.Spec.PipelineRun != "release" ||
		rec.Spec.PipelineRunUID != run.ref().UID || rec.Spec.PipelineTask != "compile" {
		t.Errorf("tag %q, pipelineRun %q %q, task %q", rec.Spec.Tag, rec.Spec.PipelineRun, rec.Spec.PipelineRunUID, rec.Spec.PipelineTask)
	}
	desc, err := oci.New(oci.Options{}).Inspect(ctx, mustRef(t, dist.Host+"/team-a/artifacts@"+rec.Status.Digest))
	if err != nil {
		t.Fatal(err)
	}
	if desc.Subject == nil || desc.Artifact == nil || desc.Artifact.TaskRun != "release-compile" || desc.Artifact.PipelineRun != "release" {
		t.Errorf("manifest: subject %v, metadata %+v; want the PipelineRun group and the TaskRun", desc.Subject, desc.Artifact)
	}

	waitFor(t, "the ArtifactPushed event", func() bool {
		events := &corev1.EventList{}
		if err := env.Client.List(ctx, events, client.InNamespace("team-a")); err != nil {
			return false
		}
		for _, e := range events.Items {
			if e.Reason == record.ReasonPushed && string(e.InvolvedObject.UID) == producer.UID {
				return true
			}
		}
		return false
	})

	consumer := newPod("reader")
	ref := dist.Host + "/team-a/artifacts@" + rec.Status.Digest
	mustOK(t, "publish input", pl.publish(ctx, consumer, "in", input("src", ref)))
	mustOK(t, "unpublish input", pl.unpublish(ctx, consumer, "in"))
	waitFor(t, "the Consumed record", func() bool {
		list := &v1alpha1.ArtifactRecordList{}
		if err := env.Client.List(ctx, list, client.InNamespace("team-a")); err != nil {
			return false
		}
		for _, r := range list.Items {
			if r.Status.Phase == v1alpha1.Consumed && r.Status.Digest == rec.Status.Digest && r.Spec.Pod.Name == "reader" {
				return true
			}
		}
		return false
	})

}

// nodeKubeconfig writes a kubeconfig for a user bound to the node
// plugin's generated ClusterRole and nothing else, so that every test
// running the plugin with it also proves that role sufficient.
func nodeKubeconfig(t testing.TB, env *testenv.Env) string { return roleKubeconfig(t, env, "node") }

// roleKubeconfig writes a kubeconfig for a user bound only to the
// roles of deploy/rbac/<component>/role.yaml.
func roleKubeconfig(t testing.TB, env *testenv.Env, component string) string {
	t.Helper()
	role := createClusterRole(t, env, component)
	user := role.Name
	mustCreate(t, env, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	})
	c := env.User(t, user)
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: c.Host, CertificateAuthorityData: c.CAData}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: c.CertData, ClientKeyData: c.KeyData}
	cfg.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: user}
	cfg.CurrentContext = "envtest"
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// createClusterRole creates the generated roles of component (node or
// controller) from deploy/rbac, bound to the user named as the
// ClusterRole, and returns the ClusterRole.
func createClusterRole(t testing.TB, env *testenv.Env, component string) *rbacv1.ClusterRole {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "rbac", component, "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var role *rbacv1.ClusterRole
	var roles []*rbacv1.Role
	for doc := range strings.SplitSeq(string(b), "\n---\n") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "ClusterRole":
			role = &rbacv1.ClusterRole{}
			err = yaml.UnmarshalStrict([]byte(doc), role)
		case "Role":
			r := &rbacv1.Role{}
			err, roles = yaml.UnmarshalStrict([]byte(doc), r), append(roles, r)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(t, env, role)
	for _, r := range roles {
		namespace(t, env, r.Namespace)
		mustCreate(t, env, r)
		mustCreate(t, env, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: role.Name},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: r.Name},
			Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: role.Name}}})
	}
	return role
}

// TestFromWaitsForProducer follows the order a real kubelet showed: the
// consumer's publish arrives before the producer's unpublish. The consumer
// waits (Unavailable) while the producer's record is Pending, then gets
// the content; a from: naming an output its finished producer never wrote
// fails with an Event, while a running producer keeps it waiting.
func TestFromWaitsForProducer(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	dist := testregistry.StartDistribution(t)
	pl := newPlugin(t, registryConfig(dist.Host), "--kubeconfig="+nodeKubeconfig(t, env))
	pl.start()

	run := newPipelineRun(t, env, "team-a", "release", nil)
	from := func(ref string) map[string]string {
		return map[string]string{"direction": "input", "artifact": "bin", "from": ref}
	}
	_, producer := run.task("compile")
	_, consumer := run.task("test")

	mustOK(t, "publish the producer's output", pl.publish(ctx, producer, "out", output("binary")))
	waitForRecord(t, env, producer, v1alpha1.Pending)
	testtree.Write(t, pl.target(producer, "out"), 5)
	wantCode(t, "consumer before the producer's unpublish", pl.publish(ctx, consumer, "in", from("tasks.compile.outputs.binary")), codes.Unavailable)
	mustOK(t, "unpublish the producer's output", pl.unpublish(ctx, producer, "out"))
	waitFor(t, "the consumer's retry to succeed", func() bool {
		return pl.publish(ctx, consumer, "in", from("tasks.compile.outputs.binary")) == nil
	})
	want := t.TempDir()
	testtree.Write(t, want, 5)
	testtree.EqualMounted(t, want, pl.target(consumer, "in"))

	// A producer that is still running keeps the consumer waiting; once it
	// has finished without that output, the consumer fails.
	lint := run.taskRun("lint")
	wantCode(t, "from: a running producer", pl.publish(ctx, consumer, "report", from("tasks.lint.outputs.report")), codes.Unavailable)
	run.finish(lint, 5*time.Minute)
	err := pl.publish(ctx, consumer, "report", from("tasks.lint.outputs.report"))
	wantCode(t, "from: an output its finished producer never wrote", err, codes.FailedPrecondition)
	const text = `without producing output "report"`
	if !strings.Contains(status.Convert(err).Message(), text) {
		t.Errorf("message %q does not say %q", status.Convert(err).Message(), text)
	}
	waitForEvent(t, env, consumer, record.ReasonInputFailed, text)
}
