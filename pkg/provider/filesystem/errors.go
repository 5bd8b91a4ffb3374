package filesystem

import (
	"context"
	"errors"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

var (
	// errInvalid marks a malformed request, or Put bytes that do not match
	// their commit.
	errInvalid = errors.New("invalid request")
	// errDenied marks a scope the namespace may not use.
	errDenied = errors.New("permission denied")
	// errNotFound marks an absent blob.
	errNotFound = errors.New("blob not found")
	// errTooLarge marks a blob over the size limit.
	errTooLarge = errors.New("blob too large")
	// errCorrupt marks a stored blob whose bytes do not match its digest.
	errCorrupt = errors.New("stored blob is corrupt")
	// errRetry marks a failure that a retry may not meet.
	errRetry = errors.New("temporarily unavailable")
)

// codeOf maps errors to the codes of the provider API, in one place.
var codeOf = []struct {
	err  error
	code codes.Code
}{
	{errInvalid, codes.InvalidArgument},
	{errDenied, codes.PermissionDenied},
	{errNotFound, codes.NotFound},
	{errTooLarge, codes.ResourceExhausted},
	{errCorrupt, codes.DataLoss},
	{errRetry, codes.Unavailable},
	{unix.ENOSPC, codes.ResourceExhausted},
	{unix.EDQUOT, codes.ResourceExhausted},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// toStatus returns err as a gRPC status: the code codeOf gives it, the
// code it carries when it came from the stream (a cancelled client), or
// Internal for any other failure, with err's message.
func toStatus(err error) *status.Status {
	for _, c := range codeOf {
		if errors.Is(err, c.err) {
			return status.New(c.code, err.Error())
		}
	}
	if s, ok := status.FromError(err); ok {
		return s
	}
	return status.New(codes.Internal, "filesystem provider: "+err.Error())
}

// finish logs the end of a call and returns its error as a gRPC status
// error. Failures log at level 0, except the answers a caller expects
// (NOT_FOUND) or causes (CANCELLED), which log at level 4 and 2; successes
// log at level 4.
func (p *Provider) finish(logger klog.Logger, start time.Time, err error) error {
	if err == nil {
		logger.V(4).Info("Call succeeded", "duration", time.Since(start))
		return nil
	}
	s := toStatus(err)
	switch s.Code() {
	case codes.NotFound:
		logger.V(4).Info("Call failed", "code", s.Code(), "err", s.Message(), "duration", time.Since(start))
	case codes.Canceled:
		logger.V(2).Info("Call failed", "code", s.Code(), "err", s.Message(), "duration", time.Since(start))
	default:
		logger.Error(err, "Call failed", "code", s.Code(), "duration", time.Since(start))
	}
	return s.Err()
}
