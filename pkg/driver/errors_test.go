package driver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

func wrap(err error) error { return fmt.Errorf("input %q: %w", "src", err) }

// TestCodeOfTable: every row of the mapping table is reached, by its own
// error wrapped as the packages below wrap theirs, and no row shadows
// another.
func TestCodeOfTable(t *testing.T) {
	for _, row := range codeOf {
		got := toStatus(wrap(row.err))
		if status.Code(got) != row.code {
			t.Errorf("%v: code %s, want %s", row.err, status.Code(got), row.code)
		}
		if s, _ := status.FromError(got); s.Message() != wrap(row.err).Error() {
			t.Errorf("%v: message %q, want the error's", row.err, s.Message())
		}
	}
}

// TestToStatus: the sentinels of every package, and the errors of the
// system and the network, get the code of their class.
func TestToStatus(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{volume.ErrInvalid, codes.InvalidArgument},
		{volume.ErrConflict, codes.AlreadyExists},
		{volume.ErrSealed, codes.FailedPrecondition},
		{errInvalidRequest, codes.InvalidArgument},
		{errNotConfigured, codes.FailedPrecondition},
		{errNotYet, codes.Unavailable},
		{credentials.ErrInvalid, codes.InvalidArgument},
		{artifact.ErrInvalid, codes.InvalidArgument},
		{archive.ErrDigestMismatch, codes.DataLoss},
		{archive.ErrCorrupt, codes.DataLoss},
		{&archive.EntryError{Entry: "../x", Rule: "escapes", Err: archive.ErrUnsafeEntry}, codes.InvalidArgument},
		{archive.ErrUnsupportedFile, codes.InvalidArgument},
		{archive.ErrLimitExceeded, codes.ResourceExhausted},
		{provider.ErrRejected, codes.InvalidArgument},
		{provider.ErrExhausted, codes.ResourceExhausted},
		{provider.ErrBadProvider, codes.Unavailable},
		{&os.PathError{Op: "write", Path: "/state/x", Err: unix.ENOSPC}, codes.ResourceExhausted},
		{&os.PathError{Op: "write", Path: "/state/x", Err: unix.EDQUOT}, codes.ResourceExhausted},
		{&net.OpError{Op: "dial", Net: "tcp", Err: unix.ECONNREFUSED}, codes.Unavailable},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{fmt.Errorf("%w: %w", errNotConfigured, errdefs.ErrNotFound), codes.FailedPrecondition},
		{&transport.Error{StatusCode: http.StatusBadGateway}, codes.Internal}, // pkg/oci classifies it
		{errors.New("something else"), codes.Internal},
	}
	for _, tt := range tests {
		if got := toStatus(wrap(tt.err)); status.Code(got) != tt.want {
			t.Errorf("toStatus(%v) = %s, want %s", tt.err, status.Code(got), tt.want)
		}
	}
	if got := toStatus(status.Error(codes.Aborted, "busy")); status.Code(got) != codes.Aborted {
		t.Errorf("a status changed: %v", got)
	}
	if toStatus(nil) != nil {
		t.Error("toStatus(nil) != nil")
	}
}

// TestRetryableAgreesWithCodes: what the uploader gives up on at once is
// exactly what a publish reports as the user's to fix.
func TestRetryableAgreesWithCodes(t *testing.T) {
	final := map[codes.Code]bool{codes.InvalidArgument: true, codes.AlreadyExists: true}
	for _, row := range codeOf {
		if row.code == codes.ResourceExhausted {
			continue // too large (final) or no space (retried): two classes
		}
		if got, want := errdefs.Retryable(wrap(row.err)), !final[row.code]; got != want {
			t.Errorf("%v (%s): Retryable = %v, want %v", row.err, row.code, got, want)
		}
	}
	if errdefs.Retryable(archive.ErrLimitExceeded) || !errdefs.Retryable(provider.ErrExhausted) {
		t.Error("too large must be final, no space retried")
	}
}
