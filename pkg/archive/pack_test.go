package archive_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
)

// packNode is one path of a tree to build: 'd'irectory, 'f'ile, 's'ymlink
// or 'h'ardlink (target is the linked file).
type packNode struct {
	path   string
	kind   byte
	mode   os.FileMode
	data   string
	target string
}

var packSpec = []packNode{
	{path: "a", kind: 'd', mode: 0o755},
	{path: "a/b", kind: 'd', mode: 0o750},
	{path: "a/b/f", kind: 'f', mode: 0o640, data: "hello"},
	{path: "a/empty", kind: 'f', mode: 0o644},
	{path: "a.b", kind: 'f', mode: 0o600, data: "sorts after a/ because a < a.b"},
	{path: "bin", kind: 'd', mode: 0o755},
	{path: "bin/tool", kind: 'f', mode: 0o755 | os.ModeSetuid, data: "#!/bin/sh\n"},
	{path: "bin/setgid", kind: 'f', mode: 0o711 | os.ModeSetgid, data: "sg"},
	{path: "h1", kind: 'f', mode: 0o644, data: "linked"},
	{path: "h2", kind: 'h', target: "h1"},
	{path: "ld", kind: 's', target: "a"},
	{path: "lf", kind: 's', target: "a/b/f"},
	{path: "ro", kind: 'd', mode: 0o555},
	{path: "ro/f", kind: 'f', mode: 0o444, data: "read-only"},
	{path: "sgid", kind: 'd', mode: 0o775 | os.ModeSetgid},
	{path: "shared", kind: 'd', mode: 0o777 | os.ModeSticky},
	{path: "z", kind: 'd', mode: 0o700},
	{path: "z/h3", kind: 'h', target: "h1"},
	{path: "z/up", kind: 's', target: "../a.b"},
}

// buildOpts are the incidental properties Pack must ignore.
type buildOpts struct {
	reverse  bool      // create paths in reverse order
	mtime    time.Time // of every path
	uid, gid int       // owner of every path; -1 leaves the caller's
	umask    int
}

func depth(p string) int { return strings.Count(p, "/") }

// buildTree creates spec under root (which must exist) honouring o, and
// checks that o really took effect.
func buildTree(t testing.TB, root string, spec []packNode, o buildOpts) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	old := syscall.Umask(o.umask)
	defer syscall.Umask(old)
	order := slices.Clone(spec)
	if o.reverse {
		slices.Reverse(order)
	}
	abs := func(p string) string { return filepath.Join(root, p) }
	for _, n := range order {
		if n.kind == 'd' {
			must(os.MkdirAll(abs(n.path), 0o777))
		}
	}
	for _, n := range order {
		if n.kind == 'f' {
			must(os.MkdirAll(filepath.Dir(abs(n.path)), 0o777))
			must(os.WriteFile(abs(n.path), []byte(n.data), 0o666))
		}
	}
	for _, n := range order {
		switch n.kind {
		case 's':
			must(os.Symlink(n.target, abs(n.path)))
		case 'h':
			must(os.Link(abs(n.target), abs(n.path)))
		}
	}
	// Owner first (chown clears setuid), then modes, deepest first, then
	// times, which nothing touches afterwards.
	byDepth := slices.Clone(spec)
	slices.SortStableFunc(byDepth, func(a, b packNode) int { return depth(b.path) - depth(a.path) })
	for _, n := range byDepth {
		if o.uid >= 0 {
			must(os.Lchown(abs(n.path), o.uid, o.gid))
		}
	}
	for _, n := range byDepth {
		if n.kind == 'd' || n.kind == 'f' {
			must(os.Chmod(abs(n.path), n.mode))
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(o.mtime.UnixNano()), unix.NsecToTimespec(o.mtime.UnixNano())}
	for _, n := range byDepth {
		must(unix.UtimesNanoAt(unix.AT_FDCWD, abs(n.path), ts, unix.AT_SYMLINK_NOFOLLOW))
	}
	// The options must have taken effect, or the comparison proves nothing.
	for _, n := range spec {
		var st unix.Stat_t
		must(unix.Lstat(abs(n.path), &st))
		if got := time.Unix(st.Mtim.Unix()); !got.Equal(o.mtime) {
			t.Fatalf("%s: mtime %v, want %v", n.path, got, o.mtime)
		}
		if o.uid >= 0 && (int(st.Uid) != o.uid || int(st.Gid) != o.gid) {
			t.Fatalf("%s: owner %d:%d, want %d:%d", n.path, st.Uid, st.Gid, o.uid, o.gid)
		}
		if n.path == "bin/tool" && st.Mode&unix.S_ISUID == 0 {
			t.Fatalf("%s: setuid bit not set (mode %#o)", n.path, st.Mode)
		}
	}
}

type packed struct {
	tar                []byte
	gzipHash, zstdHash string
	stats              archive.Stats
}

func packTree(t testing.TB, root string) packed {
	t.Helper()
	var buf bytes.Buffer
	stats, err := archive.Pack(context.Background(), root, &buf)
	if err != nil {
		t.Fatalf("Pack(%s): %v", root, err)
	}
	return packed{
		tar:      buf.Bytes(),
		gzipHash: sha256Hash(compress(t, buf.Bytes(), archive.Gzip)).String(),
		zstdHash: sha256Hash(compress(t, buf.Bytes(), archive.Zstd)).String(),
		stats:    stats,
	}
}

func TestPackIsReproducible(t *testing.T) {
	base := buildOpts{mtime: time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC), uid: -1, umask: 0o022}
	baseDir := tempDir(t)
	buildTree(t, baseDir, packSpec, base)
	want := packTree(t, baseDir)

	cases := []struct {
		name   string
		opts   func(o buildOpts) buildOpts
		spec   func(s []packNode) []packNode
		root   bool // needs root (chown)
		differ bool // control: the bytes must differ
	}{
		{name: "same tree again", opts: func(o buildOpts) buildOpts { return o }},
		{name: "different mtimes", opts: func(o buildOpts) buildOpts {
			o.mtime = time.Date(1999, 12, 31, 23, 59, 59, 999, time.UTC)
			return o
		}},
		{name: "reverse creation order", opts: func(o buildOpts) buildOpts { o.reverse = true; return o }},
		{name: "different owners", root: true, opts: func(o buildOpts) buildOpts { o.uid, o.gid = 1234, 5678; return o }},
		{name: "umask 077", opts: func(o buildOpts) buildOpts { o.umask = 0o077; return o }},
		{name: "umask 000", opts: func(o buildOpts) buildOpts { o.umask = 0; return o }},
		{name: "everything differs", root: true, opts: func(o buildOpts) buildOpts {
			return buildOpts{reverse: true, mtime: time.Unix(1e9, 0), uid: 65534, gid: 65534, umask: 0o027}
		}},
		{name: "control: one mode bit differs", differ: true, opts: func(o buildOpts) buildOpts { return o },
			spec: func(s []packNode) []packNode { s[2].mode = 0o644; return s }},
		{name: "control: one byte differs", differ: true, opts: func(o buildOpts) buildOpts { return o },
			spec: func(s []packNode) []packNode { s[2].data = "hellO"; return s }},
		{name: "control: hardlink becomes a copy", differ: true, opts: func(o buildOpts) buildOpts { return o },
			spec: func(s []packNode) []packNode {
				s[9] = packNode{path: "h2", kind: 'f', mode: 0o644, data: "linked"}
				return s
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && os.Geteuid() != 0 {
				t.Skip("chown needs root")
			}
			spec := slices.Clone(packSpec)
			if tc.spec != nil {
				spec = tc.spec(spec)
			}
			dir := tempDir(t)
			buildTree(t, dir, spec, tc.opts(base))
			got := packTree(t, dir)
			same := bytes.Equal(got.tar, want.tar)
			if tc.differ {
				if same || got.gzipHash == want.gzipHash || got.zstdHash == want.zstdHash {
					t.Fatalf("a different tree packs the same (tar equal %v)", same)
				}
				return
			}
			if !same {
				t.Errorf("tar differs from the baseline:\n%s", diffHeaders(t, want.tar, got.tar))
			}
			if got.gzipHash != want.gzipHash {
				t.Errorf("gzip digest %s, want %s", got.gzipHash, want.gzipHash)
			}
			if got.zstdHash != want.zstdHash {
				t.Errorf("zstd digest %s, want %s", got.zstdHash, want.zstdHash)
			}
			if got.stats != want.stats {
				t.Errorf("stats %+v, want %+v", got.stats, want.stats)
			}
		})
	}
}

// diffHeaders lists the headers of two archives side by side.
func diffHeaders(t testing.TB, a, b []byte) string {
	list := func(data []byte) []string {
		var out []string
		tr := tar.NewReader(bytes.NewReader(data))
		for {
			h, err := tr.Next()
			if err != nil {
				if err != io.EOF {
					out = append(out, err.Error())
				}
				return out
			}
			out = append(out, strings.Join([]string{h.Name, string(h.Typeflag), strconv.FormatInt(h.Mode, 8),
				strconv.Itoa(h.Uid), strconv.Itoa(h.Gid), h.Linkname, h.ModTime.String()}, " "))
		}
	}
	return "want:\n  " + strings.Join(list(a), "\n  ") + "\ngot:\n  " + strings.Join(list(b), "\n  ")
}

func TestPackHeaders(t *testing.T) {
	dir := tempDir(t)
	buildTree(t, dir, packSpec, buildOpts{mtime: time.Now(), uid: -1, umask: 0o022})
	if os.Geteuid() == 0 {
		if err := os.Lchown(filepath.Join(dir, "a.b"), 1000, 1000); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	stats, err := archive.Pack(context.Background(), dir, &buf)
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	type hdr struct {
		name     string
		typ      byte
		mode     int64
		linkname string
		data     string
	}
	want := []hdr{
		{"a/", tar.TypeDir, 0o755, "", ""},
		{"a/b/", tar.TypeDir, 0o750, "", ""},
		{"a/b/f", tar.TypeReg, 0o640, "", "hello"},
		{"a/empty", tar.TypeReg, 0o644, "", ""},
		{"a.b", tar.TypeReg, 0o600, "", "sorts after a/ because a < a.b"},
		{"bin/", tar.TypeDir, 0o755, "", ""},
		{"bin/setgid", tar.TypeReg, 0o711, "", "sg"},
		{"bin/tool", tar.TypeReg, 0o755, "", "#!/bin/sh\n"},
		{"h1", tar.TypeReg, 0o644, "", "linked"},
		{"h2", tar.TypeLink, 0o644, "h1", ""},
		{"ld", tar.TypeSymlink, 0o777, "a", ""},
		{"lf", tar.TypeSymlink, 0o777, "a/b/f", ""},
		{"ro/", tar.TypeDir, 0o555, "", ""},
		{"ro/f", tar.TypeReg, 0o444, "", "read-only"},
		{"sgid/", tar.TypeDir, 0o775, "", ""},
		{"shared/", tar.TypeDir, 0o777, "", ""},
		{"z/", tar.TypeDir, 0o700, "", ""},
		{"z/h3", tar.TypeLink, 0o644, "h1", ""},
		{"z/up", tar.TypeSymlink, 0o777, "../a.b", ""},
	}
	var got []hdr
	var names []string
	var bytesIn int64
	tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading packed archive: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		bytesIn += int64(len(data))
		got = append(got, hdr{h.Name, h.Typeflag, h.Mode, h.Linkname, string(data)})
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner %d:%d %q:%q, want 0:0 and no names", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if !h.ModTime.Equal(archive.Epoch) || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
			t.Errorf("%s: times %v %v %v, want %v and none", h.Name, h.ModTime, h.AccessTime, h.ChangeTime, archive.Epoch)
		}
		if h.Devmajor != 0 || h.Devminor != 0 || len(h.PAXRecords) != 0 {
			t.Errorf("%s: devices %d,%d, PAX records %v", h.Name, h.Devmajor, h.Devminor, h.PAXRecords)
		}
		if h.Typeflag != tar.TypeReg && h.Size != 0 {
			t.Errorf("%s: size %d for a %q entry", h.Name, h.Size, h.Typeflag)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("headers:\n got %v\nwant %v", got, want)
	}
	// Names are sorted component by component: depth first, each
	// directory's entries in byte order.
	byComponents := func(a, b string) int {
		return slices.Compare(strings.Split(strings.TrimSuffix(a, "/"), "/"), strings.Split(strings.TrimSuffix(b, "/"), "/"))
	}
	if !slices.IsSortedFunc(names, byComponents) {
		t.Errorf("names not sorted: %v", names)
	}
	// 7 directories, 6 non-empty files and an empty one, 3 short
	// symlinks, 2 hardlinks.
	if want := (archive.Stats{Entries: int64(len(want)), Bytes: bytesIn, Usage: usage(7+6, 7+7+3)}); stats != want {
		t.Errorf("stats %+v, want %+v", stats, want)
	}
	if bytesIn != int64(len("hello"+"sorts after a/ because a < a.b"+"sg"+"#!/bin/sh\n"+"linked"+"read-only")) {
		t.Errorf("content bytes %d: hardlinked content stored more than once?", bytesIn)
	}
}

// TestGzipHeaderIsAnonymous: every member's header names no file and no
// time; its only extra field is the member's size (docs/format.md).
func TestGzipHeaderIsAnonymous(t *testing.T) {
	dir := tempDir(t)
	buildTree(t, dir, packSpec, buildOpts{mtime: time.Now(), uid: -1, umask: 0o022})
	tarball := packTree(t, dir).tar
	tarball = append(tarball, make([]byte, 3<<20)...) // three members or more
	blob := compress(t, tarball, archive.Gzip)
	members := 0
	for ; len(blob) > 0; members++ {
		// RFC 1952: ID1 ID2 CM FLG MTIME(4) XFL OS, then XLEN and the extra field.
		if flg := blob[3]; flg != 0x04 {
			t.Errorf("member %d: FLG = %#x, want FEXTRA only (no name or comment)", members, flg)
		}
		if mtime := blob[4:8]; !bytes.Equal(mtime, []byte{0, 0, 0, 0}) {
			t.Errorf("member %d: MTIME = % x, want zero", members, mtime)
		}
		zr, err := gzip.NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatalf("member %d: %v", members, err)
		}
		zr.Multistream(false)
		if zr.Name != "" || zr.Comment != "" || !zr.ModTime.IsZero() || zr.OS != 255 ||
			len(zr.Extra) != 8 || string(zr.Extra[:4]) != "TK\x04\x00" {
			t.Fatalf("member %d: gzip header %+v, want only the TK field", members, zr.Header)
		}
		if _, err := io.Copy(io.Discard, zr); err != nil {
			t.Fatalf("member %d: %v", members, err)
		}
		size := int(binary.LittleEndian.Uint32(zr.Extra[4:]))
		if size > len(blob) {
			t.Fatalf("member %d: size %d, %d bytes left", members, size, len(blob))
		}
		blob = blob[size:]
	}
	if members < 3 {
		t.Errorf("%d members, want 3 or more", members)
	}
}

// TestCompressIgnoresGOMAXPROCS compresses the same multi-megabyte input
// with different core counts and write sizes: the bytes must not change.
func TestCompressIgnoresGOMAXPROCS(t *testing.T) {
	var input []byte
	for i := range 40 {
		input = append(input, randomBytes(64<<10, uint64(i))...)
		input = append(input, bytes.Repeat([]byte("compressible line of text "+strconv.Itoa(i)+"\n"), 3000)...)
	}
	if len(input) < 4<<20 {
		t.Fatalf("input is %d bytes, want several MiB", len(input))
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, c := range []archive.Compression{archive.Gzip, archive.Zstd} {
		t.Run(string(c), func(t *testing.T) {
			var want string
			for _, procs := range []int{1, 4, 2, 8, 3, 5, 6, 7} {
				for _, chunk := range []int{len(input), 1 << 20, 64<<10 + 3, 4093} {
					runtime.GOMAXPROCS(procs)
					var buf bytes.Buffer
					w, err := archive.NewCompressor(&buf, c)
					if err != nil {
						t.Fatal(err)
					}
					for rest := input; len(rest) > 0; {
						n := min(chunk, len(rest))
						if _, err := w.Write(rest[:n]); err != nil {
							t.Fatal(err)
						}
						rest = rest[n:]
					}
					if err := w.Close(); err != nil {
						t.Fatal(err)
					}
					got := sha256Hash(buf.Bytes()).String()
					if want == "" {
						want = got
						rc, gotComp, err := archive.Decompress(bytes.NewReader(buf.Bytes()))
						if err != nil || gotComp != c {
							t.Fatalf("Decompress: %v, %q", err, gotComp)
						}
						back, err := io.ReadAll(rc)
						rc.Close()
						if err != nil || !bytes.Equal(back, input) {
							t.Fatalf("round trip through %s: %v (equal %v)", c, err, bytes.Equal(back, input))
						}
					} else if got != want {
						t.Errorf("GOMAXPROCS=%d, writes of %d: digest %s, want %s", procs, chunk, got, want)
					}
				}
			}
		})
	}
}

func TestPackRefuses(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, root string) // creates the offending path
		root  bool
		err   error
		path  string // the error must name it
		msg   string
	}{
		{name: "FIFO", err: archive.ErrUnsupportedFile, path: "sub/fifo", msg: "FIFO",
			setup: func(t *testing.T, root string) {
				if err := unix.Mkfifo(filepath.Join(root, "sub/fifo"), 0o644); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "unix socket", err: archive.ErrUnsupportedFile, path: "sub/sock", msg: "socket",
			setup: func(t *testing.T, root string) {
				p := filepath.Join(root, "sub/sock")
				if len(p) < 100 {
					l, err := net.Listen("unix", p)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { l.Close() })
					return
				}
				// Too long to bind: a socket inode all the same.
				if err := unix.Mknod(p, unix.S_IFSOCK|0o644, 0); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "character device", root: true, err: archive.ErrUnsupportedFile, path: "sub/null", msg: "character device",
			setup: func(t *testing.T, root string) {
				if err := unix.Mknod(filepath.Join(root, "sub/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "symlink with an absolute target", err: archive.ErrUnsafeEntry, path: "sub/abs", msg: "is absolute",
			setup: symlinkAt("/etc", "sub/abs")},
		{name: "symlink climbing out", err: archive.ErrUnsafeEntry, path: "out", msg: "leaves the root",
			setup: symlinkAt("../x", "out")},
		{name: "nested symlink climbing out", err: archive.ErrUnsafeEntry, path: "sub/out", msg: "leaves the root",
			setup: symlinkAt("../../x", "sub/out")},
		{name: "symlink climbing out through a dir", err: archive.ErrUnsafeEntry, path: "out", msg: "leaves the root",
			setup: symlinkAt("sub/../../x", "out")},
		{name: "chained symlinks climbing out", err: archive.ErrUnsafeEntry, path: "sub/l", msg: "leaves the root",
			setup: func(t *testing.T, root string) {
				symlinkAt("..", "sub/up")(t, root)
				symlinkAt("up/../x", "sub/l")(t, root)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && os.Geteuid() != 0 {
				t.Skip("mknod of a device needs root")
			}
			root := tempDir(t)
			for _, p := range []string{"sub/a", "z"} {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, p), []byte(p), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// Links that stay inside are fine and must not be blamed.
			symlinkAt(".", "self")(t, root)
			symlinkAt("../z", "sub/z")(t, root)
			tc.setup(t, root)
			_, err := archive.Pack(context.Background(), root, io.Discard)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Pack = %v, want %v", err, tc.err)
			}
			if !strings.Contains(err.Error(), strconv.Quote(tc.path)) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Pack error %q does not name %q with %q", err, tc.path, tc.msg)
			}
		})
	}
}

func symlinkAt(target, name string) func(t *testing.T, root string) {
	return func(t *testing.T, root string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPackDoesNotFollowSymlinks(t *testing.T) {
	// A symlink pointing at a directory is stored, not walked.
	root := tempDir(t)
	if err := os.MkdirAll(filepath.Join(root, "d/e"), 0o755); err != nil {
		t.Fatal(err)
	}
	symlinkAt("d", "ld")(t, root)
	symlinkAt("..", "d/e/up")(t, root)
	var buf bytes.Buffer
	stats, err := archive.Pack(context.Background(), root, &buf)
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	var got []string
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, h.Name+" "+string(h.Typeflag)+" "+h.Linkname)
	}
	want := []string{"d/ 5 ", "d/e/ 5 ", "d/e/up 2 ..", "ld 2 d"}
	if !slices.Equal(got, want) || stats != (archive.Stats{Entries: 4, Usage: usage(2, 4)}) {
		t.Errorf("Pack = %q, %+v; want %q", got, stats, want)
	}
}

func TestPackCancelled(t *testing.T) {
	dir := tempDir(t)
	buildTree(t, dir, packSpec, buildOpts{mtime: time.Now(), uid: -1, umask: 0o022})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := archive.Pack(ctx, dir, io.Discard); !errors.Is(err, context.Canceled) {
		t.Fatalf("Pack with a cancelled context = %v, want context.Canceled", err)
	}
}

// TestPackRefusesLongNames: a tree whose names Extract would refuse is
// not packed, and what Pack held stays bounded.
func TestPackRefusesLongNames(t *testing.T) {
	root := t.TempDir()
	// Deeper than PATH_MAX: made one level at a time, from the parent's
	// descriptor.
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Repeat("d", 250)
	for depth := 0; depth*251 <= archive.DefaultMaxPathLength; depth++ {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	unix.Close(fd)
	_, err = archive.Pack(context.Background(), root, io.Discard)
	if !errors.Is(err, archive.ErrLimitExceeded) {
		t.Errorf("Pack = %v, want ErrLimitExceeded", err)
	}
}

// TestPackAndMeasureLimits: Pack refuses, and Measure reports, a tree
// whose disk footprint passes the limits even when its content does not,
// naming the first path past them.
func TestPackAndMeasureLimits(t *testing.T) {
	dirs := func(n int) []packNode {
		var s []packNode
		for i := range n {
			s = append(s, packNode{path: "d" + strconv.Itoa(i), kind: 'd', mode: 0o755})
		}
		return s
	}
	cases := []struct {
		name  string
		spec  []packNode
		lim   archive.Limits
		usage archive.Usage // on success
		path  string        // on failure, the error names it
		msg   string
	}{
		{name: "empty directories within MaxBytes", spec: dirs(3), lim: archive.Limits{MaxBytes: 3 * archive.BlockSize},
			usage: usage(3, 3)},
		{name: "empty directories over MaxBytes", spec: dirs(4), lim: archive.Limits{MaxBytes: 3 * archive.BlockSize},
			path: "d3", msg: "more than 12288 bytes of disk"},
		{name: "one-byte files over MaxBytes", lim: archive.Limits{MaxBytes: 2*archive.BlockSize + 1},
			spec: []packNode{{path: "a", kind: 'f', mode: 0o644, data: "a"}, {path: "b", kind: 'f', mode: 0o644, data: "b"},
				{path: "c", kind: 'f', mode: 0o644, data: "c"}},
			path: "c", msg: "raise maxArtifactBytes"},
		{name: "hardlinks take nothing", lim: archive.Limits{MaxBytes: archive.BlockSize, MaxEntries: 4},
			spec: []packNode{{path: "f", kind: 'f', mode: 0o644, data: strings.Repeat("x", archive.BlockSize)},
				{path: "h1", kind: 'h', target: "f"}, {path: "h2", kind: 'h', target: "f"}},
			usage: usage(1, 1)},
		{name: "a long symlink target takes a block", lim: archive.Limits{MaxBytes: archive.BlockSize},
			spec: []packNode{{path: "a", kind: 's', target: strings.Repeat("t", 60)}, {path: "b", kind: 's', target: strings.Repeat("t", 60)}},
			path: "b", msg: "more than 4096 bytes of disk"},
		{name: "empty files over MaxEntries", spec: []packNode{{path: "a", kind: 'd', mode: 0o755},
			{path: "a/x", kind: 'f', mode: 0o644}, {path: "a/y", kind: 'f', mode: 0o644}},
			lim: archive.Limits{MaxEntries: 2}, path: "a/y", msg: "more than 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := tempDir(t)
			buildTree(t, root, tc.spec, buildOpts{mtime: time.Now(), uid: -1, umask: 0o022})
			var buf bytes.Buffer
			stats, err := archive.Pack(context.Background(), root, &buf, archive.WithPackLimits(tc.lim))
			measured, merr := archive.Measure(context.Background(), root, tc.lim)
			if tc.path == "" {
				if err != nil || merr != nil {
					t.Fatalf("Pack: %v; Measure: %v", err, merr)
				}
				if stats.Usage != tc.usage || measured != tc.usage {
					t.Errorf("Pack usage %+v, Measure %+v; want %+v", stats.Usage, measured, tc.usage)
				}
				return
			}
			for what, err := range map[string]error{"Pack": err, "Measure": merr} {
				if !errors.Is(err, archive.ErrLimitExceeded) {
					t.Fatalf("%s = %v, want ErrLimitExceeded", what, err)
				}
				if what == "Pack" && tc.msg == "more than 2" {
					continue // Pack counts the entries first, with its own message
				}
				if !strings.Contains(err.Error(), strconv.Quote(tc.path)) || !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("%s error %q does not name %q with %q", what, err, tc.path, tc.msg)
				}
			}
			if measured.Bytes > tc.lim.MaxBytes && tc.lim.MaxBytes > 0 {
				t.Errorf("Measure went on past the limit: %+v", measured)
			}
			// Nothing of the entry past the limit was written.
			tr := tar.NewReader(&buf)
			for {
				h, err := tr.Next()
				if err != nil {
					break
				}
				if strings.TrimSuffix(h.Name, "/") == tc.path {
					t.Errorf("Pack wrote %q, the entry past the limit", h.Name)
				}
			}
		})
	}
}
