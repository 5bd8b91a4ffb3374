package credentials_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
)

func dockerConfig(entries map[string]string) []byte {
	s := `{"auths":{`
	first := true
	for reg, user := range entries {
		if !first {
			s += ","
		}
		first = false
		s += fmt.Sprintf("%q:{%q:%q}", reg, "auth", base64.StdEncoding.EncodeToString([]byte(user+":pw")))
	}
	return []byte(s + "}}")
}

// TestCollect reads credentials from a real API server in the brief's
// order: nodePublishSecretRef, oci.credentialsSecret, imagePullSecrets.
func TestCollect(t *testing.T) {
	env := testenv.Start(t)
	client := kubernetes.NewForConfigOrDie(env.Config)
	ctx := t.Context()
	ns := "default"
	mk := func(name string, typ corev1.SecretType, data map[string][]byte) {
		t.Helper()
		if _, err := client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Type: typ, Data: data}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mk("team-registry", corev1.SecretTypeDockerConfigJson, map[string][]byte{
		corev1.DockerConfigJsonKey: dockerConfig(map[string]string{"reg-a.example": "from-config", "reg-b.example": "bob"})})
	mk("pull-c", corev1.SecretTypeDockerConfigJson, map[string][]byte{
		corev1.DockerConfigJsonKey: dockerConfig(map[string]string{"reg-c.example": "carol", "reg-b.example": "from-sa"})})
	mk("opaque", corev1.SecretTypeOpaque, map[string][]byte{"password": []byte("x")})
	sa := func(name string, pulls ...string) {
		t.Helper()
		acct := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}
		for _, p := range pulls {
			acct.ImagePullSecrets = append(acct.ImagePullSecrets, corev1.LocalObjectReference{Name: p})
		}
		if _, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, acct, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sa("builder", "missing", "pull-c")
	sa("odd", "opaque")

	publish := map[string]string{corev1.DockerConfigJsonKey: string(dockerConfig(map[string]string{"reg-a.example": "alice"}))}
	snap, err := credentials.Collect(ctx, client, credentials.Sources{Publish: publish, Namespace: ns, CredentialsSecret: "team-registry", ServiceAccount: "builder"})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := snap.Keychain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for reg, want := range map[string]string{"reg-a.example": "alice", "reg-b.example": "bob", "reg-c.example": "carol", "reg-d.example": ""} {
		r, _ := name.NewRegistry(reg)
		a, err := kc.Resolve(r)
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := a.Authorization()
		if cfg.Username != want {
			t.Errorf("%s: user %q, want %q (first source wins)", reg, cfg.Username, want)
		}
	}

	for _, tt := range []struct {
		name string
		src  credentials.Sources
		want error
	}{
		{"missing credentialsSecret", credentials.Sources{Namespace: ns, CredentialsSecret: "nope"}, nil},
		{"opaque image pull secret", credentials.Sources{Namespace: ns, ServiceAccount: "odd"}, credentials.ErrInvalid},
	} {
		_, err := credentials.Collect(ctx, client, tt.src)
		if err == nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want an error (%v)", tt.name, err, tt.want)
		}
	}
	if _, err := credentials.Collect(ctx, client, credentials.Sources{Namespace: ns, ServiceAccount: "absent"}); err != nil {
		t.Errorf("a missing service account: %v, want anonymous", err)
	}
}
