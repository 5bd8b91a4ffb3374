// Package store is the one seam between the node plugin and where
// artifacts are kept: a Store reads and writes artifacts in one backend,
// with one identity. The OCI registry backend (over pkg/oci) acts with a
// pod's registry credentials; a storage provider backend (over
// pkg/provider) acts for a pod's namespace. Both keep the same artifact
// format and verify every byte they read against its digest before it
// appears in a destination.
//
// A volume's input source and output target each carry the Store they
// were opened from (Opener), so nothing above this package branches on
// the backend. Errors are of the classes of pkg/errdefs.
//
// Modelled on oras-go's content.Fetcher/Pusher and go-containerregistry's
// remote: a small interface, explicit identities, safe by default.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/chunked"
)

// OCI is the backend of OCI registries. Any other backend is the name of a
// storage provider serving <providers dir>/<name>.sock on the node.
const OCI = "oci"

// Store reads and writes the artifacts of one backend with one identity.
// Implementations are safe for concurrent use.
type Store interface {
	// Parse reads what a ref: volume attribute or an output record names,
	// REPOSITORY@sha256:<hex> (and, for OCI, a Konflux blob reference
	// oci:REPOSITORY@sha256:<hex>), as an artifact of this store. A tag is
	// refused: inputs are pinned by digest. Errors are ErrInvalid.
	Parse(s string) (Ref, error)
	// Check asks the store, without downloading anything, whether this
	// identity may read ref. It returns where the store keeps ref when the
	// store says so (a provider's location), else "".
	Check(ctx context.Context, ref Ref) (location string, err error)
	// Pull fetches ref, verifies it against its digest and extracts it
	// into dest, which must not exist, as o says. Nothing is left in dest
	// on error.
	Pull(ctx context.Context, ref Ref, dest string, o PullOptions) (*Pulled, error)
	// Bundles returns the signed provenance bundles attached to ref, as
	// attest.Bundles reads them; none for a Konflux blob reference, or
	// for a store that keeps no attachments (a storage provider: the
	// controller keeps those bundles on the producer's record).
	Bundles(ctx context.Context, ref Ref) ([]attest.Bundle, error)
	// Push archives req.Dir and stores it as an artifact. It is
	// idempotent: the same tree and request give the same manifest digest.
	Push(ctx context.Context, req PushRequest) (*Pushed, error)
}

// Opener opens the Store of a backend for one identity.
type Opener interface {
	// Open returns the store of id.Backend acting as id. It does no I/O:
	// a provider that is not running is reported by the store's calls
	// (ErrUnavailable); Open fails only for a backend this node cannot
	// have (ErrInvalid).
	Open(id Identity) (Store, error)
}

// Identity is who a store acts for.
type Identity struct {
	// Backend is OCI or a provider's name. Required.
	Backend string
	// Keychain gives a pod's registry credentials (OCI). Default:
	// anonymous.
	Keychain authn.Keychain
	// PlainHTTP reaches registries over HTTP (OCI, the oci.plainHTTP
	// setting). Default false.
	PlainHTTP bool
	// Namespace is the pod's namespace, the scope a provider checks.
	// Required for a provider.
	Namespace string
}

// Ref names one artifact of a store.
type Ref struct {
	// Backend is the store's (Identity.Backend).
	Backend string
	// Repository is the OCI repository, registry host included, or the
	// provider's repository path.
	Repository string
	// Digest is the manifest's, sha256:<hex>; for a blob reference, the
	// layer blob's.
	Digest string
	// Blob marks a Konflux trusted-artifact reference: Digest names a
	// tar+gzip layer directly, with no manifest (OCI only).
	Blob bool
}

// String names ref for people, records and logs: REPOSITORY@DIGEST for
// OCI (oci:REPOSITORY@DIGEST for a blob reference), BACKEND:REPOSITORY@DIGEST
// for a provider.
func (r Ref) String() string {
	switch {
	case r.Blob:
		return "oci:" + r.Repository + "@" + r.Digest
	case r.Backend == OCI:
		return r.Repository + "@" + r.Digest
	}
	return r.Backend + ":" + r.Repository + "@" + r.Digest
}

// CacheKey names ref's entry in the node's input cache. Registries are
// keyed by digest alone (a manifest in the blob form, which is laid out
// differently, apart): a registry serves a manifest only from a
// repository that holds its blobs. A provider does not check that, so
// its entries are apart for each provider and repository: keyed by digest
// alone, a pod could put another team's manifest bytes in its own
// repository and be handed that team's cached content.
func (r Ref) CacheKey() string {
	alg, hexDigest, _ := strings.Cut(r.Digest, ":")
	switch {
	case r.Blob:
		return "blob-" + alg + "-" + hexDigest
	case r.Backend == OCI:
		return "manifest-" + alg + "-" + hexDigest
	}
	repo := sha256.Sum256([]byte(r.Repository))
	return "provider-" + r.Backend + "-" + hex.EncodeToString(repo[:8]) + "-" + alg + "-" + hexDigest
}

// PushRequest says what to store.
type PushRequest struct {
	// Dir is the directory to archive. Required.
	Dir string
	// Repository receives the artifact: an OCI repository (registry host
	// included) or a provider's repository path. Required.
	Repository string
	// Tag, when set, tags the manifest (OCI; providers are
	// content-addressed and ignore it).
	Tag string
	// Metadata goes into the config blob and the manifest annotations.
	// Metadata.Name is required.
	Metadata artifact.Metadata
	// Compression of a directory archive. Default gzip.
	Compression archive.Compression
	// Format of a directory: "" (the archive layout) or "chunked" (OCI
	// only; docs/format.md).
	Format string
	// MediaType, when set, stores the single regular file Dir must hold
	// as-is, with this media type, instead of an archive.
	MediaType string
	// Group, when set, makes the manifest refer to the PipelineRun's group
	// manifest (OCI; providers ignore it).
	Group *artifact.Group
}

// Pulled describes a pulled artifact.
type Pulled struct {
	// Layer is the blob that was extracted; Layer.Size the bytes fetched.
	Layer v1.Descriptor
	// Stats counts what was extracted.
	Stats archive.Stats
	// Fetched counts the bytes read from the store.
	Fetched int64
	// Contents, for an artifact of the chunked layout, says where in dest
	// its chunks and files are, for later pulls' PullOptions.Local.
	Contents *chunked.Contents
}

// PullOptions configure a Pull.
type PullOptions struct {
	// Limits bound what is extracted. Default: archive's.
	Limits archive.Limits
	// Local gives the chunks of a chunked artifact that the node holds
	// already (verified all the same). Default: none.
	Local chunked.Local
}

// Pushed describes a stored artifact.
type Pushed struct {
	// Ref names it by manifest digest.
	Ref Ref
	// Manifest and Layer describe what was stored.
	Manifest, Layer v1.Descriptor
	// Location is where a provider says the manifest is; "" for OCI.
	Location string
	// Uploaded is false when the layer was in the store already and
	// nothing was compressed or uploaded.
	Uploaded bool
	// Contents, for an artifact of the chunked layout, says where in
	// PushRequest.Dir its chunks and files are.
	Contents *chunked.Contents
}
