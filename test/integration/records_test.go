package integration

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// TestRecordsAndEvents gives the plugin an API client (a real
// kube-apiserver): a pushed output gets an ArtifactRecord owned by its
// TaskRun and an ArtifactPushed Event on its pod; a consumed input gets a
// record too.
func TestRecordsAndEvents(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	kubeconfig := writeKubeconfig(t, env)
	dist := testregistry.StartDistribution(t)
	pl := newPlugin(t, registryConfig(dist.Host), "--kubeconfig="+kubeconfig)
	pl.start()

	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}); err != nil {
		t.Fatal(err)
	}
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "build-pod", Namespace: "team-a", Labels: map[string]string{
			volume.LabelTaskRun: "build", volume.LabelTaskRunUID: "0f6a1c2e-0000-4000-8000-000000000001",
			volume.LabelPipelineRun: "release", volume.LabelPipelineRunUID: "0f6a1c2e-0000-4000-8000-000000000002",
			volume.LabelPipelineTask: "compile"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "step", Image: "busybox"}}},
	}
	if err := env.Client.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	producer := pod{name: obj.Name, namespace: obj.Namespace, uid: string(obj.UID)}
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
	if rec.Spec.Artifact != "binary" || rec.Spec.TaskRun == nil || rec.Spec.TaskRun.Name != "build" ||
		rec.OwnerReferences[0].Kind != "TaskRun" || rec.Status.Digest == "" || rec.Status.Size == 0 {
		t.Errorf("record = %+v", rec)
	}
	// The pod's Tekton labels name the tag, the provenance and the group.
	if rec.Spec.Tag != "team-a.build.binary" || rec.Spec.PipelineRun != "release" {
		t.Errorf("tag %q, pipelineRun %q", rec.Spec.Tag, rec.Spec.PipelineRun)
	}
	desc, err := oci.New(oci.Options{}).Inspect(ctx, mustRef(t, dist.Host+"/team-a/artifacts@"+rec.Status.Digest))
	if err != nil {
		t.Fatal(err)
	}
	if desc.Subject == nil || desc.Artifact == nil || desc.Artifact.TaskRun != "build" || desc.Artifact.PipelineRun != "release" {
		t.Errorf("manifest: subject %v, metadata %+v; want the PipelineRun group and the TaskRun", desc.Subject, desc.Artifact)
	}

	waitFor(t, "the ArtifactPushed event", func() bool {
		events := &corev1.EventList{}
		if err := env.Client.List(ctx, events, client.InNamespace("team-a")); err != nil {
			return false
		}
		for _, e := range events.Items {
			if e.Reason == record.ReasonPushed && e.InvolvedObject.UID == obj.UID {
				return true
			}
		}
		return false
	})

	// A task of the same PipelineRun reads it by name.
	next := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "test-pod", Namespace: "team-a", Labels: map[string]string{
			volume.LabelPipelineRun: "release", volume.LabelPipelineTask: "test"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "step", Image: "busybox"}}},
	}
	if err := env.Client.Create(ctx, next); err != nil {
		t.Fatal(err)
	}
	tester := pod{name: next.Name, namespace: next.Namespace, uid: string(next.UID)}
	from := func(name string) map[string]string {
		return map[string]string{"direction": "input", "artifact": "bin", "from": "tasks.compile.outputs." + name}
	}
	mustOK(t, "publish a from: input", pl.publish(ctx, tester, "in", from("binary")))
	want := t.TempDir()
	testtree.Write(t, want, 21)
	testtree.Equal(t, want, pl.target(tester, "in"))
	mustOK(t, "unpublish", pl.unpublish(ctx, tester, "in"))
	wantCode(t, "from: an output not pushed yet", pl.publish(ctx, tester, "other", from("docs")), codes.Unavailable)

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

// writeKubeconfig writes a kubeconfig for env's admin user.
func writeKubeconfig(t *testing.T, env *testenv.Env) string {
	t.Helper()
	c := env.Config
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: c.Host, CertificateAuthorityData: c.CAData}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: c.CertData, ClientKeyData: c.KeyData, Token: c.BearerToken}
	cfg.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	cfg.CurrentContext = "envtest"
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
