package mounter

import (
	"fmt"
	"maps"
	"os"
	"sync"
)

// Fake is an Interface that keeps its mount table in memory, so that the
// node service can be tested without root. Like the kernel, it refuses a
// bind mount onto a target that is not an existing directory, and
// stacks mounts. It is safe for concurrent use.
type Fake struct {
	// Fail, when set, is asked before each call with the operation
	// ("bind", "unmount" or "check") and the target; an error it returns
	// fails the call, which then changes nothing.
	Fail func(op, target string) error

	mu     sync.Mutex
	mounts map[string][]FakeMount
}

// FakeMount is one mount of a Fake.
type FakeMount struct {
	Source   string
	ReadOnly bool
}

var _ Interface = (*Fake)(nil)

func (f *Fake) fail(op, target string) error {
	if f.Fail == nil {
		return nil
	}
	return f.Fail(op, target)
}

// BindMount implements Interface.
func (f *Fake) BindMount(source, target string, readOnly bool) error {
	if err := f.fail("bind", target); err != nil {
		return err
	}
	for _, p := range []string{source, target} {
		if st, err := os.Stat(p); err != nil || !st.IsDir() {
			return fmt.Errorf("bind mount %s on %s: %s is not a directory (%v)", source, target, p, err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mounts == nil {
		f.mounts = map[string][]FakeMount{}
	}
	f.mounts[target] = append(f.mounts[target], FakeMount{Source: source, ReadOnly: readOnly})
	return nil
}

// Unmount implements Interface.
func (f *Fake) Unmount(target string) error {
	if err := f.fail("unmount", target); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.mounts, target)
	return nil
}

// IsMountPoint implements Interface.
func (f *Fake) IsMountPoint(target string) (bool, error) {
	if err := f.fail("check", target); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.mounts[target]) > 0, nil
}

// Mounts returns a copy of the mount table: each target's mounts, the
// first made first.
func (f *Fake) Mounts() map[string][]FakeMount {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.mounts)
}
