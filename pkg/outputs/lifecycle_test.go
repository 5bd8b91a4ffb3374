package outputs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tektoncd/artifacts-csi-driver/internal/atomicfile"
	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputfs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// TestFailedOutputLifecycle: a failed output loses its credentials at
// once, has its failure recorded even when the API server was down at
// that moment, and loses its data after FailedTTL.
func TestFailedOutputLifecycle(t *testing.T) {
	f := newFixture(t, testregistry.InMemory(t, false))
	f.opts.FailedTTL = time.Second
	f.rec.fail.Store(true) // the API server is down when the output fails
	m := f.open()
	v := f.volume("csi-big")
	v.MaxBytes = 10
	os.WriteFile(filepath.Join(f.publish(m, v), "f"), make([]byte, 11), 0o644)
	f.seal(m, v.ID)
	f.run(m)
	dir := filepath.Join(f.dir, "spool", v.ID)
	waitFor(t, "the failure", func() bool { got, _ := m.Get(v.ID); return got.State == Failed })
	if _, err := os.Stat(filepath.Join(dir, credentialsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed output's credentials: %v, want them deleted", err)
	}
	time.Sleep(100 * time.Millisecond)
	if got, _ := m.Get(v.ID); got.Recorded {
		t.Fatal("recorded while the recorder fails")
	}
	f.rec.fail.Store(false)
	waitFor(t, "the failure recorded", func() bool { got, _ := m.Get(v.ID); return got.Recorded })
	if last := f.rec.last(); last.Phase != record.Failed || !strings.Contains(last.Message, "maxArtifactBytes") {
		t.Errorf("last record: %s %q", last.Phase, last.Message)
	}
	waitFor(t, "the data to expire", func() bool { _, err := os.Stat(dir); return errors.Is(err, os.ErrNotExist) })
	if m.Has(v.ID) {
		t.Error("an expired output is still known")
	}
}

// TestTornOutputNotPushed: an output published before a reboot and never
// frozen may hold what the crash tore; it fails instead of being pushed.
func TestTornOutputNotPushed(t *testing.T) {
	f := newFixture(t, testregistry.InMemory(t, false))
	m := f.open()
	v := f.volume("csi-torn")
	testtree.Write(t, f.publish(m, v), 1)
	got, _ := m.Get(v.ID)
	got.Boot = "an-earlier-boot"
	if err := atomicfile.WriteJSON(filepath.Join(f.dir, "outputs", v.ID, journalFile), &got, 0o600, atomicfile.Durable); err != nil {
		t.Fatal(err)
	}
	m = f.open() // the plugin after the reboot
	f.seal(m, v.ID)
	f.run(m)
	waitFor(t, "the failure", func() bool { got, _ := m.Get(v.ID); return got.State == Failed })
	if got, _ := m.Get(v.ID); !strings.Contains(got.LastError, "restarted") || got.Result != nil {
		t.Errorf("journal: %q, result %+v", got.LastError, got.Result)
	}
}

// TestExt4Outputs: with outputfs.Ext4 the pod gets ENOSPC at its bound,
// the data is read-only once the upload begins, and nothing stays
// mounted after the push.
func TestExt4Outputs(t *testing.T) {
	f := newExt4Fixture(t)
	m := f.open()
	v := f.volume("csi-ext4")
	v.MaxBytes = 4 << 20
	data := f.publish(m, v)
	err := os.WriteFile(filepath.Join(data, "big"), make([]byte, 8<<20), 0o644)
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("writing twice the bound: %v, want ENOSPC", err)
	}
	if err := os.WriteFile(filepath.Join(data, "big"), []byte("fits"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A retried publish after a restart finds the same volume.
	if again, err := m.Publish(f.ctx, v, credentials.Snapshot{}, -1); err != nil || again != data {
		t.Fatalf("repeat: %q, %v", again, err)
	}
	f.seal(m, v.ID)
	f.run(m)
	waitFor(t, "the push", func() bool { return !m.Has(v.ID) })
	if last := f.rec.last(); last.Phase != record.Pushed {
		t.Fatalf("last record %s", last.Phase)
	}
	if b, err := os.ReadFile(filepath.Join(f.pulled(f.rec.last().Repository+"@"+f.rec.last().Digest), "big")); err != nil || string(b) != "fits" {
		t.Errorf("pulled %q, %v", b, err)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), f.dir) {
		t.Errorf("still mounted under the state directory:\n%s", mounts)
	}
}

// TestRetryFailedOutput: an administrator retries a failed output once the
// cause is fixed; it is pushed as if just sealed.
func TestRetryFailedOutput(t *testing.T) {
	f := newFixture(t, testregistry.InMemory(t, false))
	m := f.open()
	v := f.volume("csi-retry")
	v.MaxBytes = 8 << 10 // two blocks
	os.WriteFile(filepath.Join(f.publish(m, v), "f"), make([]byte, 9<<10), 0o644)
	f.seal(m, v.ID)
	f.run(m)
	waitFor(t, "the failure", func() bool { got, _ := m.Get(v.ID); return got.State == Failed && got.Recorded })
	if err := m.Retry(f.ctx, "csi-none", credentials.Snapshot{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("retry of an unknown output: %v", err)
	}
	// The cause fixed: the file trimmed under the limit.
	if err := os.Truncate(filepath.Join(f.dir, "spool", v.ID, dataDir, "f"), 5); err != nil {
		t.Fatal(err)
	}
	if err := m.Retry(f.ctx, v.ID, credentials.Snapshot{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the push", func() bool { return !m.Has(v.ID) })
	if last := f.rec.last(); last.Phase != record.Pushed {
		t.Errorf("last record: %s", last.Phase)
	}
	if err := m.Retry(f.ctx, v.ID, credentials.Snapshot{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("retry of a pushed output: %v", err)
	}
}

type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) Warn(_ volume.Pod, reason, message string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, reason+": "+message)
}

func (w *warnings) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs)
}

// TestExt4OutputExhausted: a pod that used up its output's filesystem is
// told why it got ENOSPC, on the pod.
func TestExt4OutputExhausted(t *testing.T) {
	f := newExt4Fixture(t)
	w := &warnings{}
	f.opts.Events = w
	m := f.open()
	v := f.volume("csi-full")
	v.MaxBytes = 1 << 20
	// As cp or tar write: a chunk at a time, until the kernel refuses.
	out, err := os.Create(filepath.Join(f.publish(m, v), "big"))
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = out.Write(make([]byte, 64<<10))
	}
	out.Close()
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("writing past the bound: %v", err)
	}
	f.seal(m, v.ID)
	f.run(m)
	waitFor(t, "the warning", func() bool { return len(w.all()) > 0 })
	if got := w.all()[0]; !strings.Contains(got, record.ReasonLimitExceeded) || !strings.Contains(got, "used up its filesystem's bytes") {
		t.Errorf("warning %q", got)
	}
}

// newExt4Fixture is newFixture with ext4 output filesystems; it skips
// where they cannot be made (not root, no loop devices or mke2fs).
func newExt4Fixture(t *testing.T) *fixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	f := newFixture(t, testregistry.InMemory(t, false))
	fsys, err := outputfs.NewExt4(outputfs.Ext4Options{Templates: filepath.Join(f.dir, "templates")})
	if err != nil {
		t.Skip(err)
	}
	f.opts.Filesystem = fsys
	return f
}
