package credentials

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Sources says where a pod's registry credentials come from, in the
// brief's order: the volume's nodePublishSecretRef data, the Secret named
// by oci.credentialsSecret, then the ServiceAccount's imagePullSecrets.
type Sources struct {
	// Publish is the nodePublishSecretRef data kubelet passed, if any.
	Publish map[string]string
	// Namespace of the pod, where every Secret is looked up.
	Namespace string
	// CredentialsSecret is the oci.credentialsSecret setting, if any.
	CredentialsSecret string
	// ServiceAccount is the pod's ServiceAccount name ("" skips it).
	ServiceAccount string
}

// Collect reads the Secrets s names through client and returns them as one
// Snapshot, first source first. A missing oci.credentialsSecret is an error
// (the configuration names it); a missing ServiceAccount or image pull
// Secret is skipped, as kubelet skips them for image pulls. Secrets of other
// types than dockerconfigjson and dockercfg are refused with ErrInvalid.
func Collect(ctx context.Context, client kubernetes.Interface, s Sources) (Snapshot, error) {
	snap, err := FromPublishSecrets(s.Publish)
	if err != nil {
		return Snapshot{}, err
	}
	secrets := client.CoreV1().Secrets(s.Namespace)
	if s.CredentialsSecret != "" {
		sec, err := secrets.Get(ctx, s.CredentialsSecret, metav1.GetOptions{})
		if err != nil {
			return Snapshot{}, fmt.Errorf("oci.credentialsSecret %s/%s: %w", s.Namespace, s.CredentialsSecret, err)
		}
		if err := add(&snap, sec); err != nil {
			return Snapshot{}, err
		}
	}
	if s.ServiceAccount == "" {
		return snap, nil
	}
	sa, err := client.CoreV1().ServiceAccounts(s.Namespace).Get(ctx, s.ServiceAccount, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return snap, nil
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("service account %s/%s: %w", s.Namespace, s.ServiceAccount, err)
	}
	for _, ref := range sa.ImagePullSecrets {
		sec, err := secrets.Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return Snapshot{}, fmt.Errorf("image pull secret %s/%s: %w", s.Namespace, ref.Name, err)
		}
		if err := add(&snap, sec); err != nil {
			return Snapshot{}, err
		}
	}
	return snap, nil
}

func add(snap *Snapshot, sec *corev1.Secret) error {
	if sec.Type != corev1.SecretTypeDockerConfigJson && sec.Type != corev1.SecretTypeDockercfg {
		return fmt.Errorf("%w: Secret %s/%s is of type %s; want %s", ErrInvalid, sec.Namespace, sec.Name, sec.Type, corev1.SecretTypeDockerConfigJson)
	}
	snap.Secrets = append(snap.Secrets, Secret{Type: sec.Type, Data: sec.Data})
	return nil
}
