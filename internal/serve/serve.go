// Package serve runs the servers of the long-running binaries until their
// context ends, then stops them: gRPC gracefully within a bound, HTTP at
// once. Each function blocks, so callers run them in an errgroup.
package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
)

// GRPC serves srv on lis until ctx ends, then stops it gracefully, letting
// calls in flight finish for up to grace before cutting them off. It
// returns nil after such a stop.
func GRPC(ctx context.Context, srv *grpc.Server, lis net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(grace):
		srv.Stop()
	}
	return <-errc
}

// HTTP serves h on addr (TCP) until ctx ends, with a 10s bound on request
// headers. It returns an error when addr cannot be listened on, and nil
// after ctx ended.
func HTTP(ctx context.Context, addr string, h http.Handler) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return Listener(ctx, lis, h)
}

// Listener serves h on lis (which may be a TLS listener) until ctx ends,
// as HTTP does, and closes lis.
func Listener(ctx context.Context, lis net.Listener, h http.Handler) error {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		hs.Close()
	}()
	if err := hs.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", lis.Addr(), err)
	}
	return nil
}
