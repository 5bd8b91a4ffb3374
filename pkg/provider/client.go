package provider

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	pb "github.com/tektoncd/artifacts-csi-driver/proto/provider/v1alpha1"
)

// Errors a Client returns, wrapped with the provider's message; each is of
// an errdefs class. A provider's own gRPC status never escapes: callers
// see errdefs.ErrNotFound (NOT_FOUND), errdefs.ErrDenied
// (PERMISSION_DENIED, UNAUTHENTICATED), errdefs.ErrUnavailable (no
// provider serves the socket, it answered UNAVAILABLE or ABORTED after
// the client's retries, or a stream made no progress for
// Options.IdleTimeout), archive.ErrDigestMismatch (DATA_LOSS, or bytes
// that do not match their digest), context errors, or one of these.
var (
	// ErrRejected: the provider refused the request as invalid
	// (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE), e.g. a
	// repository it does not accept [ErrInvalid].
	ErrRejected = errdefs.New("request rejected by the provider", errdefs.ErrInvalid)
	// ErrExhausted: its storage is full, or a limit of its own is reached
	// (RESOURCE_EXHAUSTED) [ErrNoSpace: retried, as space may be freed].
	ErrExhausted = errdefs.New("provider storage exhausted", errdefs.ErrNoSpace)
	// ErrBadProvider: the provider broke the API: an unsupported version,
	// an oversized chunk, a malformed location [ErrUnavailable: unusable
	// until an administrator deploys a working one, like a provider that is
	// not running].
	ErrBadProvider = errdefs.New("provider broke the API", errdefs.ErrUnavailable)
)

// Options configures a Client.
type Options struct {
	// Dir holds the providers' sockets, <Dir>/<name>.sock. Required.
	Dir string
	// CallTimeout bounds Info, Stat and Delete. Default 30s.
	CallTimeout time.Duration
	// IdleTimeout aborts a Put or Get stream once it has waited that long
	// on the provider without a message moving: a Send blocked by flow
	// control, a Recv, the answer to a commit. The time spent producing or
	// extracting the blob does not count. The stream fails with an error
	// of class errdefs.ErrUnavailable. Zero means DefaultIdleTimeout (60s);
	// negative disables it, leaving streams bounded by their caller's
	// context only.
	IdleTimeout time.Duration
	// Modes are the permission bits of what Pull extracts. Default:
	// archive.ArchiveModes, the producer's.
	Modes archive.Modes
}

// DefaultIdleTimeout is the default of Options.IdleTimeout.
const DefaultIdleTimeout = 60 * time.Second

// Client reaches the providers of a node. It keeps one connection per
// provider, checked with Info when first made; gRPC reconnects it when the
// provider restarts. Calls that fail with UNAVAILABLE before any response
// are retried (4 attempts, 100ms backoff doubling to 1s). A Client is safe
// for concurrent use.
type Client struct {
	o Options

	mu    sync.Mutex
	conns map[string]*conn
}

type conn struct {
	name string
	cc   *grpc.ClientConn
	api  pb.ProviderClient
	info *pb.InfoResponse
	idle time.Duration // Options.IdleTimeout
}

// NewClient returns a client for the providers under o.Dir.
func NewClient(o Options) *Client {
	if o.CallTimeout <= 0 {
		o.CallTimeout = 30 * time.Second
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	return &Client{o: o, conns: map[string]*conn{}}
}

// Close closes every connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for name, cn := range c.conns {
		errs = append(errs, cn.cc.Close())
		delete(c.conns, name)
	}
	return errors.Join(errs...)
}

// SocketPath returns where provider name's socket is.
func (c *Client) SocketPath(name string) string { return filepath.Join(c.o.Dir, name+".sock") }

// retryPolicy retries what failed with UNAVAILABLE before the provider
// answered anything: a provider restarting, a socket being recreated.
const retryPolicy = `{"methodConfig": [{
  "name": [{"service": "tekton.artifacts.provider.v1alpha1.Provider"}],
  "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "1s",
                  "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}`

// provider returns the connection to provider name, making and checking it
// when there is none yet.
func (c *Client) provider(ctx context.Context, name string) (*conn, error) {
	if !pb.ValidName(name) {
		return nil, fmt.Errorf("%w: backend %q is not a valid provider name", ErrRejected, name)
	}
	c.mu.Lock()
	cn := c.conns[name]
	c.mu.Unlock()
	if cn != nil {
		return cn, nil
	}
	sock := c.SocketPath(name)
	if st, err := os.Stat(sock); err != nil || st.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("%w: provider %q is not running on this node: no socket at %s (is its DaemonSet or sidecar deployed?)", errdefs.ErrUnavailable, name, sock)
	}
	cc, err := grpc.NewClient("unix://"+sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(retryPolicy),
		// A chunk is at most ChunkSize: refuse more before it is read.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(pb.ChunkSize+4096)))
	if err != nil {
		return nil, fmt.Errorf("provider %q: %w", name, err)
	}
	cn = &conn{name: name, cc: cc, api: pb.NewProviderClient(cc), idle: c.o.IdleTimeout}
	ictx, cancel := context.WithTimeout(ctx, c.o.CallTimeout)
	defer cancel()
	info, err := cn.api.Info(ictx, &pb.InfoRequest{})
	if err == nil {
		err = checkInfo(info)
	}
	if err != nil {
		cc.Close()
		return nil, cn.wrap("info", err)
	}
	cn.info = info
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.conns[name]; old != nil { // another call connected first
		cc.Close()
		return old, nil
	}
	c.conns[name] = cn
	return cn, nil
}

func checkInfo(info *pb.InfoResponse) error {
	switch {
	case !slices.Contains(info.GetApiVersions(), pb.APIVersion):
		return fmt.Errorf("%w: it speaks API versions %v, not %s", ErrBadProvider, info.GetApiVersions(), pb.APIVersion)
	case !slices.Contains(info.GetDigestAlgorithms(), "sha256"):
		return fmt.Errorf("%w: it does not accept sha256 digests (only %v)", ErrBadProvider, info.GetDigestAlgorithms())
	}
	return nil
}

// Info returns what provider name said of itself when the client
// connected.
func (c *Client) Info(ctx context.Context, name string) (*pb.InfoResponse, error) {
	cn, err := c.provider(ctx, name)
	if err != nil {
		return nil, err
	}
	return cn.info, nil
}

// Stat returns the size and location of blob digest in scope.
func (c *Client) Stat(ctx context.Context, name string, scope Scope, digest string) (size int64, location string, err error) {
	cn, err := c.provider(ctx, name)
	if err != nil {
		return 0, "", err
	}
	ctx, cancel := context.WithTimeout(ctx, c.o.CallTimeout)
	defer cancel()
	resp, err := cn.api.Stat(ctx, &pb.StatRequest{Scope: scope.proto(), Digest: digest})
	if err != nil {
		return 0, "", cn.wrap("stat "+digest, err)
	}
	if !pb.ValidLocation(resp.GetLocation()) || resp.GetSize() < 0 {
		return 0, "", fmt.Errorf("%w: provider %q: stat %s: size %d, location %q", ErrBadProvider, name, digest, resp.GetSize(), resp.GetLocation())
	}
	return resp.GetSize(), resp.GetLocation(), nil
}

// Delete removes blob digest from scope; an absent blob is not an error.
func (c *Client) Delete(ctx context.Context, name string, scope Scope, digest string) error {
	cn, err := c.provider(ctx, name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.o.CallTimeout)
	defer cancel()
	if _, err := cn.api.Delete(ctx, &pb.DeleteRequest{Scope: scope.proto(), Digest: digest}); err != nil {
		return cn.wrap("delete "+digest, err)
	}
	return nil
}

// Scope is where a blob lives: see the Scope message of the API.
type Scope struct {
	Namespace, Repository string
}

func (s Scope) proto() *pb.Scope { return &pb.Scope{Namespace: s.Namespace, Repository: s.Repository} }

// wrap turns a provider's gRPC error into one of this package's errors,
// naming the provider and the operation.
func (cn *conn) wrap(op string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("provider %q: %s: %w", cn.name, op, err)
	}
	var kind error
	switch st.Code() {
	case codes.NotFound:
		kind = errdefs.ErrNotFound
	case codes.PermissionDenied, codes.Unauthenticated:
		kind = errdefs.ErrDenied
	case codes.Unavailable, codes.Aborted:
		kind = errdefs.ErrUnavailable
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		kind = ErrRejected
	case codes.ResourceExhausted:
		kind = ErrExhausted
	case codes.DataLoss:
		kind = archive.ErrDigestMismatch // the provider's copy is corrupt
	case codes.Unimplemented:
		kind = ErrBadProvider
	case codes.DeadlineExceeded:
		kind = context.DeadlineExceeded
	case codes.Canceled:
		kind = context.Canceled
	default:
		return fmt.Errorf("provider %q: %s: %s: %s", cn.name, op, st.Code(), st.Message())
	}
	return fmt.Errorf("%w: provider %q: %s: %s", kind, cn.name, op, st.Message())
}
