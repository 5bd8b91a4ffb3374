package archive_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
)

// sha256Hash returns the v1.Hash of b.
func sha256Hash(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// expectOf returns the exact Expect of blob b.
func expectOf(b []byte) archive.Expect {
	return archive.Expect{Digest: sha256Hash(b), Size: int64(len(b))}
}

// compress compresses data with c through the package's own compressor.
func compress(t testing.TB, data []byte, c archive.Compression) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := archive.NewCompressor(&buf, c)
	if err != nil {
		t.Fatalf("NewCompressor(%s): %v", c, err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("compress %s: %v", c, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close %s compressor: %v", c, err)
	}
	return buf.Bytes()
}

// rawHeader is a ustar header block written without any validation, to
// craft what archive/tar's Writer refuses to produce (PAX and GNU long-name
// meta headers, NULs, trailing slashes on files...).
type rawHeader struct {
	Name     string
	Linkname string
	Typeflag byte
	Mode     int64
	Size     int64
}

func (h rawHeader) block() []byte {
	b := make([]byte, 512)
	octal := func(field []byte, v int64) {
		copy(field, fmt.Sprintf("%0*o", len(field)-1, v))
	}
	copy(b[0:100], h.Name)
	octal(b[100:108], h.Mode)
	octal(b[108:116], 0)
	octal(b[116:124], 0)
	octal(b[124:136], h.Size)
	octal(b[136:148], 0)
	b[156] = h.Typeflag
	copy(b[157:257], h.Linkname)
	copy(b[257:265], "ustar\x0000")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// paxRecord formats one PAX extended header record, "<len> key=value\n".
func paxRecord(key, value string) string {
	body := " " + key + "=" + value + "\n"
	n := len(body)
	for size := n + len(fmt.Sprint(n)); ; size++ {
		if size == n+len(fmt.Sprint(size)) {
			return fmt.Sprint(size) + body
		}
	}
}

// tarBuilder writes an archive, mixing archive/tar headers with raw blocks.
type tarBuilder struct {
	t   testing.TB
	buf bytes.Buffer
	tw  *tar.Writer
}

func newTar(t testing.TB) *tarBuilder {
	b := &tarBuilder{t: t}
	b.tw = tar.NewWriter(&b.buf)
	return b
}

// add writes h and body through archive/tar. For regular files a zero Size
// is set from body.
func (b *tarBuilder) add(h tar.Header, body string) *tarBuilder {
	b.t.Helper()
	if (h.Typeflag == tar.TypeReg || h.Typeflag == 0) && h.Size == 0 {
		h.Size = int64(len(body))
	}
	if err := b.tw.WriteHeader(&h); err != nil {
		b.t.Fatalf("WriteHeader(%+v): %v", h, err)
	}
	if body != "" {
		if _, err := io.WriteString(b.tw, body); err != nil {
			b.t.Fatalf("write %q: %v", h.Name, err)
		}
	}
	return b
}

func (b *tarBuilder) file(name string, mode int64, body string) *tarBuilder {
	b.t.Helper()
	return b.add(tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, body)
}

func (b *tarBuilder) dir(name string, mode int64) *tarBuilder {
	b.t.Helper()
	return b.add(tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}, "")
}

func (b *tarBuilder) symlink(name, target string) *tarBuilder {
	b.t.Helper()
	return b.add(tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}, "")
}

func (b *tarBuilder) hardlink(name, target string) *tarBuilder {
	b.t.Helper()
	return b.add(tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}, "")
}

// raw writes a crafted header block followed by body padded to a block.
func (b *tarBuilder) raw(h rawHeader, body string) *tarBuilder {
	b.t.Helper()
	if err := b.tw.Flush(); err != nil {
		b.t.Fatalf("flush: %v", err)
	}
	if h.Size == 0 {
		h.Size = int64(len(body))
	}
	b.buf.Write(h.block())
	b.buf.WriteString(body)
	if pad := len(body) % 512; pad != 0 {
		b.buf.Write(make([]byte, 512-pad))
	}
	return b
}

// pax writes a raw PAX extended header ('x') that applies to the next entry.
func (b *tarBuilder) pax(kv ...string) *tarBuilder {
	b.t.Helper()
	var recs strings.Builder
	for i := 0; i < len(kv); i += 2 {
		recs.WriteString(paxRecord(kv[i], kv[i+1]))
	}
	return b.raw(rawHeader{Name: "PaxHeaders/x", Typeflag: tar.TypeXHeader, Mode: 0o644, Size: int64(recs.Len())}, recs.String())
}

// bytes ends the archive and returns it.
func (b *tarBuilder) bytes() []byte {
	b.t.Helper()
	if err := b.tw.Close(); err != nil {
		b.t.Fatalf("close tar: %v", err)
	}
	return bytes.Clone(b.buf.Bytes())
}

// fileState is what a snapshot records about one path.
type fileState struct {
	Mode   uint32 // st_mode, type and permission bits
	Size   int64
	Nlink  uint64
	Uid    uint32
	Hash   string // regular files
	Target string // symlinks
}

// snapshot records every path under root (root included), except the
// subtree skip. Links are not followed.
func snapshot(t testing.TB, root, skip string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if skip != "" && p == skip {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		fsn := fileState{Mode: st.Mode, Size: st.Size, Nlink: uint64(st.Nlink), Uid: st.Uid}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			fsn.Hash = hex.EncodeToString(s[:])
		case syscall.S_IFLNK:
			if fsn.Target, err = os.Readlink(p); err != nil {
				return err
			}
		case syscall.S_IFDIR:
			// Size and link count change with the entries, which are
			// compared anyway.
			fsn.Size, fsn.Nlink = 0, 0
		}
		out[p] = fsn
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return out
}

// diffSnapshots describes how after differs from before, "" when equal.
func diffSnapshots(before, after map[string]fileState) string {
	var diffs []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("removed %s", p))
		case a != b:
			diffs = append(diffs, fmt.Sprintf("changed %s: %+v -> %+v", p, b, a))
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("new %s: %+v", p, a))
		}
	}
	slices.Sort(diffs)
	return strings.Join(diffs, "\n")
}

// describe returns a one-line description of every path under root, keyed
// by its slash-separated path relative to root ("." for root itself):
// "dir 0755", "file 0644 \"content\"" (or a sha256 for long content),
// "symlink target", or "other <mode>". Symlink modes are not described.
func describe(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		perm := st.Mode & 0o7777
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			out[rel] = fmt.Sprintf("dir %04o", perm)
		case syscall.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if len(b) <= 64 {
				out[rel] = fmt.Sprintf("file %04o %q", perm, b)
			} else {
				out[rel] = fmt.Sprintf("file %04o len=%d sha256:%x", perm, len(b), sha256.Sum256(b))
			}
		case syscall.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "symlink " + target
		default:
			out[rel] = fmt.Sprintf("other %#o", st.Mode)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("describe %s: %v", root, err)
	}
	return out
}

// diffTrees describes how got differs from want, "" when equal.
func diffTrees(want, got map[string]string) string {
	var diffs []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("missing %s (want %s)", p, w))
		case g != w:
			diffs = append(diffs, fmt.Sprintf("%s: got %s, want %s", p, g, w))
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("unexpected %s: %s", p, g))
		}
	}
	slices.Sort(diffs)
	return strings.Join(diffs, "\n")
}

// linkGroups returns the sorted groups of regular-file paths under root
// that share an inode, only groups of two or more.
func linkGroups(t testing.TB, root string) [][]string {
	t.Helper()
	byIno := map[uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		byIno[st.Ino] = append(byIno[st.Ino], filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	var groups [][]string
	for _, g := range byIno {
		if len(g) > 1 {
			slices.Sort(g)
			groups = append(groups, g)
		}
	}
	slices.SortFunc(groups, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	return groups
}

// stagingLeft lists staging directories Extract may have left in parent.
func stagingLeft(t testing.TB, parent string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(parent, ".*.staging-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tempDir is t.TempDir, made removable even when the test leaves
// read-only directories in it and does not run as root.
func tempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
	})
	return dir
}

// zeroReader reads zeros forever.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// usage is the Usage of a tree whose entries take blocks blocks of disk and
// inodes inodes.
func usage(blocks, inodes int) archive.Usage {
	return archive.Usage{Bytes: int64(blocks) * archive.BlockSize, Inodes: int64(inodes)}
}
