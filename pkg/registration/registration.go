// Package registration registers the node plugin with kubelet, doing the
// job of the node-driver-registrar sidecar in-process.
//
// kubelet watches its plugin registration directory for sockets. For each
// one it calls GetInfo on the Registration service
// (k8s.io/kubelet/pkg/apis/pluginregistration/v1) to learn the plugin's
// type, name and CSI endpoint, validates them, and reports the outcome
// through NotifyRegistrationStatus. See
// https://kubernetes.io/docs/concepts/extend-kubernetes/compute-storage-net/device-plugins/#device-plugin-registration
// and kubelet's pkg/kubelet/pluginmanager.
package registration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/tektoncd/artifacts-csi-driver/internal/unixsock"
)

// SupportedVersions are the CSI spec versions reported to kubelet, which
// accepts only 1.x.
var SupportedVersions = []string{"1.0.0"}

// MaxSocketPathLen is the longest socket path Serve accepts: sun_path holds
// 108 bytes on Linux, one of which is kept for the terminating NUL so that
// every client, not only Go's, can dial the path.
const MaxSocketPathLen = 107

// ErrInUse reports that a live process already serves the registration
// socket, e.g. the previous plugin pod during a rolling update.
var ErrInUse = unixsock.ErrInUse

// Options configures Serve. There are no defaults: every field marked
// Required must be set.
type Options struct {
	// DriverName is the CSI driver name, e.g. "artifacts.csi.tekton.dev".
	// Required; it also names the socket, so it must not contain "/".
	DriverName string
	// Endpoint is the CSI socket path as kubelet sees it: an absolute path
	// without a unix:// prefix. Required.
	Endpoint string
	// Dir is kubelet's plugin registration directory, e.g.
	// /var/lib/kubelet/plugins_registry. Required; Serve creates it if
	// missing.
	Dir string
	// OnStatus, if set, is called with every registration status kubelet
	// reports: registered, or not and kubelet's reason. kubelet reports
	// again each time it (re)discovers the socket, e.g. after it restarts.
	// It runs on a gRPC handler goroutine, possibly concurrently with
	// itself, and must return quickly. Serve logs every status either way.
	OnStatus func(registered bool, kubeletError string)
}

// SocketPath returns Dir/<DriverName>-reg.sock, the name
// node-driver-registrar uses.
func (o Options) SocketPath() string {
	return filepath.Join(o.Dir, o.DriverName+"-reg.sock")
}

// Validate reports every invalid option at once.
func (o Options) Validate() error {
	var errs []error
	if o.DriverName == "" {
		errs = append(errs, errors.New("registration: driver name is required"))
	} else if strings.ContainsRune(o.DriverName, '/') {
		errs = append(errs, fmt.Errorf("registration: driver name %q must not contain '/'", o.DriverName))
	}
	if !filepath.IsAbs(o.Endpoint) {
		errs = append(errs, fmt.Errorf("registration: endpoint must be an absolute path (no unix:// prefix), got %q", o.Endpoint))
	}
	if !filepath.IsAbs(o.Dir) {
		errs = append(errs, fmt.Errorf("registration: directory must be an absolute path, got %q", o.Dir))
	}
	if len(errs) == 0 {
		if p := o.SocketPath(); len(p) > MaxSocketPathLen {
			errs = append(errs, fmt.Errorf("registration: socket path %q is %d bytes, longer than the %d a unix socket allows: use a shorter directory or driver name", p, len(p), MaxSocketPathLen))
		}
	}
	return errors.Join(errs...)
}

// Serve listens on o.SocketPath() and answers kubelet until ctx is
// cancelled, then stops gracefully, removes the socket and returns nil.
//
// A stale socket left by a crashed earlier run is replaced; a socket some
// live process still answers on is left alone and ErrInUse returned, and a
// path that is not a socket is never removed. The socket is mode 0600:
// kubelet runs as root. Serve returns an error if the options are invalid
// or it cannot listen, and logs through klog.FromContext(ctx).
func Serve(ctx context.Context, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	logger := klog.FromContext(ctx).WithValues("socket", o.SocketPath())

	// kubelet runs as root; nobody else has any business here.
	lis, err := unixsock.Listen(o.SocketPath(), 0o600)
	if err != nil {
		return fmt.Errorf("registration: %w", err)
	}
	// Remove the socket only while it is still ours: a newer process may
	// have replaced it after our listener stopped answering.
	lis.SetUnlinkOnClose(false)
	ours, err := os.Lstat(o.SocketPath())
	if err != nil {
		lis.Close()
		return fmt.Errorf("registration: stat socket %s: %w", o.SocketPath(), err)
	}
	defer func() {
		if fi, err := os.Lstat(o.SocketPath()); err == nil && os.SameFile(fi, ours) {
			if err := os.Remove(o.SocketPath()); err != nil {
				logger.Error(err, "Could not remove registration socket")
			}
		}
	}()

	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, &server{opts: o, logger: logger})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	logger.Info("Serving kubelet plugin registration", "driverName", o.DriverName, "endpoint", o.Endpoint)

	select {
	case <-ctx.Done():
		srv.GracefulStop()
		<-served
		logger.V(2).Info("Stopped serving kubelet plugin registration")
		return nil
	case err := <-served:
		srv.Stop()
		return fmt.Errorf("registration: serve %s: %w", o.SocketPath(), err)
	}
}

// server implements kubelet's Registration service.
type server struct {
	registerapi.UnimplementedRegistrationServer
	opts   Options
	logger klog.Logger
}

var _ registerapi.RegistrationServer = (*server)(nil)

// GetInfo describes the plugin to kubelet.
func (s *server) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	s.logger.V(4).Info("kubelet requested plugin info")
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.opts.DriverName,
		Endpoint:          s.opts.Endpoint,
		SupportedVersions: append([]string(nil), SupportedVersions...),
	}, nil
}

// NotifyRegistrationStatus logs kubelet's verdict and passes it to OnStatus.
func (s *server) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if st.GetPluginRegistered() {
		s.logger.Info("kubelet registered the plugin", "driverName", s.opts.DriverName)
	} else {
		s.logger.Error(nil, "kubelet rejected the plugin registration", "driverName", s.opts.DriverName, "kubeletError", st.GetError())
	}
	if s.opts.OnStatus != nil {
		s.opts.OnStatus(st.GetPluginRegistered(), st.GetError())
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}
