package driver

import (
	"context"
	"errors"
	"net"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// codeOf maps the errors of the packages below the CSI edge to gRPC codes,
// in one place. kubelet retries every failed NodePublishVolume with
// backoff; the code tells the user (through the pod's events) what kind of
// problem to fix.
var codeOf = []struct {
	err  error
	code codes.Code
}{
	{volume.ErrInvalid, codes.InvalidArgument},
	{credentials.ErrInvalid, codes.InvalidArgument},
	{errInvalidRequest, codes.InvalidArgument},
	{outputs.ErrConflict, codes.AlreadyExists},
	{outputs.ErrSealed, codes.FailedPrecondition},
	{errNotConfigured, codes.FailedPrecondition},
	{errNotYet, codes.Unavailable},
	{oci.ErrNotFound, codes.NotFound},
	{oci.ErrDenied, codes.PermissionDenied},
	{provider.ErrNotFound, codes.NotFound},
	{provider.ErrDenied, codes.PermissionDenied},
	{provider.ErrUnavailable, codes.Unavailable},
	{provider.ErrRejected, codes.FailedPrecondition},
	{provider.ErrBadProvider, codes.FailedPrecondition},
	{provider.ErrExhausted, codes.ResourceExhausted},
	{archive.ErrDigestMismatch, codes.DataLoss},
	{archive.ErrCorrupt, codes.DataLoss},
	{archive.ErrUnsafeEntry, codes.InvalidArgument},
	{archive.ErrUnsupportedFile, codes.InvalidArgument},
	{oci.ErrInvalidArtifact, codes.InvalidArgument},
	{archive.ErrLimitExceeded, codes.ResourceExhausted},
	{unix.ENOSPC, codes.ResourceExhausted},
	{unix.EDQUOT, codes.ResourceExhausted},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
}

var (
	// errInvalidRequest marks a request kubelet should not have sent.
	errInvalidRequest = errors.New("invalid request")
	// errNotConfigured marks a volume the configuration does not allow yet.
	errNotConfigured = errors.New("not configured")
	// errNotYet marks something that will work later without any change.
	errNotYet = errors.New("not available yet")
)

// toStatus turns an error into a gRPC status error with the code codeOf
// gives it, Unavailable for network and registry server failures (worth
// retrying as they are), and Internal otherwise. The message is the
// error's, which names the volume or artifact concerned.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, c := range codeOf {
		if errors.Is(err, c.err) {
			return status.Error(c.code, err.Error())
		}
	}
	var (
		netErr net.Error
		te     *transport.Error
	)
	if errors.As(err, &netErr) || errors.As(err, &te) && te.StatusCode >= http.StatusInternalServerError {
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
