package integration

import (
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/internal/testkit"
	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
)

// TestConfigurationLevels: a namespace's labelled ConfigMap overrides the
// cluster's, a PipelineRun's annotation on the pod overrides both, an
// unlabelled ConfigMap is ignored, and an invalid value fails the volume
// with an Event naming the level, the key and the reason, until it is
// fixed.
func TestConfigurationLevels(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	dist := testregistry.StartDistribution(t)
	labelled := map[string]string{config.LabelConfigType: config.ConfigTypeArtifactStorage}
	configMap(t, env, "team-a", labelled, map[string]string{config.KeyRepository: dist.Host + "/team-a/namespace-level"})
	configMap(t, env, "team-b", nil, map[string]string{config.KeyRepository: dist.Host + "/team-b/ignored"})
	configMap(t, env, "team-c", labelled, map[string]string{config.KeyCompression: "lz4"})
	pl := newPlugin(t, map[string]string{config.KeyRepository: dist.Host + "/cluster/artifacts", config.KeyPlainHTTP: "true"},
		"--kubeconfig="+nodeKubeconfig(t, env))
	pl.start()

	for _, tt := range []struct {
		namespace, name string
		annotations     map[string]string
		wantRepo        string
	}{
		{"team-a", "namespace-level", nil, dist.Host + "/team-a/namespace-level"},
		{"team-a", "run-level", map[string]string{config.AnnotationRepository: dist.Host + "/team-a/run-level"}, dist.Host + "/team-a/run-level"},
		{"team-b", "cluster-level", nil, dist.Host + "/cluster/artifacts"},
	} {
		p := kubePod(t, env, tt.namespace, tt.name, nil, tt.annotations)
		mustOK(t, "publish "+tt.name, pl.publish(ctx, p, "out", output("report")))
		testtree.Write(t, pl.target(p, "out"), 3)
		mustOK(t, "unpublish "+tt.name, pl.unpublish(ctx, p, "out"))
		rec := waitForRecord(t, env, p, v1alpha1.Pushed)
		if rec.Spec.Repository != tt.wantRepo {
			t.Errorf("%s: pushed to %s, want %s", tt.name, rec.Spec.Repository, tt.wantRepo)
		}
		if _, err := oci.New(oci.Options{}).Inspect(ctx, mustRef(t, tt.wantRepo+"@"+rec.Status.Digest)); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
	}

	bad := kubePod(t, env, "team-c", "invalid", nil, nil)
	err := pl.publish(ctx, bad, "out", output("report"))
	wantCode(t, "publish with an invalid namespace value", err, codes.FailedPrecondition)
	const want = `namespace ConfigMap: compression="lz4": want gzip, zstd or none`
	if !strings.Contains(status.Convert(err).Message(), want) {
		t.Errorf("message %q does not say %q", status.Convert(err).Message(), want)
	}
	waitForEvent(t, env, bad, record.ReasonInvalidConfig, want)
	if entries, _ := os.ReadDir(pl.target(bad, "out")); len(entries) != 0 {
		t.Errorf("the target of a failed publish holds %d entries", len(entries))
	}

	// Fixed, it applies to the next attempt: no restart.
	cm := &corev1.ConfigMap{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "team-c", Name: config.ConfigMapName}, cm); err != nil {
		t.Fatal(err)
	}
	cm.Data[config.KeyCompression] = "zstd"
	if err := env.Client.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the fixed configuration to apply", func() bool { return pl.publish(ctx, bad, "out", output("report")) == nil })
}

// TestCredentialsPerNamespace: the cache hands an artifact only to pods
// whose own credentials can read it — from the namespace's
// oci.credentialsSecret or the ServiceAccount's imagePullSecrets — and a
// namespace without credentials is denied a cached artifact.
func TestCredentialsPerNamespace(t *testing.T) {
	const user, pass = "builder", "s3cret"
	host := basicAuthRegistry(t, user, pass)
	repo, _, _ := oci.ParseRepositoryTag(host+"/private/artifacts", oci.PlainHTTP)
	src := t.TempDir()
	testtree.Write(t, src, 8)
	res, err := oci.New(oci.Options{Keychain: staticKeychain{&authn.Basic{Username: user, Password: pass}}}).
		Push(t.Context(), oci.PushRequest{Dir: src, Repository: repo, Metadata: artifact.Metadata{Name: "src"}})
	if err != nil {
		t.Fatal(err)
	}
	ref := res.Ref.Name()

	env := testenv.Start(t)
	ctx := t.Context()
	dockerConfig := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	secret := func(ns, name string) {
		mustCreate(t, env, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(dockerConfig)}})
	}
	namespace(t, env, "with-secret")
	secret("with-secret", "registry-creds")
	configMap(t, env, "with-secret", map[string]string{config.LabelConfigType: config.ConfigTypeArtifactStorage},
		map[string]string{config.KeyCredentialsSecret: "registry-creds"})
	namespace(t, env, "with-pull-secret")
	secret("with-pull-secret", "pull")
	mustCreate(t, env, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "with-pull-secret", Name: "default"},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "pull"}}})
	namespace(t, env, "without")

	// The plugin may read no Secret: the controller's broker answers.
	pl := newPlugin(t, map[string]string{config.KeyPlainHTTP: "true"}, append(brokerArgs(t, env), "--kubeconfig="+nodeKubeconfig(t, env))...)
	pl.start()
	first := kubePod(t, env, "with-secret", "first", nil, nil)
	mustOK(t, "publish with oci.credentialsSecret (fills the cache)", pl.publish(ctx, first, "in", input("src", ref)))
	mustOK(t, "cache hit with the ServiceAccount's imagePullSecrets", pl.publish(ctx, kubePod(t, env, "with-pull-secret", "second", nil, nil), "in", input("src", ref)))
	denied := kubePod(t, env, "without", "denied", nil, nil)
	wantCode(t, "cache hit without credentials", pl.publish(ctx, denied, "in", input("src", ref)), codes.PermissionDenied)
	if entries, _ := os.ReadDir(pl.target(denied, "in")); len(entries) != 0 {
		t.Errorf("denied pod's target holds %d entries", len(entries))
	}
	want := t.TempDir()
	testtree.Write(t, want, 8)
	testtree.EqualMounted(t, want, pl.target(first, "in"))
}

func mustCreate(t testing.TB, env *testenv.Env, obj client.Object) {
	t.Helper()
	if err := env.Client.Create(t.Context(), obj); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func namespace(t testing.TB, env *testenv.Env, name string) {
	mustCreate(t, env, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
}

// configMap creates the config-artifact-storage ConfigMap of a namespace.
func configMap(t testing.TB, env *testenv.Env, ns string, labels, data map[string]string) {
	t.Helper()
	namespace(t, env, ns)
	mustCreate(t, env, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: config.ConfigMapName, Labels: labels}, Data: data})
}

// kubePod creates a pod bound to the plugin's node in the API server,
// labelled and annotated as Tekton would, and returns what kubelet knows
// of it.
func kubePod(t testing.TB, env *testenv.Env, ns, name string, labels, annotations map[string]string) pod {
	t.Helper()
	namespace(t, env, ns)
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, Annotations: annotations},
		Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "step", Image: "busybox"}}},
	}
	if err := env.Client.Create(t.Context(), obj); err != nil {
		t.Fatal(err)
	}
	return pod{Name: name, Namespace: ns, UID: string(obj.UID)}
}

// waitForRecord waits for the record of p's only volume to reach phase.
func waitForRecord(t *testing.T, env *testenv.Env, p pod, phase v1alpha1.Phase) *v1alpha1.ArtifactRecord {
	t.Helper()
	recs := testkit.WaitForRecords(t, env.Client, p.Namespace, 1, 20*time.Second, func(r *v1alpha1.ArtifactRecord) bool {
		return r.Spec.Pod.UID == p.UID && r.Status.Phase == phase
	})
	return &recs[0]
}

// waitForEvent waits for an Event on p with reason whose message holds
// text.
func waitForEvent(t *testing.T, env *testenv.Env, p pod, reason, text string) {
	t.Helper()
	waitFor(t, reason+" event on "+p.Name, func() bool {
		events := &corev1.EventList{}
		if err := env.Client.List(t.Context(), events, client.InNamespace(p.Namespace)); err != nil {
			return false
		}
		for _, e := range events.Items {
			if e.Reason == reason && string(e.InvolvedObject.UID) == p.UID && strings.Contains(e.Message, text) {
				return true
			}
		}
		return false
	})
}
