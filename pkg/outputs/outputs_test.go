package outputs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2/ktesting"

	"github.com/tektoncd/artifacts-csi-driver/internal/atomicfile"
	"github.com/tektoncd/artifacts-csi-driver/internal/testkit"
	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/store"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// recorder keeps every record it is given.
type recorder struct {
	mu      sync.Mutex
	records []record.Record
	fail    atomic.Bool
}

func (r *recorder) Record(_ context.Context, rec record.Record) error {
	if r.fail.Load() {
		return errors.New("apiserver unavailable")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	return nil
}

func (r *recorder) phases() []record.Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	var p []record.Phase
	for _, rec := range r.records {
		p = append(p, rec.Phase)
	}
	return p
}

func (r *recorder) last() record.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.records[len(r.records)-1]
}

// noRetry leaves retries to the uploader, which the tests make fast.
var noRetry = remote.Backoff{Steps: 1}

type fixture struct {
	t    *testing.T
	ctx  context.Context
	dir  string
	host string
	rec  *recorder
	opts Options
}

func newFixture(t *testing.T, host string) *fixture {
	_, ctx := ktesting.NewTestContext(t)
	f := &fixture{t: t, ctx: ctx, dir: t.TempDir(), host: host, rec: &recorder{}}
	f.opts = Options{Dir: f.dir, Stores: store.Stores{Registry: oci.New(oci.Options{Retry: noRetry})}, Recorder: f.rec,
		RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond}
	return f
}

func (f *fixture) open() *Manager {
	f.t.Helper()
	m, err := Open(f.ctx, f.opts)
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

// run starts m's uploader until the test ends or stop is called.
func (f *fixture) run(m *Manager) (stop func()) {
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	stop = func() { cancel(); <-done }
	f.t.Cleanup(stop)
	return stop
}

func (f *fixture) volume(id string) Volume {
	return Volume{
		ID: id, Fingerprint: "fp-" + id,
		Pod:     volume.Pod{Name: "build-pod", Namespace: "team", UID: "uid-1"},
		Backend: store.OCI, Repository: f.host + "/team/out", PlainHTTP: true, Tag: "team.build." + id,
		Compression: archive.Gzip, MaxBytes: 1 << 30,
		Metadata: artifact.Metadata{Name: "report", Namespace: "team"},
	}
}

func (f *fixture) publish(m *Manager, v Volume) string {
	f.t.Helper()
	dir, err := m.Publish(f.ctx, v, credentials.Snapshot{}, -1)
	if err != nil {
		f.t.Fatal(err)
	}
	return dir
}

func (f *fixture) seal(m *Manager, id string) {
	f.t.Helper()
	if found, err := m.Seal(f.ctx, id); err != nil || !found {
		f.t.Fatalf("Seal = %v, %v", found, err)
	}
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, what, 20*time.Second, func() (bool, error) { return cond(), nil })
}

func (f *fixture) pulled(ref string) string {
	f.t.Helper()
	r, err := oci.ParseReference(ref, oci.PlainHTTP)
	if err != nil {
		f.t.Fatal(err)
	}
	dest := filepath.Join(f.t.TempDir(), "pulled")
	if _, err := oci.New(oci.Options{}).Pull(f.ctx, r, dest); err != nil {
		f.t.Fatal(err)
	}
	return dest
}

func TestPublishSealPush(t *testing.T) {
	f := newFixture(t, testregistry.InMemory(t, true))
	m := f.open()
	v := f.volume("csi-1")
	data := f.publish(m, v)
	testtree.Write(t, data, 1)
	want := t.TempDir()
	testtree.Write(t, want, 1)

	f.seal(m, v.ID)
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("the published directory still exists after Seal: %v", err)
	}
	f.run(m)
	waitFor(t, "the push", func() bool { return len(f.rec.phases()) == 2 && !m.Has(v.ID) })

	if got := f.rec.phases(); !slices.Equal(got, []record.Phase{record.Pending, record.Pushed}) {
		t.Fatalf("phases = %v", got)
	}
	r := f.rec.last()
	if r.VolumeID != v.ID || r.Direction != volume.Output || r.Pod != v.Pod || r.Tag != v.Tag ||
		!strings.HasPrefix(r.Digest, "sha256:") || r.Size <= 0 || r.MediaType != string(artifact.LayerMediaType(archive.Gzip)) {
		t.Errorf("record = %+v", r)
	}
	testtree.Equal(t, want, f.pulled(v.Repository+"@"+r.Digest))
	if entries, _ := os.ReadDir(filepath.Join(f.dir, "spool")); len(entries) != 0 {
		t.Errorf("spool not emptied: %v", entries)
	}
}

func TestPublishIsIdempotent(t *testing.T) {
	f := newFixture(t, "localhost:1")
	m := f.open()
	v := f.volume("csi-2")
	first := f.publish(m, v)
	if again := f.publish(m, v); again != first {
		t.Errorf("repeat publish gave %s, want %s", again, first)
	}
	other := v
	other.Fingerprint = "different"
	if _, err := m.Publish(f.ctx, other, credentials.Snapshot{}, -1); !errors.Is(err, volume.ErrConflict) {
		t.Errorf("publish with other arguments: %v, want ErrConflict", err)
	}
	if _, err := m.Publish(f.ctx, Volume{ID: "../x"}, credentials.Snapshot{}, -1); err == nil {
		t.Error("a volume id with a path separator was accepted")
	}
	f.seal(m, v.ID)
	f.seal(m, v.ID)
	if _, err := m.Publish(f.ctx, v, credentials.Snapshot{}, -1); !errors.Is(err, volume.ErrSealed) {
		t.Errorf("publish after seal: %v, want ErrSealed", err)
	}
	if found, err := m.Seal(f.ctx, "csi-unknown"); found || err != nil {
		t.Errorf("Seal of an unknown volume = %v, %v; want false, nil", found, err)
	}
}

func TestOwnership(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	f := newFixture(t, "localhost:1")
	m := f.open()
	for _, tt := range []struct {
		gid      int
		wantMode os.FileMode
		wantGID  uint32
	}{{-1, os.ModeDir | 0o777, 0}, {4321, os.ModeDir | os.ModeSetgid | 0o775, 4321}} {
		v := f.volume(fmt.Sprintf("csi-gid%d", tt.gid+1))
		dir, err := m.Publish(f.ctx, v, credentials.Snapshot{}, tt.gid)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(dir)
		if st.Mode() != tt.wantMode || st.Sys().(*syscall.Stat_t).Gid != tt.wantGID {
			t.Errorf("gid %d: mode %v gid %d, want %v %d", tt.gid, st.Mode(), st.Sys().(*syscall.Stat_t).Gid, tt.wantMode, tt.wantGID)
		}
		cst, _ := os.Stat(filepath.Join(filepath.Dir(dir), credentialsFile))
		if cst.Mode().Perm() != 0o600 {
			t.Errorf("credentials mode %v, want 0600", cst.Mode().Perm())
		}
	}
}

func TestResumeAfterRestart(t *testing.T) {
	f := newFixture(t, testregistry.InMemory(t, false))
	m := f.open()
	a, b := f.volume("csi-a"), f.volume("csi-b")
	testtree.Write(t, f.publish(m, a), 2)
	testtree.Write(t, f.publish(m, b), 3)
	f.seal(m, a.ID)
	// A crash right after b's rename into the spool, before its journal
	// said when.
	if err := os.Rename(filepath.Join(f.dir, "outputs", b.ID), filepath.Join(f.dir, "spool", b.ID)); err != nil {
		t.Fatal(err)
	}
	// And a volume whose creation was interrupted.
	os.MkdirAll(filepath.Join(f.dir, "outputs", ".new-123", "data"), 0o700)

	m = f.open()
	if q := m.Stats(); q.Pending != 2 {
		t.Fatalf("after restart: %+v, want 2 pending", q)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "outputs", ".new-123")); !os.IsNotExist(err) {
		t.Error("half-created volume not removed")
	}
	f.run(m)
	waitFor(t, "both pushes", func() bool { return m.Stats().Pending == 0 })
	if n := len(f.rec.phases()); n != 4 {
		t.Errorf("records: %v", f.rec.phases())
	}
}

func TestRegistryOutage(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	var refused atomic.Int32
	host := testregistry.Handler(t, true, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if down.Load() {
				refused.Add(1)
				http.Error(w, "maintenance", http.StatusServiceUnavailable)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	f := newFixture(t, host)
	m := f.open()
	v := f.volume("csi-outage")
	testtree.Write(t, f.publish(m, v), 4)
	f.seal(m, v.ID)
	f.run(m)
	waitFor(t, "three failed attempts", func() bool { got, _ := m.Get(v.ID); return got.Attempts >= 3 })
	if got, _ := m.Get(v.ID); got.State != Sealed || got.LastError == "" {
		t.Fatalf("during the outage: %+v", got)
	}
	down.Store(false)
	waitFor(t, "the push after the outage", func() bool { return !m.Has(v.ID) })
	if got := f.rec.phases(); !slices.Equal(got, []record.Phase{record.Pending, record.Pushed}) {
		t.Errorf("phases = %v", got)
	}
}

func TestFailures(t *testing.T) {
	host := testregistry.Handler(t, true, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/down/") {
				http.Error(w, "down", http.StatusBadGateway)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	tests := []struct {
		name    string
		edit    func(*Volume)
		write   func(dir string)
		wantErr string
	}{
		{"deadline passes while the registry is down", func(v *Volume) { v.Repository = host + "/down/out" },
			func(dir string) { os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644) }, "502"},
		{"single-file media type with two files", func(v *Volume) { v.MediaType = "application/json" },
			func(dir string) {
				os.WriteFile(filepath.Join(dir, "a"), nil, 0o644)
				os.WriteFile(filepath.Join(dir, "b"), nil, 0o644)
			}, "exactly one regular file"},
		{"larger than maxArtifactBytes", func(v *Volume) { v.MaxBytes = 10 },
			func(dir string) { os.WriteFile(filepath.Join(dir, "f"), make([]byte, 11), 0o644) }, "maxArtifactBytes"},
		{"a socket in the output", nil, func(dir string) {
			fd, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
			unix.Bind(fd, &unix.SockaddrUnix{Name: filepath.Join(dir, "sock")})
			unix.Close(fd)
		}, "socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, host)
			f.opts.Deadline = 300 * time.Millisecond
			m := f.open()
			v := f.volume("csi-fail")
			if tt.edit != nil {
				tt.edit(&v)
			}
			data := f.publish(m, v)
			tt.write(data)
			f.seal(m, v.ID)
			f.run(m)
			waitFor(t, "the failure", func() bool {
				return m.Stats().Failed == 1 && len(f.rec.phases()) > 0 && f.rec.last().Phase == record.Failed
			})
			got, _ := m.Get(v.ID)
			if got.State != Failed || !strings.Contains(got.LastError, tt.wantErr) {
				t.Errorf("journal: state %s, error %q; want Failed with %q", got.State, got.LastError, tt.wantErr)
			}
			if r := f.rec.last(); r.Phase != record.Failed || r.Message != got.LastError {
				t.Errorf("last record = %+v", r)
			}
			if entries, err := os.ReadDir(filepath.Join(f.dir, "spool", v.ID, dataDir)); err != nil || len(entries) == 0 {
				t.Errorf("failed output's data is gone: %v, %v", entries, err)
			}
			// A restart keeps it failed, without retrying.
			m2 := f.open()
			if q := m2.Stats(); q.Failed != 1 || q.Pending != 0 {
				t.Errorf("after restart: %+v", q)
			}
		})
	}
}

func TestRecorderOutageKeepsPushedOutput(t *testing.T) {
	f := newFixture(t, testregistry.InMemory(t, true))
	f.rec.fail.Store(true)
	m := f.open()
	v := f.volume("csi-rec")
	testtree.Write(t, f.publish(m, v), 5)
	f.seal(m, v.ID)
	f.run(m)
	waitFor(t, "the push", func() bool { got, _ := m.Get(v.ID); return got.State == Pushed })
	if _, err := os.Stat(filepath.Join(f.dir, "spool", v.ID)); err != nil {
		t.Fatalf("output deleted before it was recorded: %v", err)
	}
	f.rec.fail.Store(false)
	waitFor(t, "the record", func() bool { return !m.Has(v.ID) })
	if r := f.rec.last(); r.Phase != record.Pushed || r.Digest == "" {
		t.Errorf("record = %+v", r)
	}
}

// TestSealOnFullDisk fills a small tmpfs holding the state directory:
// sealing allocates nothing, so it still succeeds, and the output is pushed
// intact.
func TestSealOnFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	f := newFixture(t, testregistry.InMemory(t, true))
	if err := unix.Mount("tmpfs", f.dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(f.dir, unix.MNT_DETACH) })
	m := f.open()
	v := f.volume("csi-full")
	data := f.publish(m, v)
	if err := os.WriteFile(filepath.Join(data, "result"), []byte("done\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fill, _ := os.Create(filepath.Join(f.dir, "filler"))
	for _, err := fill.Write(make([]byte, 64<<10)); err == nil; _, err = fill.Write(make([]byte, 4<<10)) {
	}
	fill.Close()
	if err := os.WriteFile(filepath.Join(f.dir, "probe"), []byte("x"), 0o644); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("the disk is not full: %v", err)
	}

	f.seal(m, v.ID)
	if got, _ := m.Get(v.ID); got.State != Sealed {
		t.Errorf("state after sealing on a full disk: %s", got.State)
	}
	if m2 := f.open(); m2.Stats().Pending != 1 {
		t.Error("a restart does not find the output sealed")
	}
	f.run(m)
	waitFor(t, "the push", func() bool { return !m.Has(v.ID) })
	got := f.pulled(v.Repository + "@" + f.rec.last().Digest)
	if b, err := os.ReadFile(filepath.Join(got, "result")); err != nil || string(b) != "done\n" {
		t.Errorf("pushed output: %q, %v", b, err)
	}
}

// fakeProvider is a storage provider store that records what it is asked
// to store, as whom; it fails with err when set.
type fakeProvider struct {
	mu   sync.Mutex
	ids  []store.Identity
	reqs []store.PushRequest
	err  error
}

// stores opens p for the backend "filesystem", and the rest with next.
func (p *fakeProvider) stores(next store.Opener) store.Opener {
	return openerFunc(func(id store.Identity) (store.Store, error) {
		if id.Backend != "filesystem" {
			return next.Open(id)
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.ids = append(p.ids, id)
		return p, nil
	})
}

type openerFunc func(store.Identity) (store.Store, error)

func (f openerFunc) Open(id store.Identity) (store.Store, error) { return f(id) }

func (p *fakeProvider) Push(_ context.Context, req store.PushRequest) (*store.Pushed, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reqs = append(p.reqs, req)
	if p.err != nil {
		return nil, p.err
	}
	d := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	return &store.Pushed{
		Ref:      store.Ref{Backend: "filesystem", Repository: req.Repository, Digest: d.String()},
		Manifest: v1.Descriptor{Digest: d, Size: 500},
		Layer:    artifact.ArchiveLayer(req.Metadata.Name, req.Compression, v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("cd", 32)}, 42),
		Location: "file:///store/" + req.Repository + "/" + d.Hex,
		Uploaded: true,
	}, nil
}

func (p *fakeProvider) Parse(string) (store.Ref, error) { panic("not used") }
func (p *fakeProvider) Bundles(context.Context, store.Ref) ([]attest.Bundle, error) {
	panic("not used")
}
func (p *fakeProvider) Check(context.Context, store.Ref) (string, error) {
	panic("not used")
}
func (p *fakeProvider) Pull(context.Context, store.Ref, string, store.PullOptions) (*store.Pulled, error) {
	panic("not used")
}

// TestProviderBackend: an output whose Backend names a storage provider
// goes to it, in its pod's namespace, without credentials, and its record
// carries the backend and location; a provider that rejects the request
// fails the output at once, and a node plugin without a provider client
// too.
func TestProviderBackend(t *testing.T) {
	for _, tc := range []struct {
		name      string
		providers *fakeProvider
		wantPhase record.Phase
	}{
		{"stored", &fakeProvider{}, record.Pushed},
		{"rejected", &fakeProvider{err: fmt.Errorf("%w: repository not allowed", provider.ErrRejected)}, record.Failed},
		{"no provider client", nil, record.Failed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "unused.example")
			if tc.providers != nil {
				f.opts.Stores = tc.providers.stores(f.opts.Stores)
			}
			m := f.open()
			v := f.volume("csi-p")
			v.Backend, v.Repository, v.Tag, v.PlainHTTP = "filesystem", "team/artifacts", "", false
			testtree.Write(t, f.publish(m, v), 2)
			f.seal(m, v.ID)
			f.run(m)
			waitFor(t, "the output to settle", func() bool { return slices.Contains(f.rec.phases(), tc.wantPhase) })
			r := f.rec.last()
			if r.Backend != "filesystem" || r.Repository != "team/artifacts" {
				t.Errorf("record = %+v", r)
			}
			if tc.wantPhase != record.Pushed {
				return
			}
			if r.Location != "file:///store/team/artifacts/"+strings.Repeat("ab", 32) || r.Digest != "sha256:"+strings.Repeat("ab", 32) {
				t.Errorf("record = %+v", r)
			}
			req, id := tc.providers.reqs[0], tc.providers.ids[0]
			if id.Backend != "filesystem" || id.Namespace != "team" || req.Repository != "team/artifacts" ||
				req.Metadata.Name != "report" || req.Compression != archive.Gzip {
				t.Errorf("push request = %+v as %+v", req, id)
			}
		})
	}
}

// TestInterruptedUploads: an upload the plugin's death interrupts (the
// journal still says it was running) is resumed, and counted; at the
// MaxInterrupted-th the output is Failed and recorded so, instead of
// killing every restart.
func TestInterruptedUploads(t *testing.T) {
	f := newFixture(t, testregistry.InMemory(t, false))
	f.opts.MaxInterrupted = 2
	m := f.open()
	v := f.volume("csi-a")
	testtree.Write(t, f.publish(m, v), 2)
	f.seal(m, v.ID)
	// What the journal says when the plugin was killed mid-upload.
	crash := func() {
		t.Helper()
		got, _ := m.Get(v.ID)
		got.Uploading = true
		if err := atomicfile.WriteJSON(filepath.Join(f.dir, "spool", v.ID, journalFile), &got, 0o600, atomicfile.Durable); err != nil {
			t.Fatal(err)
		}
	}
	crash()
	m = f.open()
	if got, _ := m.Get(v.ID); got.State != Sealed || got.Interrupted != 1 || got.Uploading {
		t.Fatalf("after one interrupted upload: %s, interrupted %d, uploading %v; want it resumed", got.State, got.Interrupted, got.Uploading)
	}
	crash()
	m = f.open()
	got, _ := m.Get(v.ID)
	if got.State != Failed || !strings.Contains(got.LastError, "stopped during 2 upload attempts") {
		t.Fatalf("after two: %s (%s); want Failed", got.State, got.LastError)
	}
	if last := f.rec.last(); last.Phase != record.Failed {
		t.Errorf("last record: %s, want Failed", last.Phase)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "spool", v.ID, dataDir)); err != nil {
		t.Errorf("a failed output's data must stay: %v", err)
	}
}

// TestUploadNotInterruptedByShutdown: a clean stop during an upload is
// not counted as the plugin's death.
func TestUploadNotInterruptedByShutdown(t *testing.T) {
	stall := make(chan struct{})
	host := testregistry.Handler(t, false, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodHead && r.Method != http.MethodGet {
				<-stall
			}
			h.ServeHTTP(w, r)
		})
	})
	defer close(stall)
	f := newFixture(t, host)
	m := f.open()
	v := f.volume("csi-a")
	testtree.Write(t, f.publish(m, v), 2)
	f.seal(m, v.ID)
	stop := f.run(m)
	waitFor(t, "the upload to start", func() bool { got, _ := m.Get(v.ID); return got.Uploading })
	stop()
	m = f.open()
	if got, _ := m.Get(v.ID); got.Interrupted != 0 || got.Uploading || got.State != Sealed {
		t.Errorf("after a clean stop: %s, interrupted %d, uploading %v", got.State, got.Interrupted, got.Uploading)
	}
}

// keeper records what it is offered, and takes the data.
type keeper struct {
	mu      sync.Mutex
	offered []Volume
	took    []string
}

func (k *keeper) Keep(_ context.Context, v Volume, dir string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.offered = append(k.offered, v)
	dest, err := os.MkdirTemp("", "kept-")
	if err == nil && os.Rename(filepath.Join(dir, dataDir), filepath.Join(dest, dataDir)) == nil {
		k.took = append(k.took, dest)
	}
}

// TestKeeper: a pushed output is offered to the Keeper once recorded,
// with its result, then deleted whatever the Keeper took; a failed one is
// never offered.
func TestKeeper(t *testing.T) {
	f := newFixture(t, testregistry.InMemory(t, true))
	k := &keeper{}
	f.opts.Keeper = k
	m := f.open()
	ok, bad := f.volume("csi-ok"), f.volume("csi-bad")
	bad.MaxBytes = 1
	for _, v := range []Volume{ok, bad} {
		testtree.Write(t, f.publish(m, v), 3)
		f.seal(m, v.ID)
	}
	f.run(m)
	waitFor(t, "both outputs settled", func() bool {
		s := m.Stats()
		return !m.Has(ok.ID) && s.Failed == 1 && s.Pending == 0
	})
	var pushed record.Record
	for _, r := range f.rec.records {
		if r.VolumeID == ok.ID && r.Phase == record.Pushed {
			pushed = r
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.offered) != 1 || k.offered[0].ID != ok.ID || k.offered[0].State != Pushed ||
		k.offered[0].Result == nil || k.offered[0].Result.Digest != pushed.Digest {
		t.Fatalf("offered %+v; want the pushed output, with its result (%s)", k.offered, pushed.Digest)
	}
	if len(k.took) != 1 {
		t.Fatalf("the keeper could not take the data")
	}
	defer os.RemoveAll(k.took[0])
	want := t.TempDir()
	testtree.Write(t, want, 3)
	testtree.Equal(t, want, filepath.Join(k.took[0], dataDir))
	if _, err := os.Stat(filepath.Join(f.dir, "spool", ok.ID)); !os.IsNotExist(err) {
		t.Errorf("the pushed output's directory is still there: %v", err)
	}
}
