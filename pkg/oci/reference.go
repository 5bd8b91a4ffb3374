package oci

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Kind says what a Reference names.
type Kind int

const (
	// KindManifest is REPO@sha256:<manifest digest>.
	KindManifest Kind = iota
	// KindTag is REPO:TAG; it is resolved to a manifest digest first.
	KindTag
	// KindBlob is the Konflux trusted-artifact form
	// oci:REPO@sha256:<blob digest>, naming a tar+gzip blob directly.
	KindBlob
)

// blobPrefix marks a Konflux trusted-artifact reference.
const blobPrefix = "oci:"

// Reference names an artifact to read.
type Reference struct {
	Kind Kind
	// Ref is the manifest digest or tag reference; for KindBlob, the blob
	// digest in the repository.
	Ref name.Reference
}

// Repository returns the repository the reference points into.
func (r Reference) Repository() name.Repository { return r.Ref.Context() }

// Digest returns the digest for KindManifest and KindBlob references.
func (r Reference) Digest() (v1.Hash, bool) {
	d, ok := r.Ref.(name.Digest)
	if !ok {
		return v1.Hash{}, false
	}
	h, err := v1.NewHash(d.DigestStr())
	return h, err == nil
}

func (r Reference) String() string {
	if r.Kind == KindBlob {
		return blobPrefix + r.Ref.Name()
	}
	return r.Ref.Name()
}

// Scheme says how a registry named in a reference is reached.
type Scheme int

const (
	// HTTPS is the default: HTTPS, except for localhost and private
	// addresses, which go-containerregistry reaches over plain HTTP when
	// HTTPS fails.
	HTTPS Scheme = iota
	// PlainHTTP reaches any registry over plain HTTP (name.Insecure): the
	// oci.plainHTTP setting, the CLI's --plain-http.
	PlainHTTP
)

// SchemeOf returns PlainHTTP when plainHTTP is set, else HTTPS.
func SchemeOf(plainHTTP bool) Scheme {
	if plainHTTP {
		return PlainHTTP
	}
	return HTTPS
}

func (s Scheme) nameOptions() []name.Option {
	if s == PlainHTTP {
		return []name.Option{name.Insecure}
	}
	return nil
}

// ParseReference parses REPO@sha256:<hex>, REPO:TAG or oci:REPO@sha256:<hex>.
// A tag must be explicit: there is no implicit "latest".
func ParseReference(s string, scheme Scheme) (Reference, error) {
	opts := scheme.nameOptions()
	if rest, ok := strings.CutPrefix(s, blobPrefix); ok {
		d, err := name.NewDigest(rest, opts...)
		if err != nil {
			return Reference{}, fmt.Errorf("parse blob reference %q: %w", s, err)
		}
		if err := checkSHA256(d); err != nil {
			return Reference{}, err
		}
		return Reference{Kind: KindBlob, Ref: d}, nil
	}
	if strings.Contains(s, "@") {
		d, err := name.NewDigest(s, opts...)
		if err != nil {
			return Reference{}, fmt.Errorf("parse reference %q: %w", s, err)
		}
		if err := checkSHA256(d); err != nil {
			return Reference{}, err
		}
		return Reference{Kind: KindManifest, Ref: d}, nil
	}
	if !hasExplicitTag(s) {
		return Reference{}, fmt.Errorf("reference %q needs a :TAG or an @sha256: digest", s)
	}
	t, err := name.NewTag(s, opts...)
	if err != nil {
		return Reference{}, fmt.Errorf("parse reference %q: %w", s, err)
	}
	return Reference{Kind: KindTag, Ref: t}, nil
}

// ParseRepositoryTag parses REPO[:TAG] for a push target. tag is "" when
// none is given.
func ParseRepositoryTag(s string, scheme Scheme) (repo name.Repository, tag string, err error) {
	opts := scheme.nameOptions()
	if strings.Contains(s, "@") {
		return name.Repository{}, "", fmt.Errorf("push target %q must not have a digest: the digest is computed", s)
	}
	if hasExplicitTag(s) {
		t, err := name.NewTag(s, opts...)
		if err != nil {
			return name.Repository{}, "", fmt.Errorf("parse push target %q: %w", s, err)
		}
		return t.Context(), t.TagStr(), nil
	}
	repo, err = name.NewRepository(s, opts...)
	if err != nil {
		return name.Repository{}, "", fmt.Errorf("parse push target %q: %w", s, err)
	}
	return repo, "", nil
}

// hasExplicitTag reports whether the last path segment of s carries a
// ":tag" (a colon before the first slash is a registry port).
func hasExplicitTag(s string) bool {
	last := s[strings.LastIndex(s, "/")+1:]
	return strings.Contains(last, ":")
}

func checkSHA256(d name.Digest) error {
	h, err := v1.NewHash(d.DigestStr())
	if err != nil || h.Algorithm != "sha256" {
		return fmt.Errorf("reference %q: only sha256 digests are supported", d)
	}
	return nil
}
