// Package attest keeps an artifact's signed provenance beside it in its
// registry: a Sigstore bundle attached as an OCI referrer, the layout of
// cosign's bundle specification, so that `cosign verify-attestation --key`
// and `oras discover` find it; and it finds and verifies one.
package attest

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	intoto "github.com/in-toto/attestation/go/v1"

	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
	"github.com/tektoncd/artifacts-csi-driver/pkg/signing"
)

// MaxBundleBytes bounds a bundle read from a registry.
const MaxBundleBytes = 1 << 20

// Annotations of the referrer, as cosign's bundle specification writes
// them.
const (
	AnnotationContent       = "dev.sigstore.bundle.content"
	AnnotationPredicateType = "dev.sigstore.bundle.predicateType"
	AnnotationCreated       = "org.opencontainers.image.created"
)

// Push attaches bundle, a signed provenance of subject, to subject in
// repo. Idempotent for the same bundle (the creation time annotation aside,
// which is the bundle's own attribute: pass the same time to get the same
// manifest).
func Push(ctx context.Context, c *oci.Client, repo name.Repository, subject v1.Hash, bundle []byte, created time.Time) (v1.Descriptor, error) {
	return c.Attach(ctx, repo, subject, oci.Attachment{
		ArtifactType: signing.BundleMediaType, MediaType: signing.BundleMediaType, Content: bundle,
		Annotations: map[string]string{
			AnnotationContent:       "dsse-envelope",
			AnnotationPredicateType: provenance.PredicateType,
			AnnotationCreated:       created.UTC().Format(time.RFC3339),
		},
	})
}

// Verified is a provenance that verified.
type Verified struct {
	Statement *intoto.Statement
	// KeyHint names the key that verified it; Bundle is the referrer's
	// manifest digest.
	KeyHint string
	Bundle  v1.Hash
}

// ErrNone: no attached bundle verifies [signing.ErrUntrusted].
var ErrNone = fmt.Errorf("%w: no provenance signed by a trusted key", signing.ErrUntrusted)

// MaxBundles bounds the provenance bundles of one artifact that are read:
// a registry listing more is answered with the first MaxBundles.
const MaxBundles = 16

// Bundle is a provenance bundle attached to an artifact.
type Bundle struct {
	// Digest is the referrer's manifest digest.
	Digest v1.Hash
	// Content is the bundle (JSON), verified against its digest, and
	// Annotations the referrer's; nil when it could not be read, and Err
	// says why.
	Content     []byte
	Annotations map[string]string
	Err         error
}

// Bundles lists the provenance bundles attached to digest in repo, at
// most MaxBundles, and reads each, within MaxBundleBytes. A bundle that
// cannot be read is returned with its error, unless the registry is
// unreachable or ctx is done: then that error alone.
func Bundles(ctx context.Context, c *oci.Client, repo name.Repository, digest v1.Hash) ([]Bundle, error) {
	refs, err := c.Attached(ctx, repo, digest, signing.BundleMediaType)
	if err != nil {
		return nil, err
	}
	out := make([]Bundle, 0, min(len(refs), MaxBundles))
	for _, d := range refs[:min(len(refs), MaxBundles)] {
		a, err := c.Attachment(ctx, repo, d.Digest, MaxBundleBytes)
		if err != nil && (ctx.Err() != nil || errdefs.ClassOf(err) == errdefs.ErrUnavailable) {
			return nil, err
		}
		out = append(out, Bundle{Digest: d.Digest, Content: a.Content, Annotations: a.Annotations, Err: err})
	}
	return out, nil
}

// Verify finds the provenance bundles attached to digest in repo and
// returns the first that one of keys verifies for that digest. When none
// does, the error wraps ErrNone and says why each one failed.
func Verify(ctx context.Context, c *oci.Client, repo name.Repository, digest v1.Hash, keys signing.Keys) (*Verified, error) {
	bundles, err := Bundles(ctx, c, repo, digest)
	if err != nil {
		return nil, err
	}
	if len(bundles) == 0 {
		return nil, fmt.Errorf("%w: %s has none attached", ErrNone, repo.Digest(digest.String()))
	}
	var why []string
	for _, b := range bundles {
		if b.Err != nil {
			why = append(why, fmt.Sprintf("%s: %v", b.Digest, b.Err))
			continue
		}
		st, hint, err := signing.Verify(b.Content, keys, digest.String())
		if err != nil {
			why = append(why, fmt.Sprintf("%s: %v", b.Digest, err))
			continue
		}
		return &Verified{Statement: st, KeyHint: hint, Bundle: b.Digest}, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrNone, strings.Join(why, "; "))
}
