// Package idle aborts network exchanges that stop making progress. A
// Watchdog measures how long an exchange has been waiting on its peer (a
// registry, a storage provider) since the last byte or message moved, and
// cancels the exchange's context once that exceeds a bound. Time the
// exchange spends on our side (producing the bytes to send, consuming what
// was received) is not counted: a slow disk is not the peer's fault.
//
// pkg/oci installs one per HTTP request (a RoundTripper), pkg/provider one
// per gRPC stream.
package idle

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
)

// Error reports an exchange aborted because its peer made no progress for
// Timeout. It is of class errdefs.ErrUnavailable, so it is retried; it is
// not a temporary net.Error, so go-containerregistry does not retry it
// inside the attempt.
type Error struct {
	// Peer names the other side, e.g. "registry" or `provider "fs"`.
	Peer string
	// Timeout is the bound that was exceeded.
	Timeout time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s made no progress for %s (idle timeout; raise --registry-idle-timeout)", e.Peer, e.Timeout)
}

// Unwrap returns the class, errdefs.ErrUnavailable.
func (e *Error) Unwrap() error { return errdefs.ErrUnavailable }

// Limit reports the bound, for errdefs.LimitOf.
func (e *Error) Limit() (bound, raise string) {
	return "--registry-idle-timeout", "raise it on the node plugin if the registry is slow, not stalled"
}

// Watchdog cancels a context when its exchange has waited on the peer for
// longer than its timeout since it last started waiting. The exchange arms
// it when it starts waiting on the peer (a Read of a response body, a Send
// that may block on flow control) and disarms it when the wait ends, which
// is progress. Every arming restarts the clock. Safe for concurrent use.
type Watchdog struct {
	timeout time.Duration
	cancel  context.CancelCauseFunc
	err     error

	mu      sync.Mutex
	timer   *time.Timer
	armed   bool
	since   time.Time // when armed
	fired   bool
	stopped bool
}

// New returns a context derived from parent and a disarmed Watchdog that
// cancels it, with err as the cause, once armed for timeout. A timeout of
// zero or less never fires. The caller must call Stop when the exchange is
// over, which also cancels the context.
func New(parent context.Context, timeout time.Duration, err error) (context.Context, *Watchdog) {
	ctx, cancel := context.WithCancelCause(parent)
	return ctx, &Watchdog{timeout: timeout, cancel: cancel, err: err}
}

// Set arms the watchdog when waiting is true, disarms it otherwise. Arming
// an armed watchdog changes nothing.
func (w *Watchdog) Set(waiting bool) {
	if waiting {
		w.Arm()
	} else {
		w.Disarm()
	}
}

// Arm starts the clock: the exchange waits on the peer from now.
func (w *Watchdog) Arm() {
	if w.timeout <= 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.armed || w.stopped || w.fired {
		return
	}
	w.armed, w.since = true, time.Now()
	if w.timer == nil {
		w.timer = time.AfterFunc(w.timeout, w.expire)
	} else {
		w.timer.Reset(w.timeout)
	}
}

// Disarm stops the clock: the exchange made progress, or it is our turn.
func (w *Watchdog) Disarm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.disarm()
}

func (w *Watchdog) disarm() {
	if w.armed {
		w.armed = false
		w.timer.Stop()
	}
}

// expire runs on the timer's goroutine. A stale run (the watchdog was
// disarmed, or disarmed and armed again, since the timer was set) does
// nothing: the later arming set the timer again.
func (w *Watchdog) expire() {
	w.mu.Lock()
	if !w.armed || w.stopped || w.fired || time.Since(w.since) < w.timeout {
		w.mu.Unlock()
		return
	}
	w.fired, w.armed = true, false
	w.mu.Unlock()
	w.cancel(w.err)
}

// Err returns the error given to New once the watchdog fired, else nil.
func (w *Watchdog) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fired {
		return w.err
	}
	return nil
}

// Stop disarms the watchdog for good and cancels its context (with
// context.Canceled). Err still reports whether it fired before.
// Idempotent.
func (w *Watchdog) Stop() {
	w.mu.Lock()
	w.disarm()
	w.stopped = true
	w.mu.Unlock()
	w.cancel(nil)
}
