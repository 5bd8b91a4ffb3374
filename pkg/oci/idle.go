package oci

import (
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/tektoncd/artifacts-csi-driver/internal/idle"
)

// DefaultIdleTimeout is the default of Options.IdleTimeout: long enough for
// a registry to commit a large blob upload (the wait between the end of
// the body and the answer), short enough that a registry that trickles a
// byte now and then cannot hold an upload worker for its whole attempt.
const DefaultIdleTimeout = 60 * time.Second

// idleTransport aborts a request whose registry makes no progress for
// timeout: a watchdog per request cancels the request's context (and so
// closes its connection) once the request has waited on the registry that
// long since a byte last moved. The request waits on the registry while
// the connection is made and the headers are sent, while a piece of the
// request body is being written (from the moment the transport took it
// from the body until it asks for the next), from the end of the body to
// the response headers, and during each Read of the response body. It does
// not wait while the body producer or the response's consumer works.
//
// It sits beneath go-containerregistry's transports (auth, retry, user
// agent), so every request is covered: manifests, blobs, uploads,
// referrers, pings and token exchanges. A stall is an *idle.Error (class
// errdefs.ErrUnavailable), from RoundTrip or from the response body's
// Read, and is not retried within the attempt. Safe for concurrent use.
type idleTransport struct {
	next    http.RoundTripper
	timeout time.Duration
}

var _ http.RoundTripper = (*idleTransport)(nil)

func (t *idleTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, w := idle.New(req.Context(), t.timeout, &idle.Error{Peer: "registry", Timeout: t.timeout})
	ex := &exchange{w: w}
	r := req.WithContext(ctx) // a shallow copy: req itself is not modified
	if req.Body != nil && req.Body != http.NoBody {
		r.Body = &requestBody{rc: req.Body, ex: ex}
		if req.GetBody != nil { // the transport may rewind the body to resend it
			r.GetBody = func() (io.ReadCloser, error) {
				b, err := req.GetBody()
				if err != nil || b == http.NoBody {
					return b, err
				}
				return &requestBody{rc: b, ex: ex}, nil
			}
		}
	}
	ex.update(func() {})
	resp, err := t.next.RoundTrip(r)
	ex.update(func() { ex.answered = true })
	if err != nil {
		w.Stop()
		if serr := w.Err(); serr != nil {
			return nil, serr
		}
		return nil, err
	}
	if resp.Body == http.NoBody {
		w.Stop()
		return resp, nil
	}
	resp.Body = &responseBody{rc: resp.Body, ex: ex}
	return resp, nil
}

// exchange is the state of one request: whose turn it is.
type exchange struct {
	w *idle.Watchdog

	mu        sync.Mutex
	sending   bool // in a Read of the request body: the producer's turn
	answered  bool // RoundTrip returned: the consumer's turn...
	receiving bool // ...except during a Read of the response body
}

// update applies f to the state and arms the watchdog when the exchange
// now waits on the registry.
func (ex *exchange) update(f func()) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	f()
	ex.w.Set(!ex.sending && (!ex.answered || ex.receiving))
}

// requestBody is a request body whose Reads are the producer's turn: the
// watchdog restarts each time the transport comes back for more.
type requestBody struct {
	rc io.ReadCloser
	ex *exchange
}

func (b *requestBody) Read(p []byte) (int, error) {
	b.ex.update(func() { b.ex.sending = true })
	n, err := b.rc.Read(p)
	b.ex.update(func() { b.ex.sending = false })
	return n, err
}

func (b *requestBody) Close() error { return b.rc.Close() }

// responseBody is a response body whose Reads wait on the registry.
type responseBody struct {
	rc io.ReadCloser
	ex *exchange
}

func (b *responseBody) Read(p []byte) (int, error) {
	b.ex.update(func() { b.ex.receiving = true })
	n, err := b.rc.Read(p)
	b.ex.update(func() { b.ex.receiving = false })
	if err != nil && err != io.EOF {
		if serr := b.ex.w.Err(); serr != nil {
			return n, serr
		}
	}
	return n, err
}

// Close releases the request's context, as http.Client does on Close.
func (b *responseBody) Close() error {
	err := b.rc.Close()
	b.ex.w.Stop()
	return err
}

// withIdleTimeout returns rt wrapped in an idleTransport, or rt itself when
// timeout is negative.
func withIdleTimeout(rt http.RoundTripper, timeout time.Duration) http.RoundTripper {
	if timeout < 0 {
		return rt
	}
	return &idleTransport{next: rt, timeout: timeout}
}
