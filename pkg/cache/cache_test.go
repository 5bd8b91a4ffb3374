package cache

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"k8s.io/klog/v2/ktesting"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
)

const blk = archive.BlockSize

// usage is the accounted usage of an entry whose tree takes blocks blocks
// and inodes inodes, with the entry's own directory and metadata file.
func usage(blocks, inodes int64) archive.Usage {
	return archive.Usage{Bytes: (blocks + 2) * blk, Inodes: inodes + 2}
}

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

// treeFill returns a FillFunc that creates dest with files files of size
// bytes each.
func treeFill(files, size int) FillFunc {
	return func(ctx context.Context, dest string) (int64, error) {
		tmp := dest + ".tmp"
		if err := os.Mkdir(tmp, 0o755); err != nil {
			return 0, err
		}
		for i := range files {
			if err := os.WriteFile(filepath.Join(tmp, fmt.Sprint(i)), make([]byte, size), 0o644); err != nil {
				return 0, err
			}
		}
		return int64(files * size), os.Rename(tmp, dest)
	}
}

// extractFill returns a FillUsageFunc that extracts an archive of dirs
// empty directories with archive.Extract, as the driver's fills do.
func extractFill(t *testing.T, dirs int) FillUsageFunc {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("d%d/", i), Mode: 0o755}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	blob := buf.Bytes()
	h, _, err := v1.SHA256(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	return func(ctx context.Context, dest string) (archive.Usage, error) {
		stats, _, err := archive.Extract(ctx, bytes.NewReader(blob), archive.Expect{Digest: h, Size: int64(len(blob))}, dest, archive.Limits{})
		return stats.Usage, err
	}
}

func open(t *testing.T, dir string, max int64, opts ...Option) *Cache {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	c, err := Open(ctx, dir, max, opts...)
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
	one := usage(1, 1) // one small file
	c := open(t, t.TempDir(), 3*one.Bytes)
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
	acquire("d")   // 4 entries > 3: evict b, the least recently used unpinned
	c.Wait()
	for key, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		_, err := os.Stat(c.Path(key))
		if got := err == nil; got != want {
			t.Errorf("entry %s present = %v, want %v", key, got, want)
		}
	}
	if got, want := c.Stats(), (Stats{Entries: 3, Bytes: 3 * one.Bytes, Inodes: 3 * one.Inodes}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}

	// Everything pinned: the cache goes over its bound rather than fail.
	acquire("e")
	if got := c.Stats(); got.Bytes != 3*one.Bytes {
		t.Errorf("after evicting a for e: %+v, want %d bytes", got, 3*one.Bytes)
	}
	acquire("f")
	if got := c.Stats(); got.Bytes != 4*one.Bytes {
		t.Errorf("all pinned: %+v, want %d bytes", got, 4*one.Bytes)
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
	if got, want := c.Stats(), (Stats{Entries: 1, Bytes: usage(1, 1).Bytes, Inodes: usage(1, 1).Inodes}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
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

// TestEvictionBounds: unpinned entries are evicted, least recently used
// first, until the cache is within both its bounds.
func TestEvictionBounds(t *testing.T) {
	cases := []struct {
		name      string
		maxBytes  int64
		maxInodes int64
		files     []int // empty files of each entry, filled in this order
		evicted   []int // indexes of the entries evicted
	}{
		{name: "within both bounds", maxBytes: 1 << 30, maxInodes: 36, files: []int{10, 10, 10}},
		// 12 inodes each: the 4th passes 36.
		{name: "inode bound", maxBytes: 1 << 30, maxInodes: 36, files: []int{10, 10, 10, 10}, evicted: []int{0}},
		// 41 inodes: a is not enough, b goes too.
		{name: "a large entry evicts several", maxBytes: 1 << 30, maxInodes: 36, files: []int{1, 1, 1, 30}, evicted: []int{0, 1}},
		// Empty files take no block: 2 blocks each, the 4th passes 7.
		{name: "byte bound", maxBytes: 7 * blk, maxInodes: 1 << 20, files: []int{10, 10, 10, 10}, evicted: []int{0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := open(t, t.TempDir(), tc.maxBytes, WithMaxInodes(tc.maxInodes))
			var want Stats
			for i, n := range tc.files {
				key := fmt.Sprint("k", i)
				if _, _, err := c.Acquire(t.Context(), key, treeFill(n, 0)); err != nil {
					t.Fatal(err)
				}
				c.Release(key)
				time.Sleep(2 * time.Millisecond)
				if !contains(tc.evicted, i) {
					u := usage(0, int64(n))
					want.Entries, want.Bytes, want.Inodes = want.Entries+1, want.Bytes+u.Bytes, want.Inodes+u.Inodes
				}
			}
			c.Wait()
			for i := range tc.files {
				_, err := os.Stat(c.Path(fmt.Sprint("k", i)))
				if present := err == nil; present == contains(tc.evicted, i) {
					t.Errorf("entry %d present = %v, want %v", i, present, !present)
				}
			}
			if got := c.Stats(); got != want || got.Bytes > tc.maxBytes || got.Inodes > tc.maxInodes {
				t.Errorf("Stats = %+v, want %+v", got, want)
			}
		})
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestFillTooLarge: a fill that by itself exceeds a bound of the cache
// fails with ErrTooLarge, leaves nothing, and evicts nothing.
func TestFillTooLarge(t *testing.T) {
	cases := []struct {
		name      string
		maxBytes  int64
		maxInodes int64
		fill      func(t *testing.T) FillUsageFunc // nil: a measured FillFunc
		files     int                              // of 1 byte, for the measured fill
		msg       string
	}{
		{name: "inodes, measured", maxBytes: 1 << 30, maxInodes: 40, files: 40, msg: "42 inodes"},
		{name: "footprint, measured", maxBytes: 12 * blk, maxInodes: 1 << 20, files: 11, msg: "--cache-size"},
		{name: "inodes, reported by Extract", maxBytes: 1 << 30, maxInodes: 40,
			fill: func(t *testing.T) FillUsageFunc { return extractFill(t, 39) }, msg: "--cache-max-inodes"},
		{name: "footprint of empty directories, reported by Extract", maxBytes: 12 * blk, maxInodes: 1 << 20,
			fill: func(t *testing.T) FillUsageFunc { return extractFill(t, 11) }, msg: "53248 bytes of disk"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := open(t, t.TempDir(), tc.maxBytes, WithMaxInodes(tc.maxInodes))
			if _, _, err := c.Acquire(t.Context(), "keep", treeFill(1, 1)); err != nil {
				t.Fatal(err)
			}
			c.Release("keep")
			before := c.Stats()
			var err error
			if tc.fill != nil {
				_, _, err = c.AcquireUsage(t.Context(), "big", tc.fill(t))
			} else {
				_, _, err = c.Acquire(t.Context(), "big", treeFill(tc.files, 1))
			}
			if !errors.Is(err, ErrTooLarge) || !errors.Is(err, errdefs.ErrTooLarge) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Acquire = %v, want ErrTooLarge mentioning %q", err, tc.msg)
			}
			c.Wait()
			names, _ := readDirNames(c.dir)
			if !sameSet(names, []string{bootIDFile, "keep", "keep.json"}) {
				t.Errorf("cache dir holds %v after a fill too large", names)
			}
			if got := c.Stats(); got != before || c.Has("big") {
				t.Errorf("Stats = %+v, want %+v", got, before)
			}
		})
	}
}

// TestUsageSurvivesReopen: what an entry counts for is recorded with it;
// an entry an earlier version recorded without inodes is measured once.
func TestUsageSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir, 1<<30)
	if _, _, err := c.Acquire(t.Context(), "measured", treeFill(3, 5000)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.AcquireUsage(t.Context(), "extracted", extractFill(t, 100)); err != nil {
		t.Fatal(err)
	}
	want := map[string]archive.Usage{"measured": usage(3*2, 3), "extracted": usage(100, 100)}
	for k, u := range want {
		if got := c.entries[k].usage; got != u {
			t.Errorf("%s counts %+v, want %+v", k, got, u)
		}
	}
	stats := c.Stats()

	// An entry of an earlier version: its size counts content only.
	if _, err := treeFill(4, 10)(t.Context(), filepath.Join(dir, "legacy")); err != nil {
		t.Fatal(err)
	}
	legacyMeta := filepath.Join(dir, "legacy.json")
	if err := os.WriteFile(legacyMeta, []byte(`{"size":40}`), 0o644); err != nil {
		t.Fatal(err)
	}
	lastUsed := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(legacyMeta, lastUsed, lastUsed); err != nil {
		t.Fatal(err)
	}
	want["legacy"] = usage(4, 4)

	for range 2 { // the second Open reads what the first recorded
		c = open(t, dir, 1<<30)
		for k, u := range want {
			if e := c.entries[k]; e == nil || e.usage != u {
				t.Errorf("after Open, %s counts %+v, want %+v", k, e, u)
			}
		}
		if got := c.Stats(); got.Entries != 3 || got.Bytes != stats.Bytes+want["legacy"].Bytes || got.Inodes != stats.Inodes+want["legacy"].Inodes {
			t.Errorf("after Open, Stats = %+v; before, %+v without legacy", got, stats)
		}
		if e := c.entries["legacy"]; e == nil || !e.lastUsed.Equal(lastUsed) {
			t.Errorf("legacy last used %v, want %v: measuring it must not make it recent", e, lastUsed)
		}
		b, _ := os.ReadFile(legacyMeta)
		if want := fmt.Sprintf(`{"size":%d,"inodes":6}`, usage(4, 4).Bytes); strings.TrimSpace(string(b)) != want {
			t.Errorf("legacy.json = %s, want %s", b, want)
		}
	}
}

func TestOpenRefusesBadBounds(t *testing.T) {
	for name, tc := range map[string]struct {
		bytes int64
		opts  []Option
	}{
		"no bytes":  {bytes: 0},
		"no inodes": {bytes: 1 << 20, opts: []Option{WithMaxInodes(0)}},
	} {
		if _, err := Open(t.Context(), t.TempDir(), tc.bytes, tc.opts...); err == nil {
			t.Errorf("%s: Open succeeded", name)
		}
	}
}
