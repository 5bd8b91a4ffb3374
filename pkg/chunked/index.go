// Package chunked is the chunked artifact layout of docs/format.md: a
// tree cut into content-defined chunks (pkg/chunker), deduplicated,
// compressed one by one and grouped into packs, and an index that
// describes the tree and where each file's chunks are. A new version of a
// tree shares every pack whose chunks did not change with the old one.
//
// Build writes the packs and the index of a directory; Parse reads an
// index and checks it against every rule and limit before anything it
// names is fetched; Assemble writes the tree an index describes from
// chunks verified against their digests.
package chunked

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
)

// Media types and the manifest annotation of the chunked layout.
const (
	IndexMediaType      = "application/vnd.tekton.artifact.chunked.index.v1+zstd"
	PackMediaType       = "application/vnd.tekton.artifact.chunked.pack.v1"
	FormatAnnotation    = "dev.tekton.artifact/format"
	FormatChunked       = "chunked"
	Version             = 1
	CompressionZstd     = "zstd"
	CompressionNone     = "none"
	entryDir            = "dir"
	entryFile           = "file"
	entryHardlink       = "hardlink"
	entrySymlink        = "symlink"
	maxChunkOverheadDiv = 64
	maxChunkOverhead    = 512
)

// Limits a reader applies to an index before it fetches anything the
// index names (docs/format.md, "Limits").
const (
	MaxIndexBytes    = 64 << 20
	MaxIndexRawBytes = 512 << 20
	MaxChunks        = 4_000_000
	MaxChunkSize     = 1 << 20
	MaxPackSize      = 128 << 20
	MaxPacks         = 16_384
)

// ErrInvalid marks an index that breaks the format: the artifact is
// corrupt or hostile.
var ErrInvalid = errors.New("invalid chunked index")

// Index is the chunked layout's description of a tree.
type Index struct {
	Version     int     `json:"version"`
	Compression string  `json:"compression"`
	Packs       []Pack  `json:"packs"`
	Chunks      []Chunk `json:"chunks"`
	Entries     []Entry `json:"entries"`

	usage archive.Usage // computed by Parse
}

// Usage is the disk footprint of the tree, by archive.Usage's rule (set
// by Parse).
func (ix *Index) Usage() archive.Usage { return ix.usage }

// Pack is a pack blob: layers[i+1] of the manifest.
type Pack struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Chunk is a unique chunk: the digest and size of its uncompressed bytes,
// the pack that stores it and the length stored there. Its offset in the
// pack is the sum of the lengths of the chunks before it in that pack.
type Chunk struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	Pack   int    `json:"pack"`
	Length int64  `json:"length"`

	offset int64 // where it starts in its pack: set by Parse and Build, read by Assemble
}

// Entry is one entry of the tree.
type Entry struct {
	Path   string      `json:"path"`
	Type   string      `json:"type"`
	Mode   fs.FileMode `json:"mode,omitempty"`
	Size   int64       `json:"size,omitempty"`
	Target string      `json:"target,omitempty"`
	Chunks []int       `json:"chunks,omitempty"`
}

// Marshal encodes ix as the index blob: compact JSON, zstd-compressed.
// The same index gives the same bytes.
func Marshal(ix *Index) ([]byte, error) {
	raw, err := json.Marshal(ix)
	if err != nil {
		return nil, err
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	return enc.EncodeAll(raw, nil), nil
}

// Parse decodes an index blob (already verified against its digest) and
// checks it against the format's rules and limits, and against layers,
// the manifest's pack descriptors (digest and size, in order), and lim
// (MaxEntries, MaxPathLength, MaxBytes: the footprint). Every error wraps
// ErrInvalid, or archive.ErrLimitExceeded for a limit.
func Parse(blob []byte, layers []Pack, lim archive.Limits) (*Index, error) {
	if len(blob) > MaxIndexBytes {
		return nil, fmt.Errorf("%w: the index blob has %d bytes, more than %d", archive.ErrLimitExceeded, len(blob), MaxIndexBytes)
	}
	dec, err := zstd.NewReader(bytes.NewReader(blob), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxIndexRawBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	defer dec.Close()
	raw, err := io.ReadAll(io.LimitReader(dec, MaxIndexRawBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: decompress: %w", ErrInvalid, err)
	}
	if len(raw) > MaxIndexRawBytes {
		return nil, fmt.Errorf("%w: the index inflates to more than %d bytes", archive.ErrLimitExceeded, MaxIndexRawBytes)
	}
	ix := &Index{}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(ix); err != nil {
		return nil, fmt.Errorf("%w: decode: %w", ErrInvalid, err)
	}
	if d.More() {
		return nil, fmt.Errorf("%w: data after the index", ErrInvalid)
	}
	if err := ix.check(layers, lim); err != nil {
		return nil, err
	}
	return ix, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// check applies the rules of docs/format.md to ix.
func (ix *Index) check(layers []Pack, lim archive.Limits) error {
	lim = lim.WithDefaults()
	switch {
	case ix.Version != Version:
		return invalid("version %d; this reader knows %d", ix.Version, Version)
	case ix.Compression != CompressionZstd && ix.Compression != CompressionNone:
		return invalid("compression %q", ix.Compression)
	case len(ix.Packs) > MaxPacks:
		return fmt.Errorf("%w: %d packs, more than %d", archive.ErrLimitExceeded, len(ix.Packs), MaxPacks)
	case len(ix.Chunks) > MaxChunks:
		return fmt.Errorf("%w: %d chunks, more than %d", archive.ErrLimitExceeded, len(ix.Chunks), MaxChunks)
	case int64(len(ix.Entries)) > lim.MaxEntries:
		return fmt.Errorf("%w: %d entries, more than %d", archive.ErrLimitExceeded, len(ix.Entries), lim.MaxEntries)
	case len(ix.Packs) != len(layers):
		return invalid("%d packs for %d pack layers", len(ix.Packs), len(layers))
	}
	for i, p := range ix.Packs {
		if p != layers[i] {
			return invalid("pack %d is %s (%d bytes), the manifest's layer is %s (%d bytes)", i, p.Digest, p.Size, layers[i].Digest, layers[i].Size)
		}
		if !isDigest(p.Digest) || p.Size <= 0 || p.Size > MaxPackSize {
			return invalid("pack %d: digest %q, size %d", i, p.Digest, p.Size)
		}
	}
	// Chunks: in pack order, each pack exactly their concatenation.
	pack, filled := 0, int64(0)
	for j := range ix.Chunks {
		c := &ix.Chunks[j]
		switch {
		case !isDigest(c.Digest):
			return invalid("chunk %d: digest %q", j, c.Digest)
		case c.Size <= 0 || c.Size > MaxChunkSize:
			return invalid("chunk %d: size %d", j, c.Size)
		case c.Length <= 0 || c.Length > maxStored(c.Size) || ix.Compression == CompressionNone && c.Length != c.Size:
			return invalid("chunk %d: stored length %d for %d bytes", j, c.Length, c.Size)
		case c.Pack == pack+1 && filled == ix.Packs[pack].Size:
			pack, filled = pack+1, 0
		}
		if c.Pack != pack || pack >= len(ix.Packs) {
			return invalid("chunk %d: pack %d out of order (filling pack %d)", j, c.Pack, pack)
		}
		c.offset = filled
		if filled += c.Length; filled > ix.Packs[pack].Size {
			return invalid("chunk %d overruns pack %d", j, pack)
		}
	}
	if len(ix.Packs) > 0 && (pack != len(ix.Packs)-1 || filled != ix.Packs[pack].Size) {
		return invalid("the chunks do not fill the packs exactly")
	}
	return ix.checkEntries(lim)
}

// maxStored bounds a chunk's stored length: its size, plus 1/64, plus 512.
func maxStored(size int64) int64 { return size + size/maxChunkOverheadDiv + maxChunkOverhead }

func isDigest(d string) bool {
	hex, ok := strings.CutPrefix(d, "sha256:")
	return ok && len(hex) == 64 && strings.Trim(hex, "0123456789abcdef") == ""
}

// checkEntries checks the tree: names, order, kinds, file sizes against
// their chunks, links, and the footprint, by archive's own rules.
func (ix *Index) checkEntries(lim archive.Limits) error {
	t := archive.NewTreeCheck(lim)
	prev := ""
	next := 0 // chunks are numbered in order of first use
	for i, e := range ix.Entries {
		if e.Path == "" || path.Clean(e.Path) != e.Path || path.IsAbs(e.Path) || e.Path == ".." || strings.HasPrefix(e.Path, "../") {
			return invalid("entry %d: path %q", i, e.Path)
		}
		if i > 0 && !archiveOrder(prev, e.Path) {
			return invalid("entry %d: %q after %q is out of order", i, e.Path, prev)
		}
		prev = e.Path
		if e.Mode&^0o777 != 0 {
			return invalid("entry %q: mode %#o", e.Path, uint32(e.Mode))
		}
		var k archive.EntryKind
		switch e.Type {
		case entryDir:
			k = archive.KindDir
		case entrySymlink:
			k = archive.KindSymlink
		case entryHardlink:
			k = archive.KindHardlink
		case entryFile:
			k = archive.KindFile
			var sum int64
			for _, ci := range e.Chunks {
				if ci < 0 || ci > next || ci >= len(ix.Chunks) {
					return invalid("entry %q: chunk %d (of %d) before chunk %d was used", e.Path, ci, len(ix.Chunks), next)
				}
				if ci == next {
					next++
				}
				sum += ix.Chunks[ci].Size
			}
			if sum != e.Size || e.Size < 0 {
				return invalid("entry %q: size %d, its chunks hold %d", e.Path, e.Size, sum)
			}
		default:
			return invalid("entry %q: type %q", e.Path, e.Type)
		}
		if k != archive.KindFile && (len(e.Chunks) > 0 || e.Size != 0) {
			return invalid("entry %q: a %s with content", e.Path, e.Type)
		}
		if (k == archive.KindSymlink || k == archive.KindHardlink) != (e.Target != "") {
			return invalid("entry %q: target %q for a %s", e.Path, e.Target, e.Type)
		}
		if err := t.Add(e.Path, k, e.Target, e.Size); err != nil {
			return err
		}
	}
	if next != len(ix.Chunks) {
		return invalid("chunks %d to %d are used by no file", next, len(ix.Chunks)-1)
	}
	ix.usage = t.Usage()
	return t.Close()
}

// archiveOrder reports whether b comes after a in archive order: sorted
// name by name, a directory's entries right after it.
func archiveOrder(a, b string) bool {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if as[i] != bs[i] {
			return as[i] < bs[i]
		}
	}
	return len(bs) > len(as)
}
