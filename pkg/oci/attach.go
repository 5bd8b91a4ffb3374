package oci

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
)

// Attachment is a small document attached to an artifact as an OCI
// referrer: a manifest of ArtifactType whose subject is the artifact and
// whose one layer is Content, of MediaType (a Sigstore bundle, say, as
// cosign's bundle specification stores one).
type Attachment struct {
	ArtifactType string
	MediaType    string
	Content      []byte
	Annotations  map[string]string
}

// Attach pushes a as a referrer of manifest subject in repo, by digest:
// the registry's referrers API lists it, or, without one, the
// sha256-<hex> fallback tag (kept consistent as Push keeps it). The same
// attachment gives the same manifest, so Attach is idempotent. It returns
// the manifest's descriptor.
func (c *Client) Attach(ctx context.Context, repo name.Repository, subject v1.Hash, a Attachment) (v1.Descriptor, error) {
	opts := c.remoteOptions(ctx)
	subj, err := remote.Head(repo.Digest(subject.String()), opts...)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("attach to %s: %w", subject, classify(err))
	}
	empty := static.NewLayer(artifact.EmptyBlob(), artifact.EmptyMediaType)
	layer := static.NewLayer(a.Content, types.MediaType(a.MediaType))
	for _, l := range []v1.Layer{empty, layer} {
		if err := remote.WriteLayer(repo, l, opts...); err != nil {
			return v1.Descriptor{}, fmt.Errorf("push %s to %s: %w", a.ArtifactType, repo, classify(err))
		}
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  a.ArtifactType,
		Config:        artifact.Descriptor(artifact.EmptyMediaType, artifact.EmptyBlob()),
		Layers:        []v1.Descriptor{artifact.Descriptor(types.MediaType(a.MediaType), a.Content)},
		Annotations:   a.Annotations,
		Subject:       &v1.Descriptor{MediaType: subj.MediaType, Digest: subj.Digest, Size: subj.Size},
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return v1.Descriptor{}, err
	}
	desc := artifact.Descriptor(types.OCIManifestSchema1, raw)
	desc.ArtifactType = a.ArtifactType
	if err := c.putManifest(ctx, repo.Digest(desc.Digest.String()), raw, m.Subject, desc, opts); err != nil {
		return v1.Descriptor{}, err
	}
	return desc, nil
}

// Attached returns the referrers of subject in repo of artifactType, as
// the registry (or the fallback tag) lists them. A registry that reports
// the config's media type instead of the manifest's artifactType (an
// early draft of the referrers API, go-containerregistry's in-memory one)
// reports the empty config's: such a referrer's manifest is read to tell.
func (c *Client) Attached(ctx context.Context, repo name.Repository, subject v1.Hash, artifactType string) ([]v1.Descriptor, error) {
	idx, err := remote.Referrers(repo.Digest(subject.String()), c.remoteOptions(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("list referrers of %s: %w", subject, classify(err))
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var out []v1.Descriptor
	for _, d := range im.Manifests {
		if d.ArtifactType == "" || d.ArtifactType == artifact.EmptyMediaType {
			_, raw, err := c.manifest(ctx, Reference{Kind: KindManifest, Ref: repo.Digest(d.Digest.String())})
			if err != nil {
				return nil, err
			}
			var m v1.Manifest
			if err := json.Unmarshal(raw, &m); err != nil {
				continue
			}
			d.ArtifactType = m.ArtifactType
		}
		if d.ArtifactType == artifactType {
			out = append(out, d)
		}
	}
	return out, nil
}

// Attachment fetches the referrer d of repo, verified against its digest,
// and returns its one layer's content, verified too, of at most max bytes.
func (c *Client) Attachment(ctx context.Context, repo name.Repository, d v1.Hash, max int64) (Attachment, error) {
	dig, raw, err := c.manifest(ctx, Reference{Kind: KindManifest, Ref: repo.Digest(d.String())})
	if err != nil {
		return Attachment{}, err
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil || len(m.Layers) != 1 {
		return Attachment{}, fmt.Errorf("%w: referrer %s: not a manifest of one layer", errCorrupt, dig)
	}
	l := m.Layers[0]
	if l.Size > max {
		return Attachment{}, fmt.Errorf("%w: referrer %s: a layer of %d bytes, more than the %d allowed", errTooLarge, dig, l.Size, max)
	}
	content, err := c.smallBlob(ctx, repo, l)
	if err != nil {
		return Attachment{}, fmt.Errorf("referrer %s: %w", dig, err)
	}
	return Attachment{ArtifactType: m.ArtifactType, MediaType: string(l.MediaType), Content: content, Annotations: m.Annotations}, nil
}
