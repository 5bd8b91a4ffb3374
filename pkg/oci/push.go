package oci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/stream"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/chunked"
	"github.com/tektoncd/artifacts-csi-driver/pkg/digestcache"
)

// PushRequest says what to push where.
type PushRequest struct {
	// Dir is the directory to push.
	Dir string
	// Repository receives the blobs and the manifest.
	Repository name.Repository
	// Tag, when set, tags the manifest. The digest is the identity; the tag
	// is a convenience.
	Tag string
	// Metadata goes into the config blob and the manifest annotations.
	// Metadata.Name is required.
	Metadata artifact.Metadata
	// Compression of a directory archive. Default: gzip.
	Compression archive.Compression
	// MediaType, when set, pushes the single regular file that Dir must
	// contain as-is, with this media type, instead of an archive.
	MediaType string
	// Format of a directory: "" or "archive" for one tar layer,
	// FormatChunked for the chunked layout (zstd chunks, or stored as-is
	// with Compression None).
	Format string
	// Group, when set, makes the manifest's subject the group's manifest,
	// which is pushed first (idempotently), so the referrers API lists every
	// artifact of a PipelineRun.
	Group *artifact.Group
}

// PushResult describes a pushed artifact.
type PushResult struct {
	// Ref is REPO@sha256:<manifest digest>.
	Ref name.Digest
	// Manifest and Layer describe what was pushed.
	Manifest, Layer v1.Descriptor
	// DiffID is the digest of the uncompressed archive (of the file, for a
	// single-file artifact).
	DiffID v1.Hash
	// Stats counts what was archived.
	Stats archive.Stats
	// Reused is true when the layer was already in the registry and nothing
	// was compressed or uploaded.
	Reused bool
	// Contents, for the chunked layout, says where its chunks and files
	// are in req.Dir.
	Contents *chunked.Contents
}

// Push archives req.Dir and pushes it as an artifact: layer, config,
// optional group subject, then the manifest, by tag if one is given.
//
// The layer streams: archive, compression and upload run concurrently in
// one pass over the tree, without buffering it. With a digest cache, Push
// first hashes the uncompressed archive; when the cache knows its compressed
// blob and the registry still has it, nothing is compressed or uploaded.
// Blobs the registry has are never uploaded again. Push is idempotent: the
// same tree and request give the same manifest digest.
func (c *Client) Push(ctx context.Context, req PushRequest) (*PushResult, error) {
	if req.Metadata.Name == "" {
		return nil, errors.New("push: artifact name is required")
	}
	if req.Compression == "" {
		req.Compression = archive.Gzip
	}
	opts := c.remoteOptions(ctx)
	repo := req.Repository

	var (
		res    = &PushResult{}
		err    error
		layers []v1.Descriptor // of the chunked layout
	)
	switch {
	case req.MediaType != "":
		err = c.pushFile(ctx, req, res, opts)
	case req.Format == FormatChunked:
		layers, err = c.pushChunked(ctx, req, res, opts)
	case req.Format == "" || req.Format == "archive":
		err = c.pushTree(ctx, req, res, opts)
	default:
		err = fmt.Errorf("%w: format %q (want archive or %s)", artifact.ErrInvalid, req.Format, FormatChunked)
	}
	if err != nil {
		return nil, err
	}

	cfgBlob := artifact.ConfigBlob(req.Metadata)
	if err := remote.WriteLayer(repo, static.NewLayer(cfgBlob, artifact.ConfigMediaType), opts...); err != nil {
		return nil, fmt.Errorf("push config to %s: %w", repo, classify(err))
	}
	cfgDesc := artifact.Descriptor(artifact.ConfigMediaType, cfgBlob)

	var subject *v1.Descriptor
	if req.Group != nil {
		if subject, err = c.pushGroup(repo, *req.Group, opts); err != nil {
			return nil, err
		}
	}

	raw := artifact.Manifest(req.Metadata, cfgDesc, res.Layer, subject)
	if layers != nil {
		raw = artifact.ChunkedManifest(req.Metadata, cfgDesc, layers[0], layers[1:], subject)
	}
	res.Manifest = artifact.Descriptor(types.OCIManifestSchema1, raw)
	res.Manifest.ArtifactType = artifact.ArtifactType
	res.Ref = repo.Digest(res.Manifest.Digest.String())
	var target name.Reference = res.Ref
	if req.Tag != "" {
		target = repo.Tag(req.Tag)
	}
	if err := c.putManifest(ctx, target, raw, subject, res.Manifest, opts); err != nil {
		return nil, err
	}
	return res, nil
}

// pushTree uploads the archive of req.Dir as the layer.
func (c *Client) pushTree(ctx context.Context, req PushRequest, res *PushResult, opts []remote.Option) error {
	mt := artifact.LayerMediaType(req.Compression)
	if c.o.DigestCache != nil {
		h := sha256.New()
		stats, err := archive.Pack(ctx, req.Dir, h)
		if err != nil {
			return fmt.Errorf("archive %s: %w", req.Dir, err)
		}
		diffID := hashOf(h)
		if e, ok := c.o.DigestCache.Get(diffID, string(req.Compression)); ok {
			if have, err := c.blobExists(ctx, req.Repository, e.Digest); err == nil && have {
				res.Layer = artifact.ArchiveLayer(req.Metadata.Name, req.Compression, e.Digest, e.Size)
				res.DiffID, res.Stats, res.Reused = diffID, stats, true
				return nil
			}
		}
	}
	l := &packLayer{ctx: ctx, dir: req.Dir, comp: req.Compression, mt: mt, progress: c.o.Progress}
	if err := remote.WriteLayer(req.Repository, l, opts...); err != nil {
		if l.packErr != nil {
			return fmt.Errorf("archive %s: %w", req.Dir, l.packErr)
		}
		return fmt.Errorf("push layer to %s: %w", req.Repository, classify(err))
	}
	d, err := l.Digest()
	if err != nil {
		return err
	}
	res.Layer = artifact.ArchiveLayer(req.Metadata.Name, req.Compression, d, l.size)
	res.DiffID, res.Stats = l.diffID, l.stats
	if err := c.o.DigestCache.Put(l.diffID, string(req.Compression), digestcache.Entry{Digest: d, Size: l.size}); err != nil {
		// The cache only saves work; a push does not fail for it.
		klog.FromContext(ctx).V(2).Info("Digest cache not updated", "diffID", l.diffID, "err", err)
	}
	return nil
}

// pushFile uploads the single regular file in req.Dir as the layer.
func (c *Client) pushFile(ctx context.Context, req PushRequest, res *PushResult, opts []remote.Option) error {
	fname, err := archive.OnlyFile(req.Dir)
	if err != nil {
		return fmt.Errorf("%w: a single-file artifact (media type %q): %w", artifact.ErrInvalid, req.MediaType, err)
	}
	root, err := os.OpenRoot(req.Dir)
	if err != nil {
		return err
	}
	defer root.Close()
	l := &fileLayer{root: root, name: fname, mt: types.MediaType(req.MediaType), progress: c.o.Progress}
	f, err := l.open()
	if err != nil {
		return err
	}
	l.digest, l.size, err = v1.SHA256(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("hash %s: %w", filepath.Join(req.Dir, fname), err)
	}
	if err := remote.WriteLayer(req.Repository, l, opts...); err != nil {
		return fmt.Errorf("push %s to %s: %w", fname, req.Repository, classify(err))
	}
	res.Layer = artifact.FileLayer(fname, l.mt, l.digest, l.size)
	res.DiffID, res.Stats = l.digest, archive.Stats{Entries: 1, Bytes: l.size}
	return nil
}

// pushGroup pushes the group manifest (and the empty blob it references)
// and returns its descriptor. Every pusher of the run computes the same
// manifest, so concurrent pushes converge.
func (c *Client) pushGroup(repo name.Repository, g artifact.Group, opts []remote.Option) (*v1.Descriptor, error) {
	empty := static.NewLayer(artifact.EmptyBlob(), artifact.EmptyMediaType)
	if err := remote.WriteLayer(repo, empty, opts...); err != nil {
		return nil, fmt.Errorf("push group blob to %s: %w", repo, classify(err))
	}
	raw := g.Manifest()
	desc := artifact.Descriptor(types.OCIManifestSchema1, raw)
	if err := remote.Put(repo.Digest(desc.Digest.String()), rawManifest{raw, desc.MediaType}, opts...); err != nil {
		return nil, fmt.Errorf("push group manifest to %s: %w", repo, classify(err))
	}
	return &v1.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}, nil
}

// putManifest puts raw at target. When it has a subject and the registry
// lacks the referrers API, go-containerregistry maintains the sha256-<hex>
// fallback tag with a read-modify-write that a concurrent pusher can undo
// (there is no conditional PUT for manifests). So in that mode read the
// referrers back, now and again after longer than such an update takes, and
// put again while this manifest is missing.
func (c *Client) putManifest(ctx context.Context, target name.Reference, raw []byte, subject *v1.Descriptor, desc v1.Descriptor, opts []remote.Option) error {
	put := func() error {
		if err := remote.Put(target, rawManifest{raw, desc.MediaType}, opts...); err != nil {
			return fmt.Errorf("push manifest to %s: %w", target, classify(err))
		}
		return nil
	}
	if err := put(); err != nil || subject == nil {
		return err
	}
	repo := target.Context()
	if api, err := c.hasReferrersAPI(ctx, repo, subject.Digest); err != nil || api {
		return err
	}
	// Confirm on a read made a settle time after our last put: an update
	// that read the list before that put has landed by then.
	const rounds = 6
	for range rounds {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(referrersSettle + time.Duration(rand.Int64N(int64(referrersSettle)))):
		}
		listed, err := c.referrerListed(repo, *subject, desc.Digest, opts)
		if err != nil || listed {
			return err
		}
		if err := put(); err != nil {
			return err
		}
	}
	return fmt.Errorf("push manifest to %s: the referrers tag of %s kept losing %s (concurrent writers?)", target, subject.Digest, desc.Digest)
}

// referrersSettle bounds how long another pusher's read-modify-write of a
// referrers fallback tag takes.
var referrersSettle = 250 * time.Millisecond

// hasReferrersAPI asks the registry for the referrers of d: 200 means it
// maintains them itself; 404 (or 400 from older registries) means clients
// maintain the fallback tag.
func (c *Client) hasReferrersAPI(ctx context.Context, repo name.Repository, d v1.Hash) (bool, error) {
	u := fmt.Sprintf("%s://%s/v2/%s/referrers/%s", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), d)
	resp, err := c.request(ctx, repo, transport.PullScope, http.MethodGet, u, http.StatusOK, http.StatusNotFound, http.StatusBadRequest)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

func (c *Client) referrerListed(repo name.Repository, subject v1.Descriptor, d v1.Hash, opts []remote.Option) (bool, error) {
	idx, err := remote.Referrers(repo.Digest(subject.Digest.String()), opts...)
	if err != nil {
		return false, fmt.Errorf("list referrers of %s: %w", subject.Digest, classify(err))
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return false, err
	}
	for _, m := range im.Manifests {
		if m.Digest == d {
			return true, nil
		}
	}
	return false, nil
}

// rawManifest is a manifest to put as-is.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

func hashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

// packLayer is a layer produced while it uploads: each call to Compressed
// packs and compresses the tree again, which gives the same bytes because
// packing is reproducible, so a retried upload is safe. Digest, DiffID and
// Size return stream.ErrNotComputed until a stream was read to its end,
// which tells go-containerregistry to upload without a digest and commit
// with the one computed.
type packLayer struct {
	ctx      context.Context
	dir      string
	comp     archive.Compression
	mt       types.MediaType
	progress func(int64)

	mu      sync.Mutex
	done    bool
	digest  v1.Hash
	diffID  v1.Hash
	size    int64
	stats   archive.Stats
	packErr error
}

var _ v1.Layer = (*packLayer)(nil)

func (l *packLayer) Digest() (v1.Hash, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		return v1.Hash{}, stream.ErrNotComputed
	}
	return l.digest, nil
}

func (l *packLayer) DiffID() (v1.Hash, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		return v1.Hash{}, stream.ErrNotComputed
	}
	return l.diffID, nil
}

func (l *packLayer) Size() (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		return 0, stream.ErrNotComputed
	}
	return l.size, nil
}

func (l *packLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

func (l *packLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, errors.New("packLayer: uncompressed stream not available")
}

// Compressed starts packing into a pipe and returns its reading end.
// Closing it early stops the packer.
func (l *packLayer) Compressed() (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() {
		diffH, blobH := sha256.New(), sha256.New()
		if l.comp == archive.None {
			blobH = diffH // the blob is the tar: hash it once
		}
		cnt := &counter{progress: l.progress}
		out := io.MultiWriter(pw, cnt)
		if l.comp != archive.None {
			out = io.MultiWriter(pw, blobH, cnt)
		}
		cw, err := archive.NewCompressor(out, l.comp)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		stats, err := archive.Pack(l.ctx, l.dir, io.MultiWriter(cw, diffH))
		if cerr := cw.Close(); err == nil {
			err = cerr
		}
		l.mu.Lock()
		if err != nil {
			if !errors.Is(err, io.ErrClosedPipe) {
				l.packErr = err
			}
		} else {
			l.done, l.digest, l.diffID, l.size, l.stats = true, hashOf(blobH), hashOf(diffH), cnt.n, stats
		}
		l.mu.Unlock()
		pw.CloseWithError(err)
	}()
	return pr, nil
}

// fileLayer is a single file uploaded as-is; its digest is known upfront.
type fileLayer struct {
	root     *os.Root
	name     string
	mt       types.MediaType
	digest   v1.Hash
	size     int64
	progress func(int64)
}

var _ v1.Layer = (*fileLayer)(nil)

func (l *fileLayer) open() (*os.File, error) {
	f, err := l.root.Open(l.name)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %s is not a regular file", artifact.ErrInvalid, l.name)
	}
	return f, nil
}

func (l *fileLayer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) Size() (int64, error)                 { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error)  { return l.mt, nil }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
func (l *fileLayer) Compressed() (io.ReadCloser, error) {
	f, err := l.open()
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.TeeReader(f, &counter{progress: l.progress}), f}, nil
}

// counter counts bytes and reports progress.
type counter struct {
	n        int64
	progress func(int64)
}

func (c *counter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	if c.progress != nil {
		c.progress(c.n)
	}
	return len(p), nil
}
