// Package errdefs defines the classes of failure every package of the
// driver sorts its errors into, where they arise: a registry's 401 is
// ErrDenied in pkg/oci, a provider's PERMISSION_DENIED is ErrDenied in
// pkg/provider, a tar entry that climbs out of its root is ErrInvalid in
// pkg/archive. Callers above decide by class only: the CSI node service
// maps a class to a gRPC code (pkg/driver), the uploader asks Retryable.
//
// A package's own sentinels keep their messages and identity and carry
// their class: errors.Is(err, archive.ErrUnsafeEntry) and
// errors.Is(err, errdefs.ErrInvalid) both hold for an unsafe entry.
//
// The package is a leaf: it imports nothing of the driver, so every layer
// can use it. Modelled on containerd's errdefs.
package errdefs

import (
	"context"
	"errors"
	"net"
	"slices"
	"syscall"
)

// The classes. An error belongs to at most one of them; an error of none
// is unexpected (an I/O error of the node, a bug) and is retried.
var (
	// ErrInvalid: the request, the configuration or the content is wrong
	// and will stay wrong: a malformed reference, an unsafe archive entry,
	// an artifact of an unknown layout. Not retryable.
	ErrInvalid = errors.New("invalid")
	// ErrTooLarge: the content exceeds a limit set by the configuration
	// (maxArtifactBytes, entry counts). Not retryable.
	ErrTooLarge = errors.New("too large")
	// ErrNotFound: the store has no such artifact, blob or repository.
	ErrNotFound = errors.New("not found")
	// ErrDenied: the store refused the credentials or the scope.
	ErrDenied = errors.New("access denied")
	// ErrUnavailable: the store cannot be reached or failed on its side
	// (connection refused, 5xx, a provider not running or broken). Worth
	// retrying as is.
	ErrUnavailable = errors.New("unavailable")
	// ErrNoSpace: storage is full, on the node or in the store.
	ErrNoSpace = errors.New("no space")
	// ErrCorrupt: bytes do not match their digest, or an archive does not
	// parse. A store may serve good bytes next time.
	ErrCorrupt = errors.New("corrupt")
	// ErrConflict: the volume exists with other arguments.
	ErrConflict = errors.New("conflict")
	// ErrPrecondition: the state of the volume or of the cluster does not
	// allow the operation until someone changes it (a missing repository
	// setting, a volume already unpublished).
	ErrPrecondition = errors.New("failed precondition")
)

// New returns a sentinel error with message msg that belongs to class:
// errors.Is holds for the sentinel itself and for class.
func New(msg string, class error) error { return Classify(errors.New(msg), class) }

// Classify returns err as a member of class, with err's message
// unchanged: errors.Is holds for class and for everything err wraps. It
// returns nil for a nil err.
func Classify(err, class error) error {
	if err == nil {
		return nil
	}
	return &classified{err: err, class: class}
}

type classified struct{ err, class error }

func (e *classified) Error() string   { return e.err.Error() }
func (e *classified) Unwrap() []error { return []error{e.err, e.class} }

var classes = []error{ErrInvalid, ErrTooLarge, ErrNotFound, ErrDenied,
	ErrUnavailable, ErrNoSpace, ErrCorrupt, ErrConflict, ErrPrecondition}

// ClassOf returns the class of err: the first class met in the order
// errors.Is walks err's tree, so that of an error that wraps two (a
// volume-level ErrPrecondition around a store's ErrNotFound, say) the
// outermost judgement wins. An error of no class is still classified when
// the system says what it is: ENOSPC and EDQUOT are ErrNoSpace, and a
// network failure (a net.Error, except a context's deadline) is
// ErrUnavailable. Otherwise, and for nil, ClassOf returns nil.
func ClassOf(err error) error {
	if c := firstClass(err); c != nil {
		return c
	}
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return ErrNoSpace
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return nil
	case errors.As(err, &netErr):
		return ErrUnavailable
	}
	return nil
}

// firstClass walks err's tree in pre-order, as errors.Is does, and
// returns the first class it meets.
func firstClass(err error) error {
	if err == nil {
		return nil
	}
	if slices.Contains(classes, err) {
		return err
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return firstClass(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if c := firstClass(e); c != nil {
				return c
			}
		}
	}
	return nil
}

// Retryable reports whether trying err's operation again, unchanged, may
// succeed: false for ErrInvalid, ErrTooLarge and ErrConflict, true for
// every other class and for errors of no class, so that an unforeseen
// failure delays an output rather than loses it. Retryable(nil) is false.
func Retryable(err error) bool {
	switch ClassOf(err) {
	case ErrInvalid, ErrTooLarge, ErrConflict:
		return false
	}
	return err != nil
}

// Limit marks err as a bound of the driver that was hit: bound names it
// (a configuration key or a flag, e.g. "maxArtifactBytes"), raise says
// how to raise it. The message gains both; the class and everything err
// wraps are kept. The edges (the CSI node service, the uploader) count
// such errors by bound and report them on the pod. It returns nil for a
// nil err.
func Limit(bound, raise string, err error) error {
	if err == nil {
		return nil
	}
	return &limitError{bound: bound, raise: raise, err: err}
}

type limitError struct {
	bound, raise string
	err          error
}

func (e *limitError) Error() string {
	return e.err.Error() + " (bound " + e.bound + ": " + e.raise + ")"
}
func (e *limitError) Unwrap() error                { return e.err }
func (e *limitError) Limit() (bound, raise string) { return e.bound, e.raise }

// Limiter is an error that reports a bound it hit, as Limit's do; other
// packages' error types may implement it.
type Limiter interface {
	error
	Limit() (bound, raise string)
}

// LimitOf returns the bound err reports having hit, and how to raise it;
// ok is false when err hit none.
func LimitOf(err error) (bound, raise string, ok bool) {
	var l Limiter
	if !errors.As(err, &l) {
		return "", "", false
	}
	bound, raise = l.Limit()
	return bound, raise, true
}
