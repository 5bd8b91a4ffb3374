package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/chunked"
)

// FormatChunked, in PushRequest.Format, pushes a directory in the chunked
// layout (docs/format.md).
const FormatChunked = chunked.FormatChunked

// packUploads bounds the packs one push sends at once (each up to 8 MiB
// held while it goes).
const packUploads = 2

// chunkedPack is a pack as a remote.Pusher uploads it: read from the
// chunks Build made, under the digest and size Build computed, so that
// nothing is copied or hashed again. Each reader holds the chunks until
// the transport closes it, which may be after Upload returned. Stored
// as it is, its DiffID is its digest, as for a static layer.
type chunkedPack struct {
	b      chunked.Blob
	digest v1.Hash
}

func (l chunkedPack) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l chunkedPack) DiffID() (v1.Hash, error)             { return l.digest, nil }
func (l chunkedPack) Compressed() (io.ReadCloser, error)   { return l.b.Reader(), nil }
func (l chunkedPack) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
func (l chunkedPack) Size() (int64, error)                 { return l.b.Size, nil }
func (l chunkedPack) MediaType() (types.MediaType, error)  { return chunked.PackMediaType, nil }

// pushChunked builds the chunked layout of req.Dir, uploads the packs the
// registry lacks (asking for each with a HEAD, several at once, while the
// next packs are built), then the index. It returns the layers, index
// first.
func (c *Client) pushChunked(ctx context.Context, req PushRequest, res *PushResult, opts []remote.Option) ([]v1.Descriptor, error) {
	comp := chunked.CompressionZstd
	if req.Compression == archive.None {
		comp = chunked.CompressionNone
	}
	// One pusher for every layer: the registry is pinged, and the
	// credentials resolved, once per push rather than once per pack.
	pusher, err := remote.NewPusher(opts...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		slots    = make(chan struct{}, packUploads)
		mu       sync.Mutex
		firstErr error
		uploaded atomic.Int64
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
	}
	// The uploads run on this push's ctx: Build's own ends when it returns.
	// Each pack is sent from Build's buffers, released once sent.
	sink := func(buildCtx context.Context, b chunked.Blob) error {
		select {
		case slots <- struct{}{}:
		case <-buildCtx.Done():
			b.Release()
			return buildCtx.Err()
		}
		wg.Go(func() {
			defer func() { <-slots }()
			defer b.Release()
			d, err := v1.NewHash(b.Digest)
			if err != nil {
				fail(err)
				return
			}
			if have, err := c.blobExists(ctx, req.Repository, d); err != nil || have {
				if err != nil {
					fail(fmt.Errorf("push pack to %s: %w", req.Repository, err))
				}
				return
			}
			if err := pusher.Upload(ctx, req.Repository, chunkedPack{b: b, digest: d}); err != nil {
				fail(fmt.Errorf("push pack to %s: %w", req.Repository, classify(err)))
				return
			}
			uploaded.Add(b.Size)
			if c.o.Progress != nil {
				c.o.Progress(b.Size)
			}
		})
		return nil
	}
	o := chunked.Options{Compression: comp, Limits: c.o.Limits}
	if c.o.DigestCache != nil {
		o.Packs = c.o.DigestCache.Packs()
		o.Exists = func(ctx context.Context, digest string) (bool, error) {
			d, err := v1.NewHash(digest)
			if err != nil {
				return false, err
			}
			return c.blobExists(ctx, req.Repository, d)
		}
	}
	ix, stats, err := chunked.Build(ctx, req.Dir, o, sink)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err != nil {
		return nil, fmt.Errorf("build the chunked layout of %s: %w", req.Dir, err)
	}
	blob, err := chunked.Marshal(ix)
	if err != nil {
		return nil, err
	}
	if err := pusher.Upload(ctx, req.Repository, static.NewLayer(blob, chunked.IndexMediaType)); err != nil {
		return nil, fmt.Errorf("push index to %s: %w", req.Repository, classify(err))
	}
	layers := []v1.Descriptor{artifact.Descriptor(chunked.IndexMediaType, blob)}
	for _, p := range ix.Packs {
		d, _ := v1.NewHash(p.Digest)
		layers = append(layers, v1.Descriptor{MediaType: chunked.PackMediaType, Digest: d, Size: p.Size})
	}
	res.Layer, res.Stats, res.Reused, res.Contents = layers[0], stats, uploaded.Load() == 0, ix.Contents()
	return layers, nil
}

// pullChunked fetches and checks the index of layout, then assembles the
// tree into dest from the packs, each chunk verified before it is written.
func (c *Client) pullChunked(ctx context.Context, ref Reference, layout *artifact.Layout, dest string, res *PullResult) error {
	repo := ref.Repository()
	if layout.Layer.Size > chunked.MaxIndexBytes {
		return fmt.Errorf("%w: %s: its index declares %d bytes", archive.ErrLimitExceeded, res.Ref, layout.Layer.Size)
	}
	blob, err := c.smallBlob(ctx, repo, layout.Layer)
	if err != nil {
		return fmt.Errorf("fetch the index of %s: %w", res.Ref, err)
	}
	packs := make([]chunked.Pack, len(layout.Packs))
	for i, p := range layout.Packs {
		packs[i] = chunked.Pack{Digest: p.Digest.String(), Size: p.Size}
	}
	ix, err := chunked.Parse(blob, packs, c.o.Limits)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", archive.ErrCorrupt, res.Ref, err)
	}
	open := func(ctx context.Context, i int) (io.ReadCloser, error) {
		body, err := c.openBlob(ctx, repo, layout.Packs[i].Digest)
		if err != nil {
			return nil, err
		}
		if c.o.Progress != nil {
			return struct {
				io.Reader
				io.Closer
			}{io.TeeReader(body, &counter{progress: c.o.Progress}), body}, nil
		}
		return body, nil
	}
	// Assembled aside, then renamed: dest (absent or empty) holds the
	// whole tree or nothing.
	staging, err := os.MkdirTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".chunked-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	tree := filepath.Join(staging, "tree")
	fetched, err := chunked.Assemble(ctx, ix, tree, open, c.o.Modes, c.local)
	res.Fetched = int64(len(blob)) + fetched
	if err != nil {
		return fmt.Errorf("assemble %s: %w", res.Ref, err)
	}
	if err := os.Remove(dest); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pull into %s: %w", dest, err)
	}
	if err := os.Rename(tree, dest); err != nil {
		return err
	}
	for _, e := range ix.Entries {
		res.Stats.Entries++
		res.Stats.Bytes += e.Size
	}
	res.Stats.Usage = ix.Usage()
	res.Contents = ix.Contents()
	res.Compression = archive.Compression(ix.Compression)
	return nil
}

// smallBlob fetches blob d of repo whole, which the caller bounded by its
// declared size, and checks it against its digest and size [errCorrupt].
func (c *Client) smallBlob(ctx context.Context, repo name.Repository, d v1.Descriptor) ([]byte, error) {
	body, err := c.openBlob(ctx, repo, d.Digest)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, d.Size+1))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", d.Digest, err)
	}
	if got, n, _ := v1.SHA256(bytes.NewReader(b)); n != d.Size || got != d.Digest {
		return nil, fmt.Errorf("%w: blob %s does not match its digest", errCorrupt, d.Digest)
	}
	return b, nil
}
