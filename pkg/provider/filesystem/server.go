package filesystem

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/internal/command"
	"github.com/tektoncd/artifacts-csi-driver/internal/serve"
	"github.com/tektoncd/artifacts-csi-driver/internal/unixsock"
	pb "github.com/tektoncd/artifacts-csi-driver/proto/provider/v1alpha1"
)

// shutdownGrace bounds how long calls in flight may run after a stop.
const shutdownGrace = 10 * time.Second

// ServerOptions configures the artifacts-provider-filesystem daemon. Zero
// values are not defaults: use NewServerOptions, then AddFlags, then
// Validate.
type ServerOptions struct {
	// Endpoint is the socket the provider serves: a path or unix:///path.
	// Default /var/run/artifacts-csi/providers/filesystem.sock, where the
	// node plugin looks for the provider named filesystem.
	Endpoint string
	// HTTPAddress serves /healthz. Default :9810; empty turns it off.
	HTTPAddress string
	// Options configures the provider. Defaults: Root
	// /var/lib/artifacts-provider-filesystem, NamespaceScoped true,
	// MaxBlobSize 0 (unbounded). Run sets Version.
	Options
}

// NewServerOptions returns ServerOptions with their defaults.
func NewServerOptions() *ServerOptions {
	return &ServerOptions{
		Endpoint:    "/var/run/artifacts-csi/providers/" + Name + ".sock",
		HTTPAddress: ":9810",
		Options: Options{
			Root:            "/var/lib/artifacts-provider-filesystem",
			NamespaceScoped: true,
		},
	}
}

// AddFlags registers a flag for every option.
func (o *ServerOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Endpoint, "endpoint", o.Endpoint, "unix socket to serve, a path or unix:///path")
	fs.StringVar(&o.Root, "root", o.Root, "directory holding the blobs (a hostPath, or a ReadWriteMany volume to share them between nodes)")
	fs.BoolVar(&o.NamespaceScoped, "namespace-scoped", o.NamespaceScoped, "allow a namespace only its own repository and those under it (<namespace>/...)")
	fs.Var((*command.ByteSize)(&o.MaxBlobSize), "max-blob-size", "largest blob accepted, e.g. 10Gi (0: unbounded)")
	fs.StringVar(&o.HTTPAddress, "http-address", o.HTTPAddress, "address serving /healthz (empty: off)")
}

// Validate reports every invalid option at once.
func (o *ServerOptions) Validate() error {
	var errs []error
	if _, err := o.SocketPath(); err != nil {
		errs = append(errs, err)
	}
	if !filepath.IsAbs(o.Root) {
		errs = append(errs, fmt.Errorf("--root must be an absolute path, got %q", o.Root))
	}
	if o.MaxBlobSize < 0 {
		errs = append(errs, fmt.Errorf("--max-blob-size must not be negative, got %d", o.MaxBlobSize))
	}
	if o.HTTPAddress != "" {
		if _, _, err := net.SplitHostPort(o.HTTPAddress); err != nil {
			errs = append(errs, fmt.Errorf("--http-address must be host:port or :port, got %q", o.HTTPAddress))
		}
	}
	return errors.Join(errs...)
}

// SocketPath returns the socket's path: Endpoint without its unix://
// scheme.
func (o *ServerOptions) SocketPath() (string, error) {
	p, err := unixsock.Path(o.Endpoint)
	if err != nil {
		return "", fmt.Errorf("--endpoint: %w", err)
	}
	return p, nil
}

// Run serves the provider described by validated options on its socket
// (mode 0600: the node plugin runs as root), and /healthz on HTTPAddress,
// until ctx is cancelled; then it stops gracefully, letting calls in
// flight finish for up to 10s. It returns nil after a clean stop.
func Run(ctx context.Context, o *ServerOptions, version string) error {
	logger := klog.FromContext(ctx)
	po := o.Options
	po.Version = version
	p, err := New(ctx, po)
	if err != nil {
		return err
	}
	defer p.Close()
	socket, err := o.SocketPath()
	if err != nil {
		return err
	}
	lis, err := unixsock.Listen(socket, 0o600)
	if err != nil {
		return fmt.Errorf("provider endpoint: %w", err)
	}
	// WaitForHandlers: the root is closed after the server stops, so no
	// handler may still run then.
	srv := grpc.NewServer(grpc.WaitForHandlers(true), grpc.ChainUnaryInterceptor(withLogger(ctx)), grpc.ChainStreamInterceptor(withStreamLogger(ctx)))
	pb.RegisterProviderServer(srv, p)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serve.GRPC(gctx, srv, lis, shutdownGrace) })
	if o.HTTPAddress != "" {
		g.Go(func() error { return serve.HTTP(gctx, o.HTTPAddress, healthHandler(p)) })
	}
	logger.Info("Serving", "endpoint", socket, "root", o.Root, "httpAddress", o.HTTPAddress, "version", version)
	err = g.Wait()
	if ctx.Err() != nil && err == nil {
		logger.Info("Stopped")
		return nil
	}
	return err
}

// healthHandler serves /healthz: 200 while the root directory is usable.
func healthHandler(p *Provider) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := p.Healthy(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// withLogger puts the server's logger into each unary call's context.
func withLogger(ctx context.Context) grpc.UnaryServerInterceptor {
	logger := klog.FromContext(ctx)
	return func(cctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(klog.NewContext(cctx, logger), req)
	}
}

// withStreamLogger puts the server's logger into each stream's context.
func withStreamLogger(ctx context.Context) grpc.StreamServerInterceptor {
	logger := klog.FromContext(ctx)
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, loggedStream{ss, klog.NewContext(ss.Context(), logger)})
	}
}

// loggedStream is a stream with another context.
type loggedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s loggedStream) Context() context.Context { return s.ctx }
