package oci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/chunked"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
)

// PullResult describes a pulled artifact.
type PullResult struct {
	// Ref is REPO@sha256:<manifest digest>, or for a blob reference the blob
	// reference itself.
	Ref string
	// Layer is the blob that was extracted.
	Layer v1.Descriptor
	// Metadata from the manifest annotations, when the artifact is ours.
	Metadata *artifact.Metadata
	// FileName is set for a single-file artifact.
	FileName string
	// Compression detected in the layer (archives only).
	Compression archive.Compression
	// Stats counts what was extracted.
	Stats archive.Stats
	// Contents, for the chunked layout, says where its chunks and files
	// are in dest.
	Contents *chunked.Contents
	// Fetched counts the blob bytes read from the registry.
	Fetched int64
}

// Pull fetches the artifact ref names and extracts it into dest, which must
// be absent or empty. Tags are resolved to a digest first; the manifest is
// verified against that digest and the layer against the manifest, while it
// streams, before anything appears in dest. A single-file artifact becomes
// dest/<title>. Nothing is left in dest on error. Safe for concurrent use
// with different destinations.
func (c *Client) Pull(ctx context.Context, ref Reference, dest string) (*PullResult, error) {
	repo := ref.Repository()
	res := &PullResult{}
	var layout *artifact.Layout
	if ref.Kind == KindBlob {
		d, _ := ref.Digest()
		layout = &artifact.Layout{Layer: v1.Descriptor{Digest: d, Size: -1}}
		res.Ref = ref.String()
	} else {
		dig, raw, err := c.manifest(ctx, ref)
		if err != nil {
			return nil, err
		}
		if layout, err = artifact.ParseManifest(raw); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", artifact.ErrInvalid, dig, err)
		}
		res.Ref = dig.Name()
	}
	res.Layer, res.Metadata, res.FileName = layout.Layer, layout.Metadata, layout.FileName
	if layout.Chunked {
		if err := c.pullChunked(ctx, ref, layout, dest, res); err != nil {
			return nil, err
		}
		return res, nil
	}

	src := newBlobSource(layout.Layer.Digest, c.o.Limits)
	if src.max >= 0 && layout.Layer.Size > src.max {
		return nil, fmt.Errorf("%w: %s: layer %s declares %d bytes, %s", archive.ErrLimitExceeded, res.Ref, layout.Layer.Digest, layout.Layer.Size, src.why)
	}
	body, err := c.openBlob(ctx, repo, layout.Layer.Digest)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	src.r = body
	var r io.Reader = src
	if c.o.Progress != nil {
		r = io.TeeReader(src, &counter{progress: c.o.Progress})
	}
	want := archive.Expect{Digest: layout.Layer.Digest, Size: layout.Layer.Size}
	if layout.FileName != "" {
		res.Stats, err = archive.ExtractFile(ctx, r, want, dest, layout.FileName, c.o.Limits, archive.WithModes(c.o.Modes))
	} else {
		res.Stats, res.Compression, err = archive.Extract(ctx, r, want, dest, c.o.Limits, archive.WithModes(c.o.Modes))
	}
	if err != nil {
		if src.cut(err) {
			return nil, fmt.Errorf("fetch %s: %w", res.Ref, src.err)
		}
		return nil, fmt.Errorf("extract %s: %w", res.Ref, err)
	}
	res.Fetched = src.n
	return res, nil
}

// blobSource is the body of a blob being extracted. It bounds it to max
// bytes, so that a blob reference, which declares no size, cannot make
// Pull read without end, and it keeps the error that cut the stream short
// (the bound, the registry's idle timeout, the network).
type blobSource struct {
	r   io.Reader
	d   v1.Hash
	n   int64
	max int64  // negative: no bound
	why string // the bound, for the error: "more than ..."
	err error  // the first error other than io.EOF, returned from then on
}

// newBlobSource returns the source of blob d for extraction within lim,
// without its reader. The bound is lim.MaxBytes (maxArtifactBytes; a
// negative MaxBytes means no bound), the limit of the content the blob may
// extract to, with room for what an archive adds to its content: 1/64 of
// it (a tar header and padding, at most 1 KiB, per file of 64 KiB) and
// 1 MiB (the end of the archive, the compressor's framing). An archive
// whose content fits the limit fits the bound unless it holds a great many
// small files that do not compress; and a registry cannot make a pull read
// much more than maxArtifactBytes, whatever the blob declares or lacks.
func newBlobSource(d v1.Hash, lim archive.Limits) *blobSource {
	content := lim.MaxBytes
	if content == 0 {
		content = archive.DefaultMaxBytes
	}
	s := &blobSource{d: d, max: -1}
	if content > 0 {
		s.max = content + min(content/64+blobOverhead, math.MaxInt64-1-content)
		s.why = fmt.Sprintf("more than the %d bytes allowed for an artifact of at most %d bytes (maxArtifactBytes)", s.max, content)
	}
	return s
}

// blobOverhead is the room a blob has above its content's bound besides
// 1/64 of it.
const blobOverhead = 1 << 20

func (s *blobSource) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.max >= 0 {
		p = p[:min(int64(len(p)), s.max-s.n+1)] // never more than one byte past the bound
	}
	n, err := s.r.Read(p)
	s.n += int64(n)
	switch {
	case s.max >= 0 && s.n > s.max:
		s.err = fmt.Errorf("%w: blob %s: %s", archive.ErrLimitExceeded, s.d, s.why)
		return n, s.err
	case err != nil && err != io.EOF:
		s.err = err
	}
	return n, err
}

// cut reports whether extraction failed with err because the stream was
// cut short: a verdict on what could not be read to its end (a corrupt
// archive, which a truncated one looks like) gives way to the reason it
// ended. Called once extraction has returned.
func (s *blobSource) cut(err error) bool {
	return s.err != nil && (errors.Is(err, s.err) || errors.Is(err, errdefs.ErrCorrupt))
}

// Resolve returns the manifest digest reference for ref (which is returned
// unchanged when it already is one). Blob references cannot be resolved.
func (c *Client) Resolve(ctx context.Context, ref Reference) (name.Digest, error) {
	switch ref.Kind {
	case KindManifest:
		return ref.Ref.(name.Digest), nil
	case KindBlob:
		return name.Digest{}, fmt.Errorf("%s names a blob, not a manifest", ref)
	}
	desc, err := remote.Head(ref.Ref, c.remoteOptions(ctx)...)
	if err != nil {
		return name.Digest{}, fmt.Errorf("resolve %s: %w", ref, classify(err))
	}
	return ref.Repository().Digest(desc.Digest.String()), nil
}

// manifest fetches the manifest ref names, verified against its digest.
// It never holds more than artifact.MaxManifestBytes of it: a declared
// length above that is refused before the body is read, a body that runs
// past it is cut off, and only then is the digest checked (ErrTooLarge,
// ErrCorrupt).
func (c *Client) manifest(ctx context.Context, ref Reference) (name.Digest, []byte, error) {
	d, err := c.Resolve(ctx, ref)
	if err != nil {
		return name.Digest{}, nil, err
	}
	repo := ref.Repository()
	resp, err := c.requestAccept(ctx, repo, transport.PullScope, http.MethodGet, manifestURL(repo, d.DigestStr()), manifestAccept, http.StatusOK)
	if err != nil {
		return name.Digest{}, nil, fmt.Errorf("fetch manifest %s: %w", d, err)
	}
	defer resp.Body.Close()
	if resp.ContentLength > artifact.MaxManifestBytes {
		return name.Digest{}, nil, fmt.Errorf("%w: manifest %s: the registry declares %d bytes, more than the %d allowed",
			errTooLarge, d, resp.ContentLength, artifact.MaxManifestBytes)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, artifact.MaxManifestBytes+1))
	if err != nil {
		return name.Digest{}, nil, fmt.Errorf("fetch manifest %s: %w", d, err)
	}
	if len(raw) > artifact.MaxManifestBytes {
		return name.Digest{}, nil, fmt.Errorf("%w: manifest %s: more than the %d bytes allowed", errTooLarge, d, artifact.MaxManifestBytes)
	}
	if got := sha256.Sum256(raw); "sha256:"+hex.EncodeToString(got[:]) != d.DigestStr() {
		return name.Digest{}, nil, fmt.Errorf("%w: manifest %s: the registry served content of digest sha256:%x", errCorrupt, d, got)
	}
	return d, raw, nil
}

// Classes of a manifest the registry serves wrong.
var (
	errTooLarge = errdefs.New("too large", errdefs.ErrTooLarge)
	errCorrupt  = errdefs.New("digest mismatch", errdefs.ErrCorrupt)
)

// Description is what Inspect reports; its JSON form is stable for scripts.
type Description struct {
	Reference    string             `json:"reference"`
	Digest       string             `json:"digest"`
	MediaType    string             `json:"mediaType,omitempty"`
	ArtifactType string             `json:"artifactType,omitempty"`
	Size         int64              `json:"size"`
	Artifact     *artifact.Metadata `json:"artifact,omitempty"`
	Annotations  map[string]string  `json:"annotations,omitempty"`
	Config       *v1.Descriptor     `json:"config,omitempty"`
	Layers       []v1.Descriptor    `json:"layers,omitempty"`
	Subject      *v1.Descriptor     `json:"subject,omitempty"`
}

// Inspect describes what ref names without downloading layers.
func (c *Client) Inspect(ctx context.Context, ref Reference) (*Description, error) {
	if ref.Kind == KindBlob {
		d, _ := ref.Digest()
		l, err := remote.Layer(ref.Ref.(name.Digest), c.remoteOptions(ctx)...)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", ref, classify(err))
		}
		size, err := l.Size()
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", ref, classify(err))
		}
		return &Description{Reference: ref.String(), Digest: d.String(), Size: size}, nil
	}
	dig, raw, err := c.manifest(ctx, ref)
	if err != nil {
		return nil, err
	}
	var mf v1.Manifest
	if err := json.Unmarshal(raw, &mf); err != nil {
		return nil, fmt.Errorf("%w: %s: parse manifest: %w", artifact.ErrInvalid, dig, err)
	}
	desc := &Description{
		Reference:    dig.Name(),
		Digest:       dig.DigestStr(),
		MediaType:    string(mf.MediaType),
		ArtifactType: mf.ArtifactType,
		Size:         int64(len(raw)),
		Annotations:  mf.Annotations,
		Layers:       mf.Layers,
		Subject:      mf.Subject,
	}
	if mf.Config.Digest.Hex != "" {
		desc.Config = &mf.Config
	}
	if layout, err := artifact.ParseManifest(raw); err == nil {
		desc.Artifact = layout.Metadata
	}
	return desc, nil
}

// Check asks the registry whether the client's credentials can read what
// ref names, without downloading it: a HEAD of the manifest (of the blob
// for a blob reference). It returns nil, or an error of class
// errdefs.ErrDenied, ErrNotFound or ErrUnavailable.
func (c *Client) Check(ctx context.Context, ref Reference) error {
	repo := ref.Repository()
	d, _ := ref.Digest()
	u := blobURL(repo, d)
	if ref.Kind != KindBlob {
		u = manifestURL(repo, ref.Ref.Identifier())
	}
	hc, err := c.httpClient(ctx, repo, transport.PullScope)
	if err != nil {
		return fmt.Errorf("check access to %s: %w", ref, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("check access to %s: %w", ref, err)
	}
	resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return fmt.Errorf("check access to %s: %w", ref, classify(err))
	}
	return nil
}

// manifestAccept lists the manifest media types Check accepts.
var manifestAccept = strings.Join([]string{
	string(types.OCIManifestSchema1), string(types.OCIImageIndex),
	string(types.DockerManifestSchema2), string(types.DockerManifestList),
}, ", ")
