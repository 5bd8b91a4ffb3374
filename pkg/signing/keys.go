package signing

import (
	"bytes"
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Where the controller keeps its signing key and publishes the keys that
// verify, in the driver's namespace.
const (
	// KeySecret holds the private key (KeySecretKey, PEM) and the public
	// keys of the keys it replaced (RetiredKey, PEM, concatenated).
	KeySecret    = "artifacts-signing-key"
	KeySecretKey = "key.pem"
	RetiredKey   = "retired.pub"
	// KeysConfigMap publishes CurrentPublicKey (what `cosign
	// verify-attestation --key` takes) and TrustedPublicKeys (the current
	// key and the retired ones: what the node plugin verifies with).
	KeysConfigMap     = "artifacts-signing-keys"
	CurrentPublicKey  = "cosign.pub"
	TrustedPublicKeys = "trusted.pub"
)

// EnsureKey returns the signing key of Secret KeySecret in namespace,
// generating one (ECDSA P-256) when the Secret is missing, and publishes
// the public keys in ConfigMap KeysConfigMap either way. It is idempotent
// and safe for several replicas starting at once: the first Secret
// created wins, the others read it. Rotation: put the old public key into
// the Secret's RetiredKey, the new private key into KeySecretKey, and
// restart the controller; outputs signed by the old key stay verifiable.
func EnsureKey(ctx context.Context, kube kubernetes.Interface, namespace string) (*ECDSA, Keys, error) {
	secrets := kube.CoreV1().Secrets(namespace)
	sec, err := secrets.Get(ctx, KeySecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		key, gerr := GenerateKey()
		if gerr != nil {
			return nil, nil, gerr
		}
		sec, err = secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: KeySecret, Namespace: namespace},
			Data: map[string][]byte{KeySecretKey: key}}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			sec, err = secrets.Get(ctx, KeySecret, metav1.GetOptions{})
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("signing key: Secret %s/%s: %w", namespace, KeySecret, err)
	}
	signer, err := NewECDSA(sec.Data[KeySecretKey])
	if err != nil {
		return nil, nil, fmt.Errorf("signing key: Secret %s/%s: %w", namespace, KeySecret, err)
	}
	current, err := PublicKeyPEM(signer.GetPublicKey())
	if err != nil {
		return nil, nil, err
	}
	trusted := append(bytes.Clone(current), sec.Data[RetiredKey]...)
	keys, err := ParseKeys(trusted)
	if err != nil {
		return nil, nil, fmt.Errorf("signing key: Secret %s/%s %s: %w", namespace, KeySecret, RetiredKey, err)
	}
	data := map[string]string{CurrentPublicKey: string(current), TrustedPublicKeys: string(trusted)}
	if err := publishKeys(ctx, kube, namespace, data); err != nil {
		return nil, nil, err
	}
	return signer, keys, nil
}

// publishKeys writes data into ConfigMap KeysConfigMap, if it differs.
func publishKeys(ctx context.Context, kube kubernetes.Interface, namespace string, data map[string]string) error {
	cms := kube.CoreV1().ConfigMaps(namespace)
	cm, err := cms.Get(ctx, KeysConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: KeysConfigMap, Namespace: namespace}, Data: data},
			metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return publishKeys(ctx, kube, namespace, data)
		}
	case err == nil && (cm.Data[CurrentPublicKey] != data[CurrentPublicKey] || cm.Data[TrustedPublicKeys] != data[TrustedPublicKeys]):
		cm.Data = data
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("signing keys: ConfigMap %s/%s: %w", namespace, KeysConfigMap, err)
	}
	return nil
}
