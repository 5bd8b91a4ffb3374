package driver

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
)

// codeOf maps the classes of errdefs, and the context's errors, to gRPC
// codes: the one place where the driver turns errors into codes. kubelet
// retries every failed NodePublishVolume with backoff; the code tells the
// user (through the pod's events) what kind of problem to fix.
var codeOf = []struct {
	err  error
	code codes.Code
}{
	{errdefs.ErrInvalid, codes.InvalidArgument},
	{errdefs.ErrTooLarge, codes.ResourceExhausted},
	{errdefs.ErrConflict, codes.AlreadyExists},
	{errdefs.ErrPrecondition, codes.FailedPrecondition},
	{errdefs.ErrNotFound, codes.NotFound},
	{errdefs.ErrDenied, codes.PermissionDenied},
	{errdefs.ErrNoSpace, codes.ResourceExhausted},
	{errdefs.ErrCorrupt, codes.DataLoss},
	{errdefs.ErrUnavailable, codes.Unavailable},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
}

// The driver's own judgements of a volume, each of an errdefs class.
var (
	// errInvalidRequest marks a request kubelet should not have sent.
	errInvalidRequest = errdefs.New("invalid request", errdefs.ErrInvalid)
	// errNotConfigured marks a volume the configuration does not allow yet.
	errNotConfigured = errdefs.New("not configured", errdefs.ErrPrecondition)
	// errNotYet marks something that will work later without any change.
	errNotYet = errdefs.New("not available yet", errdefs.ErrUnavailable)
)

// toStatus turns an error into a gRPC status error: a status passes
// through, an error of an errdefs class (errdefs.ClassOf) or a context
// error gets the code codeOf gives it, and anything else is Internal. The
// message is the error's, which names the volume or artifact concerned.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	class := errdefs.ClassOf(err)
	for _, c := range codeOf {
		if class == c.err || class == nil && errors.Is(err, c.err) {
			return status.Error(c.code, err.Error())
		}
	}
	return status.Error(codes.Internal, err.Error())
}
