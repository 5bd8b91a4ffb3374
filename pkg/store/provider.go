package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider"
	pb "github.com/tektoncd/artifacts-csi-driver/proto/provider/v1alpha1"
)

// providerStore is the Store of one storage provider for one namespace.
type providerStore struct {
	client    *provider.Client
	name      string
	namespace string
}

var _ Store = providerStore{}

func (p providerStore) Parse(s string) (Ref, error) {
	repo, digest, ok := strings.Cut(s, "@")
	if !ok || !pb.ValidRepository(repo) || !pb.ValidDigest(digest) {
		return Ref{}, fmt.Errorf("%w: %q: backend %s wants REPOSITORY@sha256:<64 hex>, with a repository of lowercase path segments",
			errdefs.ErrInvalid, s, p.name)
	}
	return Ref{Backend: p.name, Repository: repo, Digest: digest}, nil
}

func (p providerStore) scope(repository string) provider.Scope {
	return provider.Scope{Namespace: p.namespace, Repository: repository}
}

func (p providerStore) Check(ctx context.Context, ref Ref) (string, error) {
	_, loc, err := p.client.Stat(ctx, p.name, p.scope(ref.Repository), ref.Digest)
	return loc, err
}

func (p providerStore) Pull(ctx context.Context, ref Ref, dest string, o PullOptions) (*Pulled, error) {
	res, err := p.client.Pull(ctx, p.name, p.scope(ref.Repository), ref.Digest, dest, o.Limits)
	if err != nil {
		return nil, err
	}
	return &Pulled{Layer: res.Layer, Stats: res.Stats, Fetched: res.Layer.Size}, nil
}

// Bundles implements Store: a provider keeps no attachments.
func (p providerStore) Bundles(context.Context, Ref) ([]attest.Bundle, error) { return nil, nil }

func (p providerStore) Push(ctx context.Context, req PushRequest) (*Pushed, error) {
	res, err := p.client.Push(ctx, provider.PushRequest{
		Backend: p.name, Scope: p.scope(req.Repository),
		Dir: req.Dir, Metadata: req.Metadata, Compression: req.Compression, MediaType: req.MediaType,
	})
	if err != nil {
		return nil, err
	}
	return &Pushed{
		Ref:      Ref{Backend: p.name, Repository: req.Repository, Digest: res.Manifest.Digest.String()},
		Manifest: res.Manifest, Layer: res.Layer, Location: res.Location, Uploaded: true,
	}, nil
}
