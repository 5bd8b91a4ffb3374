package mounter

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
}

func TestBindMount(t *testing.T) {
	needRoot(t)
	for _, readOnly := range []bool{false, true} {
		t.Run(map[bool]string{false: "read-write", true: "read-only"}[readOnly], func(t *testing.T) {
			src, target := t.TempDir(), t.TempDir()
			if err := os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			m := New()
			if err := m.BindMount(src, target, readOnly); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = m.Unmount(target) })

			if ok, err := m.IsMountPoint(target); err != nil || !ok {
				t.Fatalf("IsMountPoint = %v, %v; want true", ok, err)
			}
			if b, err := os.ReadFile(filepath.Join(target, "f")); err != nil || string(b) != "x" {
				t.Fatalf("read through mount = %q, %v", b, err)
			}
			var st unix.Statfs_t
			if err := unix.Statfs(target, &st); err != nil {
				t.Fatal(err)
			}
			for flag, name := range map[int64]string{unix.ST_NOSUID: "nosuid", unix.ST_NODEV: "nodev"} {
				if st.Flags&flag == 0 {
					t.Errorf("mount lacks %s", name)
				}
			}
			err := os.WriteFile(filepath.Join(target, "g"), nil, 0o644)
			if readOnly && !errors.Is(err, unix.EROFS) {
				t.Errorf("write on read-only mount: %v, want EROFS", err)
			}
			if !readOnly && err != nil {
				t.Errorf("write on read-write mount: %v", err)
			}

			if err := m.Unmount(target); err != nil {
				t.Fatal(err)
			}
			if ok, _ := m.IsMountPoint(target); ok {
				t.Fatal("still mounted after Unmount")
			}
			if err := m.Unmount(target); err != nil {
				t.Errorf("second Unmount: %v", err)
			}
		})
	}
}

func TestUnmountStackedAndMissing(t *testing.T) {
	needRoot(t)
	m := New()
	src, target := t.TempDir(), t.TempDir()
	for range 3 {
		if err := m.BindMount(src, target, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Unmount(target); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m.IsMountPoint(target); ok {
		t.Fatal("a stacked mount survived Unmount")
	}
	if err := m.Unmount(filepath.Join(target, "missing")); err != nil {
		t.Errorf("Unmount of a missing path: %v", err)
	}
	if err := m.BindMount(filepath.Join(src, "missing"), target, true); err == nil {
		t.Error("BindMount of a missing source succeeded")
	}
}
