package archive_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
)

// fuzzLimits are small, so that one input cannot take long.
var fuzzLimits = archive.Limits{MaxBytes: 1 << 20, MaxEntries: 1000}

// fuzzSeeds returns small valid and hostile archives. In the fuzz layout
// dest is <tmp>/root/dest, so "../x" and "../canary" name canaries beside
// it and "../../outside/x" one in a sibling directory.
func fuzzSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	add := func(b []byte) {
		if len(b) <= 16<<10 {
			seeds = append(seeds, b)
		}
	}
	for _, tc := range hostileCases() {
		if !tc.big {
			add(tc.build(f, "/tmp/outside"))
		}
	}
	for i, tc := range goodCases() {
		data := append(tc.build(f), make([]byte, tc.padding)...)
		add(data)
		if i < 3 {
			add(compress(f, data, archive.Gzip))
			add(compress(f, data, archive.Zstd))
		}
	}
	small := newTar(f).dir("d/", 0o755).file("d/f", 0o644, "hello").symlink("l", "d/f").hardlink("h", "d/f").bytes()
	for _, c := range []archive.Compression{archive.Gzip, archive.Zstd} {
		blob := compress(f, small, c)
		add(blob)
		add(blob[:len(blob)/2])
		add(append(blob, "garbage"...))
	}
	// gzip without sizes (before issue 17, other tools): read serially.
	serial := pgzipCompress(f, small)
	add(serial)
	add(serial[:len(serial)/2])
	add(append(serial, "garbage"...))
	// gzip members (issue 17): a valid stream of two, then each way of
	// breaking one; all but one are small enough to seed.
	add(memberBase(f))
	for _, tc := range hostileMembers() {
		if !tc.big {
			add(tc.build(f))
		}
	}
	add(newTar(f).symlink("o", "../../outside").file("o/x", 0o644, "pwned").bytes())
	add(newTar(f).symlink("s", ".").symlink("l", "s/../../outside/x").bytes())
	add(newTar(f).file("f", 0o644, "f").hardlink("h", "../canary").bytes())
	add(newTar(f).pax("path", "../canary").file("good", 0o644, "pwned").bytes())
	return seeds
}

func FuzzExtract(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	// Building the layout costs more than most extractions, so each fuzz
	// process builds it once and rebuilds it only after a failure (so that
	// minimizing a failing input starts from a clean layout).
	l := &fuzzLayout{tmp: f.TempDir()}
	f.Fuzz(func(t *testing.T, blob []byte) {
		if l.before == nil {
			l.build(t)
		}
		fail := func(format string, args ...any) {
			t.Helper()
			l.build(t)
			t.Fatalf(format, args...)
		}

		stats, _, err := archive.Extract(context.Background(), bytes.NewReader(blob), expectOf(blob), l.dest, fuzzLimits)

		if d := diffSnapshots(l.before, snapshot(t, l.tmp, l.dest)); d != "" {
			fail("Extract (err %v) changed things outside dest:\n%s", err, d)
		}
		if err != nil {
			if _, lerr := os.Lstat(l.dest); !errors.Is(lerr, os.ErrNotExist) {
				fail("Extract failed (%v) but dest exists (lstat: %v)", err, lerr)
			}
			return
		}
		if stats.Usage.Bytes > fuzzLimits.MaxBytes || stats.Usage.Inodes > fuzzLimits.MaxEntries || stats.Entries > fuzzLimits.MaxEntries {
			fail("stats %+v exceed %+v", stats, fuzzLimits)
		}
		// Extract counts from the headers what Measure finds on disk.
		if u, err := archive.Measure(context.Background(), l.dest, archive.Limits{MaxBytes: -1, MaxEntries: -1}); err != nil || u != stats.Usage {
			fail("Measure = %+v, %v; Extract reported %+v", u, err, stats.Usage)
		}
		if err := checkConfined(l.dest); err != nil {
			fail("Extract succeeded but: %v", err)
		}
		makeRemovable(l.dest)
		if err := os.RemoveAll(l.dest); err != nil {
			fail("remove dest: %v", err)
		}
	})
}

// fuzzLayout is <tmp>/root/dest with canaries in <tmp>/root and in a
// sibling directory <tmp>/outside.
type fuzzLayout struct {
	tmp, dest string
	before    map[string]fileState // of tmp, dest excluded
}

func (l *fuzzLayout) build(t testing.TB) {
	t.Helper()
	makeRemovable(l.tmp)
	entries, err := os.ReadDir(l.tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(l.tmp, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	root, outside := filepath.Join(l.tmp, "root"), filepath.Join(l.tmp, "outside")
	for _, d := range []string{root, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	canaries(t, root, outside)
	l.dest = filepath.Join(root, "dest")
	l.before = snapshot(t, l.tmp, l.dest)
}

func makeRemovable(dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
}

// checkConfined walks an extracted tree and reports what could reach
// outside it: an entry other than a directory, regular file or symlink, a
// setuid, setgid or sticky bit, a regular file with links outside the tree,
// or a symlink that resolves (following the tree's own symlinks, and taking
// missing components as directories) above the root.
func checkConfined(dest string) error {
	names := map[uint64]int{}
	nlink := map[uint64]uint64{}
	var links []string
	err := filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dest, p)
		if st.Mode&(syscall.S_ISUID|syscall.S_ISGID|syscall.S_ISVTX) != 0 {
			return fmt.Errorf("%s: mode %#o has special bits", rel, st.Mode)
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
		case syscall.S_IFREG:
			names[st.Ino]++
			nlink[st.Ino] = uint64(st.Nlink)
		case syscall.S_IFLNK:
			links = append(links, filepath.ToSlash(rel))
		default:
			return fmt.Errorf("%s: file type %#o", rel, st.Mode&syscall.S_IFMT)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for ino, n := range names {
		if nlink[ino] != uint64(n) {
			return fmt.Errorf("inode %d has %d links but %d names in dest", ino, nlink[ino], n)
		}
	}
	for _, l := range links {
		if err := resolveWithin(dest, l); err != nil {
			return err
		}
	}
	return nil
}

// resolveWithin follows symlink rel of tree root as the kernel would, on
// the real filesystem, and fails if that climbs above root.
func resolveWithin(root, rel string) error {
	var stack []string
	if d := path.Dir(rel); d != "." {
		stack = strings.Split(d, "/")
	}
	target, err := os.Readlink(filepath.Join(root, rel))
	if err != nil {
		return err
	}
	pending := strings.Split(target, "/")
	if strings.HasPrefix(target, "/") {
		return fmt.Errorf("symlink %s -> %s is absolute", rel, target)
	}
	for hops := 0; len(pending) > 0; {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return fmt.Errorf("symlink %s -> %s leaves the root", rel, target)
			}
			stack = stack[:len(stack)-1]
			continue
		}
		stack = append(stack, c)
		p := filepath.Join(append([]string{root}, stack...)...)
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			continue // missing, a file or a directory: go on lexically
		}
		if hops++; hops > 40 {
			return nil // ELOOP for the kernel: resolves nowhere
		}
		next, err := os.Readlink(p)
		if err != nil {
			return err
		}
		if strings.HasPrefix(next, "/") {
			return fmt.Errorf("symlink %s -> %s goes through absolute symlink %s -> %s", rel, target, strings.Join(stack, "/"), next)
		}
		stack = stack[:len(stack)-1]
		pending = append(strings.Split(next, "/"), pending...)
	}
	return nil
}

// TestCheckConfined makes sure the fuzz oracle itself catches escapes.
func TestCheckConfined(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, dest, outside string)
		bad   bool
	}{
		{name: "inside links", setup: func(t *testing.T, dest, outside string) {
			mkfile(t, filepath.Join(dest, "d/f"))
			symlinkAt("d/f", "l")(t, dest)
			symlinkAt("../d", "d/self")(t, dest)
			symlinkAt("missing/../d", "m")(t, dest)
		}},
		{name: "climbing symlink", bad: true, setup: func(t *testing.T, dest, outside string) {
			symlinkAt("d/../../x", "l")(t, dest)
		}},
		{name: "chained symlinks", bad: true, setup: func(t *testing.T, dest, outside string) {
			symlinkAt(".", "s")(t, dest)
			symlinkAt("s/../x", "l")(t, dest)
		}},
		{name: "absolute symlink", bad: true, setup: func(t *testing.T, dest, outside string) {
			symlinkAt(outside, "l")(t, dest)
		}},
		{name: "hardlink to outside", bad: true, setup: func(t *testing.T, dest, outside string) {
			mkfile(t, filepath.Join(outside, "f"))
			if err := os.Link(filepath.Join(outside, "f"), filepath.Join(dest, "h")); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "fifo", bad: true, setup: func(t *testing.T, dest, outside string) {
			if err := syscall.Mkfifo(filepath.Join(dest, "fifo"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "setuid", bad: true, setup: func(t *testing.T, dest, outside string) {
			mkfile(t, filepath.Join(dest, "suid"))
			if err := os.Chmod(filepath.Join(dest, "suid"), 0o755|os.ModeSetuid); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dest, outside := tempDir(t), tempDir(t)
			tc.setup(t, dest, outside)
			err := checkConfined(dest)
			if (err != nil) != tc.bad {
				t.Fatalf("checkConfined = %v, want an error: %v", err, tc.bad)
			}
		})
	}
}

func mkfile(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
}
