package filesystem

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/tektoncd/artifacts-csi-driver/pkg/provider/conformance"
	pb "github.com/tektoncd/artifacts-csi-driver/proto/provider/v1alpha1"
)

// serve runs the daemon on a socket in a new directory, with o's provider
// options and root dir/root, until the test ends, and returns a client and
// the root.
func startProvider(t *testing.T, o Options) (pb.ProviderClient, string, string) {
	t.Helper()
	ctx := testContext(t)
	ctx, cancel := context.WithCancel(ctx)
	dir := t.TempDir()
	so := &ServerOptions{Endpoint: "unix://" + filepath.Join(dir, "p.sock"), Options: o}
	if so.Root == "" {
		so.Root = filepath.Join(dir, "root")
	}
	sock, _ := so.SocketPath()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, so, "test") }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left after stop: %v", err)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("socket not created")
		}
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewProviderClient(conn), sock, so.Root
}

// testContext returns a context logging to t at level 4.
func testContext(t *testing.T) context.Context {
	return klog.NewContext(t.Context(), ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(4))))
}

func TestConformance(t *testing.T) {
	_, sock, root := startProvider(t, Options{NamespaceScoped: true})
	conformance.Test(t, conformance.Config{Endpoint: sock, LargeSize: 32 << 20})
	// The suite deleted what it stored, and no upload left a staging file.
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			t.Errorf("left in the root: %s (%v)", p, err)
		}
		return nil
	})
}

func TestConformanceSizeLimit(t *testing.T) {
	_, sock, _ := startProvider(t, Options{MaxBlobSize: 5 << 20})
	conformance.Test(t, conformance.Config{Endpoint: "unix://" + sock, LargeSize: 8 << 20, Namespace: "team", Repository: "other/repo"})
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func header(ns, repo string) *pb.PutRequest {
	return &pb.PutRequest{Part: &pb.PutRequest_Header{Header: &pb.PutHeader{Scope: &pb.Scope{Namespace: ns, Repository: repo}}}}
}

func chunk(b []byte) *pb.PutRequest { return &pb.PutRequest{Part: &pb.PutRequest_Chunk{Chunk: b}} }

func commit(d string, n int) *pb.PutRequest {
	return &pb.PutRequest{Part: &pb.PutRequest_Commit{Commit: &pb.PutCommit{Digest: d, Size: int64(n)}}}
}

// put sends msgs as one Put stream.
func put(ctx context.Context, c pb.ProviderClient, msgs ...*pb.PutRequest) (*pb.PutResponse, error) {
	s, err := c.Put(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if err := s.Send(m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
	}
	return s.CloseAndRecv()
}

// get returns a blob's content.
func get(ctx context.Context, c pb.ProviderClient, ns, repo, d string) ([]byte, error) {
	s, err := c.Get(ctx, &pb.GetRequest{Scope: &pb.Scope{Namespace: ns, Repository: repo}, Digest: d})
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return buf.Bytes(), nil
		}
		if err != nil {
			return buf.Bytes(), err
		}
		buf.Write(r.GetChunk())
	}
}

// stagingEmpty waits for the staging directory of root to be empty.
func stagingEmpty(t *testing.T, root string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		entries, err := os.ReadDir(filepath.Join(root, stagingDir))
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("staging files left: %v", entries)
		}
	}
}

func TestPut(t *testing.T) {
	c, _, root := startProvider(t, Options{NamespaceScoped: true, MaxBlobSize: 2 << 20})
	data := []byte("hello, artifacts")
	d := digestOf(data)
	big := bytes.Repeat([]byte{'x'}, pb.ChunkSize+1)
	for _, tc := range []struct {
		name string
		msgs []*pb.PutRequest
		want codes.Code
		// stored is the repository the blob is then in.
		stored string
	}{
		{"stores", []*pb.PutRequest{header("team", "team"), chunk(data), commit(d, len(data))}, codes.OK, "team"},
		{"in a sub-repository", []*pb.PutRequest{header("team", "team/app.x"), chunk(data[:3]), chunk(data[3:]), commit(d, len(data))}, codes.OK, "team/app.x"},
		{"another namespace's repository", []*pb.PutRequest{header("team", "other"), chunk(data), commit(d, len(data))}, codes.PermissionDenied, ""},
		{"a repository sharing a prefix", []*pb.PutRequest{header("team", "teamx/a"), chunk(data), commit(d, len(data))}, codes.PermissionDenied, ""},
		{"invalid repository", []*pb.PutRequest{header("team", "team/../x"), chunk(data), commit(d, len(data))}, codes.InvalidArgument, ""},
		{"reserved repository", []*pb.PutRequest{header("team", "team/blobs/sha256/"+strings.TrimPrefix(d, "sha256:")), chunk(data), commit(d, len(data))}, codes.InvalidArgument, ""},
		{"no header", []*pb.PutRequest{chunk(data), commit(d, len(data))}, codes.InvalidArgument, ""},
		{"empty stream", nil, codes.InvalidArgument, ""},
		{"two headers", []*pb.PutRequest{header("team", "team/two"), header("team", "team/two"), chunk(data), commit(d, len(data))}, codes.InvalidArgument, ""},
		{"empty message", []*pb.PutRequest{header("team", "team/empty"), {}, commit(d, len(data))}, codes.InvalidArgument, ""},
		{"no commit", []*pb.PutRequest{header("team", "team/nocommit"), chunk(data)}, codes.InvalidArgument, ""},
		{"wrong digest", []*pb.PutRequest{header("team", "team/digest"), chunk(data), commit(digestOf(nil), len(data))}, codes.InvalidArgument, ""},
		{"malformed digest", []*pb.PutRequest{header("team", "team/digest"), chunk(data), commit(strings.ToUpper(d), len(data))}, codes.InvalidArgument, ""},
		{"wrong size", []*pb.PutRequest{header("team", "team/size"), chunk(data), commit(d, len(data)-1)}, codes.InvalidArgument, ""},
		{"chunk too large", []*pb.PutRequest{header("team", "team/chunk"), chunk(big), commit(digestOf(big), len(big))}, codes.InvalidArgument, ""},
		{"blob too large", []*pb.PutRequest{header("team", "team/large"), chunk(big[:1<<20]), chunk(big[:1<<20]), chunk(data)}, codes.ResourceExhausted, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			resp, err := put(ctx, c, tc.msgs...)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("Put: got %s (%v), want %s", got, err, tc.want)
			}
			stagingEmpty(t, root)
			if tc.stored == "" {
				return
			}
			file := filepath.Join(root, tc.stored, "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
			if b, err := os.ReadFile(file); err != nil || !bytes.Equal(b, data) {
				t.Errorf("stored file %s: %q, %v; want %q", file, b, err, data)
			}
			if want := "file://" + file; resp.GetLocation() != want {
				t.Errorf("location %q, want %q", resp.GetLocation(), want)
			}
		})
	}
}

func TestNamespaceScoped(t *testing.T) {
	ctx := testContext(t)
	data := []byte("shared")
	d := digestOf(data)
	for _, tc := range []struct {
		scoped bool
		want   codes.Code
	}{{true, codes.PermissionDenied}, {false, codes.OK}} {
		c, _, _ := startProvider(t, Options{NamespaceScoped: tc.scoped})
		if _, err := put(ctx, c, header("team-a", "team-a"), chunk(data), commit(d, len(data))); err != nil {
			t.Fatal(err)
		}
		for _, call := range []struct {
			name string
			f    func() error
		}{
			{"Get", func() error { _, err := get(ctx, c, "team-b", "team-a", d); return err }},
			{"Stat", func() error {
				_, err := c.Stat(ctx, &pb.StatRequest{Scope: &pb.Scope{Namespace: "team-b", Repository: "team-a"}, Digest: d})
				return err
			}},
			{"Delete", func() error {
				_, err := c.Delete(ctx, &pb.DeleteRequest{Scope: &pb.Scope{Namespace: "team-b", Repository: "team-a"}, Digest: d})
				return err
			}},
		} {
			if got := status.Code(call.f()); got != tc.want {
				t.Errorf("namespaceScoped=%v: %s of another namespace's blob: got %s, want %s", tc.scoped, call.name, got, tc.want)
			}
		}
	}
}

func TestGetCorrupt(t *testing.T) {
	ctx := testContext(t)
	c, _, root := startProvider(t, Options{})
	data := bytes.Repeat([]byte("0123456789abcdef"), pb.ChunkSize/8) // two chunks
	d := digestOf(data)
	file := filepath.Join(root, "ns", "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
	for _, tc := range []struct {
		name    string
		corrupt func() error
		want    codes.Code
		// existed is what a new Put of the blob then says.
		existed bool
	}{
		{"intact", func() error { return nil }, codes.OK, true},
		{"flipped byte", func() error {
			b := bytes.Clone(data)
			b[len(b)-1] ^= 1
			return os.WriteFile(file, b, 0o640)
		}, codes.DataLoss, true},
		{"truncated", func() error { return os.Truncate(file, 10) }, codes.DataLoss, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.RemoveAll(file)
			if _, err := put(ctx, c, header("ns", "ns"), chunk(data[:pb.ChunkSize]), chunk(data[pb.ChunkSize:]), commit(d, len(data))); err != nil {
				t.Fatal(err)
			}
			if err := tc.corrupt(); err != nil {
				t.Fatal(err)
			}
			got, err := get(ctx, c, "ns", "ns", d)
			if code := status.Code(err); code != tc.want {
				t.Fatalf("Get: got %s (%v), want %s", code, err, tc.want)
			}
			if tc.want == codes.OK && !bytes.Equal(got, data) {
				t.Error("Get returned other bytes")
			}
			resp, err := put(ctx, c, header("ns", "ns"), chunk(data[:pb.ChunkSize]), chunk(data[pb.ChunkSize:]), commit(d, len(data)))
			if err != nil || resp.GetExisted() != tc.existed {
				t.Errorf("Put again: existed %v, %v; want %v", resp.GetExisted(), err, tc.existed)
			}
		})
	}
}

func TestStatDelete(t *testing.T) {
	ctx := testContext(t)
	c, _, root := startProvider(t, Options{})
	data := []byte("stat me")
	d := digestOf(data)
	if _, err := put(ctx, c, header("ns", "ns/a"), chunk(data), commit(d, len(data))); err != nil {
		t.Fatal(err)
	}
	scope := &pb.Scope{Namespace: "ns", Repository: "ns/a"}
	resp, err := c.Stat(ctx, &pb.StatRequest{Scope: scope, Digest: d})
	if err != nil {
		t.Fatal(err)
	}
	if want := "file://" + root + "/ns/a/blobs/sha256/" + strings.TrimPrefix(d, "sha256:"); resp.GetSize() != int64(len(data)) || resp.GetLocation() != want {
		t.Errorf("Stat: %v, want size %d and location %s", resp, len(data), want)
	}
	for i := range 2 {
		if _, err := c.Delete(ctx, &pb.DeleteRequest{Scope: scope, Digest: d}); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	if _, err := c.Stat(ctx, &pb.StatRequest{Scope: scope, Digest: d}); status.Code(err) != codes.NotFound {
		t.Errorf("Stat after Delete: %v, want NotFound", err)
	}
	// A repository nested under a blob path's prefix is not a blob.
	if _, err := c.Stat(ctx, &pb.StatRequest{Scope: &pb.Scope{Namespace: "ns", Repository: "ns/a/blobs"}, Digest: d}); status.Code(err) != codes.NotFound {
		t.Errorf("Stat in ns/a/blobs: %v, want NotFound", err)
	}
}

func TestInfo(t *testing.T) {
	c, _, _ := startProvider(t, Options{MaxBlobSize: 1234})
	ctx := testContext(t)
	resp, err := c.Info(ctx, &pb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetName() != "filesystem" || resp.GetVersion() != "test" || resp.GetMaxBlobSize() != 1234 ||
		len(resp.GetApiVersions()) != 1 || resp.GetApiVersions()[0] != "v1alpha1" ||
		len(resp.GetDigestAlgorithms()) != 1 || resp.GetDigestAlgorithms()[0] != "sha256" {
		t.Errorf("Info: %v", resp)
	}
}

// TestEscape checks that a symbolic link in the root leads nowhere
// outside it.
func TestEscape(t *testing.T) {
	ctx := testContext(t)
	outside := t.TempDir()
	root := filepath.Join(t.TempDir(), "root")
	if err := os.MkdirAll(root, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "evil")); err != nil {
		t.Fatal(err)
	}
	data := []byte("escape")
	d := digestOf(data)
	if err := os.MkdirAll(filepath.Join(outside, "blobs", "sha256"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")), data, 0o640); err != nil {
		t.Fatal(err)
	}
	c, _, _ := startProvider(t, Options{Root: root})
	if _, err := put(ctx, c, header("evil", "evil/x"), chunk(data), commit(d, len(data))); status.Code(err) != codes.Internal {
		t.Errorf("Put through a link out of the root: %v, want Internal", err)
	}
	if _, err := get(ctx, c, "evil", "evil", d); status.Code(err) != codes.Internal {
		t.Errorf("Get through a link out of the root: %v, want Internal", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Put wrote outside the root: %v", err)
	}
}

func TestNewClearsStaging(t *testing.T) {
	ctx := testContext(t)
	root := t.TempDir()
	for _, p := range []string{".staging/a", ".staging/dir/b"} {
		os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o750)
		if err := os.WriteFile(filepath.Join(root, p), []byte("partial"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	p, err := New(ctx, Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	stagingEmpty(t, root)
	if err := p.Healthy(); err != nil {
		t.Errorf("Healthy: %v", err)
	}
	if _, err := New(ctx, Options{Root: "/" + strings.Repeat("r", 700)}); err == nil {
		t.Error("New with a root too long for locations succeeded")
	}
}

// TestDiskFull fills a small tmpfs: RESOURCE_EXHAUSTED, and no staging
// file left.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	root := t.TempDir()
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=512k"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
	ctx := testContext(t)
	c, _, _ := startProvider(t, Options{Root: root})
	data := bytes.Repeat([]byte{7}, pb.ChunkSize)
	_, err := put(ctx, c, header("ns", "ns"), chunk(data), commit(digestOf(data), len(data)))
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("Put on a full disk: %v, want ResourceExhausted", err)
	}
	stagingEmpty(t, root)
}
