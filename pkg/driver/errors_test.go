package driver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

func TestToStatus(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("input %q: %w", "src", err) }
	tests := []struct {
		err  error
		want codes.Code
	}{
		{wrap(volume.ErrInvalid), codes.InvalidArgument},
		{wrap(outputs.ErrConflict), codes.AlreadyExists},
		{wrap(outputs.ErrSealed), codes.FailedPrecondition},
		{wrap(errNotConfigured), codes.FailedPrecondition},
		{wrap(errNotYet), codes.Unavailable},
		{wrap(oci.ErrNotFound), codes.NotFound},
		{wrap(oci.ErrDenied), codes.PermissionDenied},
		{wrap(archive.ErrDigestMismatch), codes.DataLoss},
		{wrap(&archive.EntryError{Entry: "../x", Rule: "escapes", Err: archive.ErrUnsafeEntry}), codes.InvalidArgument},
		{wrap(archive.ErrLimitExceeded), codes.ResourceExhausted},
		{wrap(&unixPathError), codes.ResourceExhausted},
		{wrap(context.DeadlineExceeded), codes.DeadlineExceeded},
		{wrap(&net.OpError{Op: "dial", Net: "tcp", Err: unix.ECONNREFUSED}), codes.Unavailable},
		{wrap(&transport.Error{StatusCode: http.StatusBadGateway}), codes.Unavailable},
		{wrap(&transport.Error{StatusCode: http.StatusBadRequest}), codes.Internal},
		{errors.New("something else"), codes.Internal},
		{status.Error(codes.Aborted, "busy"), codes.Aborted},
	}
	for _, tt := range tests {
		got := toStatus(tt.err)
		if status.Code(got) != tt.want {
			t.Errorf("toStatus(%v) = %s, want %s", tt.err, status.Code(got), tt.want)
		}
		if s, _ := status.FromError(got); s.Message() != tt.err.Error() && status.Code(tt.err) == codes.Unknown {
			t.Errorf("message %q, want the error's %q", s.Message(), tt.err.Error())
		}
	}
	if toStatus(nil) != nil {
		t.Error("toStatus(nil) != nil")
	}
}

var unixPathError = fsError{unix.ENOSPC}

type fsError struct{ errno unix.Errno }

func (e *fsError) Error() string { return "write /state/x: " + e.errno.Error() }
func (e *fsError) Unwrap() error { return e.errno }
