package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
)

var sentinels = []error{archive.ErrUnsafeEntry, archive.ErrLimitExceeded, archive.ErrDigestMismatch, archive.ErrCorrupt}

// hostileCase is one archive Extract must refuse.
type hostileCase struct {
	name string
	// build returns the blob; outside is the absolute path of a canary
	// directory that is not beside dest.
	build func(t testing.TB, outside string) []byte
	// expect returns what the caller claims the blob is; nil means the
	// blob's true digest and size.
	expect func(t testing.TB, blob []byte) archive.Expect
	lim    archive.Limits
	err    error  // expected sentinel (or errno)
	entry  string // the *EntryError must name this entry; "" if no entry is involved
	msg    string // substring the message must contain, besides the entry
	big    bool   // expensive to build: not a fuzz seed
	maxDur time.Duration
}

// randomBytes returns n deterministic incompressible bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// validTar is a small well-formed archive used by the stream-level cases.
func validTar(t testing.TB) []byte {
	return newTar(t).dir("d/", 0o755).file("d/f", 0o644, "hello").
		file("blob", 0o644, string(randomBytes(256<<10, 1))).bytes()
}

func truncated(t testing.TB, c archive.Compression) []byte {
	b := compress(t, validTar(t), c)
	return b[:len(b)/2]
}

func full(c archive.Compression) func(testing.TB, []byte) archive.Expect {
	return func(t testing.TB, _ []byte) archive.Expect { return expectOf(compress(t, validTar(t), c)) }
}

var bombCache sync.Map // name -> []byte

// bomb returns, built once, a compressed archive that decompresses to more
// than 2 GiB: "file" holds one 2 GiB file of zeros, "padding" a small valid
// archive followed by 64 MiB of zeros. Nothing big is held in memory.
func bomb(t testing.TB, c archive.Compression, kind string) []byte {
	t.Helper()
	key := string(c) + "/" + kind
	if b, ok := bombCache.Load(key); ok {
		return b.([]byte)
	}
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	if c == archive.Zstd {
		w, err = zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest))
	} else {
		w, err = archive.NewCompressor(&buf, c)
	}
	if err != nil {
		t.Fatal(err)
	}
	copyZeros := func(dst io.Writer, n int64) {
		if _, err := io.CopyBuffer(dst, io.LimitReader(zeroReader{}, n), make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
	}
	switch kind {
	case "file":
		tw := tar.NewWriter(w)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "zero", Mode: 0o644, Size: 2 << 30}); err != nil {
			t.Fatal(err)
		}
		copyZeros(tw, 2<<30)
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
	case "padding":
		if _, err := w.Write(newTar(t).file("f", 0o644, "hello").bytes()); err != nil {
			t.Fatal(err)
		}
		copyZeros(w, 64<<20)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	bombCache.Store(key, b)
	return b
}

func hostileCases() []hostileCase {
	longName := strings.Repeat("n/", 2500) + "f"
	tarOnly := func(f func(b *tarBuilder, outside string)) func(testing.TB, string) []byte {
		return func(t testing.TB, outside string) []byte {
			b := newTar(t)
			f(b, outside)
			return b.bytes()
		}
	}
	return []hostileCase{
		// Names.
		{name: "absolute name", entry: "<outside>/evil", err: archive.ErrUnsafeEntry, msg: "absolute name",
			build: tarOnly(func(b *tarBuilder, o string) { b.file(o+"/evil", 0o644, "pwned") })},
		{name: "absolute dir name", entry: "/etc/", err: archive.ErrUnsafeEntry, msg: "absolute name",
			build: tarOnly(func(b *tarBuilder, o string) { b.dir("/etc/", 0o755) })},
		{name: "leading dotdot", entry: "../evil", err: archive.ErrUnsafeEntry, msg: `".." component`,
			build: tarOnly(func(b *tarBuilder, o string) { b.file("../evil", 0o644, "pwned") })},
		{name: "leading dotdot overwriting a canary", entry: "../x", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.file("../x", 0o644, "pwned") })},
		{name: "middle dotdot escaping", entry: "a/../../evil", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.file("a/f", 0o644, "").file("a/../../evil", 0o644, "pwned") })},
		{name: "middle dotdot staying inside", entry: "a/../b", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.file("a/../b", 0o644, "x") })},
		{name: "trailing dotdot dir", entry: "a/..", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.dir("a/..", 0o755) })},
		{name: "dotdot alone", entry: "..", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.dir("..", 0o755) })},
		{name: "symlink named with dotdot", entry: "../l", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("../l", "x") })},
		{name: "hardlink named with dotdot", entry: "../h", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.file("f", 0o644, "f").hardlink("../h", "f") })},
		{name: "root entry is a symlink", entry: "./", err: archive.ErrUnsafeEntry, msg: "root entry must be a directory",
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("./", o) })},
		{name: "root entry is a file", entry: ".", err: archive.ErrUnsafeEntry, msg: "root entry must be a directory",
			build: tarOnly(func(b *tarBuilder, o string) { b.file(".", 0o644, "x") })},

		// Writing through symlinks.
		{name: "symlink to absolute dir then file through it", entry: "l", err: archive.ErrUnsafeEntry, msg: "is absolute",
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("l", o).file("l/evil", 0o644, "pwned") })},
		{name: "symlink to /tmp/x then file through it", entry: "l", err: archive.ErrUnsafeEntry, msg: "is absolute",
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("l", "/tmp/x").file("l/evil", 0o644, "pwned") })},
		{name: "symlink to dotdot then file through it", entry: "l/evil", err: archive.ErrUnsafeEntry, msg: `resolves through symlink "l"`,
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("l", "..").file("l/evil", 0o644, "pwned") })},
		{name: "symlink to dot then dotdot through it", entry: "l/../evil", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("l", ".").file("l/../evil", 0o644, "pwned") })},
		{name: "symlink to dot then file through it", entry: "l/evil", err: archive.ErrUnsafeEntry, msg: "resolves through symlink",
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("l", ".").file("l/evil", 0o644, "x") })},
		{name: "symlink to dotdot then dir through it", entry: "l/sub", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("l", "..").dir("l/sub/", 0o755) })},
		{name: "symlink to dotdot then symlink through it", entry: "l/s", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("l", "..").symlink("l/s", "x") })},
		{name: "symlink to dotdot then hardlink through it", entry: "l/h", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.file("f", 0o644, "f").symlink("l", "..").hardlink("l/h", "f") })},
		{name: "hardlink source through symlink", entry: "h", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.file("d/f", 0o644, "f").symlink("l", "d").hardlink("h", "l/f") })},

		// Symlink targets.
		{name: "symlink absolute target", entry: "abs", err: archive.ErrUnsafeEntry, msg: `"/etc" is absolute`,
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("abs", "/etc") })},
		{name: "symlink climbing out", entry: "l", err: archive.ErrUnsafeEntry, msg: "leaves the root",
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("l", "../x") })},
		{name: "symlink climbing out through a dir", entry: "l", err: archive.ErrUnsafeEntry, msg: "leaves the root",
			build: tarOnly(func(b *tarBuilder, o string) { b.dir("a/", 0o755).symlink("l", "a/../../x") })},
		{name: "nested symlink climbing out", entry: "a/b/l", err: archive.ErrUnsafeEntry, msg: "leaves the root",
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("a/b/l", "../../../x") })},
		{name: "chained symlinks dot first", entry: "l", err: archive.ErrUnsafeEntry, msg: "leaves the root",
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("s", ".").symlink("l", "s/../x") })},
		{name: "chained symlinks dot last", entry: "l", err: archive.ErrUnsafeEntry, msg: "leaves the root",
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("l", "s/../x").symlink("s", ".") })},
		{name: "chained symlinks through a dir link", entry: "l", err: archive.ErrUnsafeEntry, msg: "leaves the root",
			build: tarOnly(func(b *tarBuilder, o string) { b.dir("d/", 0o755).symlink("d/up", "..").symlink("l", "d/up/../x") })},
		{name: "chained symlinks after a missing component", entry: "l", err: archive.ErrUnsafeEntry, msg: "leaves the root",
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("s", ".").symlink("l", "missing/../s/../x") })},
		{name: "chained symlinks below a dir after a missing component", entry: "l", err: archive.ErrUnsafeEntry, msg: "leaves the root",
			build: tarOnly(func(b *tarBuilder, o string) {
				b.dir("d/", 0o755).symlink("d/s", "..").symlink("l", "d/nope/../s/../x")
			})},
		{name: "symlink loop", entry: "a", err: archive.ErrUnsafeEntry, msg: "too many levels",
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("a", "b").symlink("b", "a") })},
		{name: "empty symlink target", entry: "l", err: archive.ErrUnsafeEntry, msg: "invalid symlink target",
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("l", "") })},

		// Hardlinks.
		{name: "hardlink to /etc/passwd", entry: "h", err: archive.ErrUnsafeEntry, msg: "/etc/passwd",
			build: tarOnly(func(b *tarBuilder, o string) { b.hardlink("h", "/etc/passwd") })},
		{name: "hardlink to absolute canary", entry: "h", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.hardlink("h", o+"/x") })},
		{name: "hardlink climbing out", entry: "h", err: archive.ErrUnsafeEntry, msg: `"../x"`,
			build: tarOnly(func(b *tarBuilder, o string) { b.hardlink("h", "../x") })},
		{name: "hardlink to a directory", entry: "h", err: archive.ErrUnsafeEntry, msg: "not a regular file",
			build: tarOnly(func(b *tarBuilder, o string) { b.dir("d/", 0o755).hardlink("h", "d") })},
		{name: "hardlink to an implicit directory", entry: "h", err: archive.ErrUnsafeEntry, msg: "not a regular file",
			build: tarOnly(func(b *tarBuilder, o string) { b.file("d/f", 0o644, "f").hardlink("h", "d") })},
		{name: "hardlink to the root", entry: "h", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.hardlink("h", "./") })},
		{name: "hardlink to a symlink", entry: "h", err: archive.ErrUnsafeEntry, msg: "not a regular file",
			build: tarOnly(func(b *tarBuilder, o string) { b.file("f", 0o644, "f").symlink("s", "f").hardlink("h", "s") })},
		{name: "hardlink to a later entry", entry: "h", err: archive.ErrUnsafeEntry, msg: "earlier in the archive",
			build: tarOnly(func(b *tarBuilder, o string) { b.hardlink("h", "f").file("f", 0o644, "f") })},
		{name: "hardlink to a missing entry", entry: "h", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.hardlink("h", "nope") })},
		{name: "hardlink to itself", entry: "h", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.hardlink("h", "h") })},

		// Entry types.
		{name: "char device", entry: "null", err: archive.ErrUnsafeEntry, msg: "device and FIFO",
			build: tarOnly(func(b *tarBuilder, o string) {
				b.add(tar.Header{Typeflag: tar.TypeChar, Name: "null", Mode: 0o666, Devmajor: 1, Devminor: 3}, "")
			})},
		{name: "block device", entry: "sda", err: archive.ErrUnsafeEntry, msg: "device and FIFO",
			build: tarOnly(func(b *tarBuilder, o string) {
				b.add(tar.Header{Typeflag: tar.TypeBlock, Name: "sda", Mode: 0o660, Devmajor: 8}, "")
			})},
		{name: "fifo", entry: "fifo", err: archive.ErrUnsafeEntry, msg: "device and FIFO",
			build: tarOnly(func(b *tarBuilder, o string) {
				b.add(tar.Header{Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o644}, "")
			})},
		{name: "unknown entry type", entry: "weird", err: archive.ErrUnsafeEntry, msg: "unsupported entry type",
			build: tarOnly(func(b *tarBuilder, o string) { b.raw(rawHeader{Name: "weird", Typeflag: 'Z', Mode: 0o644}, "") })},

		// Duplicates.
		{name: "file twice", entry: "f", err: archive.ErrUnsafeEntry, msg: "duplicate entry",
			build: tarOnly(func(b *tarBuilder, o string) { b.file("f", 0o644, "one").file("f", 0o644, "two") })},
		{name: "file twice via ./ prefix", entry: "f", err: archive.ErrUnsafeEntry, msg: "duplicate entry",
			build: tarOnly(func(b *tarBuilder, o string) { b.file("f", 0o644, "one").file("./f", 0o644, "two") })},
		{name: "file twice via double slash", entry: "a/b", err: archive.ErrUnsafeEntry, msg: "duplicate entry",
			build: tarOnly(func(b *tarBuilder, o string) { b.file("a/b", 0o644, "one").file("a//b", 0o644, "two") })},
		{name: "file then symlink", entry: "f", err: archive.ErrUnsafeEntry, msg: "duplicate entry",
			build: tarOnly(func(b *tarBuilder, o string) { b.file("f", 0o644, "one").symlink("f", "g") })},
		{name: "dir then symlink", entry: "d", err: archive.ErrUnsafeEntry, msg: "duplicate entry",
			build: tarOnly(func(b *tarBuilder, o string) { b.dir("d/", 0o755).symlink("d", o) })},
		{name: "implicit dir then symlink", entry: "d", err: archive.ErrUnsafeEntry, msg: "duplicate entry",
			build: tarOnly(func(b *tarBuilder, o string) { b.file("d/f", 0o644, "f").symlink("d", "e") })},
		{name: "symlink then dir", entry: "d", err: archive.ErrUnsafeEntry, msg: "duplicate entry",
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("d", "e").dir("d/", 0o755) })},
		{name: "dir then file", entry: "d", err: archive.ErrUnsafeEntry, msg: "duplicate entry",
			build: tarOnly(func(b *tarBuilder, o string) { b.dir("d/", 0o755).file("d", 0o644, "x") })},
		{name: "file then dir", entry: "d", err: archive.ErrUnsafeEntry, msg: "duplicate entry",
			build: tarOnly(func(b *tarBuilder, o string) { b.file("d", 0o644, "x").dir("d/", 0o755) })},
		{name: "file under a file", entry: "f/g", err: archive.ErrUnsafeEntry, msg: "not a directory",
			build: tarOnly(func(b *tarBuilder, o string) { b.file("f", 0o644, "x").file("f/g", 0o644, "y") })},

		// PAX and GNU meta headers.
		{name: "pax path overrides to dotdot", entry: "../evil", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.pax("path", "../evil").file("good", 0o644, "pwned") })},
		{name: "pax path overrides to absolute", entry: "<outside>/evil", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.pax("path", o+"/evil").file("good", 0o644, "pwned") })},
		{name: "pax path through a symlink", entry: "l/evil", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("l", ".").pax("path", "l/evil").file("good", 0o644, "x") })},
		{name: "pax linkpath climbing out", entry: "l", err: archive.ErrUnsafeEntry, msg: "leaves the root",
			build: tarOnly(func(b *tarBuilder, o string) { b.pax("linkpath", "../../x").symlink("l", "ok") })},
		{name: "pax linkpath absolute", entry: "l", err: archive.ErrUnsafeEntry, msg: "is absolute",
			build: tarOnly(func(b *tarBuilder, o string) { b.pax("linkpath", o).symlink("l", "ok") })},
		{name: "pax linkpath of a hardlink climbing out", entry: "h", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) { b.file("f", 0o644, "f").pax("linkpath", "../x").hardlink("h", "f") })},
		{name: "pax path with NUL", err: archive.ErrCorrupt, msg: "invalid tar header",
			build: tarOnly(func(b *tarBuilder, o string) { b.pax("path", "ok\x00/../../evil").file("good", 0o644, "x") })},
		{name: "pax linkpath with NUL", err: archive.ErrCorrupt, msg: "invalid tar header",
			build: tarOnly(func(b *tarBuilder, o string) { b.pax("linkpath", "ok\x00/../../x").symlink("l", "ok") })},
		{name: "gnu long name climbing out", entry: "../evil", err: archive.ErrUnsafeEntry,
			build: tarOnly(func(b *tarBuilder, o string) {
				b.raw(rawHeader{Name: "././@LongLink", Typeflag: tar.TypeGNULongName}, "../evil\x00").file("good", 0o644, "x")
			})},
		{name: "gnu long link climbing out", entry: "l", err: archive.ErrUnsafeEntry, msg: "leaves the root",
			build: tarOnly(func(b *tarBuilder, o string) {
				b.raw(rawHeader{Name: "././@LongLink", Typeflag: tar.TypeGNULongLink}, "../../x\x00").symlink("l", "ok")
			})},

		// Limits.
		{name: "name longer than MaxPathLength", entry: strings.Repeat("a", 65), err: archive.ErrLimitExceeded, msg: "longer than 64 bytes",
			lim:   archive.Limits{MaxPathLength: 64},
			build: tarOnly(func(b *tarBuilder, o string) { b.file(strings.Repeat("a", 65), 0o644, "x") })},
		{name: "name longer than the default limit", entry: longName, err: archive.ErrLimitExceeded, msg: "longer than 4096 bytes",
			build: tarOnly(func(b *tarBuilder, o string) { b.file(longName, 0o644, "x") })},
		{name: "symlink target longer than MaxPathLength", entry: "l", err: archive.ErrLimitExceeded,
			lim:   archive.Limits{MaxPathLength: 64},
			build: tarOnly(func(b *tarBuilder, o string) { b.symlink("l", strings.Repeat("a/", 40)) })},
		{name: "hardlink target longer than MaxPathLength", entry: "h", err: archive.ErrLimitExceeded,
			lim:   archive.Limits{MaxPathLength: 64},
			build: tarOnly(func(b *tarBuilder, o string) { b.hardlink("h", strings.Repeat("a/", 40)) })},
		{name: "name component longer than NAME_MAX", entry: strings.Repeat("n", 300), err: archive.ErrLimitExceeded, msg: "too long for the filesystem",
			build: tarOnly(func(b *tarBuilder, o string) { b.file(strings.Repeat("n", 300), 0o644, "x") })},
		{name: "too many entries", entry: "f3", err: archive.ErrLimitExceeded, msg: "more than 3 entries",
			lim: archive.Limits{MaxEntries: 3},
			build: tarOnly(func(b *tarBuilder, o string) {
				for i := range 5 {
					b.file(fmt.Sprintf("f%d", i), 0o644, "x")
				}
			})},
		{name: "too many entries counting global headers", entry: "f", err: archive.ErrLimitExceeded, msg: "more than 2 entries",
			lim: archive.Limits{MaxEntries: 2},
			build: tarOnly(func(b *tarBuilder, o string) {
				for range 2 {
					b.add(tar.Header{Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "x"}}, "")
				}
				b.file("f", 0o644, "x")
			})},
		{name: "total footprint over MaxBytes", entry: "b", err: archive.ErrLimitExceeded, msg: "more than 8191 bytes of disk",
			lim: archive.Limits{MaxBytes: 2*archive.BlockSize - 1},
			build: tarOnly(func(b *tarBuilder, o string) {
				b.file("a", 0o644, strings.Repeat("a", 60)).file("b", 0o644, strings.Repeat("b", 60))
			})},
		// Content alone is far below MaxBytes in the cases that follow.
		{name: "empty directories over MaxBytes", entry: "d9/", err: archive.ErrLimitExceeded, msg: "raise maxArtifactBytes",
			lim: archive.Limits{MaxBytes: 9 * archive.BlockSize},
			build: tarOnly(func(b *tarBuilder, o string) {
				for i := range 20 {
					b.dir(fmt.Sprintf("d%d/", i), 0o755)
				}
			})},
		{name: "empty files over MaxBytes by the directories their paths imply", entry: "a/b/c/d/e", err: archive.ErrLimitExceeded,
			msg: "more than 12288 bytes of disk", lim: archive.Limits{MaxBytes: 3 * archive.BlockSize},
			build: tarOnly(func(b *tarBuilder, o string) { b.file("a/b/c/e", 0o644, "").file("a/b/c/d/e", 0o644, "") })},
		{name: "one-byte files over MaxBytes", entry: "f3", err: archive.ErrLimitExceeded, msg: "more than 12288 bytes of disk",
			lim: archive.Limits{MaxBytes: 3 * archive.BlockSize},
			build: tarOnly(func(b *tarBuilder, o string) {
				for i := range 5 {
					b.file(fmt.Sprintf("f%d", i), 0o644, "x")
				}
			})},
		{name: "long symlink targets over MaxBytes", entry: "l2", err: archive.ErrLimitExceeded, msg: "more than 8192 bytes of disk",
			lim: archive.Limits{MaxBytes: 2 * archive.BlockSize},
			build: tarOnly(func(b *tarBuilder, o string) {
				for i := range 3 {
					b.symlink(fmt.Sprintf("l%d", i), strings.Repeat("t", 60))
				}
			})},
		{name: "implied directories over MaxEntries as inodes", entry: "a/b/c/f", err: archive.ErrLimitExceeded,
			msg: "more than 3 inodes", lim: archive.Limits{MaxEntries: 3},
			build: tarOnly(func(b *tarBuilder, o string) { b.file("a/b/c/f", 0o644, "") })},
		{name: "one file over MaxBytes", entry: "a", err: archive.ErrLimitExceeded,
			lim:   archive.Limits{MaxBytes: 100},
			build: tarOnly(func(b *tarBuilder, o string) { b.file("a", 0o644, strings.Repeat("a", 101)) })},
		{name: "oversized pax header exceeds the stream cap", err: archive.ErrLimitExceeded, msg: "headers larger than 65536 bytes",
			lim: archive.Limits{MaxBytes: 1024, MaxEntries: 4},
			build: tarOnly(func(b *tarBuilder, o string) {
				b.pax("comment", strings.Repeat("c", 200<<10)).file("f", 0o644, "x")
			})},
		{name: "symlink entry carrying data", entry: "l", err: archive.ErrUnsafeEntry, msg: "carries 5 bytes of data",
			build: tarOnly(func(b *tarBuilder, o string) {
				b.raw(rawHeader{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "x", Mode: 0o777}, "hello")
			})},
		{name: "directory entry carrying data", entry: "d/", err: archive.ErrUnsafeEntry, msg: "carries",
			build: tarOnly(func(b *tarBuilder, o string) {
				b.raw(rawHeader{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}, strings.Repeat("z", 4096))
			})},
		{name: "symlink chains over the resolution budget", err: archive.ErrLimitExceeded, msg: "steps",
			build: tarOnly(func(b *tarBuilder, o string) {
				// Each link points through the previous one and back down a
				// long path: harmless, but expensive to resolve at scale.
				long := strings.Repeat("x/", 1500)
				b.symlink("s0", ".")
				for i := 1; i <= 39; i++ {
					b.symlink(fmt.Sprintf("s%d", i), fmt.Sprintf("s%d/%s", i-1, long))
				}
				for i := range 400 {
					b.symlink(fmt.Sprintf("l%d", i), "s39/"+long)
				}
			})},
		{name: "gzip bomb: one 2 GiB file", entry: "zero", err: archive.ErrLimitExceeded, big: true, maxDur: 5 * time.Second,
			lim:   archive.Limits{MaxBytes: 10 << 20},
			build: func(t testing.TB, _ string) []byte { return bomb(t, archive.Gzip, "file") }},
		{name: "zstd bomb: one 2 GiB file", entry: "zero", err: archive.ErrLimitExceeded, big: true, maxDur: 5 * time.Second,
			lim:   archive.Limits{MaxBytes: 10 << 20},
			build: func(t testing.TB, _ string) []byte { return bomb(t, archive.Zstd, "file") }},
		{name: "gzip bomb: zero padding after the end", err: archive.ErrLimitExceeded, msg: "more than 1048576 bytes after the end of the archive", big: true, maxDur: 5 * time.Second,
			lim:   archive.Limits{MaxBytes: 10 << 20, MaxEntries: 16},
			build: func(t testing.TB, _ string) []byte { return bomb(t, archive.Gzip, "padding") }},
		{name: "zstd bomb: zero padding after the end", err: archive.ErrLimitExceeded, msg: "more than 1048576 bytes after the end of the archive", big: true, maxDur: 5 * time.Second,
			lim:   archive.Limits{MaxBytes: 10 << 20, MaxEntries: 16},
			build: func(t testing.TB, _ string) []byte { return bomb(t, archive.Zstd, "padding") }},

		// Stream integrity.
		// Read again after the end, through bufio, by the detection of
		// the compression: found by fuzzing.
		{name: "one byte", err: archive.ErrCorrupt, msg: "unexpected EOF",
			build: func(t testing.TB, _ string) []byte { return []byte("/") }},
		{name: "truncated tar, digest of the truncated bytes", entry: "blob", err: archive.ErrCorrupt, msg: "unexpected EOF",
			build: func(t testing.TB, _ string) []byte { return truncated(t, archive.None) }},
		{name: "truncated gzip, digest of the truncated bytes", err: archive.ErrCorrupt, msg: "stream ends inside a member",
			build: func(t testing.TB, _ string) []byte { return truncated(t, archive.Gzip) }},
		// gzip without TK fields (before issue 17, other tools) is
		// inflated serially, and found corrupt where it breaks.
		{name: "truncated serial gzip, digest of the truncated bytes", entry: "blob", err: archive.ErrCorrupt, msg: "unexpected EOF",
			build: func(t testing.TB, _ string) []byte {
				b := pgzipCompress(t, validTar(t))
				return b[:len(b)/2]
			}},
		{name: "truncated zstd, digest of the truncated bytes", err: archive.ErrCorrupt, msg: "unexpected EOF",
			build: func(t testing.TB, _ string) []byte { return truncated(t, archive.Zstd) }},
		{name: "truncated tar, digest of the full blob", err: archive.ErrDigestMismatch, msg: "declared",
			build:  func(t testing.TB, _ string) []byte { return truncated(t, archive.None) },
			expect: full(archive.None)},
		{name: "truncated gzip, digest of the full blob", err: archive.ErrDigestMismatch, msg: "declared",
			build:  func(t testing.TB, _ string) []byte { return truncated(t, archive.Gzip) },
			expect: full(archive.Gzip)},
		{name: "truncated zstd, digest of the full blob, size unknown", err: archive.ErrDigestMismatch, msg: "expected sha256:",
			build: func(t testing.TB, _ string) []byte { return truncated(t, archive.Zstd) },
			expect: func(t testing.TB, b []byte) archive.Expect {
				e := full(archive.Zstd)(t, b)
				e.Size = -1
				return e
			}},
		{name: "gzip without its trailer", err: archive.ErrCorrupt, msg: "stream ends inside a member",
			build: func(t testing.TB, _ string) []byte {
				b := compress(t, validTar(t), archive.Gzip)
				return b[:len(b)-8]
			}},
		{name: "serial gzip without its trailer", err: archive.ErrCorrupt, msg: "after the end of the archive",
			build: func(t testing.TB, _ string) []byte {
				b := pgzipCompress(t, validTar(t))
				return b[:len(b)-8]
			}},
		{name: "wrong digest", err: archive.ErrDigestMismatch, msg: "expected sha256:",
			build: func(t testing.TB, _ string) []byte { return compress(t, validTar(t), archive.Gzip) },
			expect: func(_ testing.TB, b []byte) archive.Expect {
				return archive.Expect{Digest: sha256Hash([]byte("something else")), Size: int64(len(b))}
			}},
		{name: "tampered content, original digest", err: archive.ErrDigestMismatch,
			build: func(t testing.TB, _ string) []byte {
				b := validTar(t)
				b[len(b)-2048] ^= 0xff // inside "blob"
				return b
			},
			expect: func(t testing.TB, _ []byte) archive.Expect { return expectOf(validTar(t)) }},
		{name: "tampered header, original digest", err: archive.ErrDigestMismatch, msg: "while extracting",
			build: func(t testing.TB, _ string) []byte {
				b := validTar(t)
				b[0] ^= 0xff // breaks the first header checksum
				return b
			},
			expect: func(t testing.TB, _ []byte) archive.Expect { return expectOf(validTar(t)) }},
		{name: "declared size smaller than the blob", err: archive.ErrDigestMismatch, msg: "longer than its declared",
			build: func(t testing.TB, _ string) []byte { return validTar(t) },
			expect: func(_ testing.TB, b []byte) archive.Expect {
				e := expectOf(b)
				e.Size--
				return e
			}},
		{name: "declared size much smaller than a gzip blob", err: archive.ErrDigestMismatch, msg: "longer than its declared",
			build: func(t testing.TB, _ string) []byte { return compress(t, validTar(t), archive.Gzip) },
			expect: func(_ testing.TB, b []byte) archive.Expect {
				e := expectOf(b)
				e.Size = 100
				return e
			}},
		{name: "declared size larger than the blob", err: archive.ErrDigestMismatch, msg: "declared",
			build: func(t testing.TB, _ string) []byte { return compress(t, validTar(t), archive.Zstd) },
			expect: func(_ testing.TB, b []byte) archive.Expect {
				e := expectOf(b)
				e.Size++
				return e
			}},
		{name: "garbage", err: archive.ErrCorrupt,
			build: func(t testing.TB, _ string) []byte { return randomBytes(4096, 7) }},
		{name: "short garbage", err: archive.ErrCorrupt,
			build: func(t testing.TB, _ string) []byte { return []byte("hello, world") }},
		{name: "gzip magic then garbage", err: archive.ErrCorrupt,
			build: func(t testing.TB, _ string) []byte { return append([]byte{0x1f, 0x8b}, randomBytes(4096, 8)...) }},
		{name: "zstd magic then garbage", err: archive.ErrCorrupt,
			build: func(t testing.TB, _ string) []byte {
				return append([]byte{0x28, 0xb5, 0x2f, 0xfd}, randomBytes(4096, 9)...)
			}},
		{name: "trailing garbage after a gzip stream", err: archive.ErrCorrupt, msg: "after the end of the archive",
			build: func(t testing.TB, _ string) []byte {
				return append(compress(t, validTar(t), archive.Gzip), "trailing garbage"...)
			}},
		{name: "trailing garbage after a zstd stream", err: archive.ErrCorrupt, msg: "after the end of the archive",
			build: func(t testing.TB, _ string) []byte {
				return append(compress(t, validTar(t), archive.Zstd), "trailing garbage"...)
			}},
		{name: "gzip stream of garbage", err: archive.ErrCorrupt,
			build: func(t testing.TB, _ string) []byte { return compress(t, randomBytes(4096, 10), archive.Gzip) }},
		{name: "trailing garbage after a serial gzip stream", err: archive.ErrCorrupt, msg: "after the end of the archive",
			build: func(t testing.TB, _ string) []byte {
				return append(pgzipCompress(t, validTar(t)), "trailing garbage"...)
			}},
	}
}

// canaries lays out, around dest = <parent>/dest, files an escaping entry
// would touch: <parent>/x and <parent>/canary beside dest, and an
// "outside" directory elsewhere holding x, a subdirectory and a symlink.
func canaries(t testing.TB, parent, outside string) {
	t.Helper()
	for p, content := range map[string]string{
		filepath.Join(parent, "x"):            "canary x",
		filepath.Join(parent, "canary"):       "canary",
		filepath.Join(outside, "x"):           "outside x",
		filepath.Join(outside, "sub", "file"): "outside sub file",
	} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("x", filepath.Join(outside, "link")); err != nil {
		t.Fatal(err)
	}
}

func TestExtractRefusesHostileArchives(t *testing.T) {
	var passwd syscall.Stat_t
	if err := syscall.Stat("/etc/passwd", &passwd); err != nil {
		t.Fatal(err)
	}
	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			if tc.big && testing.Short() {
				t.Skip("builds a 2 GiB stream")
			}
			parent, outside := tempDir(t), tempDir(t)
			dest := filepath.Join(parent, "dest")
			canaries(t, parent, outside)
			blob := tc.build(t, outside)
			want := expectOf(blob)
			if tc.expect != nil {
				want = tc.expect(t, blob)
			}
			beforeParent, beforeOutside := snapshot(t, parent, ""), snapshot(t, outside, "")

			start := time.Now()
			stats, _, err := archive.Extract(context.Background(), bytes.NewReader(blob), want, dest, tc.lim)
			elapsed := time.Since(start)

			if err == nil {
				t.Fatalf("Extract succeeded (stats %+v), want %v", stats, tc.err)
			}
			t.Logf("Extract: %v (in %v)", err, elapsed)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Extract error = %v, want %v", err, tc.err)
			}
			for _, s := range sentinels {
				if s != tc.err && errors.Is(err, s) {
					t.Errorf("Extract error %v also matches %v", err, s)
				}
			}
			entry := strings.ReplaceAll(tc.entry, "<outside>", outside)
			if entry != "" {
				if !strings.Contains(err.Error(), strconv.Quote(entry)) {
					t.Errorf("Extract error %q does not name entry %q", err, entry)
				}
				var ee *archive.EntryError
				if errors.As(err, &ee) && ee.Entry != entry && !errors.Is(tc.err, archive.ErrCorrupt) {
					t.Errorf("EntryError.Entry = %q, want %q", ee.Entry, entry)
				}
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Extract error %q does not contain %q", err, tc.msg)
			}
			if tc.maxDur > 0 && elapsed > tc.maxDur {
				t.Errorf("Extract took %v, want under %v", elapsed, tc.maxDur)
			}
			if _, err := os.Lstat(dest); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("dest exists after a failed Extract (lstat: %v)", err)
			}
			if left := stagingLeft(t, parent); len(left) > 0 {
				t.Errorf("staging left behind: %v", left)
			}
			if d := diffSnapshots(beforeParent, snapshot(t, parent, "")); d != "" {
				t.Errorf("beside dest:\n%s", d)
			}
			if d := diffSnapshots(beforeOutside, snapshot(t, outside, "")); d != "" {
				t.Errorf("outside:\n%s", d)
			}
			var after syscall.Stat_t
			if err := syscall.Stat("/etc/passwd", &after); err != nil || after.Nlink != passwd.Nlink {
				t.Errorf("/etc/passwd nlink %d -> %d (%v)", passwd.Nlink, after.Nlink, err)
			}
		})
	}
}

// goodCase is an archive Extract must accept.
type goodCase struct {
	name    string
	build   func(t testing.TB) []byte // uncompressed tar
	padding int                       // zero bytes appended after the tar before compressing
	destDir bool                      // dest exists as an empty directory
	want    map[string]string         // describe() of dest
	links   [][]string                // hardlink groups in dest
	stats   archive.Stats
}

func goodCases() []goodCase {
	manyDirs := func(t testing.TB) []byte {
		b := newTar(t).file("src/f", 0o644, "shared")
		for i := range 200 {
			b.dir(fmt.Sprintf("d%03d/", i), 0o755).file(fmt.Sprintf("d%03d/own", i), 0o600, "own")
			b.hardlink(fmt.Sprintf("d%03d/link", i), "src/f")
		}
		return b.bytes()
	}
	manyWant := map[string]string{".": "dir 0755", "src": "dir 0755", "src/f": `file 0644 "shared"`}
	manyLinks := []string{"src/f"}
	for i := range 200 {
		d := fmt.Sprintf("d%03d", i)
		manyWant[d] = "dir 0755"
		manyWant[d+"/own"] = `file 0600 "own"`
		manyWant[d+"/link"] = `file 0644 "shared"`
		manyLinks = append(manyLinks, d+"/link")
	}
	slices.Sort(manyLinks)
	return []goodCase{{
		name: "nested dirs, modes, read-only dirs, links",
		build: func(t testing.TB) []byte {
			return newTar(t).
				dir("a/", 0o755).dir("a/b/", 0o750).
				file("a/b/secret", 0o600, "secret").
				file("a/b/tool", 0o755, "#!/bin/sh\n").
				dir("a/c/", 0o711).
				symlink("a/b/l", "../c").
				symlink("a/b/self", "secret").
				symlink("top", "a/b/secret").
				symlink("dangling", "nowhere/../a").
				dir("ro/", 0o555).file("ro/f", 0o444, "ro").
				dir("ro/sub/", 0o555).file("ro/sub/g", 0o600, "g").
				file("empty", 0o644, "").
				hardlink("a/h", "a/b/secret").
				hardlink("ro/sub/h2", "ro/f").
				bytes()
		},
		want: map[string]string{
			".":          "dir 0755",
			"a":          "dir 0755",
			"a/b":        "dir 0750",
			"a/b/secret": `file 0600 "secret"`,
			"a/b/tool":   `file 0755 "#!/bin/sh\n"`,
			"a/c":        "dir 0711",
			"a/b/l":      "symlink ../c",
			"a/b/self":   "symlink secret",
			"top":        "symlink a/b/secret",
			"dangling":   "symlink nowhere/../a",
			"ro":         "dir 0555",
			"ro/f":       `file 0444 "ro"`,
			"ro/sub":     "dir 0555",
			"ro/sub/g":   `file 0600 "g"`,
			"ro/sub/h2":  `file 0444 "ro"`,
			"empty":      `file 0644 ""`,
			"a/h":        `file 0600 "secret"`,
		},
		links: [][]string{{"a/b/secret", "a/h"}, {"ro/f", "ro/sub/h2"}},
		// 5 directories, 4 non-empty files and an empty one, 4 short
		// symlinks, 2 hardlinks.
		stats: archive.Stats{Entries: 16, Bytes: int64(len("secret#!/bin/sh\nrog")), Usage: usage(5+4, 5+5+4)},
	}, {
		name: "./-prefixed GNU archive",
		build: func(t testing.TB) []byte {
			gnu := func(h tar.Header) tar.Header { h.Format = tar.FormatGNU; return h }
			return newTar(t).
				add(gnu(tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o750}), "").
				add(gnu(tar.Header{Typeflag: tar.TypeDir, Name: "./d/", Mode: 0o711}), "").
				add(gnu(tar.Header{Typeflag: tar.TypeReg, Name: "./d/f", Mode: 0o640}), "gnu").
				add(gnu(tar.Header{Typeflag: tar.TypeSymlink, Name: "./d/l", Linkname: "f"}), "").
				add(gnu(tar.Header{Typeflag: tar.TypeLink, Name: "./h", Linkname: "./d/f"}), "").
				add(gnu(tar.Header{Typeflag: tar.TypeReg, Name: "./" + strings.Repeat("long", 40), Mode: 0o644}), "long").
				bytes()
		},
		want: map[string]string{
			".": "dir 0750", "d": "dir 0711", "d/f": `file 0640 "gnu"`, "d/l": "symlink f", "h": `file 0640 "gnu"`,
			strings.Repeat("long", 40): `file 0644 "long"`,
		},
		links: [][]string{{"d/f", "h"}},
		stats: archive.Stats{Entries: 5, Bytes: 7, Usage: usage(3, 4)}, // the root entry is not counted
	}, {
		name: "pax global headers, one with a hostile path, are ignored",
		build: func(t testing.TB) []byte {
			g := func(kv ...string) tar.Header {
				return tar.Header{Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{kv[0]: kv[1]}}
			}
			return newTar(t).add(g("comment", "made by a test"), "").
				file("f", 0o644, "f").
				add(g("path", "../evil"), "").
				file("g", 0o600, "g").
				bytes()
		},
		want:  map[string]string{".": "dir 0755", "f": `file 0644 "f"`, "g": `file 0600 "g"`},
		stats: archive.Stats{Entries: 2, Bytes: 2, Usage: usage(2, 2)},
	}, {
		name:    "dest exists as an empty directory",
		destDir: true,
		build:   func(t testing.TB) []byte { return newTar(t).dir("./", 0o700).file("f", 0o640, "x").bytes() },
		want:    map[string]string{".": "dir 0700", "f": `file 0640 "x"`},
		stats:   archive.Stats{Entries: 1, Bytes: 1, Usage: usage(1, 1)},
	}, {
		name: "empty directories take a block and an inode each",
		build: func(t testing.TB) []byte {
			b := newTar(t)
			for i := range 100 {
				b.dir(fmt.Sprintf("d%02d/", i), 0o755)
			}
			return b.bytes()
		},
		want: func() map[string]string {
			m := map[string]string{".": "dir 0755"}
			for i := range 100 {
				m[fmt.Sprintf("d%02d", i)] = "dir 0755"
			}
			return m
		}(),
		stats: archive.Stats{Entries: 100, Usage: usage(100, 100)},
	}, {
		name: "a symlink target longer than 59 bytes takes a block",
		build: func(t testing.TB) []byte {
			return newTar(t).symlink("short", strings.Repeat("s", 59)).symlink("long", strings.Repeat("l", 60)).bytes()
		},
		want: map[string]string{
			".": "dir 0755", "short": "symlink " + strings.Repeat("s", 59), "long": "symlink " + strings.Repeat("l", 60),
		},
		stats: archive.Stats{Entries: 2, Usage: usage(1, 2)},
	}, {
		name:  "empty archive",
		build: func(t testing.TB) []byte { return newTar(t).bytes() },
		want:  map[string]string{".": "dir 0755"},
	}, {
		name: "implicit directories get 0755, explicit ones their mode",
		build: func(t testing.TB) []byte {
			return newTar(t).file("x/y/f", 0o644, "f").file("p/q", 0o644, "q").dir("p/", 0o751).bytes()
		},
		want: map[string]string{
			".": "dir 0755", "x": "dir 0755", "x/y": "dir 0755", "x/y/f": `file 0644 "f"`,
			"p": "dir 0751", "p/q": `file 0644 "q"`,
		},
		stats: archive.Stats{Entries: 3, Bytes: 2, Usage: usage(5, 5)}, // x and x/y are implied
	}, {
		name: "setuid, setgid and sticky bits are dropped",
		build: func(t testing.TB) []byte {
			return newTar(t).file("suid", 0o4755, "s").dir("sgid/", 0o2775).dir("tmp/", 0o1777).file("all", 0o7777, "a").bytes()
		},
		want: map[string]string{
			".": "dir 0755", "suid": `file 0755 "s"`, "sgid": "dir 0775", "tmp": "dir 0777", "all": `file 0777 "a"`,
		},
		stats: archive.Stats{Entries: 4, Bytes: 2, Usage: usage(4, 4)},
	}, {
		name: "safe symlink chains",
		build: func(t testing.TB) []byte {
			return newTar(t).symlink("s", ".").symlink("l", "s/x").dir("d/", 0o755).
				symlink("d/up", "..").symlink("via", "d/up/d").file("x", 0o644, "x").bytes()
		},
		want: map[string]string{
			".": "dir 0755", "s": "symlink .", "l": "symlink s/x", "d": "dir 0755", "d/up": "symlink ..",
			"via": "symlink d/up/d", "x": `file 0644 "x"`,
		},
		stats: archive.Stats{Entries: 6, Bytes: 1, Usage: usage(2, 6)}, // short symlinks take no block
	}, {
		name: "NUL ends a ustar name",
		build: func(t testing.TB) []byte {
			return newTar(t).raw(rawHeader{Name: "f\x00/../../evil", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}, "f").bytes()
		},
		want:  map[string]string{".": "dir 0755", "f": `file 0644 "f"`},
		stats: archive.Stats{Entries: 1, Bytes: 1, Usage: usage(1, 1)},
	}, {
		name: "repeated directory entries",
		build: func(t testing.TB) []byte {
			return newTar(t).dir("d/", 0o755).file("d/f", 0o644, "f").dir("./d", 0o750).bytes()
		},
		want:  map[string]string{".": "dir 0755", "d": "dir 0750", "d/f": `file 0644 "f"`},
		stats: archive.Stats{Entries: 3, Bytes: 1, Usage: usage(2, 2)}, // d counts once
	}, {
		name:    "zero blocks after the end of the archive",
		padding: 9 << 10,
		build:   func(t testing.TB) []byte { return newTar(t).file("f", 0o644, "f").bytes() },
		want:    map[string]string{".": "dir 0755", "f": `file 0644 "f"`},
		stats:   archive.Stats{Entries: 1, Bytes: 1, Usage: usage(1, 1)},
	}, {
		// More directories than Extract keeps descriptors for, with
		// hardlinks whose source directory must survive the eviction.
		name:  "many directories with hardlinks",
		build: manyDirs,
		want:  manyWant,
		links: [][]string{manyLinks},
		stats: archive.Stats{Entries: 1 + 200*3, Bytes: 6 + 200*3, Usage: usage(2+200*2, 2+200*2)}, // src is implied
	}}
}

func TestExtractAcceptsValidArchives(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	for _, tc := range goodCases() {
		for _, c := range []archive.Compression{archive.None, archive.Gzip, archive.Zstd} {
			t.Run(tc.name+"/"+string(c), func(t *testing.T) {
				parent := tempDir(t)
				dest := filepath.Join(parent, "dest")
				if tc.destDir {
					if err := os.Mkdir(dest, 0o755); err != nil {
						t.Fatal(err)
					}
				}
				data := append(tc.build(t), make([]byte, tc.padding)...)
				blob := compress(t, data, c)
				stats, gotComp, err := archive.Extract(context.Background(), bytes.NewReader(blob), expectOf(blob), dest, archive.Limits{})
				if err != nil {
					t.Fatalf("Extract: %v", err)
				}
				if gotComp != c {
					t.Errorf("compression = %q, want %q", gotComp, c)
				}
				if stats != tc.stats {
					t.Errorf("stats = %+v, want %+v", stats, tc.stats)
				}
				if u, err := archive.Measure(context.Background(), dest, archive.Limits{}); err != nil || u != stats.Usage {
					t.Errorf("Measure = %+v, %v; want Extract's %+v", u, err, stats.Usage)
				}
				if d := diffTrees(tc.want, describe(t, dest)); d != "" {
					t.Errorf("extracted tree:\n%s", d)
				}
				if got := linkGroups(t, dest); fmt.Sprint(got) != fmt.Sprint(tc.links) {
					t.Errorf("hardlink groups = %v, want %v", got, tc.links)
				}
				if left := stagingLeft(t, parent); len(left) > 0 {
					t.Errorf("staging left behind: %v", left)
				}
				entries, err := os.ReadDir(parent)
				if err != nil || len(entries) != 1 || entries[0].Name() != "dest" {
					t.Errorf("parent holds %v (%v), want only dest", entries, err)
				}
			})
		}
	}
}

func TestExtractRefusesNonEmptyDest(t *testing.T) {
	parent := tempDir(t)
	dest := filepath.Join(parent, "dest")
	if err := os.MkdirAll(filepath.Join(dest, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, parent, "")
	blob := newTar(t).file("f", 0o644, "f").bytes()
	_, _, err := archive.Extract(context.Background(), bytes.NewReader(blob), expectOf(blob), dest, archive.Limits{})
	if err == nil || !strings.Contains(err.Error(), "is not empty") {
		t.Fatalf("Extract into a non-empty dest: %v, want a not-empty error", err)
	}
	if d := diffSnapshots(before, snapshot(t, parent, "")); d != "" {
		t.Errorf("parent changed:\n%s", d)
	}
}

func TestExtractCancelled(t *testing.T) {
	parent := tempDir(t)
	dest := filepath.Join(parent, "dest")
	blob := compress(t, validTar(t), archive.Gzip)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := archive.Extract(ctx, bytes.NewReader(blob), expectOf(blob), dest, archive.Limits{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Extract with a cancelled context: %v, want context.Canceled", err)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("parent holds %v after a cancelled Extract", entries)
	}
}

func TestExtractRejectsBadExpect(t *testing.T) {
	parent := tempDir(t)
	blob := validTar(t)
	want := expectOf(blob)
	want.Digest.Algorithm = "sha512"
	_, _, err := archive.Extract(context.Background(), bytes.NewReader(blob), want, filepath.Join(parent, "dest"), archive.Limits{})
	if err == nil || !strings.Contains(err.Error(), "only sha256") {
		t.Fatalf("Extract with a sha512 digest: %v, want an only-sha256 error", err)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("parent holds %v", entries)
	}
}

func TestExtractFile(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	content := randomBytes(100<<10, 3)
	cases := []struct {
		name    string
		file    string
		expect  func(archive.Expect) archive.Expect
		lim     archive.Limits
		err     error
		errText string
	}{
		{name: "good", file: "model.bin"},
		{name: "dotdot", file: "../x", err: archive.ErrUnsafeEntry},
		{name: "nested", file: "a/b", err: archive.ErrUnsafeEntry},
		{name: "empty", file: "", err: archive.ErrUnsafeEntry},
		{name: "dot", file: ".", err: archive.ErrUnsafeEntry},
		{name: "dotdot alone", file: "..", err: archive.ErrUnsafeEntry},
		{name: "NUL", file: "a\x00b", err: archive.ErrUnsafeEntry},
		{name: "too long", file: strings.Repeat("n", 256), err: archive.ErrUnsafeEntry},
		{name: "digest mismatch", file: "f", err: archive.ErrDigestMismatch, errText: "expected sha256:",
			expect: func(e archive.Expect) archive.Expect { e.Digest = sha256Hash(nil); return e }},
		{name: "declared size smaller", file: "f", err: archive.ErrDigestMismatch, errText: "longer than its declared",
			expect: func(e archive.Expect) archive.Expect { e.Size--; return e }},
		{name: "declared size larger", file: "f", err: archive.ErrDigestMismatch, errText: "declared",
			expect: func(e archive.Expect) archive.Expect { e.Size++; return e }},
		{name: "over MaxBytes", file: "f", err: archive.ErrLimitExceeded, lim: archive.Limits{MaxBytes: 1000}},
		{name: "footprint at MaxBytes", file: "f", lim: archive.Limits{MaxBytes: 100 << 10}},
		{name: "footprint over MaxBytes", file: "f", err: archive.ErrLimitExceeded, errText: "more than 102399 bytes of disk",
			lim: archive.Limits{MaxBytes: 100<<10 - 1}},
		{name: "footprint over MaxBytes, size unknown", file: "f", err: archive.ErrLimitExceeded, errText: "raise maxArtifactBytes",
			lim:    archive.Limits{MaxBytes: 100<<10 - 1},
			expect: func(e archive.Expect) archive.Expect { e.Size = -1; return e }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parent := tempDir(t)
			dest := filepath.Join(parent, "dest")
			want := expectOf(content)
			if tc.expect != nil {
				want = tc.expect(want)
			}
			stats, err := archive.ExtractFile(context.Background(), bytes.NewReader(content), want, dest, tc.file, tc.lim)
			if tc.err == nil {
				if err != nil {
					t.Fatalf("ExtractFile: %v", err)
				}
				if stats != (archive.Stats{Entries: 1, Bytes: int64(len(content)), Usage: usage(len(content)/archive.BlockSize, 1)}) {
					t.Errorf("stats = %+v", stats)
				}
				got := describe(t, dest)
				wantTree := map[string]string{".": "dir 0755", tc.file: fmt.Sprintf("file 0644 len=%d sha256:%s", len(content), expectOf(content).Digest.Hex)}
				if d := diffTrees(wantTree, got); d != "" {
					t.Errorf("extracted:\n%s", d)
				}
				return
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("ExtractFile(%q) = %v, want %v", tc.file, err, tc.err)
			}
			if tc.err == archive.ErrUnsafeEntry && !strings.Contains(err.Error(), strconv.Quote(tc.file)) {
				t.Errorf("error %q does not name %q", err, tc.file)
			}
			if tc.errText != "" && !strings.Contains(err.Error(), tc.errText) {
				t.Errorf("error %q does not contain %q", err, tc.errText)
			}
			if entries, _ := os.ReadDir(parent); len(entries) != 0 {
				t.Errorf("parent holds %v after a failed ExtractFile", entries)
			}
		})
	}
}

// roundTripTree builds a tree exercising every supported kind of entry.
func roundTripTree(t testing.TB, root string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write := func(name string, data []byte, mode os.FileMode) {
		p := filepath.Join(root, name)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, data, 0o600))
		must(os.Chmod(p, mode))
	}
	write("README", []byte("hello\n"), 0o644)
	write("empty", nil, 0o600)
	write("bin/run", []byte("#!/bin/sh\nexit 0\n"), 0o755)
	write("data/large.bin", randomBytes(3<<20+17, 4), 0o644)
	write("data/nested/deeper/deepest/leaf", []byte("leaf"), 0o640)
	write("data/nested/empty-too", nil, 0o444)
	write("ro/inside", []byte("inside"), 0o444)
	must(os.MkdirAll(filepath.Join(root, "empty-dir"), 0o755))
	for i := range 150 {
		write(fmt.Sprintf("many/%03d/f", i), []byte(fmt.Sprint(i)), 0o644)
	}
	must(os.Link(filepath.Join(root, "README"), filepath.Join(root, "data/nested/readme-link")))
	must(os.Link(filepath.Join(root, "README"), filepath.Join(root, "many/149/readme-link")))
	must(os.Link(filepath.Join(root, "data/large.bin"), filepath.Join(root, "large-link")))
	must(os.Symlink("../README", filepath.Join(root, "bin/readme")))
	must(os.Symlink("data/nested", filepath.Join(root, "nested")))
	must(os.Symlink("deeper/deepest/../../../large.bin", filepath.Join(root, "data/nested/up")))
	must(os.Symlink("missing", filepath.Join(root, "dangling")))
	must(os.Chmod(filepath.Join(root, "ro"), 0o555))
	must(os.Chmod(filepath.Join(root, "data/nested/deeper"), 0o711))
	must(os.Chmod(root, 0o750))
}

func TestRoundTrip(t *testing.T) {
	src := filepath.Join(tempDir(t), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	roundTripTree(t, src)
	var tarball bytes.Buffer
	packStats, err := archive.Pack(context.Background(), src, &tarball)
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	wantTree := describe(t, src)
	wantTree["."] = "dir 0755" // Pack does not record the root
	wantLinks := linkGroups(t, src)
	if len(wantLinks) != 2 {
		t.Fatalf("test tree has hardlink groups %v, want 2", wantLinks)
	}
	for _, c := range []archive.Compression{archive.None, archive.Gzip, archive.Zstd} {
		t.Run(string(c), func(t *testing.T) {
			blob := compress(t, tarball.Bytes(), c)
			dest := filepath.Join(tempDir(t), "dest")
			stats, gotComp, err := archive.Extract(context.Background(), bytes.NewReader(blob), expectOf(blob), dest, archive.Limits{})
			if err != nil {
				t.Fatalf("Extract: %v", err)
			}
			if gotComp != c || stats != packStats {
				t.Errorf("Extract = %+v, %q; want %+v, %q", stats, gotComp, packStats, c)
			}
			if u, err := archive.Measure(context.Background(), src, archive.Limits{}); err != nil || u != packStats.Usage {
				t.Errorf("Measure = %+v, %v; want Pack's %+v", u, err, packStats.Usage)
			}
			if d := diffTrees(wantTree, describe(t, dest)); d != "" {
				t.Errorf("round trip changed the tree:\n%s", d)
			}
			if got := linkGroups(t, dest); fmt.Sprint(got) != fmt.Sprint(wantLinks) {
				t.Errorf("hardlink groups = %v, want %v", got, wantLinks)
			}
			var again bytes.Buffer
			if _, err := archive.Pack(context.Background(), dest, &again); err != nil {
				t.Fatalf("Pack extracted tree: %v", err)
			}
			if !bytes.Equal(again.Bytes(), tarball.Bytes()) {
				t.Errorf("packing the extracted tree gives different bytes")
			}
		})
	}
}

// TestExtractConcurrent runs extractions in parallel, each of a tree with
// more directories than Extract caches, to catch descriptor mix-ups.
func TestExtractConcurrent(t *testing.T) {
	src := filepath.Join(tempDir(t), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	roundTripTree(t, src)
	var tarball bytes.Buffer
	if _, err := archive.Pack(context.Background(), src, &tarball); err != nil {
		t.Fatal(err)
	}
	blob := compress(t, tarball.Bytes(), archive.Gzip)
	parent := tempDir(t)
	n := max(4, runtime.GOMAXPROCS(0))
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			dest := filepath.Join(parent, fmt.Sprint(i))
			_, _, errs[i] = archive.Extract(context.Background(), bytes.NewReader(blob), expectOf(blob), dest, archive.Limits{})
		})
	}
	wg.Wait()
	want := describe(t, src)
	want["."] = "dir 0755"
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Extract %d: %v", i, err)
		}
		if d := diffTrees(want, describe(t, filepath.Join(parent, fmt.Sprint(i)))); d != "" {
			t.Errorf("extraction %d:\n%s", i, d)
		}
	}
}

func openFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return len(entries)
}

// TestExtractClosesDescriptors extracts, successfully or not, archives
// that make Extract open many directories, and counts open descriptors.
func TestExtractClosesDescriptors(t *testing.T) {
	var blobs [][]byte
	for _, tc := range goodCases() {
		if tc.name == "many directories with hardlinks" || strings.HasPrefix(tc.name, "nested dirs") {
			data := tc.build(t)
			blobs = append(blobs, data, compress(t, data, archive.Gzip), compress(t, data, archive.Zstd))
		}
	}
	for _, tc := range hostileCases() {
		if strings.HasPrefix(tc.name, "hardlink to a symlink") || strings.HasPrefix(tc.name, "truncated gzip, digest of the truncated") {
			blobs = append(blobs, tc.build(t, "/nonexistent"))
		}
	}
	if len(blobs) != 8 {
		t.Fatalf("found %d archives, want 8", len(blobs))
	}
	parent := tempDir(t)
	failures := 0
	extractAll := func() {
		for _, blob := range blobs {
			dest := filepath.Join(parent, "dest")
			if _, _, err := archive.Extract(context.Background(), bytes.NewReader(blob), expectOf(blob), dest, archive.Limits{}); err != nil {
				failures++
			}
			if _, err := archive.ExtractFile(context.Background(), bytes.NewReader(blob), expectOf(blob), dest+"-file", "f", archive.Limits{}); err != nil {
				t.Fatal(err)
			}
			for _, d := range []string{dest, dest + "-file"} {
				makeRemovable(d)
				if err := os.RemoveAll(d); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	extractAll() // warm up whatever the runtime opens lazily
	before := openFDs(t)
	extractAll()
	extractAll()
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open before, %d after", before, after)
	}
	if failures != 6 {
		t.Errorf("%d extractions failed, want the 2 hostile ones thrice", failures)
	}
}

// TestExtractDeepDirectoriesAreCheap alternates entries between two
// directories 1,000 levels deep, more than the descriptor cache holds: each
// miss must cost one openat2, not a walk from the root (about 15 ms an
// entry, 12 s in all, before). Most of what remains is mkdir.
func TestExtractDeepDirectoriesAreCheap(t *testing.T) {
	a, b := strings.Repeat("a/", 1000), strings.Repeat("b/", 1000)
	tb := newTar(t)
	for i := range 400 {
		tb.file(fmt.Sprintf("%sf%d", a, i), 0o644, "")
		tb.file(fmt.Sprintf("%sf%d", b, i), 0o644, "")
	}
	dest := extractWithin(t, tb.bytes(), 5*time.Second)
	if _, err := os.Stat(filepath.Join(dest, b, "f399")); err != nil {
		t.Error(err)
	}
}

// extractWithin extracts the gzip of archive into a new directory, which it
// returns, and fails the test if that takes longer than limit: a bound
// against a hostile archive's cost, far above the expected time.
func extractWithin(t *testing.T, archiveBytes []byte, limit time.Duration) string {
	t.Helper()
	blob := compress(t, archiveBytes, archive.Gzip)
	dest := filepath.Join(tempDir(t), "dest")
	start := time.Now()
	stats, _, err := archive.Extract(context.Background(), bytes.NewReader(blob), expectOf(blob), dest, archive.Limits{})
	if err != nil {
		t.Fatalf("Extract: %v", err)
	}
	if elapsed := time.Since(start); elapsed > limit {
		t.Errorf("Extract of %d entries took %v, want well under %v", stats.Entries, elapsed, limit)
	}
	return dest
}

// TestExtractDeepSymlinkTargetsAreCheap extracts symlinks whose targets
// have thousands of components, going through an existing directory 200
// deep and on through missing ones: checking them must not take time
// quadratic in the target length (30 ms a link, 10 s here, before the fix).
func TestExtractDeepSymlinkTargetsAreCheap(t *testing.T) {
	b := newTar(t).file(strings.Repeat("a/", 200)+"f", 0o644, "")
	target := strings.Repeat("a/", 2047) + "a"
	for i := range 150 {
		b.symlink(fmt.Sprintf("l%d", i), target)
		b.symlink(fmt.Sprintf("m%d", i), "m"+target[1:]) // under a missing "m"
	}
	dest := extractWithin(t, b.bytes(), 5*time.Second)
	if got, err := os.Readlink(filepath.Join(dest, "l149")); err != nil || got != target {
		t.Errorf("l149 -> %.20q... (%v)", got, err)
	}
}

// TestExtractModes: the archive's permission bits are kept by default;
// ReadOnlyModes makes every entry readable and none writable, keeping
// only whether a file is executable.
func TestExtractModes(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	blob := newTar(t).dir("./", 0o750).dir("private/", 0o700).dir("open/", 0o777).
		file("private/key", 0o600, "secret").file("run.sh", 0o700, "#!/bin/sh").
		file("group-exec", 0o610, "x").file("open/any", 0o666, "any").
		file("implicit/f", 0o640, "f").hardlink("private/key.link", "private/key").bytes()
	for _, tc := range []struct {
		name  string
		modes archive.Modes
		want  map[string]string
	}{
		{"archive modes", archive.ArchiveModes, map[string]string{
			".": "dir 0750", "private": "dir 0700", "open": "dir 0777", "implicit": "dir 0755",
			"private/key": "file 0600", "private/key.link": "file 0600", "run.sh": "file 0700",
			"group-exec": "file 0610", "open/any": "file 0666", "implicit/f": "file 0640"}},
		{"read-only modes", archive.ReadOnlyModes, map[string]string{
			".": "dir 0555", "private": "dir 0555", "open": "dir 0555", "implicit": "dir 0555",
			"private/key": "file 0444", "private/key.link": "file 0444", "run.sh": "file 0555",
			"group-exec": "file 0555", "open/any": "file 0444", "implicit/f": "file 0444"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := filepath.Join(tempDir(t), "dest")
			if _, _, err := archive.Extract(context.Background(), bytes.NewReader(blob), expectOf(blob), dest, archive.Limits{}, archive.WithModes(tc.modes)); err != nil {
				t.Fatal(err)
			}
			for name, want := range tc.want {
				st, err := os.Lstat(filepath.Join(dest, name))
				if err != nil {
					t.Fatal(err)
				}
				kind := "file"
				if st.IsDir() {
					kind = "dir"
				}
				if got := fmt.Sprintf("%s %04o", kind, st.Mode().Perm()); got != want {
					t.Errorf("%s: %s, want %s", name, got, want)
				}
			}
		})
	}
	t.Run("single file", func(t *testing.T) {
		dest := filepath.Join(tempDir(t), "dest")
		content := []byte("report")
		if _, err := archive.ExtractFile(context.Background(), bytes.NewReader(content), expectOf(content), dest, "r.xml", archive.Limits{}, archive.WithModes(archive.ReadOnlyModes)); err != nil {
			t.Fatal(err)
		}
		if d := diffTrees(map[string]string{".": "dir 0555", "r.xml": `file 0444 "report"`}, describe(t, dest)); d != "" {
			t.Errorf("extracted:\n%s", d)
		}
	})
}
