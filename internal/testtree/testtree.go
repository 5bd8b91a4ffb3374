// Package testtree builds directory trees for tests and compares them.
package testtree

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Write creates a tree under dir with nested directories, files of several
// sizes and modes, an empty file, relative symlinks and a hardlink. seed
// varies the content.
func Write(t testing.TB, dir string, seed uint64) {
	t.Helper()
	rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	file := func(rel string, size int, mode os.FileMode) {
		p := filepath.Join(dir, rel)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rnd.UintN(256))
		}
		must(os.WriteFile(p, b, mode))
		must(os.Chmod(p, mode))
	}
	file("README.md", 1200, 0o644)
	file("bin/tool", 70_000, 0o755)
	file("src/a/b/c/deep.txt", 300, 0o600)
	file("src/main.go", 5000, 0o644)
	file("data/big.bin", 3<<20, 0o644)
	file("empty", 0, 0o644)
	must(os.MkdirAll(filepath.Join(dir, "emptydir"), 0o755))
	must(os.Symlink("../README.md", filepath.Join(dir, "src/readme-link")))
	must(os.Symlink("a/b", filepath.Join(dir, "src/ab")))
	must(os.Link(filepath.Join(dir, "bin/tool"), filepath.Join(dir, "bin/tool-hardlink")))
}

// Snapshot describes every entry under dir: type, permission bits, size and
// content hash, or link target.
func Snapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	return snapshot(t, dir, func(perm fs.FileMode, _ bool) fs.FileMode { return perm })
}

// mounted is what the node plugin shows a pod of a tree with these
// permission bits: readable by all, writable by none, executable where
// any execute bit was set; directories 0555.
func mounted(perm fs.FileMode, dir bool) fs.FileMode {
	if dir || perm&0o111 != 0 {
		return 0o555
	}
	return 0o444
}

func snapshot(t testing.TB, dir string, perm func(fs.FileMode, bool) fs.FileMode) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "symlink " + target
		case d.IsDir():
			out[rel] = fmt.Sprintf("dir %o", perm(info.Mode().Perm(), true))
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = fmt.Sprintf("file %o %d %x", perm(info.Mode().Perm(), false), len(b), sha256.Sum256(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	delete(out, ".")
	return out
}

// Equal fails the test, listing the differences, when the trees differ.
func Equal(t testing.TB, want, got string) {
	t.Helper()
	diff(t, want, got, Snapshot(t, want))
}

// EqualMounted fails the test unless got is the input volume the node
// plugin mounts of tree want: the same entries and content, with the
// permission bits of mounted.
func EqualMounted(t testing.TB, want, got string) {
	t.Helper()
	diff(t, want, got, snapshot(t, want, mounted))
}

func diff(t testing.TB, want, got string, a map[string]string) {
	t.Helper()
	b := Snapshot(t, got)
	var diffs []string
	for k, v := range a {
		if b[k] != v {
			diffs = append(diffs, fmt.Sprintf("%s: want %q, got %q", k, v, b[k]))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: unexpected %q", k, v))
		}
	}
	slices.Sort(diffs)
	if len(diffs) > 0 {
		t.Fatalf("trees %s and %s differ:\n%s", want, got, strings.Join(diffs, "\n"))
	}
}
