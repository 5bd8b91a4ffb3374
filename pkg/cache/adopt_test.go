package cache

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2/ktesting"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputfs"
)

// output makes what a pushed output leaves on a node: an ext4 image that a
// pod (uid 1000) wrote, frozen and released. It returns the image's path.
func output(t *testing.T, e *outputfs.Ext4, root string, files map[string]string) string {
	t.Helper()
	ctx := context.Background()
	dir, err := os.MkdirTemp(root, "vol-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Release(ctx, dir) })
	if err := e.Create(ctx, dir, outputfs.Limits{Bytes: 8 << 20, GID: -1}); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, outputfs.DataDir)
	for name, content := range files {
		p := filepath.Join(data, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600|os.ModeSetuid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o4700); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, 1000, 1000); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Freeze(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if err := e.Release(ctx, dir); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, outputfs.ImageFile)
}

// imageCache opens a cache of 1 GiB in a new directory, able to adopt
// the images of e; it skips where ext4 outputs cannot be made.
func imageCache(t *testing.T) (context.Context, *outputfs.Ext4, string, *Cache) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices and mounts need root")
	}
	_, ctx := ktesting.NewTestContext(t)
	root := t.TempDir()
	e, err := outputfs.NewExt4(outputfs.Ext4Options{Templates: filepath.Join(root, "templates")})
	if err != nil {
		t.Skipf("no ext4 output filesystems here: %v", err)
	}
	c, err := Open(ctx, filepath.Join(root, "cache"), 1<<30, WithImages(e))
	if err != nil {
		t.Fatal(err)
	}
	return ctx, e, root, c
}

func normalize(ctx context.Context, dest string) (archive.Usage, error) {
	return archive.Normalize(ctx, dest, archive.ReadOnlyModes, archive.Limits{})
}

func isMount(t *testing.T, p string) bool {
	t.Helper()
	var st, parent unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return false
	}
	if err := unix.Lstat(filepath.Dir(p), &parent); err != nil {
		t.Fatal(err)
	}
	return st.Dev != parent.Dev
}

// TestAdoptImage adopts an output's ext4 image as an entry, with a real
// loop device: the tree is served read-only with extraction's metadata,
// survives a reopen, and goes, image and mount, when evicted.
func TestAdoptImage(t *testing.T) {
	ctx, e, root, c := imageCache(t)
	dir := c.dir
	const key = "manifest-sha256-aaaa"
	image := output(t, e, root, map[string]string{"out/report.txt": "passed\n"})
	t.Cleanup(func() { e.Unmount(context.Background(), c.Path(key)) })

	adopted, err := c.AdoptImage(ctx, key, image, normalize)
	if err != nil || !adopted {
		t.Fatalf("AdoptImage = %v, %v; want adopted", adopted, err)
	}
	if _, err := os.Stat(image); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the image is still where it was: %v", err)
	}
	path, hit, err := c.Acquire(ctx, key, nil)
	if err != nil || !hit {
		t.Fatalf("Acquire = %v, %v; want a hit", hit, err)
	}
	check := func(path string) {
		t.Helper()
		f := filepath.Join(path, "out/report.txt")
		if b, err := os.ReadFile(f); err != nil || string(b) != "passed\n" {
			t.Errorf("content = %q, %v", b, err)
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(f, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != 0o555 || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("file mode %#o owner %d:%d, want 0555 root's as extraction gives", st.Mode&0o7777, st.Uid, st.Gid)
		}
		if err := os.WriteFile(filepath.Join(path, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("writing into the entry: %v, want EROFS", err)
		}
	}
	check(path)
	s := c.Stats()
	if s.Entries != 1 || s.Bytes < 3*blk || s.Inodes != 2+3 { // out/, report.txt; the entry's directory, metadata and image
		t.Errorf("Stats = %+v", s)
	}

	// Another output of the same digest: already there.
	again := output(t, e, root, map[string]string{"x": "y"})
	if adopted, err := c.AdoptImage(ctx, key, again, normalize); adopted || err != nil {
		t.Errorf("second AdoptImage = %v, %v; want not adopted", adopted, err)
	}
	if _, err := os.Stat(again); err != nil {
		t.Errorf("an image not adopted moved: %v", err)
	}
	c.Release(key)

	// A restart: Close unmounts (as the end of the plugin's mount
	// namespace would), Open mounts again.
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if isMount(t, c.Path(key)) {
		t.Fatal("Close left the adopted entry mounted")
	}
	c, err = Open(ctx, dir, 1<<30, WithImages(e))
	if err != nil {
		t.Fatal(err)
	}
	if !isMount(t, c.Path(key)) {
		t.Fatal("Open did not mount the adopted entry again")
	}
	check(c.Path(key))

	// Evicted: a fill that needs all the room.
	c.max.Bytes = c.used.Bytes + 2*blk
	if _, _, err := c.Acquire(ctx, "manifest-sha256-bbbb", writeFill(2*blk, new(atomic.Int32), nil)); err != nil {
		t.Fatal(err)
	}
	c.Wait()
	if isMount(t, c.Path(key)) || c.Has(key) {
		t.Error("the evicted entry is still mounted or cached")
	}
	if _, err := os.Stat(c.Path(key) + imageSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the evicted entry's image is still there: %v", err)
	}
}

// TestAdoptImageFails: a prepare that refuses the tree leaves nothing,
// neither image nor mount, and the key can be filled.
func TestAdoptImageFails(t *testing.T) {
	ctx, e, root, c := imageCache(t)
	const key = "manifest-sha256-cccc"
	image := output(t, e, root, map[string]string{"f": "x"})
	refuse := func(context.Context, string) (archive.Usage, error) { return archive.Usage{}, archive.ErrUnsafeEntry }
	if adopted, err := c.AdoptImage(ctx, key, image, refuse); adopted || !errors.Is(err, archive.ErrUnsafeEntry) {
		t.Fatalf("AdoptImage = %v, %v; want the refusal", adopted, err)
	}
	if isMount(t, c.Path(key)) {
		t.Error("still mounted")
	}
	for _, p := range []string{c.Path(key), c.Path(key) + imageSuffix, c.Path(key) + ".json"} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left: %v", p, err)
		}
	}
	if _, hit, err := c.Acquire(ctx, key, writeFill(10, new(atomic.Int32), nil)); err != nil || hit {
		t.Errorf("Acquire after a failed adoption = %v, %v; want a fill", hit, err)
	}
}
