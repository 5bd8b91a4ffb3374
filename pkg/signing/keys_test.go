package signing

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestEnsureKey: a key is made once and kept; its public key is
// published; after a rotation, the retired key still verifies.
func TestEnsureKey(t *testing.T) {
	ctx := context.Background()
	kube := fake.NewClientset()
	first, keys, err := EnsureKey(ctx, kube, "artifacts-csi")
	if err != nil {
		t.Fatal(err)
	}
	again, _, err := EnsureKey(ctx, kube, "artifacts-csi")
	if err != nil || string(again.GetHint()) != string(first.GetHint()) {
		t.Fatalf("a second start made another key: %v", err)
	}
	if len(keys) != 1 || keys[string(first.GetHint())] == nil {
		t.Fatalf("trusted keys %v", keys)
	}
	cm, err := kube.CoreV1().ConfigMaps("artifacts-csi").Get(ctx, KeysConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pub, err := ParseKeys([]byte(cm.Data[CurrentPublicKey])); err != nil || pub[string(first.GetHint())] == nil {
		t.Errorf("published %s: %v", CurrentPublicKey, err)
	}

	// Rotation, as docs/provenance.md says.
	bundle := signed(t, first, digest)
	oldPub := []byte(cm.Data[CurrentPublicKey])
	newKey, _ := GenerateKey()
	sec, _ := kube.CoreV1().Secrets("artifacts-csi").Get(ctx, KeySecret, metav1.GetOptions{})
	sec.Data = map[string][]byte{KeySecretKey: newKey, RetiredKey: oldPub}
	if _, err := kube.CoreV1().Secrets("artifacts-csi").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rotated, keys, err := EnsureKey(ctx, kube, "artifacts-csi")
	if err != nil {
		t.Fatal(err)
	}
	if string(rotated.GetHint()) == string(first.GetHint()) || len(keys) != 2 {
		t.Fatalf("after rotation: %d trusted keys", len(keys))
	}
	if _, _, err := Verify(bundle, keys, digest); err != nil {
		t.Errorf("an output signed before the rotation: %v", err)
	}
	cm, _ = kube.CoreV1().ConfigMaps("artifacts-csi").Get(ctx, KeysConfigMap, metav1.GetOptions{})
	if trusted, err := ParseKeys([]byte(cm.Data[TrustedPublicKeys])); err != nil || len(trusted) != 2 {
		t.Errorf("published %s: %d keys, %v", TrustedPublicKeys, len(trusted), err)
	}
}

func TestEnsureKeyRefusesABadSecret(t *testing.T) {
	kube := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: KeySecret, Namespace: "ns"},
		Data: map[string][]byte{KeySecretKey: []byte("not a key")}})
	if _, _, err := EnsureKey(context.Background(), kube, "ns"); err == nil {
		t.Error("EnsureKey accepted a Secret without a key")
	}
}
