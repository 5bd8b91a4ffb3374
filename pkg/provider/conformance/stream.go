package conformance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/tektoncd/artifacts-csi-driver/proto/provider/v1alpha1"
)

// putPlan describes a Put stream, honest unless told otherwise.
type putPlan struct {
	// scope goes in the PutHeader; noHeader leaves the header out.
	scope    *pb.Scope
	noHeader bool
	// data is sent in chunks of sizes, cycled (default pb.ChunkSize).
	data  io.Reader
	sizes []int
	// commit returns the PutCommit for the content's digest and size
	// (default: them); noCommit ends the stream without one.
	commit   func(digest string, size int64) *pb.PutCommit
	noCommit bool
	// afterChunks is called after the chunks were sent, e.g. to cancel.
	afterChunks func()
}

// put runs a Put stream as plan says and returns the provider's answer.
// The blob is tracked for clean-up when the Put succeeds.
func (e *Env) put(ctx context.Context, plan putPlan) (*pb.PutResponse, error) {
	stream, err := e.Client.Put(ctx)
	if err != nil {
		return nil, err
	}
	// An io.EOF from Send means the provider answered early; CloseAndRecv
	// returns its answer.
	send := func(r *pb.PutRequest) (bool, error) {
		err := stream.Send(r)
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return err == nil, err
	}
	ok := true
	if !plan.noHeader {
		if ok, err = send(&pb.PutRequest{Part: &pb.PutRequest_Header{Header: &pb.PutHeader{Scope: plan.scope, MediaType: "application/octet-stream"}}}); err != nil {
			return nil, err
		}
	}
	h := sha256.New()
	var n int64
	if plan.data != nil && ok {
		sizes := plan.sizes
		if len(sizes) == 0 {
			sizes = []int{pb.ChunkSize}
		}
		for i := 0; ok; i++ {
			buf := make([]byte, sizes[i%len(sizes)])
			m, rerr := io.ReadFull(plan.data, buf)
			if m > 0 {
				h.Write(buf[:m])
				n += int64(m)
				if ok, err = send(&pb.PutRequest{Part: &pb.PutRequest_Chunk{Chunk: buf[:m]}}); err != nil {
					return nil, err
				}
			}
			if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
				break
			}
			if rerr != nil {
				return nil, fmt.Errorf("read content to put: %w", rerr)
			}
		}
	}
	if plan.afterChunks != nil {
		plan.afterChunks()
	}
	digest := digestOf(h)
	// Whatever the answer, delete what a faulty provider may have stored.
	e.trackValid(plan.scope, digest)
	if !plan.noCommit && ok {
		c := &pb.PutCommit{Digest: digest, Size: n}
		if plan.commit != nil {
			c = plan.commit(digest, n)
			e.trackValid(plan.scope, c.GetDigest())
		}
		if _, err = send(&pb.PutRequest{Part: &pb.PutRequest_Commit{Commit: c}}); err != nil {
			return nil, err
		}
	}
	return stream.CloseAndRecv()
}

// trackValid tracks a blob when its scope and digest are valid.
func (e *Env) trackValid(scope *pb.Scope, digest string) {
	if scope != nil && pb.CheckScope(scope.GetNamespace(), scope.GetRepository()) == nil && pb.ValidDigest(digest) {
		e.Track(scope, digest)
	}
}

// putBytes puts data in scope honestly and checks the answer.
func (e *Env) putBytes(ctx context.Context, scope *pb.Scope, data []byte) (*pb.PutResponse, error) {
	resp, err := e.put(ctx, putPlan{scope: scope, data: bytes.NewReader(data)})
	if err != nil {
		return nil, fmt.Errorf("Put of %d bytes in %s: %w", len(data), scope.GetRepository(), err)
	}
	if !pb.ValidLocation(resp.GetLocation()) {
		return nil, fmt.Errorf("Put of %d bytes: invalid location %q: want at most %d printable characters", len(data), resp.GetLocation(), pb.MaxLocationLength)
	}
	return resp, nil
}

// get streams a blob into w and returns its size and digest. It fails
// when a chunk exceeds pb.ChunkSize.
func (e *Env) get(ctx context.Context, scope *pb.Scope, digest string, w io.Writer) (int64, string, error) {
	stream, err := e.Client.Get(ctx, &pb.GetRequest{Scope: scope, Digest: digest})
	if err != nil {
		return 0, "", err
	}
	h := sha256.New()
	var n int64
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, digestOf(h), nil
		}
		if err != nil {
			if n > 0 && status.Code(err) == codes.NotFound {
				return n, "", fmt.Errorf("NotFound after %d bytes, want it before any chunk: %w", n, err)
			}
			return n, "", err
		}
		if len(resp.GetChunk()) > pb.ChunkSize {
			return n, "", fmt.Errorf("Get sent a chunk of %d bytes, over the limit of %d", len(resp.GetChunk()), pb.ChunkSize)
		}
		h.Write(resp.GetChunk())
		n += int64(len(resp.GetChunk()))
		if w != nil {
			if _, err := w.Write(resp.GetChunk()); err != nil {
				return n, "", err
			}
		}
	}
}

// checkContent gets a blob and checks that it holds data.
func (e *Env) checkContent(ctx context.Context, scope *pb.Scope, data []byte) error {
	var buf bytes.Buffer
	d := digestBytes(data)
	if _, _, err := e.get(ctx, scope, d, &buf); err != nil {
		return fmt.Errorf("Get %s of %d bytes: %w", d, len(data), err)
	}
	if !bytes.Equal(buf.Bytes(), data) {
		return fmt.Errorf("Get %s: got %d bytes that differ from the %d put", d, buf.Len(), len(data))
	}
	return nil
}

// wantCode returns an error unless err has code want.
func wantCode(op string, err error, want codes.Code) error {
	got := status.Code(err)
	switch {
	case got == want:
		return nil
	case err == nil:
		return fmt.Errorf("%s: succeeded, want %s", op, want)
	default:
		return fmt.Errorf("%s: got %s (%v), want %s", op, got, status.Convert(err).Message(), want)
	}
}

// checkAbsent checks that Stat and Get say NotFound for digest in scope.
func (e *Env) checkAbsent(ctx context.Context, scope *pb.Scope, digest, why string) error {
	_, err := e.Client.Stat(ctx, &pb.StatRequest{Scope: scope, Digest: digest})
	if err := wantCode("Stat "+why, err, codes.NotFound); err != nil {
		return err
	}
	_, _, err = e.get(ctx, scope, digest, nil)
	return wantCode("Get "+why, err, codes.NotFound)
}

// generated returns a reader of n bytes generated from seed.
func generated(seed [32]byte, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8(seed), n)
}

func digestOf(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

func digestBytes(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}
