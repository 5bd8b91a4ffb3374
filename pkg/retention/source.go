package retention

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

// ConfigSource returns the configuration of a namespace: its cluster and
// namespace levels, which alone may set retention.
type ConfigSource interface {
	Config(ctx context.Context, namespace string) (config.Config, error)
}

// Registry is what retention needs of a registry. *oci.Client is one.
type Registry interface {
	// Resolve returns the manifest digest a tag names (errdefs.ErrNotFound
	// when there is no such tag).
	Resolve(ctx context.Context, ref oci.Reference) (name.Digest, error)
	// Delete deletes a tag or a manifest, as oci.Client.Delete.
	Delete(ctx context.Context, ref name.Reference) error
}

var _ Registry = (*oci.Client)(nil)

// Registries opens the Registry that removes a namespace's outputs, with
// the credentials of its configuration.
type Registries interface {
	Open(ctx context.Context, namespace string, c config.Config) (Registry, error)
}

// APIConfig is a ConfigSource reading the two ConfigMaps from the API
// server, as the credentials broker does: the cluster's (Cluster) and the
// namespace's config-artifact-storage, if labelled
// tekton.dev/config-type: artifact-storage. GETs only; a namespace's
// configuration is kept for TTL, so that a resync of every record costs
// two requests per namespace, not per record. Invalid values are the node
// plugin's to report, on pods; here they keep their defaults. It is safe
// for concurrent use.
type APIConfig struct {
	Reader  client.Reader
	Cluster client.ObjectKey
	// TTL is how long a namespace's configuration is reused. Default 10s.
	TTL time.Duration

	mu    sync.Mutex
	cache map[string]cachedConfig
}

type cachedConfig struct {
	c       config.Config
	expires time.Time
}

var _ ConfigSource = (*APIConfig)(nil)

// Config implements ConfigSource.
func (a *APIConfig) Config(ctx context.Context, namespace string) (config.Config, error) {
	ttl := a.TTL
	if ttl == 0 {
		ttl = 10 * time.Second
	}
	a.mu.Lock()
	e, ok := a.cache[namespace]
	a.mu.Unlock()
	if ok && time.Now().Before(e.expires) {
		return e.c, nil
	}
	c, err := config.ReadNamespace(ctx, a.Reader, a.Cluster, namespace)
	var ke *config.KeyError
	if err != nil && !errors.As(err, &ke) {
		return config.Config{}, err
	}
	if err != nil {
		klog.FromContext(ctx).V(4).Info("Invalid configuration values keep their defaults", "namespace", namespace, "err", err)
	}
	a.mu.Lock()
	if a.cache == nil {
		a.cache = map[string]cachedConfig{}
	}
	a.cache[namespace] = cachedConfig{c: c, expires: time.Now().Add(ttl)}
	a.mu.Unlock()
	return c, nil
}

// SecretRegistries opens registries with the Secret a namespace's
// oci.credentialsSecret names (a pull secret in that namespace, read with
// a GET each time), or anonymously when it names none. The pods'
// imagePullSecrets are not used: the pods are gone by the time their
// outputs are removed. It is safe for concurrent use.
type SecretRegistries struct {
	Reader client.Reader
	// Client is the registry client, with no credentials of its own
	// (authn.NewMultiKeychain()).
	Client *oci.Client
}

var _ Registries = (*SecretRegistries)(nil)

// errNoCredentials marks a credentials Secret the namespace names but
// does not have: retried, since someone may create it.
var errNoCredentials = errdefs.New("credentials Secret not found", errdefs.ErrPrecondition)

// Open implements Registries.
func (s *SecretRegistries) Open(ctx context.Context, namespace string, c config.Config) (Registry, error) {
	return s.Registry(ctx, namespace, c)
}

// Registry returns the registry client of namespace, with the credentials
// its configuration c names.
func (s *SecretRegistries) Registry(ctx context.Context, namespace string, c config.Config) (*oci.Client, error) {
	if c.CredentialsSecret == "" {
		return s.Client, nil
	}
	sec := &corev1.Secret{}
	err := s.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: c.CredentialsSecret}, sec)
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("%s %s/%s: %w", config.KeyCredentialsSecret, namespace, c.CredentialsSecret, errNoCredentials)
	case err != nil:
		return nil, fmt.Errorf("get Secret %s/%s: %w", namespace, c.CredentialsSecret, err)
	}
	var snap credentials.Snapshot
	if err := snap.Add(sec); err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", config.KeyCredentialsSecret, namespace, c.CredentialsSecret, err)
	}
	kc, err := snap.Keychain(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", config.KeyCredentialsSecret, namespace, c.CredentialsSecret, err)
	}
	return s.Client.With(kc), nil
}
