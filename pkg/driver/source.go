package driver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/cache"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// Providers reads artifacts from storage providers (provider.Client).
type Providers interface {
	// Stat returns the size and location of the blob digest (an artifact's
	// manifest) when scope may read it.
	Stat(ctx context.Context, backend string, scope provider.Scope, digest string) (size int64, location string, err error)
	// Pull verifies and extracts the artifact into dest (which must not
	// exist).
	Pull(ctx context.Context, backend string, scope provider.Scope, digest, dest string, lim archive.Limits) (*provider.PullResult, error)
}

// source is where an input comes from: an OCI reference, or an artifact a
// storage provider holds.
type source struct {
	oci oci.Reference // when backend is ""

	backend  string
	scope    provider.Scope
	digest   string // the manifest's
	location string // where the provider says the manifest is, once known
}

// providerSource parses ref, REPOSITORY@sha256:<hex>, as an artifact of
// backend seen from namespace.
func providerSource(backend, namespace, ref string) (source, error) {
	repo, digest, ok := strings.Cut(ref, "@")
	if !ok || !provider.ValidRepository(repo) || !provider.ValidDigest(digest) {
		return source{}, fmt.Errorf("%w: %s %q: backend %s wants REPOSITORY@sha256:<64 hex>, with a repository of lowercase path segments",
			volume.ErrInvalid, volume.AttrRef, ref, backend)
	}
	return source{backend: backend, scope: provider.Scope{Namespace: namespace, Repository: repo}, digest: digest}, nil
}

// String names the source in messages and records.
func (s source) String() string {
	if s.backend == "" {
		return s.oci.String()
	}
	return provider.Ref(s.backend, s.scope.Repository, s.digest)
}

// Digest returns the manifest digest (a Konflux blob reference's blob
// digest).
func (s source) Digest() string {
	if s.backend == "" {
		d, _ := s.oci.Digest()
		return d.String()
	}
	return s.digest
}

// Repository returns the OCI repository or the provider's.
func (s source) Repository() string {
	if s.backend == "" {
		return s.oci.Repository().Name()
	}
	return s.scope.Repository
}

// cacheKey names the cache entry of an input: by manifest digest, by blob
// digest for a Konflux blob reference (whose content is laid out
// differently), and apart for each provider and repository. A provider
// does not check that a manifest's layer is in the repository it is put
// in, as a registry does: keyed by digest alone, a pod could put another
// team's manifest bytes in its own repository and be handed that team's
// cached content.
func (s source) cacheKey() string {
	if s.backend != "" {
		repo := sha256.Sum256([]byte(s.scope.Repository))
		return "provider-" + s.backend + "-" + hex.EncodeToString(repo[:8]) + "-" + strings.ReplaceAll(s.digest, ":", "-")
	}
	d, _ := s.oci.Digest()
	prefix := "manifest-"
	if s.oci.Kind == oci.KindBlob {
		prefix = "blob-"
	}
	return prefix + d.Algorithm + "-" + d.Hex
}

// check asks the source's store whether the pod may read it: with the
// pod's credentials for a registry, with its namespace for a provider,
// which also says where the artifact is.
func (d *Driver) check(ctx context.Context, s *source, kc authn.Keychain) error {
	if s.backend == "" {
		return d.d.Registry.Check(ctx, kc, s.oci)
	}
	if d.d.Providers == nil {
		return fmt.Errorf("%w: backend %q: this node plugin has no storage provider client", errNotConfigured, s.backend)
	}
	_, loc, err := d.d.Providers.Stat(ctx, s.backend, s.scope, s.digest)
	s.location = loc
	return err
}

// fill returns what fetches the source into the cache.
func (d *Driver) fill(s source, kc authn.Keychain, cfg config.Config) cache.FillFunc {
	return func(ctx context.Context, dest string) (int64, error) {
		if s.backend == "" {
			res, err := d.d.Registry.Pull(ctx, kc, s.oci, dest, cfg.MaxArtifactBytes)
			if err != nil {
				return 0, err
			}
			d.d.Metrics.Pulled(res.Layer.Size)
			return res.Stats.Bytes, nil
		}
		res, err := d.d.Providers.Pull(ctx, s.backend, s.scope, s.digest, dest, archive.Limits{MaxBytes: cfg.MaxArtifactBytes})
		if err != nil {
			return 0, err
		}
		d.d.Metrics.Pulled(res.Layer.Size)
		return res.Stats.Bytes, nil
	}
}
