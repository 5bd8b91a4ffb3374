package chunked

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
)

// ErrCorrupt marks a chunk whose bytes do not match its digest, or a pack
// that ends early.
var ErrCorrupt = errors.New("corrupt chunked artifact")

// OpenPack returns the stored bytes of pack i, from its first byte.
type OpenPack func(ctx context.Context, i int) (io.ReadCloser, error)

// Local gives chunks a node holds already, e.g. in the trees of earlier
// versions of an artifact: Chunk fills p, of the chunk's size, with its
// bytes and reports whether it could. What it gives is checked against
// the digest like any chunk; a mismatch is fetched instead.
type Local interface {
	Chunk(digest string, p []byte) bool
}

// LocalFiles is what a Local may also offer: whole files of trees
// assembled before. File returns the path of a regular file whose content
// is exactly the chunks whose digests' FileKey is key, and its mode;
// Assemble links it into the new tree (a hardlink: no data copied) when
// the size and mode match what the index says. Such trees must be as
// trusted as the cache they are in: their files are not hashed again.
type LocalFiles interface {
	File(key string) (path string, ok bool)
}

// FileKey names the content of a file by its chunks' digests, for
// LocalFiles.
func FileKey(digests []string) string {
	h := sha256.New()
	for _, d := range digests {
		h.Write([]byte(d))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (ix *Index) fileKey(e Entry) string {
	digests := make([]string, len(e.Chunks))
	for i, ci := range e.Chunks {
		digests[i] = ix.Chunks[ci].Digest
	}
	return FileKey(digests)
}

// Location is where a chunk's bytes are in an assembled tree.
type Location struct {
	Path         string
	Offset, Size int64
}

// Contents says where the chunks and files of an assembled tree are, for
// a later Assemble's Local.
type Contents struct {
	// Chunks: where each chunk is first found, by digest.
	Chunks map[string]Location
	// Files: a file's path by its FileKey (the files with content).
	Files map[string]string
}

// Contents returns what the tree ix describes holds, and where.
func (ix *Index) Contents() *Contents {
	c := &Contents{Chunks: make(map[string]Location, len(ix.Chunks)), Files: map[string]string{}}
	for _, e := range ix.Entries {
		if e.Type != entryFile || len(e.Chunks) == 0 {
			continue
		}
		c.Files[ix.fileKey(e)] = e.Path
		var off int64
		for _, ci := range e.Chunks {
			ch := ix.Chunks[ci]
			if _, ok := c.Chunks[ch.Digest]; !ok {
				c.Chunks[ch.Digest] = Location{Path: e.Path, Offset: off, Size: ch.Size}
			}
			off += ch.Size
		}
	}
	return c
}

// Tree is a Local and LocalFiles over a tree assembled before into Dir,
// whose Contents are C (e.g. an earlier version pulled by the CLI). Its
// files are read through an os.Root of Dir.
type Tree struct {
	Dir string
	C   *Contents
}

// Chunk implements Local.
func (t Tree) Chunk(digest string, p []byte) bool {
	loc, ok := t.C.Chunks[digest]
	if !ok {
		return false
	}
	root, err := os.OpenRoot(t.Dir)
	if err != nil {
		return false
	}
	defer root.Close()
	return loc.Read(root, p)
}

// Read fills p with the chunk at l in the tree root holds, and reports
// whether it could: p must be the chunk's size.
func (l Location) Read(root *os.Root, p []byte) bool {
	if l.Size != int64(len(p)) {
		return false
	}
	f, err := root.Open(l.Path)
	if err != nil {
		return false
	}
	defer f.Close()
	_, err = f.ReadAt(p, l.Offset)
	return err == nil
}

// File implements LocalFiles.
func (t Tree) File(key string) (string, bool) {
	p, ok := t.C.Files[key]
	return filepath.Join(t.Dir, filepath.FromSlash(p)), ok
}

// Assemble writes the tree ix (from Parse, or Build) describes into dest,
// which must not exist: each chunk read in turn from the packs open
// returns, decompressed, checked against its digest and size, and only
// then written; a repeated chunk is copied from where it was first
// written. With local (which may be nil), a chunk local has is not
// fetched, a pack none of whose needed chunks is missing is not opened at
// all, and a file LocalFiles offers whole is linked. It returns the
// stored bytes fetched. Everything is created inside dest through an
// os.Root, so no name or link can lead outside it. Files and directories
// get their modes once written, as modes gives them
// (archive.ReadOnlyModes for a node's cache; a directory the index only
// implies gets 0755's). On error dest is removed. Not safe for concurrent
// use on the same dest.
func Assemble(ctx context.Context, ix *Index, dest string, open OpenPack, modes archive.Modes, local Local) (fetched int64, err error) {
	if err := os.Mkdir(dest, 0o700); err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dest)
		}
	}()
	root, err := os.OpenRoot(dest)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	a := &assembler{ctx: ctx, ix: ix, root: root, open: open, at: make([]location, len(ix.Chunks)), modes: modes, local: local,
		made: map[string]bool{}}
	if ix.Compression == CompressionZstd {
		if a.dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxChunkSize)); err != nil {
			return 0, err
		}
		defer a.dec.Close()
	}
	defer a.closePack()
	var dirs []Entry
	for _, e := range ix.Entries {
		if err := ctx.Err(); err != nil {
			return a.fetched, err
		}
		switch e.Type {
		case entryDir:
			err = a.parent(e.Path + "/")
			dirs = append(dirs, e)
		case entrySymlink:
			err = a.parent(e.Path)
			if err == nil {
				err = root.Symlink(e.Target, e.Path)
			}
		case entryHardlink:
			err = a.parent(e.Path)
			if err == nil {
				err = root.Link(e.Target, e.Path)
			}
		case entryFile:
			err = a.file(e)
		}
		if err != nil {
			return a.fetched, fmt.Errorf("assemble %q: %w", e.Path, err)
		}
	}
	if err := a.endPack(); err != nil {
		return a.fetched, err
	}
	// Directories last, deepest first, so that none is read-only while
	// something is written into it; the root as a tar extractor leaves it.
	for _, d := range dirs {
		delete(a.made, d.Path)
	}
	for d := range a.made { // implied only
		dirs = append(dirs, Entry{Path: d, Mode: 0o755})
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := root.Chmod(dirs[i].Path, modes.Of(dirs[i].Mode, true)); err != nil {
			return a.fetched, err
		}
	}
	return a.fetched, os.Chmod(dest, modes.Of(0o755, true))
}

// location is where a chunk was first written: a file and an offset.
type location struct {
	path   string
	offset int64
}

type assembler struct {
	ctx   context.Context
	ix    *Index
	root  *os.Root
	open  OpenPack
	dec   *zstd.Decoder
	at    []location
	modes archive.Modes
	local Local
	made  map[string]bool // directories created

	fetched int64 // stored bytes read from packs
	packOff int64 // how far the open pack has been read

	next     int // the next chunk the packs hold
	pack     int // the pack open, or -1
	packR    io.ReadCloser
	packOpen bool
	stored   []byte
	data     []byte
}

// parent creates the directories a name implies (mode 0700 until the
// end), as a tar extractor does, and remembers them.
func (a *assembler) parent(name string) error {
	dir := path.Dir(name)
	if dir == "." || a.made[dir] {
		return nil
	}
	for d := dir; d != "." && !a.made[d]; d = path.Dir(d) {
		a.made[d] = true
	}
	return a.root.MkdirAll(dir, 0o700)
}

func (a *assembler) file(e Entry) error {
	if err := a.parent(e.Path); err != nil {
		return err
	}
	if a.linked(e) {
		return nil
	}
	f, err := a.root.OpenFile(e.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	var off int64
	for _, ci := range e.Chunks {
		c := a.ix.Chunks[ci]
		var b []byte
		if ci == a.next {
			if b, err = a.read(c); err != nil {
				return err
			}
			a.at[ci] = location{e.Path, off}
			a.next++
		} else if b, err = a.copyOf(ci, c.Size); err != nil {
			return err
		}
		if _, err := f.Write(b); err != nil {
			return err
		}
		off += c.Size
	}
	if err := f.Chmod(a.modes.Of(e.Mode, false)); err != nil {
		return err
	}
	return f.Close()
}

// linked links e from a tree local holds, when it offers one of the same
// content, size and mode, and reports whether it did. The chunks of e it
// would have been the first to use count as written there.
func (a *assembler) linked(e Entry) bool {
	lf, ok := a.local.(LocalFiles)
	if !ok || len(e.Chunks) == 0 {
		return false
	}
	src, ok := lf.File(a.ix.fileKey(e))
	if !ok {
		return false
	}
	st, err := os.Lstat(src)
	if err != nil || !st.Mode().IsRegular() || st.Size() != e.Size || st.Mode().Perm() != a.modes.Of(e.Mode, false) {
		return false
	}
	dir, err := a.root.Open(path.Dir(e.Path))
	if err != nil {
		return false
	}
	defer dir.Close()
	// link(2) does not follow src if it is a symlink: Lstat said it is not.
	if unix.Linkat(unix.AT_FDCWD, src, int(dir.Fd()), path.Base(e.Path), 0) != nil {
		return false
	}
	var off int64
	for _, ci := range e.Chunks {
		if ci == a.next {
			a.at[ci] = location{e.Path, off}
			a.next++
		}
		off += a.ix.Chunks[ci].Size
	}
	return true
}

// read returns the next chunk, from local or from the packs, verified.
func (a *assembler) read(c Chunk) ([]byte, error) {
	if a.local != nil {
		a.data = grow(a.data, int(c.Size))
		if a.local.Chunk(c.Digest, a.data) && a.matches(a.data, c) {
			return a.data, nil
		}
	}
	if !a.packOpen || a.pack != c.Pack {
		if err := a.endPack(); err != nil {
			return nil, err
		}
		r, err := a.open(a.ctx, c.Pack)
		if err != nil {
			return nil, err
		}
		a.pack, a.packR, a.packOpen, a.packOff = c.Pack, r, true, 0
	}
	// Skip what local gave of this pack.
	if skip := c.offset - a.packOff; skip > 0 {
		n, err := io.CopyN(io.Discard, a.packR, skip)
		a.packOff += n
		a.fetched += n
		if err != nil {
			return nil, fmt.Errorf("%w: pack %s ends before chunk %s", ErrCorrupt, a.ix.Packs[c.Pack].Digest, c.Digest)
		}
	}
	a.stored = grow(a.stored, int(c.Length))
	n, err := io.ReadFull(a.packR, a.stored)
	a.packOff += int64(n)
	a.fetched += int64(n)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: pack %s ends before chunk %s", ErrCorrupt, a.ix.Packs[c.Pack].Digest, c.Digest)
		}
		return nil, err
	}
	data := a.stored
	if a.dec != nil {
		var err error
		if data, err = a.dec.DecodeAll(a.stored, a.data[:0]); err != nil {
			return nil, fmt.Errorf("%w: chunk %s: %w", ErrCorrupt, c.Digest, err)
		}
		a.data = data
	}
	if !a.matches(data, c) {
		return nil, fmt.Errorf("%w: chunk %s does not match its digest", ErrCorrupt, c.Digest)
	}
	return data, nil
}

// matches reports whether data is chunk c.
func (a *assembler) matches(data []byte, c Chunk) bool {
	sum := sha256.Sum256(data)
	return int64(len(data)) == c.Size && "sha256:"+hex.EncodeToString(sum[:]) == c.Digest
}

// copyOf reads chunk ci back from where it was first written.
func (a *assembler) copyOf(ci int, size int64) ([]byte, error) {
	loc := a.at[ci]
	f, err := a.root.Open(loc.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	a.data = grow(a.data, int(size))
	if _, err := f.ReadAt(a.data, loc.offset); err != nil {
		return nil, err
	}
	return a.data, nil
}

// endPack closes the open pack. A pack read to its declared end must end
// there: one longer than the index says is refused, though every chunk of
// it was verified, so that a store that serves more than the blob is
// noticed. A pack left before its end holds nothing that was used
// unverified.
func (a *assembler) endPack() error {
	if !a.packOpen {
		return nil
	}
	defer a.closePack()
	p := a.ix.Packs[a.pack]
	if a.packOff != p.Size {
		return nil
	}
	var one [1]byte
	switch _, err := io.ReadFull(a.packR, one[:]); {
	case err == nil:
		return fmt.Errorf("%w: pack %s is longer than its %d bytes", ErrCorrupt, p.Digest, p.Size)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("pack %s: %w", p.Digest, err)
	}
	return nil
}

func (a *assembler) closePack() {
	if a.packOpen {
		a.packR.Close()
		a.packOpen = false
	}
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}
