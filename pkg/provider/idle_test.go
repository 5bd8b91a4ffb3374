package provider_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider"
	pb "github.com/tektoncd/artifacts-csi-driver/proto/provider/v1alpha1"
)

// A way for stallingProvider to stop making progress.
type stall int

const (
	noStall        stall = iota
	getNothing           // Get of the layer sends nothing
	getOneChunk          // Get of the layer sends its first chunk, then nothing
	getTrickle           // Get of the layer sends a byte every 100ms: progress
	putStopReading       // Put reads the header, then nothing
	putNoAnswer          // Put reads everything, never answers the commit
)

// stallingProvider is a memProvider that, once told to, stops making
// progress in one way, until the client gives up.
type stallingProvider struct {
	*memProvider

	mu    sync.Mutex
	mode  stall
	layer string // digest of the layer Get stalls on
}

func (p *stallingProvider) set(mode stall, layer string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.layer = mode, layer
}

func (p *stallingProvider) get() (stall, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.layer
}

func (p *stallingProvider) Get(req *pb.GetRequest, s grpc.ServerStreamingServer[pb.GetResponse]) error {
	mode, layer := p.get()
	if req.GetDigest() != layer || mode < getNothing || mode > getTrickle {
		return p.memProvider.Get(req, s)
	}
	b, err := p.blob(req.GetScope(), req.GetDigest())
	if err != nil {
		return err
	}
	switch mode {
	case getOneChunk:
		if err := s.Send(&pb.GetResponse{Chunk: b[:min(len(b), pb.ChunkSize)]}); err != nil {
			return err
		}
		fallthrough
	case getNothing:
		<-s.Context().Done()
		return s.Context().Err()
	}
	for i := range b {
		if i > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		if err := s.Send(&pb.GetResponse{Chunk: b[i : i+1]}); err != nil {
			return err
		}
	}
	return nil
}

func (p *stallingProvider) Put(s grpc.ClientStreamingServer[pb.PutRequest, pb.PutResponse]) error {
	switch mode, _ := p.get(); mode {
	case putStopReading:
		if _, err := s.Recv(); err != nil {
			return err
		}
	case putNoAnswer:
		for {
			req, err := s.Recv()
			if err != nil {
				return err
			}
			if req.GetCommit() != nil {
				break
			}
		}
	default:
		return p.memProvider.Put(s)
	}
	<-s.Context().Done()
	return s.Context().Err()
}

// TestStreamIdleTimeout: a Put or Get stream whose provider stops making
// progress fails within about the idle timeout with ErrUnavailable; one
// that is slow but sends a message within every timeout is not aborted.
func TestStreamIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	small := map[string]string{"small": "0123456789"}
	big := map[string]string{"big": strings.Repeat("x", 4<<20)}
	tests := []struct {
		name string
		mode stall
		tree map[string]string // pushed as a single file
		ok   bool
	}{
		{name: "Get sends nothing", mode: getNothing, tree: small},
		{name: "Get sends a chunk, then nothing", mode: getOneChunk, tree: map[string]string{"f": strings.Repeat("y", 3*pb.ChunkSize)}},
		{name: "Get sends a byte every 100ms", mode: getTrickle, tree: small, ok: true},
		{name: "Put stops reading", mode: putStopReading, tree: big},
		{name: "Put never answers the commit", mode: putNoAnswer, tree: small},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Without an idle timeout, only this ends the stall.
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			dir := t.TempDir()
			p := &stallingProvider{memProvider: &memProvider{apiVersion: pb.APIVersion, blobs: map[string][]byte{}}}
			lis, err := net.Listen("unix", filepath.Join(dir, "p.sock"))
			if err != nil {
				t.Fatal(err)
			}
			// A fixed 64 KiB window (no BDP growth): a provider that stops
			// reading stops a Put within a few chunks.
			srv := grpc.NewServer(grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10))
			pb.RegisterProviderServer(srv, p)
			go srv.Serve(lis)
			t.Cleanup(srv.Stop)
			c := provider.NewClient(provider.Options{Dir: dir, IdleTimeout: idle})
			t.Cleanup(func() { c.Close() })

			src := filepath.Join(t.TempDir(), "src")
			writeTree(t, src, tc.tree)
			push := func() (*provider.PushResult, error) {
				return c.Push(ctx, provider.PushRequest{Backend: "p", Scope: scope, Dir: src, MediaType: "application/octet-stream", Metadata: artifact.Metadata{Name: "a"}})
			}
			var (
				op    func() error
				layer string
			)
			if tc.mode >= putStopReading {
				op = func() error { _, err := push(); return err }
			} else {
				res, err := push()
				if err != nil {
					t.Fatal(err)
				}
				layer = res.Layer.Digest.String()
				dest := filepath.Join(t.TempDir(), "dest")
				op = func() error {
					if _, err := c.Pull(ctx, "p", scope, res.Manifest.Digest.String(), dest, archive.Limits{}); err != nil {
						return err
					}
					for name, want := range tc.tree {
						if got, err := os.ReadFile(filepath.Join(dest, name)); err != nil || string(got) != want {
							t.Errorf("pulled %s: %q, %v", name, got, err)
						}
					}
					return nil
				}
			}
			p.set(tc.mode, layer)
			start := time.Now()
			err = op()
			took := time.Since(start)
			if tc.ok {
				if err != nil {
					t.Fatalf("a provider that makes progress was aborted after %s: %v", took, err)
				}
				return
			}
			if errdefs.ClassOf(err) != errdefs.ErrUnavailable || !strings.Contains(err.Error(), `provider "p" made no progress for 300ms`) {
				t.Fatalf("err = %v (class %v), want the idle timeout, unavailable", err, errdefs.ClassOf(err))
			}
			if took > 10*time.Second {
				t.Errorf("the stall was detected after %s", took)
			}
		})
	}
}
