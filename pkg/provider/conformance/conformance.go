// Package conformance checks that a storage provider follows the provider
// API (proto/provider/v1alpha1), the way csi-sanity checks a CSI driver:
// it talks to the provider's unix socket and runs cases covering every
// method, the error codes the API prescribes, streaming limits,
// atomicity, concurrency and cancellation.
//
// Provider authors run it from a Go test:
//
//	func TestConformance(t *testing.T) {
//		// start the provider on sock, then
//		conformance.Test(t, conformance.Config{Endpoint: sock})
//	}
//
// or against a running provider with the artifacts-provider-conformance
// command. The suite stores blobs only under its own scope and deletes
// them at the end of each case.
package conformance

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tektoncd/artifacts-csi-driver/internal/unixsock"
	pb "github.com/tektoncd/artifacts-csi-driver/proto/provider/v1alpha1"
)

// ErrSkipped marks a case that does not apply to the provider, e.g. a size
// limit case for a provider without one. Run does not count it as failed.
var ErrSkipped = errors.New("skipped")

// Config configures a run of the suite. Only Endpoint is required.
type Config struct {
	// Endpoint is the provider's socket: a path or unix:///path.
	Endpoint string
	// Namespace is the namespace of every request. Default "conformance".
	Namespace string
	// Repository is the repository blobs are stored in; the suite also
	// uses Repository + "/isolation". Default "conformance/run-<random>",
	// new for each run, so runs never see each other's blobs.
	Repository string
	// LargeSize is the size of the large stream case, generated on the fly.
	// Default 64 MiB.
	LargeSize int64
	// Timeout bounds each case, its clean-up excluded. Default 2m.
	Timeout time.Duration
}

// withDefaults returns c with its defaults set, and an error when c is
// unusable.
func (c Config) withDefaults() (Config, error) {
	if c.Namespace == "" {
		c.Namespace = "conformance"
	}
	if c.Repository == "" {
		c.Repository = "conformance/run-" + strings.ToLower(crand.Text()[:10])
	}
	if c.LargeSize == 0 {
		c.LargeSize = 64 << 20
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Minute
	}
	var errs []error
	if c.Endpoint == "" {
		errs = append(errs, errors.New("no provider endpoint"))
	}
	if err := pb.CheckScope(c.Namespace, c.Repository); err != nil {
		errs = append(errs, err)
	}
	if c.LargeSize < 0 {
		errs = append(errs, fmt.Errorf("negative large size %d", c.LargeSize))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("negative timeout %s", c.Timeout))
	}
	return c, errors.Join(errs...)
}

// socketPath returns the path of an endpoint; a bare relative path, as a
// provider author may type it, is taken from the working directory.
func socketPath(endpoint string) (string, error) {
	if !strings.Contains(endpoint, "://") && !filepath.IsAbs(endpoint) {
		abs, err := filepath.Abs(endpoint)
		if err != nil {
			return "", err
		}
		endpoint = abs
	}
	return unixsock.Path(endpoint)
}

// Case is one conformance check.
type Case struct {
	// Name identifies the case; "/" separates a group from a variant.
	Name string
	// Run returns nil when the provider passed, an error wrapping
	// ErrSkipped when the case does not apply, and else what went wrong.
	Run func(ctx context.Context, e *Env) error
}

// Env is what a case runs against. Its methods are safe for concurrent
// use.
type Env struct {
	// Client talks to the provider.
	Client pb.ProviderClient
	// Config is the run's configuration, with defaults set.
	Config Config
	// Info is the provider's answer to Info at the start of the run; empty
	// when Info failed.
	Info *pb.InfoResponse

	mu     sync.Mutex
	rng    *rand.ChaCha8
	stored []blobRef
}

type blobRef struct {
	scope  *pb.Scope
	digest string
}

// Scope returns the run's scope.
func (e *Env) Scope() *pb.Scope {
	return &pb.Scope{Namespace: e.Config.Namespace, Repository: e.Config.Repository}
}

// Track makes the suite delete the blob digest of scope after the case;
// tracking it again does nothing.
func (e *Env) Track(scope *pb.Scope, digest string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range e.stored {
		if b.digest == digest && b.scope.GetNamespace() == scope.GetNamespace() && b.scope.GetRepository() == scope.GetRepository() {
			return
		}
	}
	e.stored = append(e.stored, blobRef{scope, digest})
}

// random returns n random bytes, different in every run.
func (e *Env) random(n int) []byte {
	b := make([]byte, n)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rng.Read(b)
	return b
}

// seed returns a random seed, for content generated on the fly.
func (e *Env) seed() [32]byte {
	var s [32]byte
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rng.Read(s[:])
	return s
}

// session is a connection to the provider, shared by the cases of a run.
type session struct {
	cfg  Config
	conn *grpc.ClientConn
	info *pb.InfoResponse
}

// newSession applies cfg's defaults and connects to the provider.
func newSession(ctx context.Context, cfg Config) (*session, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("conformance: %w", err)
	}
	sock, err := socketPath(cfg.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("conformance: endpoint %s: %w", cfg.Endpoint, err)
	}
	if fi, err := os.Stat(sock); err != nil {
		return nil, fmt.Errorf("conformance: no provider socket: %w", err)
	} else if fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("conformance: %s is not a socket", sock)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("conformance: connect to %s: %w", sock, err)
	}
	s := &session{cfg: cfg, conn: conn}
	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Failures show in the Info case.
	s.info, _ = pb.NewProviderClient(conn).Info(ictx, &pb.InfoRequest{})
	if s.info == nil {
		s.info = &pb.InfoResponse{}
	}
	return s, nil
}

func (s *session) close() { s.conn.Close() }

// run runs one case within the configured timeout, then deletes what it
// stored.
func (s *session) run(ctx context.Context, c Case) error {
	var seed [32]byte
	crand.Read(seed[:])
	e := &Env{Client: pb.NewProviderClient(s.conn), Config: s.cfg, Info: s.info, rng: rand.NewChaCha8(seed)}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	err := c.Run(cctx, e)
	cancel()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var errs []error
	for _, b := range e.stored {
		if _, derr := e.Client.Delete(dctx, &pb.DeleteRequest{Scope: b.scope, Digest: b.digest}); derr != nil {
			errs = append(errs, fmt.Errorf("clean-up: delete %s in %s: %w", b.digest, b.scope.GetRepository(), derr))
		}
	}
	if err != nil {
		return err
	}
	return errors.Join(errs...)
}

// Run runs the cases whose names filter matches (every case when filter is
// nil) against the provider cfg describes, one after the other, calling
// report, when not nil, after each. It returns how many failed; a case
// wrapping ErrSkipped did not. Its error says why the suite could not run
// at all (bad Config, no socket) or that ctx ended it.
func Run(ctx context.Context, cfg Config, filter *regexp.Regexp, report func(name string, err error, d time.Duration)) (failed int, err error) {
	s, err := newSession(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer s.close()
	for _, c := range Cases() {
		if filter != nil && !filter.MatchString(c.Name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return failed, err
		}
		start := time.Now()
		err := s.run(ctx, c)
		if err != nil && !errors.Is(err, ErrSkipped) {
			failed++
		}
		if report != nil {
			report(c.Name, err, time.Since(start))
		}
	}
	return failed, ctx.Err()
}

// Test runs every case as a subtest of t, against the provider cfg
// describes; `go test -run 'TestConformance/Put'` selects cases.
func Test(t *testing.T, cfg Config) {
	t.Helper()
	s, err := newSession(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	for _, c := range Cases() {
		t.Run(c.Name, func(t *testing.T) {
			switch err := s.run(t.Context(), c); {
			case errors.Is(err, ErrSkipped):
				t.Skip(err)
			case err != nil:
				t.Fatal(err)
			}
		})
	}
}
