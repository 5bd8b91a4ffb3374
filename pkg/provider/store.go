package provider

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tektoncd/artifacts-csi-driver/internal/idle"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	pb "github.com/tektoncd/artifacts-csi-driver/proto/provider/v1alpha1"
)

// PushRequest says what to store where.
type PushRequest struct {
	// Backend is the provider's name. Required.
	Backend string
	// Scope receives the blobs. Required.
	Scope Scope
	// Dir is the directory to store.
	Dir string
	// Metadata goes into the config blob and the manifest annotations.
	// Metadata.Name is required.
	Metadata artifact.Metadata
	// Compression of a directory archive. Default: gzip.
	Compression archive.Compression
	// MediaType, when set, stores the single regular file Dir must contain
	// as-is, with this media type, instead of an archive.
	MediaType string
}

// PushResult describes a stored artifact.
type PushResult struct {
	// Manifest and Layer describe what was stored.
	Manifest, Layer v1.Descriptor
	// Location is where the provider says the manifest is.
	Location string
	// Stats counts what was archived.
	Stats archive.Stats
}

// Push stores req.Dir in provider req.Backend as an artifact in the format
// an OCI registry would hold: the layer (archived, compressed and streamed
// in one pass, or the single file as-is), the config blob, then the
// manifest, each a blob named by its digest. The manifest's digest is the
// artifact's identity; without a subject, tag or registry it is the digest
// the same tree would have in a registry. Push is idempotent.
func (c *Client) Push(ctx context.Context, req PushRequest) (*PushResult, error) {
	if req.Metadata.Name == "" {
		return nil, errors.New("push: artifact name is required")
	}
	if req.Compression == "" {
		req.Compression = archive.Gzip
	}
	cn, err := c.provider(ctx, req.Backend)
	if err != nil {
		return nil, err
	}
	res := &PushResult{}
	if req.MediaType != "" {
		err = cn.pushFile(ctx, req, res)
	} else {
		err = cn.pushTree(ctx, req, res)
	}
	if err != nil {
		return nil, err
	}
	cfg := artifact.ConfigBlob(req.Metadata)
	if _, err := cn.putBytes(ctx, req.Scope, artifact.ConfigMediaType, cfg); err != nil {
		return nil, err
	}
	raw := artifact.Manifest(req.Metadata, artifact.Descriptor(artifact.ConfigMediaType, cfg), res.Layer, nil)
	if res.Location, err = cn.putBytes(ctx, req.Scope, types.OCIManifestSchema1, raw); err != nil {
		return nil, err
	}
	res.Manifest = artifact.Descriptor(types.OCIManifestSchema1, raw)
	res.Manifest.ArtifactType = artifact.ArtifactType
	return res, nil
}

// pushTree streams the archive of req.Dir as the layer.
func (cn *conn) pushTree(ctx context.Context, req PushRequest, res *PushResult) error {
	var stats archive.Stats
	desc, loc, err := cn.put(ctx, req.Scope, artifact.LayerMediaType(req.Compression), func(w io.Writer) error {
		cw, err := archive.NewCompressor(w, req.Compression)
		if err != nil {
			return err
		}
		stats, err = archive.Pack(ctx, req.Dir, cw)
		if cerr := cw.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("archive %s: %w", req.Dir, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	res.Layer, res.Location, res.Stats = artifact.ArchiveLayer(req.Metadata.Name, req.Compression, desc.Digest, desc.Size), loc, stats
	return nil
}

// pushFile streams the single regular file in req.Dir as the layer.
func (cn *conn) pushFile(ctx context.Context, req PushRequest, res *PushResult) error {
	fname, err := archive.OnlyFile(req.Dir)
	if err != nil {
		return fmt.Errorf("%w: a single-file artifact (media type %q): %w", artifact.ErrInvalid, req.MediaType, err)
	}
	root, err := os.OpenRoot(req.Dir)
	if err != nil {
		return err
	}
	defer root.Close()
	mt := types.MediaType(req.MediaType)
	desc, loc, err := cn.put(ctx, req.Scope, mt, func(w io.Writer) error {
		f, err := root.Open(fname)
		if err != nil {
			return err
		}
		defer f.Close()
		if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
			return fmt.Errorf("%w: %s is not a regular file", artifact.ErrInvalid, fname)
		}
		_, err = io.Copy(w, f)
		return err
	})
	if err != nil {
		return err
	}
	res.Layer, res.Location = artifact.FileLayer(fname, mt, desc.Digest, desc.Size), loc
	res.Stats = archive.Stats{Entries: 1, Bytes: desc.Size}
	return nil
}

// putBytes stores b, a small blob.
func (cn *conn) putBytes(ctx context.Context, scope Scope, mt types.MediaType, b []byte) (string, error) {
	_, loc, err := cn.put(ctx, scope, mt, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
	return loc, err
}

// put streams what write writes as one blob, in chunks of pb.ChunkSize, and
// commits it with the digest and size computed on the way. An error from
// write cancels the stream, so the provider stores nothing.
func (cn *conn) put(ctx context.Context, scope Scope, mt types.MediaType, write func(io.Writer) error) (_ v1.Descriptor, _ string, err error) {
	ctx, w := cn.watchdog(ctx)
	defer w.Stop()
	defer func() {
		if serr := w.Err(); serr != nil && err != nil {
			err = fmt.Errorf("put: %w", serr)
		}
	}()
	w.Arm()
	raw, err := cn.api.Put(ctx)
	w.Disarm()
	if err != nil {
		return v1.Descriptor{}, "", cn.wrap("put", err)
	}
	stream := watchedPut{raw, w}
	if err := stream.Send(&pb.PutRequest{Part: &pb.PutRequest_Header{Header: &pb.PutHeader{Scope: scope.proto(), MediaType: string(mt)}}}); err != nil {
		return v1.Descriptor{}, "", cn.sendError(stream, "put", err)
	}
	cw := &chunkWriter{stream: stream, h: sha256.New(), buf: make([]byte, 0, pb.ChunkSize)}
	if err := write(cw); err != nil {
		if cw.sendErr != nil {
			return v1.Descriptor{}, "", cn.sendError(stream, "put", cw.sendErr)
		}
		return v1.Descriptor{}, "", err
	}
	if err := cw.flush(); err != nil {
		return v1.Descriptor{}, "", cn.sendError(stream, "put", err)
	}
	desc := v1.Descriptor{MediaType: mt, Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(cw.h.Sum(nil))}, Size: cw.n}
	if err := stream.Send(&pb.PutRequest{Part: &pb.PutRequest_Commit{Commit: &pb.PutCommit{Digest: desc.Digest.String(), Size: desc.Size}}}); err != nil {
		return v1.Descriptor{}, "", cn.sendError(stream, "put", err)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return v1.Descriptor{}, "", cn.wrap("put "+desc.Digest.String(), err)
	}
	if !pb.ValidLocation(resp.GetLocation()) {
		return v1.Descriptor{}, "", fmt.Errorf("%w: provider %q: put %s: malformed location %q", ErrBadProvider, cn.name, desc.Digest, resp.GetLocation())
	}
	return desc, resp.GetLocation(), nil
}

// watchdog returns a context for a stream and the watchdog that cancels it
// when the stream waits on the provider for longer than the idle timeout.
func (cn *conn) watchdog(ctx context.Context) (context.Context, *idle.Watchdog) {
	return idle.New(ctx, cn.idle, &idle.Error{Peer: fmt.Sprintf("provider %q", cn.name), Timeout: cn.idle})
}

// watchedPut is a Put stream whose Sends (which block while the provider
// does not read) and final answer wait on the provider, for its watchdog.
type watchedPut struct {
	grpc.ClientStreamingClient[pb.PutRequest, pb.PutResponse]
	w *idle.Watchdog
}

func (s watchedPut) Send(m *pb.PutRequest) error {
	s.w.Arm()
	defer s.w.Disarm()
	return s.ClientStreamingClient.Send(m)
}

func (s watchedPut) CloseAndRecv() (*pb.PutResponse, error) {
	s.w.Arm()
	defer s.w.Disarm()
	return s.ClientStreamingClient.CloseAndRecv()
}

// sendError returns the provider's status when a Send failed because the
// provider ended the stream (Send then returns io.EOF).
func (cn *conn) sendError(stream grpc.ClientStreamingClient[pb.PutRequest, pb.PutResponse], op string, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.CloseAndRecv(); rerr != nil {
			err = rerr
		}
	}
	return cn.wrap(op, err)
}

// chunkWriter hashes, counts and sends what is written to it in chunks of
// pb.ChunkSize.
type chunkWriter struct {
	stream  grpc.ClientStreamingClient[pb.PutRequest, pb.PutResponse]
	h       hash.Hash
	n       int64
	buf     []byte
	sendErr error
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := min(len(p), pb.ChunkSize-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p, written = p[k:], written+k
		if len(w.buf) == pb.ChunkSize {
			if err := w.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// flush sends the buffered bytes, in a buffer of their own: gRPC may look
// at a message after Send returns.
func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	w.h.Write(w.buf)
	w.n += int64(len(w.buf))
	if err := w.stream.Send(&pb.PutRequest{Part: &pb.PutRequest_Chunk{Chunk: w.buf}}); err != nil {
		w.sendErr = err
		return err
	}
	w.buf = make([]byte, 0, pb.ChunkSize)
	return nil
}

// PullResult describes a fetched artifact.
type PullResult struct {
	// Layer is the blob that was extracted.
	Layer v1.Descriptor
	// Metadata from the manifest annotations, when the artifact is ours.
	Metadata *artifact.Metadata
	// FileName is set for a single-file artifact.
	FileName string
	// Stats counts what was extracted.
	Stats archive.Stats
}

// Pull fetches the artifact whose manifest is blob digest in scope and
// extracts it into dest, which must be absent or empty. The manifest is
// verified against digest and the layer against the manifest while it
// streams, before anything appears in dest: a provider returning other
// bytes gets an error wrapping archive.ErrDigestMismatch, and dest stays
// as it was. Safe for concurrent use with different destinations.
func (c *Client) Pull(ctx context.Context, backend string, scope Scope, digest, dest string, lim archive.Limits) (*PullResult, error) {
	cn, err := c.provider(ctx, backend)
	if err != nil {
		return nil, err
	}
	raw, err := cn.getBytes(ctx, scope, digest, artifact.MaxManifestBytes)
	if err != nil {
		return nil, err
	}
	layout, err := artifact.ParseManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", artifact.ErrInvalid, digest, err)
	}
	if !pb.ValidDigest(layout.Layer.Digest.String()) {
		return nil, fmt.Errorf("%w: %s: layer digest %s: only sha256 is supported", artifact.ErrInvalid, digest, layout.Layer.Digest)
	}
	res := &PullResult{Layer: layout.Layer, Metadata: layout.Metadata, FileName: layout.FileName}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r, err := cn.get(ctx, scope, layout.Layer.Digest.String())
	if err != nil {
		return nil, err
	}
	want := archive.Expect{Digest: layout.Layer.Digest, Size: layout.Layer.Size}
	if layout.FileName != "" {
		res.Stats, err = archive.ExtractFile(ctx, r, want, dest, layout.FileName, lim, archive.WithModes(c.o.Modes))
	} else {
		res.Stats, _, err = archive.Extract(ctx, r, want, dest, lim, archive.WithModes(c.o.Modes))
	}
	if err != nil {
		if r.cut(err) {
			return nil, r.err
		}
		return nil, fmt.Errorf("extract %s from provider %q: %w", digest, backend, err)
	}
	return res, nil
}

// getBytes fetches a small blob, at most max bytes, verified against
// digest.
func (cn *conn) getBytes(ctx context.Context, scope Scope, digest string, max int64) ([]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r, err := cn.get(ctx, scope, digest)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: blob %s is larger than the %d bytes allowed", archive.ErrLimitExceeded, digest, max)
	}
	sum := sha256.Sum256(b)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != digest {
		return nil, fmt.Errorf("%w: provider %q returned %s for blob %s", archive.ErrDigestMismatch, cn.name, got, digest)
	}
	return b, nil
}

// get opens blob digest for reading. The provider's first answer (a chunk,
// or an error such as NOT_FOUND) is read before get returns. The content
// is unverified: the caller verifies it. The stream ends with ctx, or
// once read to its end or to an error.
func (cn *conn) get(ctx context.Context, scope Scope, digest string) (*getReader, error) {
	if !pb.ValidDigest(digest) {
		return nil, fmt.Errorf("%w: digest %q: want sha256:<64 lowercase hex>", ErrRejected, digest)
	}
	ctx, w := cn.watchdog(ctx)
	w.Arm()
	stream, err := cn.api.Get(ctx, &pb.GetRequest{Scope: scope.proto(), Digest: digest})
	w.Disarm()
	if err != nil {
		w.Stop()
		if serr := w.Err(); serr != nil {
			return nil, fmt.Errorf("get %s: %w", digest, serr)
		}
		return nil, cn.wrap("get "+digest, err)
	}
	r := &getReader{cn: cn, op: "get " + digest, stream: stream, w: w}
	if err := r.next(); err != nil && err != io.EOF {
		return nil, err
	}
	return r, nil
}

// getReader reads a Get stream's chunks. Each Recv waits on the provider,
// for the stream's watchdog.
type getReader struct {
	cn     *conn
	op     string
	stream grpc.ServerStreamingClient[pb.GetResponse]
	w      *idle.Watchdog
	buf    []byte
	empty  int // empty chunks in a row
	err    error
}

// cut reports whether extraction failed with err because the stream was
// cut short (an idle timeout, a provider gone): a verdict on what could
// not be read to its end (a corrupt archive, which a truncated one looks
// like) gives way to the reason it ended, r.err. Called once extraction
// has returned.
func (r *getReader) cut(err error) bool {
	return r.err != nil && r.err != io.EOF && (errors.Is(err, r.err) || errors.Is(err, errdefs.ErrCorrupt))
}

// maxEmptyChunks bounds the empty chunks a provider may send in a row
// before the stream counts as broken, so that a provider cannot keep a
// fill busy without sending content.
const maxEmptyChunks = 64

func (r *getReader) next() error {
	r.w.Arm()
	msg, err := r.stream.Recv()
	r.w.Disarm()
	defer func() {
		if r.err != nil {
			r.w.Stop()
		}
	}()
	switch {
	case err != nil && err != io.EOF && r.w.Err() != nil:
		r.err = fmt.Errorf("%s: %w", r.op, r.w.Err())
	case err == io.EOF:
		r.err = io.EOF
	case status.Code(err) == codes.ResourceExhausted: // our receive limit
		r.err = fmt.Errorf("%w: provider %q: %s: %v", ErrBadProvider, r.cn.name, r.op, err)
	case err != nil:
		r.err = r.cn.wrap(r.op, err)
	case len(msg.GetChunk()) == 0 && r.empty >= maxEmptyChunks:
		r.err = fmt.Errorf("%w: provider %q: %s: %d empty chunks in a row", ErrBadProvider, r.cn.name, r.op, r.empty)
	case len(msg.GetChunk()) == 0:
		r.empty++
	case len(msg.GetChunk()) > pb.ChunkSize:
		r.err = fmt.Errorf("%w: provider %q: %s: a chunk of %d bytes, more than %d", ErrBadProvider, r.cn.name, r.op, len(msg.GetChunk()), pb.ChunkSize)
	default:
		r.buf, r.empty = msg.GetChunk(), 0
	}
	return r.err
}

func (r *getReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if err := r.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

var _ io.Reader = (*getReader)(nil)
