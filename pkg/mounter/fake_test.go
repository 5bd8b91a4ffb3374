package mounter

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestFake: the fake refuses what the kernel refuses, stacks mounts, and
// fails the operations Fail names without changing anything.
func TestFake(t *testing.T) {
	dir := t.TempDir()
	src, target := filepath.Join(dir, "src"), filepath.Join(dir, "target")
	for _, d := range []string{src, target} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f := &Fake{}
	if err := f.BindMount(src, filepath.Join(dir, "missing"), true); err == nil {
		t.Error("bind onto a missing target succeeded")
	}
	for range 2 {
		if err := f.BindMount(src, target, true); err != nil {
			t.Fatal(err)
		}
	}
	if m := f.Mounts()[target]; len(m) != 2 || m[0] != (FakeMount{Source: src, ReadOnly: true}) {
		t.Errorf("mounts = %+v", m)
	}
	boom := errors.New("boom")
	f.Fail = func(op, _ string) error {
		if op == "unmount" {
			return boom
		}
		return nil
	}
	if err := f.Unmount(target); !errors.Is(err, boom) {
		t.Errorf("Unmount = %v, want the injected error", err)
	}
	f.Fail = nil
	for range 2 { // idempotent
		if err := f.Unmount(target); err != nil {
			t.Fatal(err)
		}
	}
	if mounted, err := f.IsMountPoint(target); mounted || err != nil {
		t.Errorf("IsMountPoint after Unmount = %v, %v", mounted, err)
	}
}
