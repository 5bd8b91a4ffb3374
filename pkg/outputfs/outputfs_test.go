package outputfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func newExt4(t *testing.T) (*Ext4, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices and mounts need root")
	}
	root := t.TempDir()
	e, err := NewExt4(Ext4Options{Templates: filepath.Join(root, "templates")})
	if err != nil {
		t.Skipf("no ext4 output filesystems here: %v", err)
	}
	return e, root
}

// volume creates an output in a new directory and releases it at the end.
func volume(t *testing.T, fsys Filesystem, root string, l Limits) string {
	t.Helper()
	dir, err := os.MkdirTemp(root, "vol-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fsys.Release(context.Background(), dir); err != nil {
			t.Errorf("Release: %v", err)
		}
	})
	if err := fsys.Create(context.Background(), dir, l); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return dir
}

func TestGeometry(t *testing.T) {
	for _, l := range []Limits{{Bytes: 1 << 20}, {Bytes: 64 << 20, Inodes: 100}, {Bytes: 10 << 30}, {Bytes: 1 << 40, Inodes: 1 << 20}} {
		size, inodes := Geometry(l)
		want := l.Inodes
		if want == 0 {
			want = DefaultInodes(l.Bytes)
		}
		if inodes != want+reservedInodes {
			t.Errorf("%+v: %d inodes, want %d", l, inodes, want)
		}
		table := inodes * inodeSize
		if size < l.Bytes+table || size > l.Bytes+table+l.Bytes/40+17<<20 || size%blockSize != 0 {
			t.Errorf("%+v: image of %d bytes for %d of data and %d of inode table", l, size, l.Bytes, table)
		}
	}
}

// TestExt4Bounds writes until the kernel refuses, as a user without
// privileges and as root: the data stops at the output's bound plus the
// filesystem's overhead, and so do the inodes.
func TestExt4Bounds(t *testing.T) {
	e, root := newExt4(t)
	const limit = 8 << 20
	os.Chmod(root, 0o755) // the unprivileged writer goes through it
	os.Chmod(filepath.Dir(root), 0o755)
	for _, uid := range []int{65534, 0} {
		t.Run(fmt.Sprint("uid", uid), func(t *testing.T) {
			dir := volume(t, e, root, Limits{Bytes: limit, Inodes: 2048, GID: -1})
			data := filepath.Join(dir, DataDir)
			os.Chmod(dir, 0o755)
			cmd := exec.Command("/bin/sh", "-c", "cat /dev/zero > big")
			cmd.Dir = data
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), "No space left") {
				t.Fatalf("writing past the bound: %v, %s", err, out)
			}
			st, err := os.Stat(filepath.Join(data, "big"))
			if err != nil {
				t.Fatal(err)
			}
			if st.Size() < limit || st.Size() > limit+limit/50+256<<10 {
				t.Errorf("wrote %d bytes with a bound of %d", st.Size(), limit)
			}
			os.Remove(filepath.Join(data, "big"))
			n := 0
			for ; n < 4096; n++ {
				if err := os.WriteFile(filepath.Join(data, fmt.Sprint(n)), nil, 0o644); err != nil {
					if !errors.Is(err, unix.ENOSPC) {
						t.Fatal(err)
					}
					break
				}
			}
			if n < 2048 || n > 2048+16 {
				t.Errorf("created %d files with an inode bound of 2048", n)
			}
		})
	}
}

func TestExt4Lifecycle(t *testing.T) {
	e, root := newExt4(t)
	ctx := context.Background()
	dir := volume(t, e, root, Limits{Bytes: 1 << 20, GID: 1234})
	data := filepath.Join(dir, DataDir)

	st, err := os.Stat(data)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode() != os.ModeDir|os.ModeSetgid|0o775 || st.Sys().(*syscall.Stat_t).Gid != 1234 {
		t.Errorf("data directory: mode %v gid %d", st.Mode(), st.Sys().(*syscall.Stat_t).Gid)
	}
	if entries, _ := os.ReadDir(data); len(entries) != 0 {
		t.Errorf("a new output holds %v", entries)
	}

	// The pod's bind mount, which outlives the plugin's own mount.
	pod := filepath.Join(root, "pod")
	if err := os.Mkdir(pod, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(data, pod, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(pod, 0)
	if err := os.WriteFile(filepath.Join(pod, "a"), []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A restarted plugin lost its mount; Mount finds the pod's filesystem.
	if err := e.Release(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if err := e.Mount(ctx, dir, false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pod, "b"), []byte("2"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(data, "b")); err != nil || string(b) != "2" {
		t.Fatalf("the plugin and the pod see different filesystems: %q, %v", b, err)
	}

	// A writer still there: not frozen.
	w, err := os.OpenFile(filepath.Join(pod, "c"), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Freeze(ctx, dir); !errors.Is(err, ErrBusy) {
		t.Errorf("Freeze with a file open for writing: %v, want ErrBusy", err)
	}
	w.Close()
	for range 2 { // idempotent
		if err := e.Freeze(ctx, dir); err != nil {
			t.Fatalf("Freeze: %v", err)
		}
	}
	if err := os.WriteFile(filepath.Join(pod, "d"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("writing through the pod's mount after Freeze: %v, want EROFS", err)
	}

	// Everything released, then mounted again for the upload.
	unix.Unmount(pod, 0)
	if err := e.Release(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if dev, err := findLoop(filepath.Join(dir, ImageFile)); err != nil || dev != "" {
		t.Fatalf("loop device after the last unmount: %q, %v", dev, err)
	}
	if err := e.Mount(ctx, dir, true); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(data, "a")); err != nil || string(b) != "1" {
		t.Errorf("after a remount: %q, %v", b, err)
	}
	if err := e.Release(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if err := e.Release(ctx, dir); err != nil {
		t.Errorf("second Release: %v", err)
	}
}

// TestExt4Templates: one mke2fs per geometry, however many outputs.
func TestExt4Templates(t *testing.T) {
	e, root := newExt4(t)
	for range 3 {
		volume(t, e, root, Limits{Bytes: 2 << 20, GID: -1})
	}
	volume(t, e, root, Limits{Bytes: 3 << 20, GID: -1})
	entries, err := os.ReadDir(e.o.Templates)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("templates: %v, want one per geometry", entries)
	}
	// An image takes what was written, not its size.
	dirs, _ := filepath.Glob(filepath.Join(root, "vol-*", ImageFile))
	for _, img := range dirs {
		var st unix.Stat_t
		if err := unix.Stat(img, &st); err != nil {
			t.Fatal(err)
		}
		if st.Blocks*512 > 1<<20 {
			t.Errorf("%s allocates %d bytes", img, st.Blocks*512)
		}
	}
}

func TestDir(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	dir := volume(t, Dir{}, root, Limits{Bytes: 1, GID: -1})
	data := filepath.Join(dir, DataDir)
	if st, err := os.Stat(data); err != nil || st.Mode().Perm() != 0o777 {
		t.Fatalf("data: %v, %v", st, err)
	}
	os.MkdirAll(filepath.Join(data, "x/y"), 0o755)
	os.WriteFile(filepath.Join(data, "x/y/f"), []byte("f"), 0o644)
	os.Symlink("/nonexistent", filepath.Join(data, "link"))
	if err := (Dir{}).Freeze(ctx, dir); err != nil {
		t.Errorf("Freeze: %v", err)
	}
	if err := (Dir{}).Mount(ctx, dir, true); err != nil {
		t.Errorf("Mount: %v", err)
	}
}

// BenchmarkCreate measures what a publish pays for an output's own
// filesystem (template clone, loop device, mount), released each time.
func BenchmarkCreate(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	root := b.TempDir()
	e, err := NewExt4(Ext4Options{Templates: filepath.Join(root, "templates")})
	if err != nil {
		b.Skip(err)
	}
	ctx := context.Background()
	for _, size := range []int64{16 << 20, 1 << 30, 10 << 30} {
		b.Run(fmt.Sprint("bytes=", size>>20, "Mi"), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				dir := filepath.Join(root, fmt.Sprint(size, "-", i))
				os.Mkdir(dir, 0o700)
				if err := e.Create(ctx, dir, Limits{Bytes: size, GID: -1}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := e.Release(ctx, dir); err != nil {
					b.Fatal(err)
				}
				os.RemoveAll(dir)
				b.StartTimer()
			}
		})
	}
}
