package store

import (
	"context"
	"fmt"

	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

// registry is the Store of OCI registries for one pod's credentials.
type registry struct {
	client *oci.Client // already With the pod's keychain
	scheme oci.Scheme
}

var _ Store = registry{}

func (r registry) Parse(s string) (Ref, error) {
	ref, err := oci.ParseReference(s, r.scheme)
	if err != nil {
		return Ref{}, errdefs.Classify(err, errdefs.ErrInvalid)
	}
	d, ok := ref.Digest()
	if !ok {
		return Ref{}, fmt.Errorf("%w: %q must be pinned by digest (REPOSITORY@sha256:<digest>)", errdefs.ErrInvalid, s)
	}
	return Ref{Backend: OCI, Repository: ref.Repository().Name(), Digest: d.String(), Blob: ref.Kind == oci.KindBlob}, nil
}

// reference turns ref back into the oci package's form.
func (r registry) reference(ref Ref) (oci.Reference, error) {
	s := ref.Repository + "@" + ref.Digest
	if ref.Blob {
		s = "oci:" + s
	}
	parsed, err := oci.ParseReference(s, r.scheme)
	return parsed, errdefs.Classify(err, errdefs.ErrInvalid)
}

func (r registry) Check(ctx context.Context, ref Ref) (string, error) {
	parsed, err := r.reference(ref)
	if err != nil {
		return "", err
	}
	return "", r.client.Check(ctx, parsed)
}

func (r registry) Pull(ctx context.Context, ref Ref, dest string, o PullOptions) (*Pulled, error) {
	parsed, err := r.reference(ref)
	if err != nil {
		return nil, err
	}
	res, err := r.client.WithLimits(o.Limits).WithLocal(o.Local).Pull(ctx, parsed, dest)
	if err != nil {
		return nil, err
	}
	return &Pulled{Layer: res.Layer, Stats: res.Stats, Contents: res.Contents, Fetched: res.Fetched}, nil
}

func (r registry) Bundles(ctx context.Context, ref Ref) ([]attest.Bundle, error) {
	if ref.Blob {
		return nil, nil
	}
	parsed, err := r.reference(ref)
	if err != nil {
		return nil, err
	}
	h, _ := parsed.Digest() // Parse required one
	return attest.Bundles(ctx, r.client, parsed.Repository(), h)
}

func (r registry) Push(ctx context.Context, req PushRequest) (*Pushed, error) {
	repo, _, err := oci.ParseRepositoryTag(req.Repository, r.scheme)
	if err != nil {
		return nil, fmt.Errorf("%w: repository %q: %w", errdefs.ErrInvalid, req.Repository, err)
	}
	res, err := r.client.Push(ctx, oci.PushRequest{
		Dir: req.Dir, Repository: repo, Tag: req.Tag, Metadata: req.Metadata,
		Compression: req.Compression, Format: req.Format, MediaType: req.MediaType, Group: req.Group,
	})
	if err != nil {
		return nil, err
	}
	return &Pushed{
		Ref:      Ref{Backend: OCI, Repository: repo.Name(), Digest: res.Manifest.Digest.String()},
		Manifest: res.Manifest, Layer: res.Layer, Uploaded: !res.Reused, Contents: res.Contents,
	}, nil
}
