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

	"github.com/klauspost/compress/zstd"

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

// Location is where a chunk's bytes are in an assembled tree.
type Location struct {
	Path         string
	Offset, Size int64
}

// Locations returns where each chunk is first found in the tree ix
// describes: a file's path and an offset in it.
func (ix *Index) Locations() map[string]Location {
	locs := make(map[string]Location, len(ix.Chunks))
	for _, e := range ix.Entries {
		var off int64
		for _, ci := range e.Chunks {
			c := ix.Chunks[ci]
			if _, ok := locs[c.Digest]; !ok {
				locs[c.Digest] = Location{Path: e.Path, Offset: off, Size: c.Size}
			}
			off += c.Size
		}
	}
	return locs
}

// Assemble writes the tree ix (from Parse, or Build) describes into dest,
// which must not exist: each chunk read in turn from the packs open
// returns, decompressed, checked against its digest and size, and only
// then written; a repeated chunk is copied from where it was first
// written. With local (which may be nil), a chunk local has is not
// fetched, and a pack none of whose needed chunks is missing is not
// opened at all. It returns the stored bytes fetched. Everything is created inside dest through an os.Root, so no
// name or link can lead outside it. Files and directories get their
// modes once written, as modes gives them (archive.ReadOnlyModes for a
// node's cache). On error dest is removed. Not safe for concurrent use on
// the same dest.
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
	a := &assembler{ctx: ctx, ix: ix, root: root, open: open, at: make([]location, len(ix.Chunks)), modes: modes, local: local}
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
			err = root.MkdirAll(e.Path, 0o700)
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
	// Directories last, deepest first, so that none is read-only while
	// something is written into it; the root as a tar extractor leaves it.
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

	fetched int64 // stored bytes read from packs
	packOff int64 // how far the open pack has been read

	next     int // the next chunk the packs hold
	pack     int // the pack open, or -1
	packR    io.ReadCloser
	packOpen bool
	stored   []byte
	data     []byte
}

// parent creates the directories a name implies, as a tar extractor does.
func (a *assembler) parent(name string) error {
	if dir := path.Dir(name); dir != "." {
		return a.root.MkdirAll(dir, 0o700)
	}
	return nil
}

func (a *assembler) file(e Entry) error {
	if err := a.parent(e.Path); err != nil {
		return err
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

// read returns the next chunk, from local or from the packs, verified.
func (a *assembler) read(c Chunk) ([]byte, error) {
	if a.local != nil {
		a.data = grow(a.data, int(c.Size))
		if a.local.Chunk(c.Digest, a.data) && a.matches(a.data, c) {
			return a.data, nil
		}
	}
	if !a.packOpen || a.pack != c.Pack {
		a.closePack()
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
