package conformance_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/tektoncd/artifacts-csi-driver/pkg/provider/conformance"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider/filesystem"
	pb "github.com/tektoncd/artifacts-csi-driver/proto/provider/v1alpha1"
)

// serve serves a filesystem provider, as wrap changes it, on a socket
// until the test ends.
func serve(t *testing.T, wrap func(*filesystem.Provider) pb.ProviderServer) string {
	t.Helper()
	ctx := klog.NewContext(t.Context(), ktesting.NewLogger(t, ktesting.NewConfig(ktesting.Verbosity(1))))
	p, err := filesystem.New(ctx, filesystem.Options{Root: t.TempDir(), NamespaceScoped: true})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "p.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(c context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return h(klog.NewContext(c, klog.FromContext(ctx)), req)
	}))
	pb.RegisterProviderServer(srv, wrap(p))
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Stop(); p.Close() })
	return sock
}

func honest(p *filesystem.Provider) pb.ProviderServer { return p }

func TestRun(t *testing.T) {
	sock := serve(t, honest)
	var reported []string
	failed, err := conformance.Run(t.Context(), conformance.Config{Endpoint: "unix://" + sock, LargeSize: 3 << 20}, nil,
		func(name string, err error, d time.Duration) {
			reported = append(reported, name)
			if err != nil && !errors.Is(err, conformance.ErrSkipped) {
				t.Errorf("%s: %v", name, err)
			}
		})
	if failed != 0 || err != nil {
		t.Errorf("Run: %d failed, %v", failed, err)
	}
	if len(reported) != len(conformance.Cases()) {
		t.Errorf("reported %d cases, want %d", len(reported), len(conformance.Cases()))
	}
}

func TestRunSetupErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  conformance.Config
		want string
	}{
		{"no endpoint", conformance.Config{}, "no provider endpoint"},
		{"no socket", conformance.Config{Endpoint: filepath.Join(t.TempDir(), "none.sock")}, "no provider socket"},
		{"not a socket", conformance.Config{Endpoint: t.TempDir()}, "not a socket"},
		{"bad scope", conformance.Config{Endpoint: "x.sock", Repository: "../x"}, "invalid scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := conformance.Run(t.Context(), tc.cfg, nil, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run: %v, want an error about %q", err, tc.want)
			}
		})
	}
}

// The mutants break one rule each; the suite must catch them.

type noSHA256 struct{ *filesystem.Provider }

func (m noSHA256) Info(ctx context.Context, req *pb.InfoRequest) (*pb.InfoResponse, error) {
	r, err := m.Provider.Info(ctx, req)
	r.DigestAlgorithms = []string{"sha512"}
	return r, err
}

type statInternal struct{ *filesystem.Provider }

func (m statInternal) Stat(ctx context.Context, req *pb.StatRequest) (*pb.StatResponse, error) {
	r, err := m.Provider.Stat(ctx, req)
	if status.Code(err) == codes.NotFound {
		err = status.Error(codes.Internal, "no such file")
	}
	return r, err
}

type deleteNotFound struct{ *filesystem.Provider }

func (m deleteNotFound) Delete(ctx context.Context, req *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	if _, err := m.Stat(ctx, &pb.StatRequest{Scope: req.GetScope(), Digest: req.GetDigest()}); err != nil {
		return nil, err
	}
	return m.Provider.Delete(ctx, req)
}

type neverExisted struct{ *filesystem.Provider }

func (m neverExisted) Put(stream pb.Provider_PutServer) error {
	return m.Provider.Put(resetExisted{stream})
}

type resetExisted struct{ pb.Provider_PutServer }

func (s resetExisted) SendAndClose(r *pb.PutResponse) error {
	r.Existed = false
	return s.Provider_PutServer.SendAndClose(r)
}

type lenientDigest struct{ *filesystem.Provider }

func (m lenientDigest) Stat(ctx context.Context, req *pb.StatRequest) (*pb.StatResponse, error) {
	req.Digest = strings.ToLower(req.Digest)
	return m.Provider.Stat(ctx, req)
}

type bigChunks struct{ *filesystem.Provider }

func (m bigChunks) Get(req *pb.GetRequest, stream pb.Provider_GetServer) error {
	ms := &mergeStream{Provider_GetServer: stream}
	err := m.Provider.Get(req, ms)
	if err == nil && len(ms.buf) > 0 {
		err = stream.Send(&pb.GetResponse{Chunk: ms.buf})
	}
	return err
}

type mergeStream struct {
	pb.Provider_GetServer
	buf []byte
}

func (s *mergeStream) Send(r *pb.GetResponse) error {
	s.buf = append(s.buf, r.GetChunk()...)
	if len(s.buf) < 2*pb.ChunkSize {
		return nil
	}
	err := s.Provider_GetServer.Send(&pb.GetResponse{Chunk: s.buf})
	s.buf = nil
	return err
}

func TestMutants(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(*filesystem.Provider) pb.ProviderServer
		// cases run; fail the ones that must fail.
		cases, fail string
	}{
		{"honest", honest, "Info|Missing|Delete|PutExisting|InvalidDigest|RoundTrip/3MiB", ""},
		{"no sha256", func(p *filesystem.Provider) pb.ProviderServer { return noSHA256{p} }, "^Info$", "Info"},
		{"Stat Internal when missing", func(p *filesystem.Provider) pb.ProviderServer { return statInternal{p} }, "^(Missing|Stat)$", "Missing"},
		{"Delete NotFound when absent", func(p *filesystem.Provider) pb.ProviderServer { return deleteNotFound{p} }, "^Delete$", "Delete"},
		{"never existed", func(p *filesystem.Provider) pb.ProviderServer { return neverExisted{p} }, "^(PutExisting|RoundTrip/1B)$", "PutExisting"},
		{"lenient digest", func(p *filesystem.Provider) pb.ProviderServer { return lenientDigest{p} }, "^(InvalidDigest|Stat)$", "InvalidDigest"},
		{"chunks over 1 MiB", func(p *filesystem.Provider) pb.ProviderServer { return bigChunks{p} }, "^RoundTrip/(1B|3MiB\\+7)$", "RoundTrip/3MiB+7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := serve(t, tc.wrap)
			var failedNames []string
			failed, err := conformance.Run(t.Context(), conformance.Config{Endpoint: sock}, regexp.MustCompile(tc.cases),
				func(name string, err error, _ time.Duration) {
					if err != nil {
						failedNames = append(failedNames, name)
						t.Logf("%s: %v", name, err)
					}
				})
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(failedNames, ","); got != tc.fail || failed != len(failedNames) {
				t.Errorf("failed %d: %q, want %q", failed, got, tc.fail)
			}
		})
	}
}
