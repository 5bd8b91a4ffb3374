package cache

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"
)

// writeFill returns a FillFunc that creates dest with one file of size
// bytes, counting its calls, after waiting for gate when it is not nil.
func writeFill(size int, calls *atomic.Int32, gate chan struct{}) FillFunc {
	return func(ctx context.Context, dest string) (int64, error) {
		calls.Add(1)
		if gate != nil {
			<-gate
		}
		tmp := dest + ".tmp"
		if err := os.Mkdir(tmp, 0o755); err != nil {
			return 0, err
		}
		if err := os.WriteFile(filepath.Join(tmp, "data"), make([]byte, size), 0o644); err != nil {
			return 0, err
		}
		return int64(size), os.Rename(tmp, dest)
	}
}

func open(t *testing.T, dir string, max int64) *Cache {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	c, err := Open(ctx, dir, max)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Wait)
	return c
}

func TestConcurrentAcquireFillsOnce(t *testing.T) {
	c := open(t, t.TempDir(), 1<<20)
	var calls atomic.Int32
	gate := make(chan struct{})
	fill := writeFill(10, &calls, gate)

	const n = 20
	var wg sync.WaitGroup
	paths := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { paths[i], _, errs[i] = c.Acquire(t.Context(), "manifest-sha256-aa", fill) })
	}
	time.Sleep(50 * time.Millisecond) // let every caller join the fill
	close(gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || paths[i] != c.Path("manifest-sha256-aa") {
			t.Fatalf("caller %d: %q, %v", i, paths[i], errs[i])
		}
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("fill ran %d times, want 1", got)
	}
	if _, hit, _ := c.Acquire(t.Context(), "manifest-sha256-aa", fill); !hit {
		t.Error("Acquire after the fill is not a hit")
	}
	if c.entries["manifest-sha256-aa"].refs != n+1 {
		t.Errorf("refs = %d, want %d", c.entries["manifest-sha256-aa"].refs, n+1)
	}
}

func TestEvictionIsLRUAndSparesPinned(t *testing.T) {
	c := open(t, t.TempDir(), 30)
	var calls atomic.Int32
	fill := writeFill(10, &calls, nil)
	acquire := func(key string) {
		t.Helper()
		if _, _, err := c.Acquire(t.Context(), key, fill); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"a", "b", "c"} {
		acquire(k)
		time.Sleep(2 * time.Millisecond)
	}
	c.Release("b")
	time.Sleep(2 * time.Millisecond)
	c.Release("a") // a is now the most recently used unpinned entry
	acquire("d")   // 40 bytes > 30: evict b, the least recently used unpinned
	c.Wait()
	for key, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		_, err := os.Stat(c.Path(key))
		if got := err == nil; got != want {
			t.Errorf("entry %s present = %v, want %v", key, got, want)
		}
	}
	if bytes, n := c.Stats(); bytes != 30 || n != 3 {
		t.Errorf("Stats = %d bytes, %d entries; want 30, 3", bytes, n)
	}

	// Everything pinned: the cache goes over its bound rather than fail.
	acquire("e")
	if bytes, _ := c.Stats(); bytes != 30 {
		t.Errorf("after evicting a for e: %d bytes, want 30", bytes)
	}
	acquire("f")
	if bytes, _ := c.Stats(); bytes != 40 {
		t.Errorf("all pinned: %d bytes, want 40", bytes)
	}
}

func TestFillErrorLeavesNothing(t *testing.T) {
	c := open(t, t.TempDir(), 1<<20)
	boom := errors.New("boom")
	_, _, err := c.Acquire(t.Context(), "k", func(ctx context.Context, dest string) (int64, error) { return 0, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if names, _ := readDirNames(c.dir); len(names) != 1 || names[0] != bootIDFile {
		t.Errorf("cache dir holds %v after a failed fill", names)
	}
	if _, _, err := c.Acquire(t.Context(), "../k", nil); err == nil {
		t.Error("a key with a path separator was accepted")
	}
}

func TestCallerTimeoutDoesNotAbortFill(t *testing.T) {
	c := open(t, t.TempDir(), 1<<20)
	var calls atomic.Int32
	gate := make(chan struct{})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := c.Acquire(ctx, "k", writeFill(5, &calls, gate)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	close(gate)
	_, hit, err := c.Acquire(t.Context(), "k", writeFill(5, &calls, nil))
	if err != nil || calls.Load() != 1 {
		t.Fatalf("retry: hit=%v err=%v fills=%d; want the first fill reused", hit, err, calls.Load())
	}
}

func TestOpenRecovers(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir, 1<<20)
	var calls atomic.Int32
	for _, k := range []string{"complete", "torn"} {
		if _, _, err := c.Acquire(t.Context(), k, writeFill(7, &calls, nil)); err != nil {
			t.Fatal(err)
		}
	}
	// A crash between the content rename and the metadata write, and
	// leftovers of staging and trash directories.
	os.Remove(filepath.Join(dir, "torn.json"))
	for _, d := range []string{".complete.staging-1", ".trash-2"} {
		os.MkdirAll(filepath.Join(dir, d, "x"), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "orphan.json"), []byte(`{"size":1}`), 0o644)

	c = open(t, dir, 1<<20)
	c.Wait()
	names, _ := readDirNames(dir)
	if want := []string{"boot_id", "complete", "complete.json"}; !sameSet(names, want) {
		t.Errorf("after Open: %v, want %v", names, want)
	}
	if bytes, n := c.Stats(); bytes != 7 || n != 1 {
		t.Errorf("Stats = %d, %d; want 7, 1", bytes, n)
	}
	if !c.Pin("complete") || c.Pin("torn") {
		t.Error("Pin disagrees with what Open kept")
	}

	// Entries of another boot may be torn by a power loss: all go.
	os.WriteFile(filepath.Join(dir, bootIDFile), []byte("another-boot"), 0o644)
	c = open(t, dir, 1<<20)
	c.Wait()
	if names, _ := readDirNames(dir); !sameSet(names, []string{"boot_id"}) {
		t.Errorf("after a reboot: %v, want only boot_id", names)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, s := range a {
		m[s] = true
	}
	for _, s := range b {
		if !m[s] {
			return false
		}
	}
	return true
}

// TestRootIsPrivate: host users cannot reach the verified trees, also in a
// cache directory an earlier version created open.
func TestRootIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.Context(), dir, 1<<20); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("cache root mode %v, %v; want 0700", st.Mode().Perm(), err)
	}
}
