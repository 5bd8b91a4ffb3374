package broker_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2/ktesting"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/pkg/broker"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

const (
	driverNS = "artifacts-csi"
	nodeSA   = "artifacts-csi-node"
)

// TestBroker runs the broker against a real API server: a node plugin's
// pod-bound token of the broker's audience gets the credentials of the
// pods bound to its node, in the brief's order, and nothing else; any
// other token, pod or node is refused with a clear class.
func TestBroker(t *testing.T) {
	env := testenv.Start(t)
	_, ctx := ktesting.NewTestContext(t)
	kube := kubernetes.NewForConfigOrDie(env.Config)
	create := func(o client.Object) client.Object {
		t.Helper()
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		return o
	}
	for _, ns := range []string{driverNS, "team-a", "team-b", "team-c"} {
		create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	for _, n := range []string{"node-1", "node-2"} {
		create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	pod := func(ns, name, node, sa string) *corev1.Pod {
		return create(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "x"}}}}).(*corev1.Pod)
	}
	secret := func(ns, name string, typ corev1.SecretType, key, value string) {
		create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: typ, Data: map[string][]byte{key: []byte(value)}})
	}
	create(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: driverNS, Name: nodeSA}})
	create(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "builder"},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "pull"}, {Name: "missing"}}})
	create(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: driverNS, Name: config.ConfigMapName},
		Data: map[string]string{config.KeyCredentialsSecret: "cluster-creds"}})
	create(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: config.ConfigMapName,
		Labels: map[string]string{config.LabelConfigType: config.ConfigTypeArtifactStorage}},
		Data: map[string]string{config.KeyCredentialsSecret: "registry-creds"}})
	create(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team-c", Name: config.ConfigMapName,
		Labels: map[string]string{config.LabelConfigType: config.ConfigTypeArtifactStorage}},
		Data: map[string]string{config.KeyCredentialsSecret: "opaque"}})
	secret("team-a", "registry-creds", corev1.SecretTypeDockerConfigJson, corev1.DockerConfigJsonKey, `{"auths":{"a.example":{"auth":"YTph"}}}`)
	secret("team-a", "pull", corev1.SecretTypeDockercfg, corev1.DockerConfigKey, `{"p.example":{"auth":"cDpw"}}`)
	secret("team-c", "opaque", corev1.SecretTypeOpaque, "password", "hunter2")

	build := pod("team-a", "build", "node-1", "builder")
	elsewhere := pod("team-b", "elsewhere", "node-2", "")
	bad := pod("team-c", "bad", "node-1", "")
	plugin1, plugin2 := pod(driverNS, "plugin-1", "node-1", nodeSA), pod(driverNS, "plugin-2", "node-2", nodeSA)

	cert, err := broker.EnsureCertificate(ctx, kube, driverNS, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(&broker.Server{
		Tokens: kube.AuthenticationV1().TokenReviews(), Reader: env.Client,
		NodeUser:      "system:serviceaccount:" + driverNS + ":" + nodeSA,
		ClusterConfig: client.ObjectKey{Namespace: driverNS, Name: config.ConfigMapName},
	})
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	cm, err := kube.CoreV1().ConfigMaps(driverNS).Get(ctx, broker.CAConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, []byte(cm.Data[broker.CAKey]), 0o644); err != nil {
		t.Fatal(err)
	}
	// token writes a token of the broker's audience (or the API
	// server's, with none) for ServiceAccount ns/sa, bound to pod.
	token := func(ns, sa string, pod *corev1.Pod, audiences ...string) string {
		t.Helper()
		tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			Audiences: audiences, BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}},
			metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.CreateTemp(dir, "token-")
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(tr.Status.Token)
		f.Close()
		return f.Name()
	}
	node1, node2 := token(driverNS, nodeSA, plugin1, broker.Audience), token(driverNS, nodeSA, plugin2, broker.Audience)
	apiAudience := token(driverNS, nodeSA, plugin1)
	tenant := token("team-a", "builder", build, broker.Audience)

	ask := func(tokenFile string, p *corev1.Pod, uid string) (credentials.Snapshot, error) {
		c, err := broker.NewClient(broker.ClientOptions{URL: srv.URL, TokenFile: tokenFile, CAFile: ca})
		if err != nil {
			t.Fatal(err)
		}
		if uid == "" {
			uid = string(p.UID)
		}
		return c.Credentials(ctx, volume.Pod{Namespace: p.Namespace, Name: p.Name, UID: uid})
	}

	snap, err := ask(node1, build, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Secrets) != 2 || !bytes.Contains(snap.Secrets[0].Data[corev1.DockerConfigJsonKey], []byte("a.example")) ||
		!bytes.Contains(snap.Secrets[1].Data[corev1.DockerConfigKey], []byte("p.example")) {
		t.Errorf("credentials of team-a/build: %+v; want registry-creds, then the ServiceAccount's pull secret", snap.Secrets)
	}
	for _, tc := range []struct {
		name     string
		token    string
		pod      *corev1.Pod
		uid      string
		class    error
		mentions string
	}{
		{"a pod on another node", node2, build, "", errdefs.ErrPrecondition, "not bound to node node-2"},
		{"a pod re-created under the name", node1, build, "0f6a1c2e-0000-4000-8000-000000000009", errdefs.ErrPrecondition, "another pod now"},
		{"a token for the API server", apiAudience, build, "", errdefs.ErrPrecondition, "not authenticated"},
		{"a tenant's token", tenant, build, "", errdefs.ErrPrecondition, "is not the node plugin"},
		{"a Secret that is no pull secret", node1, bad, "", errdefs.ErrInvalid, "Opaque"},
		{"a configured Secret that is missing", node2, elsewhere, "", errdefs.ErrPrecondition, "cluster-creds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap, err := ask(tc.token, tc.pod, tc.uid)
			if errdefs.ClassOf(err) != tc.class || !strings.Contains(err.Error(), tc.mentions) {
				t.Errorf("Credentials = %v, %v; want class %v mentioning %q", snap, err, tc.class, tc.mentions)
			}
			if strings.Contains(errString(err), "hunter2") {
				t.Errorf("the error shows a secret: %v", err)
			}
		})
	}

	t.Run("certificate kept and published once", func(t *testing.T) {
		again, err := broker.EnsureCertificate(ctx, kube, driverNS, []string{"127.0.0.1"})
		if err != nil || !bytes.Equal(again.Certificate[0], cert.Certificate[0]) {
			t.Errorf("a second start made another certificate (%v)", err)
		}
	})
	t.Run("certificate not published yet", func(t *testing.T) {
		c, _ := broker.NewClient(broker.ClientOptions{URL: srv.URL, TokenFile: node1, CAFile: filepath.Join(dir, "absent")})
		if _, err := c.Credentials(ctx, volume.Pod{Namespace: "team-a", Name: "build", UID: string(build.UID)}); !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("Credentials = %v, want unavailable", err)
		}
	})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
