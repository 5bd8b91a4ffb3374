package registration

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

const (
	testDriver   = "artifacts.csi.tekton.dev"
	testEndpoint = "/var/lib/kubelet/plugins/artifacts.csi.tekton.dev/csi.sock"
)

// status is one OnStatus call.
type status struct {
	registered bool
	err        string
}

// recorder collects OnStatus calls.
type recorder struct {
	mu    sync.Mutex
	calls []status
}

func (r *recorder) onStatus(registered bool, kubeletError string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, status{registered, kubeletError})
}

func (r *recorder) last() (status, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) == 0 {
		return status{}, 0
	}
	return r.calls[len(r.calls)-1], len(r.calls)
}

// shortTempDir returns a fresh directory whose path leaves room under
// MaxSocketPathLen even when the test name is long.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "reg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// testOptions returns valid Options with Dir under a fresh temp directory.
func testOptions(t *testing.T) Options {
	return Options{DriverName: testDriver, Endpoint: testEndpoint, Dir: filepath.Join(shortTempDir(t), "plugins_registry")}
}

// startServe runs Serve in a goroutine until the test ends and returns the
// cancel function and the channel Serve's result arrives on.
func startServe(t *testing.T, ctx context.Context, o Options) (context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- Serve(ctx, o)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancellation")
		}
	})
	return cancel, done
}

// dial connects to the registration socket as kubelet does.
func dial(t *testing.T, path string) registerapi.RegistrationClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return registerapi.NewRegistrationClient(conn)
}

// getInfo calls GetInfo, waiting for Serve to start listening.
func getInfo(t *testing.T, c registerapi.RegistrationClient) *registerapi.PluginInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := c.GetInfo(ctx, &registerapi.InfoRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("GetInfo: %v", err)
	}
	return info
}

func waitDone(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}

// staleSocket leaves a socket file at path with no listener behind it, as
// a crashed process does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("stale socket not left behind: %v %v", fi, err)
	}
}

func TestServe(t *testing.T) {
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	ctx := klog.NewContext(context.Background(), logger)
	rec := &recorder{}
	o := testOptions(t)
	o.OnStatus = rec.onStatus
	cancel, done := startServe(t, ctx, o)
	c := dial(t, o.SocketPath())

	info := getInfo(t, c)
	if info.GetType() != registerapi.CSIPlugin || info.GetName() != testDriver || info.GetEndpoint() != testEndpoint ||
		!slices.Equal(info.GetSupportedVersions(), []string{"1.0.0"}) {
		t.Errorf("GetInfo = {type %q, name %q, endpoint %q, versions %q}, want {%q, %q, %q, [1.0.0]}",
			info.GetType(), info.GetName(), info.GetEndpoint(), info.GetSupportedVersions(), registerapi.CSIPlugin, testDriver, testEndpoint)
	}

	fi, err := os.Lstat(o.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %s, want socket with 0600", fi.Mode())
	}

	for i, tc := range []struct {
		name   string
		status *registerapi.RegistrationStatus
		log    []string
	}{
		{
			name:   "registered",
			status: &registerapi.RegistrationStatus{PluginRegistered: true},
			log:    []string{"kubelet registered the plugin"},
		},
		{
			name:   "rejected",
			status: &registerapi.RegistrationStatus{PluginRegistered: false, Error: "plugin version 1.0.0 is not supported"},
			log:    []string{"ERROR", "kubelet rejected the plugin registration", `kubeletError="plugin version 1.0.0 is not supported"`},
		},
		{
			name:   "registered again after kubelet restart",
			status: &registerapi.RegistrationStatus{PluginRegistered: true},
			log:    []string{"kubelet registered the plugin"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(logger.GetSink().(ktesting.Underlier).GetBuffer().String())
			if _, err := c.NotifyRegistrationStatus(context.Background(), tc.status); err != nil {
				t.Fatalf("NotifyRegistrationStatus: %v", err)
			}
			got, n := rec.last()
			want := status{tc.status.PluginRegistered, tc.status.Error}
			if n != i+1 || got != want {
				t.Errorf("OnStatus call %d = %+v, want call %d = %+v", n, got, i+1, want)
			}
			logs := logger.GetSink().(ktesting.Underlier).GetBuffer().String()[before:]
			for _, s := range tc.log {
				if !strings.Contains(logs, s) {
					t.Errorf("log lacks %q:\n%s", s, logs)
				}
			}
		})
	}

	cancel()
	if err := waitDone(t, done); err != nil {
		t.Errorf("Serve after cancel = %v, want nil", err)
	}
	if _, err := os.Lstat(o.SocketPath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still exists after Serve returned (Lstat err %v)", err)
	}
}

func TestServeReplacesStaleSocket(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	o := testOptions(t)
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		t.Fatal(err)
	}
	staleSocket(t, o.SocketPath())

	cancel, done := startServe(t, ctx, o)
	if info := getInfo(t, dial(t, o.SocketPath())); info.GetName() != testDriver {
		t.Errorf("GetInfo name = %q, want %q", info.GetName(), testDriver)
	}
	cancel()
	if err := waitDone(t, done); err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
}

// A socket a live process answers on, e.g. the old pod during a rolling
// update, must be neither stolen nor removed.
func TestServeSocketInUse(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	o := testOptions(t)
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", o.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	if err := Serve(ctx, o); !errors.Is(err, ErrInUse) {
		t.Fatalf("Serve = %v, want ErrInUse", err)
	}
	conn, err := net.Dial("unix", o.SocketPath())
	if err != nil {
		t.Fatalf("the other process's socket no longer answers: %v", err)
	}
	conn.Close()
}

// On shutdown Serve must not remove a socket a newer process has put in
// place of its own.
func TestServeKeepsReplacedSocket(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	o := testOptions(t)
	cancel, done := startServe(t, ctx, o)
	getInfo(t, dial(t, o.SocketPath()))

	if err := os.Remove(o.SocketPath()); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", o.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	cancel()
	if err := waitDone(t, done); err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	if _, err := os.Lstat(o.SocketPath()); err != nil {
		t.Errorf("Serve removed the newer process's socket: %v", err)
	}
}

func TestServeErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		modify  func(*Options)
		prepare func(t *testing.T, o Options) // creates what must survive
		check   func(t *testing.T, o Options)
		wantErr string
	}{
		{
			name: "regular file at socket path",
			prepare: func(t *testing.T, o Options) {
				if err := os.MkdirAll(o.Dir, 0o750); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(o.SocketPath(), []byte("keep me"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, o Options) {
				if b, err := os.ReadFile(o.SocketPath()); err != nil || string(b) != "keep me" {
					t.Errorf("regular file changed: %q, %v", b, err)
				}
			},
			wantErr: "is not a socket",
		},
		{
			name: "directory at socket path",
			prepare: func(t *testing.T, o Options) {
				if err := os.MkdirAll(filepath.Join(o.SocketPath(), "child"), 0o750); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, o Options) {
				if _, err := os.Stat(filepath.Join(o.SocketPath(), "child")); err != nil {
					t.Errorf("directory changed: %v", err)
				}
			},
			wantErr: "is not a socket",
		},
		{
			name:    "socket path too long",
			modify:  func(o *Options) { o.Dir = filepath.Join(o.Dir, strings.Repeat("d", 100)) },
			check:   func(t *testing.T, o Options) { assertMissing(t, o.Dir) },
			wantErr: "longer than the 107 a unix socket allows",
		},
		{
			name:    "no driver name",
			modify:  func(o *Options) { o.DriverName = "" },
			wantErr: "driver name is required",
		},
		{
			name:    "slash in driver name",
			modify:  func(o *Options) { o.DriverName = "../evil" },
			wantErr: "must not contain '/'",
		},
		{
			name:    "endpoint with scheme",
			modify:  func(o *Options) { o.Endpoint = "unix://" + testEndpoint },
			wantErr: "endpoint must be an absolute path",
		},
		{
			name:    "relative dir",
			modify:  func(o *Options) { o.Dir = "plugins_registry" },
			wantErr: "directory must be an absolute path",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			o := testOptions(t)
			if tc.modify != nil {
				tc.modify(&o)
			}
			if tc.prepare != nil {
				tc.prepare(t, o)
			}
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			err := Serve(ctx, o)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Serve = %v, want error containing %q", err, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, o)
			}
		})
	}
}

// TestSocketPathLength checks the limit at its boundary, with Dir missing
// so that Serve must create it.
func TestSocketPathLength(t *testing.T) {
	for _, tc := range []struct {
		name   string
		length int
		ok     bool
	}{
		{name: "fits", length: 107, ok: true},
		{name: "one byte too long", length: 108, ok: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			base := shortTempDir(t)
			o := Options{DriverName: testDriver, Endpoint: testEndpoint}
			pad := tc.length - len(base) - len("/") - len("/"+testDriver+"-reg.sock")
			if pad < 1 {
				t.Skipf("temp dir %q too long for this test", base)
			}
			o.Dir = filepath.Join(base, strings.Repeat("d", pad))
			if got := len(o.SocketPath()); got != tc.length {
				t.Fatalf("test setup: socket path is %d bytes, want %d", got, tc.length)
			}

			if !tc.ok {
				if err := Serve(ctx, o); err == nil || !strings.Contains(err.Error(), "a unix socket allows") {
					t.Errorf("Serve = %v, want path length error", err)
				}
				assertMissing(t, o.Dir)
				return
			}
			cancel, done := startServe(t, ctx, o)
			getInfo(t, dial(t, o.SocketPath()))
			cancel()
			if err := waitDone(t, done); err != nil {
				t.Errorf("Serve = %v, want nil", err)
			}
		})
	}
}

func assertMissing(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s was created (Lstat err %v)", path, err)
	}
}
