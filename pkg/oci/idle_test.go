package oci_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

// fault handles a request to a faulty registry, or returns false to let
// the registry answer. A handler that hangs calls hang, which returns when
// the client goes away or the test ends.
type fault func(w http.ResponseWriter, r *http.Request, next http.Handler, hang func()) bool

// faultyRegistry starts an in-memory registry whose requests go through f
// first while faulty is set. Its connections have a 16 KiB receive buffer,
// so that a handler that stops reading stops an upload within a few
// megabytes rather than after what the kernel would buffer (tens of MiB on
// loopback).
func faultyRegistry(t *testing.T, f fault) (host string, faulty *atomic.Bool) {
	t.Helper()
	faulty = &atomic.Bool{}
	stop := make(chan struct{})
	next := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hang := func() {
			select {
			case <-r.Context().Done():
			case <-stop:
			}
		}
		if faulty.Load() && f(w, r, next, hang) {
			return
		}
		next.ServeHTTP(w, r)
	}))
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
		})
		return errors.Join(err, serr)
	}}
	lis, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Listener.Close()
	s.Listener = lis
	s.Start()
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(stop) }) // runs before s.Close: hung handlers return
	return strings.TrimPrefix(s.URL, "http://"), faulty
}

func isBlobGet(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
}

// serveSlowly answers r as next would, writing the body in pieces of size
// bytes, pause apart, then hanging when stallAfter pieces were written
// (stallAfter < 0: never).
func serveSlowly(w http.ResponseWriter, r *http.Request, next http.Handler, hang func(), size int, pause time.Duration, stallAfter int) {
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(rec.Code)
	for i := 0; len(body) > 0; i++ {
		if i == stallAfter {
			hang()
			return
		}
		if i > 0 {
			time.Sleep(pause)
		}
		n := min(size, len(body))
		if _, err := w.Write(body[:n]); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		body = body[n:]
	}
}

// TestRegistryIdleTimeout: every request to a registry that stops making
// progress (no byte either way, no answer) fails within about the idle
// timeout with ErrUnavailable; a registry that is slow but moves a byte
// within every timeout is not aborted.
func TestRegistryIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	bigFile := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(bigFile, make([]byte, 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	small := []byte("0123456789")
	tests := []struct {
		name  string
		push  bool // push a 16 MiB single-file artifact; else pull a 10-byte one
		serve fault
		ok    bool
	}{{
		name: "blob GET sends a byte, then nothing",
		serve: func(w http.ResponseWriter, r *http.Request, next http.Handler, hang func()) bool {
			if !isBlobGet(r) {
				return false
			}
			serveSlowly(w, r, next, hang, 1, 0, 1)
			return true
		},
	}, {
		name: "blob GET trickles a byte every 100ms",
		ok:   true,
		serve: func(w http.ResponseWriter, r *http.Request, next http.Handler, hang func()) bool {
			if !isBlobGet(r) {
				return false
			}
			serveSlowly(w, r, next, hang, 1, 100*time.Millisecond, -1)
			return true
		},
	}, {
		name: "manifest GET never answers",
		serve: func(w http.ResponseWriter, r *http.Request, next http.Handler, hang func()) bool {
			if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/manifests/") {
				return false
			}
			hang()
			return true
		},
	}, {
		name: "ping never answers",
		serve: func(w http.ResponseWriter, r *http.Request, next http.Handler, hang func()) bool {
			if r.URL.Path != "/v2/" {
				return false
			}
			hang()
			return true
		},
	}, {
		name: "upload PATCH stops reading the body",
		push: true,
		serve: func(w http.ResponseWriter, r *http.Request, next http.Handler, hang func()) bool {
			if r.Method != http.MethodPatch {
				return false
			}
			io.CopyN(io.Discard, r.Body, 1<<20)
			hang()
			return true
		},
	}, {
		name: "upload PATCH reads the body, never answers",
		push: true,
		serve: func(w http.ResponseWriter, r *http.Request, next http.Handler, hang func()) bool {
			if r.Method != http.MethodPatch {
				return false
			}
			io.Copy(io.Discard, r.Body)
			hang()
			return true
		},
	}, {
		name: "upload commit PUT never answers",
		push: true,
		serve: func(w http.ResponseWriter, r *http.Request, next http.Handler, hang func()) bool {
			if r.Method != http.MethodPut || !strings.Contains(r.URL.Path, "/blobs/uploads/") {
				return false
			}
			hang()
			return true
		},
	}, {
		name: "manifest PUT never answers",
		push: true,
		serve: func(w http.ResponseWriter, r *http.Request, next http.Handler, hang func()) bool {
			if r.Method != http.MethodPut || !strings.Contains(r.URL.Path, "/manifests/") {
				return false
			}
			io.Copy(io.Discard, r.Body)
			hang()
			return true
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Without an idle timeout, only this ends the stall.
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			host, faulty := faultyRegistry(t, tc.serve)
			c := oci.New(oci.Options{IdleTimeout: idle})
			r := repo(t, host, "team/stall")
			src := t.TempDir()
			var op func() error
			if tc.push {
				if err := os.Link(bigFile, filepath.Join(src, "big")); err != nil {
					t.Fatal(err)
				}
				op = func() error {
					_, err := c.Push(ctx, oci.PushRequest{Dir: src, Repository: r, MediaType: "application/octet-stream", Metadata: artifact.Metadata{Name: "big"}})
					return err
				}
			} else {
				if err := os.WriteFile(filepath.Join(src, "small"), small, 0o644); err != nil {
					t.Fatal(err)
				}
				res, err := c.Push(ctx, oci.PushRequest{Dir: src, Repository: r, MediaType: "text/plain", Metadata: artifact.Metadata{Name: "small"}})
				if err != nil {
					t.Fatal(err)
				}
				ref, err := oci.ParseReference(res.Ref.Name(), oci.PlainHTTP)
				if err != nil {
					t.Fatal(err)
				}
				dest := filepath.Join(t.TempDir(), "dest")
				op = func() error {
					if _, err := c.Pull(ctx, ref, dest); err != nil {
						return err
					}
					if got, err := os.ReadFile(filepath.Join(dest, "small")); err != nil || !bytes.Equal(got, small) {
						t.Errorf("pulled %q, %v", got, err)
					}
					return nil
				}
			}
			faulty.Store(true)
			start := time.Now()
			err := op()
			took := time.Since(start)
			if tc.ok {
				if err != nil {
					t.Fatalf("a registry that makes progress was aborted after %s: %v", took, err)
				}
				return
			}
			if errdefs.ClassOf(err) != errdefs.ErrUnavailable || !strings.Contains(err.Error(), "no progress for 300ms") {
				t.Fatalf("err = %v (class %v), want the idle timeout, unavailable", err, errdefs.ClassOf(err))
			}
			if took > 10*time.Second {
				t.Errorf("the stall was detected after %s", took)
			}
		})
	}
}
