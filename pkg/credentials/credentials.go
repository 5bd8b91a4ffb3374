// Package credentials captures the registry credentials a volume is
// published with, so that an output can still be pushed after
// NodeUnpublishVolume, which carries none. A Snapshot holds Kubernetes
// pull-secret data (kubernetes.io/dockerconfigjson or dockercfg) and
// becomes an authn.Keychain through go-containerregistry's
// pkg/authn/kubernetes, which matches registries as kubelet does.
//
// Snapshots are secrets: they are stored with mode 0600 and never logged.
package credentials

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	kauth "github.com/google/go-containerregistry/pkg/authn/kubernetes"
	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"

	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
)

// ErrInvalid marks secret data that holds no usable registry credentials.
// Its class is errdefs.ErrInvalid.
var ErrInvalid = errdefs.New("invalid registry credentials", errdefs.ErrInvalid)

// Snapshot is an ordered list of pull secrets; the first one with
// credentials for a registry wins. The zero value means anonymous access.
type Snapshot struct {
	Secrets []Secret `json:"secrets,omitempty"`
}

// Secret is the part of a Kubernetes Secret a keychain needs.
type Secret struct {
	Type corev1.SecretType `json:"type"`
	Data map[string][]byte `json:"data"`
}

// String never shows secret data, so a Snapshot is safe to log by mistake.
func (s Snapshot) String() string {
	return fmt.Sprintf("credentials.Snapshot{%d secrets}", len(s.Secrets))
}

// FromPublishSecrets reads the secrets kubelet passes to NodePublishVolume
// from a volume's nodePublishSecretRef: the Secret's data, by key. An empty
// map means no secret. The Secret must be of type
// kubernetes.io/dockerconfigjson (key .dockerconfigjson) or
// kubernetes.io/dockercfg (key .dockercfg).
func FromPublishSecrets(secrets map[string]string) (Snapshot, error) {
	if len(secrets) == 0 {
		return Snapshot{}, nil
	}
	for _, s := range []struct {
		key string
		typ corev1.SecretType
	}{{corev1.DockerConfigJsonKey, corev1.SecretTypeDockerConfigJson}, {corev1.DockerConfigKey, corev1.SecretTypeDockercfg}} {
		if v, ok := secrets[s.key]; ok {
			sec := Secret{Type: s.typ, Data: map[string][]byte{s.key: []byte(v)}}
			if _, err := kauth.NewFromPullSecrets(context.Background(), []corev1.Secret{sec.secret()}); err != nil {
				return Snapshot{}, fmt.Errorf("%w: nodePublishSecretRef %s: %v", ErrInvalid, s.key, err)
			}
			return Snapshot{Secrets: []Secret{sec}}, nil
		}
	}
	keys := make([]string, 0, len(secrets))
	for k := range secrets {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return Snapshot{}, fmt.Errorf("%w: the nodePublishSecretRef Secret has keys %s; want a kubernetes.io/dockerconfigjson Secret (key %s)",
		ErrInvalid, strings.Join(keys, ", "), corev1.DockerConfigJsonKey)
}

// Keychain returns a keychain serving the snapshot's credentials, anonymous
// for registries it has none for.
func (s Snapshot) Keychain(ctx context.Context) (authn.Keychain, error) {
	if len(s.Secrets) == 0 {
		return anonymous{}, nil
	}
	secrets := make([]corev1.Secret, len(s.Secrets))
	for i, sec := range s.Secrets {
		secrets[i] = sec.secret()
	}
	kc, err := kauth.NewFromPullSecrets(ctx, secrets)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return kc, nil
}

// Add appends the data of a pull Secret to s, after the secrets it holds.
// Only kubernetes.io/dockerconfigjson and kubernetes.io/dockercfg Secrets
// are accepted; others are refused with ErrInvalid.
func (s *Snapshot) Add(sec *corev1.Secret) error {
	if sec.Type != corev1.SecretTypeDockerConfigJson && sec.Type != corev1.SecretTypeDockercfg {
		return fmt.Errorf("%w: Secret %s/%s is of type %s; want %s", ErrInvalid, sec.Namespace, sec.Name, sec.Type, corev1.SecretTypeDockerConfigJson)
	}
	s.Secrets = append(s.Secrets, Secret{Type: sec.Type, Data: sec.Data})
	return nil
}

// Join returns s followed by the secrets of more: s's credentials win
// for a registry both have.
func (s Snapshot) Join(more Snapshot) Snapshot {
	return Snapshot{Secrets: append(slices.Clip(s.Secrets), more.Secrets...)}
}

func (s Secret) secret() corev1.Secret {
	return corev1.Secret{Type: s.Type, Data: s.Data}
}

type anonymous struct{}

func (anonymous) Resolve(authn.Resource) (authn.Authenticator, error) { return authn.Anonymous, nil }

// For returns the credentials s gives for repository, as kubelet would
// match them (host, then path prefixes, then wildcards): a snapshot of
// that one entry, keyed by the repository, or the zero Snapshot for
// anonymous access. What is kept for an output's push after its unpublish
// is this, not every registry's credentials of every secret.
func (s Snapshot) For(ctx context.Context, repository name.Repository) (Snapshot, error) {
	cfg, err := s.resolve(ctx, repository)
	if err != nil || cfg == nil {
		return Snapshot{}, err
	}
	b, err := json.Marshal(map[string]any{"auths": map[string]*authn.AuthConfig{repository.Name(): cfg}})
	if err != nil {
		return Snapshot{}, err
	}
	return Snapshot{Secrets: []Secret{{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: b}}}}, nil
}

// Fingerprint identifies the credentials s gives for repository without
// revealing them (a SHA-256 of the entry), or "" for anonymous access:
// two pods with the same fingerprint present the same credentials.
func (s Snapshot) Fingerprint(ctx context.Context, repository name.Repository) (string, error) {
	cfg, err := s.resolve(ctx, repository)
	if err != nil || cfg == nil {
		return "", err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// resolve returns the credentials s gives for repository, nil for none.
func (s Snapshot) resolve(ctx context.Context, repository name.Repository) (*authn.AuthConfig, error) {
	kc, err := s.Keychain(ctx)
	if err != nil {
		return nil, err
	}
	auth, err := kc.Resolve(repository)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if auth == authn.Anonymous {
		return nil, nil
	}
	cfg, err := auth.Authorization()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if *cfg == (authn.AuthConfig{}) {
		return nil, nil
	}
	return cfg, nil
}
