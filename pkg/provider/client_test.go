package provider_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider"
	pb "github.com/tektoncd/artifacts-csi-driver/proto/provider/v1alpha1"
)

// memProvider is an in-memory provider for the client's unit tests, with
// ways to misbehave. The reference provider's own tests (and the
// conformance suite) cover a real one.
type memProvider struct {
	pb.UnimplementedProviderServer
	apiVersion string
	corrupt    bool // flip a byte of every blob Get returns
	bigChunks  bool // send blobs in one message, whatever their size
	emptyFlood bool // send empty chunks before the content

	mu    sync.Mutex
	blobs map[string][]byte // repository + "@" + digest
}

func (m *memProvider) Info(context.Context, *pb.InfoRequest) (*pb.InfoResponse, error) {
	return &pb.InfoResponse{Name: "mem", ApiVersions: []string{m.apiVersion}, DigestAlgorithms: []string{"sha256"}}, nil
}

func (m *memProvider) Put(s grpc.ClientStreamingServer[pb.PutRequest, pb.PutResponse]) error {
	var (
		scope *pb.Scope
		data  []byte
	)
	for {
		req, err := s.Recv()
		if err != nil {
			return status.Error(codes.InvalidArgument, "stream ended without a commit")
		}
		switch p := req.Part.(type) {
		case *pb.PutRequest_Header:
			scope = p.Header.GetScope()
		case *pb.PutRequest_Chunk:
			data = append(data, p.Chunk...)
		case *pb.PutRequest_Commit:
			sum := sha256.Sum256(data)
			if "sha256:"+hex.EncodeToString(sum[:]) != p.Commit.GetDigest() || int64(len(data)) != p.Commit.GetSize() {
				return status.Error(codes.InvalidArgument, "digest mismatch")
			}
			m.mu.Lock()
			m.blobs[scope.GetRepository()+"@"+p.Commit.GetDigest()] = data
			m.mu.Unlock()
			return s.SendAndClose(&pb.PutResponse{Location: "mem://" + scope.GetRepository() + "/" + p.Commit.GetDigest()})
		}
	}
}

func (m *memProvider) blob(scope *pb.Scope, digest string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[scope.GetRepository()+"@"+digest]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no blob %s", digest)
	}
	return bytes.Clone(b), nil
}

func (m *memProvider) Get(req *pb.GetRequest, s grpc.ServerStreamingServer[pb.GetResponse]) error {
	b, err := m.blob(req.GetScope(), req.GetDigest())
	if err != nil {
		return err
	}
	if m.corrupt && len(b) > 0 {
		b[len(b)/2] ^= 1
	}
	for i := 0; m.emptyFlood && i < 1000; i++ {
		if err := s.Send(&pb.GetResponse{}); err != nil {
			return err
		}
	}
	size := pb.ChunkSize
	if m.bigChunks {
		size = len(b) + 1
	}
	for len(b) > 0 {
		n := min(size, len(b))
		if err := s.Send(&pb.GetResponse{Chunk: b[:n]}); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func (m *memProvider) Stat(_ context.Context, req *pb.StatRequest) (*pb.StatResponse, error) {
	b, err := m.blob(req.GetScope(), req.GetDigest())
	if err != nil {
		return nil, err
	}
	return &pb.StatResponse{Size: int64(len(b)), Location: "mem://x"}, nil
}

// serve starts m on dir/name.sock and returns a client of dir.
func serve(t *testing.T, dir, name string, m *memProvider) *provider.Client {
	t.Helper()
	if m.blobs == nil {
		m.blobs = map[string][]byte{}
	}
	if m.apiVersion == "" {
		m.apiVersion = pb.APIVersion
	}
	return serveProvider(t, dir, name, m)
}

// serveProvider serves p on dir/name.sock until the test ends and returns
// a client of dir.
func serveProvider(t testing.TB, dir, name string, p pb.ProviderServer) *provider.Client {
	t.Helper()
	lis, err := net.Listen("unix", filepath.Join(dir, name+".sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterProviderServer(srv, p)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	c := provider.NewClient(provider.Options{Dir: dir})
	t.Cleanup(func() { c.Close() })
	return c
}

var scope = provider.Scope{Namespace: "team-a", Repository: "team-a"}

func TestPushPullRoundTrip(t *testing.T) {
	dir := t.TempDir()
	c := serve(t, dir, "mem", &memProvider{})
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		tree      map[string]string
		mediaType string
		comp      archive.Compression
	}{
		{name: "tree gzip", tree: nil, comp: archive.Gzip}, // testtree's
		{name: "tree uncompressed", tree: map[string]string{"a.txt": "a", "sub/b.bin": strings.Repeat("b", 3*pb.ChunkSize+7)}, comp: archive.None},
		{name: "tree zstd", tree: map[string]string{"x": "x"}, comp: archive.Zstd},
		{name: "empty tree", tree: map[string]string{}},
		{name: "single file", tree: map[string]string{"report.json": `{"ok":true}`}, mediaType: "application/json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), "src")
			writeTree(t, src, tc.tree)
			res, err := c.Push(ctx, provider.PushRequest{Backend: "mem", Scope: scope, Dir: src, Compression: tc.comp,
				MediaType: tc.mediaType, Metadata: artifact.Metadata{Name: "out", Namespace: "team-a"}})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(res.Location, "mem://team-a/") {
				t.Errorf("location %q", res.Location)
			}
			again, err := c.Push(ctx, provider.PushRequest{Backend: "mem", Scope: scope, Dir: src, Compression: tc.comp,
				MediaType: tc.mediaType, Metadata: artifact.Metadata{Name: "out", Namespace: "team-a"}})
			if err != nil || again.Manifest.Digest != res.Manifest.Digest {
				t.Fatalf("push again: %v, digest %v then %v", err, res.Manifest.Digest, again.Manifest.Digest)
			}
			if size, _, err := c.Stat(ctx, "mem", scope, res.Manifest.Digest.String()); err != nil || size != res.Manifest.Size {
				t.Fatalf("stat: %d, %v; want %d", size, err, res.Manifest.Size)
			}
			dest := filepath.Join(t.TempDir(), "dest")
			pulled, err := c.Pull(ctx, "mem", scope, res.Manifest.Digest.String(), dest, archive.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if pulled.Metadata == nil || pulled.Metadata.Name != "out" {
				t.Errorf("metadata %+v", pulled.Metadata)
			}
			testtree.Equal(t, src, dest)
		})
	}
}

func TestPullRejectsWhatTheProviderGetsWrong(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src")
	writeTree(t, src, map[string]string{"a": strings.Repeat("content ", 1000)})
	for _, tc := range []struct {
		name string
		m    *memProvider
		want error
	}{
		{name: "corrupted bytes", m: &memProvider{}, want: archive.ErrDigestMismatch},
		{name: "oversized chunks", m: &memProvider{}, want: provider.ErrBadProvider},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := serve(t, t.TempDir(), "p", tc.m)
			res, err := c.Push(ctx, provider.PushRequest{Backend: "p", Scope: scope, Dir: src, Metadata: artifact.Metadata{Name: "a"}})
			if err != nil {
				t.Fatal(err)
			}
			tc.m.corrupt = tc.want == archive.ErrDigestMismatch
			tc.m.bigChunks = tc.want == provider.ErrBadProvider
			if tc.m.bigChunks { // a layer bigger than a chunk, stored behind the client's back
				big := bytes.Repeat([]byte{1}, pb.ChunkSize+1)
				sum := sha256.Sum256(big)
				d := "sha256:" + hex.EncodeToString(sum[:])
				tc.m.blobs[scope.Repository+"@"+d] = big
				if _, err := c.Pull(ctx, "p", scope, d, filepath.Join(t.TempDir(), "x"), archive.Limits{}); !errors.Is(err, tc.want) {
					t.Fatalf("pull: %v, want %v", err, tc.want)
				}
				return
			}
			dest := filepath.Join(t.TempDir(), "dest")
			if _, err := c.Pull(ctx, "p", scope, res.Manifest.Digest.String(), dest, archive.Limits{}); !errors.Is(err, tc.want) {
				t.Fatalf("pull: %v, want %v", err, tc.want)
			}
			if _, err := os.Stat(dest); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("dest exists after a failed pull: %v", err)
			}
		})
	}
}

func TestEmptyChunksAreRefused(t *testing.T) {
	ctx := context.Background()
	m := &memProvider{}
	c := serve(t, t.TempDir(), "p", m)
	src := filepath.Join(t.TempDir(), "src")
	writeTree(t, src, map[string]string{"a": "a"})
	res, err := c.Push(ctx, provider.PushRequest{Backend: "p", Scope: scope, Dir: src, Metadata: artifact.Metadata{Name: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	m.emptyFlood = true
	if _, err := c.Pull(ctx, "p", scope, res.Manifest.Digest.String(), filepath.Join(t.TempDir(), "d"), archive.Limits{}); !errors.Is(err, provider.ErrBadProvider) {
		t.Fatalf("pull: %v, want ErrBadProvider", err)
	}
}

func TestCorruptLayerLeavesNothing(t *testing.T) {
	ctx := context.Background()
	m := &memProvider{}
	c := serve(t, t.TempDir(), "p", m)
	src := filepath.Join(t.TempDir(), "src")
	writeTree(t, src, map[string]string{"a": strings.Repeat("x", 5*pb.ChunkSize)})
	res, err := c.Push(ctx, provider.PushRequest{Backend: "p", Scope: scope, Dir: src, Metadata: artifact.Metadata{Name: "a"}, Compression: archive.None})
	if err != nil {
		t.Fatal(err)
	}
	// Corrupt the layer only: the manifest still verifies.
	m.mu.Lock()
	m.blobs[scope.Repository+"@"+res.Layer.Digest.String()][3*pb.ChunkSize] ^= 1
	m.mu.Unlock()
	dest := filepath.Join(t.TempDir(), "dest")
	if _, err := c.Pull(ctx, "p", scope, res.Manifest.Digest.String(), dest, archive.Limits{}); !errors.Is(err, archive.ErrDigestMismatch) {
		t.Fatalf("pull: %v, want a digest mismatch", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(dest)); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

func TestProviderErrors(t *testing.T) {
	dir := t.TempDir()
	c := serve(t, dir, "mem", &memProvider{})
	serve(t, dir, "old", &memProvider{apiVersion: "v0"})
	missing := "sha256:" + strings.Repeat("0", 64)
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{name: "absent provider", err: statErr(c, "nothing", scope, missing), want: errdefs.ErrUnavailable},
		{name: "invalid provider name", err: statErr(c, "../x", scope, missing), want: provider.ErrRejected},
		{name: "other API version", err: statErr(c, "old", scope, missing), want: provider.ErrBadProvider},
		{name: "missing blob", err: statErr(c, "mem", scope, missing), want: errdefs.ErrNotFound},
		{name: "missing manifest", err: pullErr(c, "mem", missing), want: errdefs.ErrNotFound},
		{name: "malformed digest", err: pullErr(c, "mem", "sha256:abc"), want: provider.ErrRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, tc.want) {
				t.Fatalf("got %v, want %v", tc.err, tc.want)
			}
			if _, isStatus := status.FromError(tc.err); isStatus {
				t.Errorf("a provider's gRPC status escaped: %v", tc.err)
			}
		})
	}
}

func statErr(c *provider.Client, backend string, scope provider.Scope, digest string) error {
	_, _, err := c.Stat(context.Background(), backend, scope, digest)
	return err
}

func pullErr(c *provider.Client, backend, digest string) error {
	_, err := c.Pull(context.Background(), backend, scope, digest, filepath.Join(os.TempDir(), fmt.Sprintf("never-%d", os.Getpid())), archive.Limits{})
	return err
}

// writeTree writes files (path → content) under dir, or testtree's tree
// when files is nil.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if files == nil {
		testtree.Write(t, dir, 1)
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
