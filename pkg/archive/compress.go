package archive

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"runtime"

	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
)

// Compression names a stream compression for tar archives.
type Compression string

// Supported compressions.
const (
	None Compression = "none" // plain tar
	Gzip Compression = "gzip" // RFC 1952, no name or timestamp in the header
	Zstd Compression = "zstd" // RFC 8878
)

// ParseCompression accepts "gzip", "zstd" and "none"; "" means gzip.
func ParseCompression(s string) (Compression, error) {
	switch c := Compression(s); c {
	case "":
		return Gzip, nil
	case None, Gzip, Zstd:
		return c, nil
	}
	return "", fmt.Errorf("unknown compression %q (want gzip, zstd or none)", s)
}

// ArchiveName is how the layer annotation names the format: "tar",
// "tar+gzip" or "tar+zstd".
func (c Compression) ArchiveName() string {
	if c == None || c == "" {
		return "tar"
	}
	return "tar+" + string(c)
}

// Compression settings. They are part of the archive's identity: changing
// them changes the bytes, and so the digest, of every artifact.
const (
	gzipLevel     = 5       // klauspost level 5 is faster than GNU gzip -1 at a ratio close to -6
	gzipBlockSize = 1 << 20 // independent of GOMAXPROCS, so output is too
	zstdLevel     = zstd.SpeedDefault
	// maxZstdWindow bounds decoder memory against hostile frames: 32 MiB
	// takes every standard level (zstd -19 uses 8 MiB), not --long.
	maxZstdWindow = 32 << 20
	// MaxCompressors bounds the cores one compression, or one
	// decompression of gzip members, uses, so that its memory does not
	// grow with the node's cores: gzip keeps up to twice as many 1 MiB
	// blocks in flight (about 16 MiB of input and as much compressed data;
	// a hostile stream can make the reader buffer up to 2 MiB + 64 KiB per
	// member), zstd as many 4 MiB frames (32 MiB plus the encoders' state).
	MaxCompressors = 8
)

// compressors is how many cores a compression uses.
func compressors() int { return min(runtime.GOMAXPROCS(0), MaxCompressors) }

// NewCompressor returns a writer that compresses into w, using every core
// up to MaxCompressors. Output depends only on the input and c, never on
// the number of cores. gzip output is a sequence of independent members of
// 1 MiB of input each, every one stating its size in its header
// (docs/format.md, "gzip members"); zstd output is a sequence of
// independent frames of 4 MiB of input each; both are compressed in
// parallel (see MaxCompressors for the memory). Close flushes the stream
// but does not close w. c == None returns a pass-through writer.
func NewCompressor(w io.Writer, c Compression) (io.WriteCloser, error) {
	switch c {
	case None:
		return nopCloser{w}, nil
	case Gzip:
		return newGzipWriter(w, compressors()), nil
	case Zstd:
		return newZstdWriter(w, zstdLevel, compressors())
	}
	return nil, fmt.Errorf("unknown compression %q", c)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// Decompress detects the compression of r from its first bytes and returns
// a reader of the decompressed stream. Decompression runs ahead of the
// reader on its own goroutines; Close stops them and waits for them (it
// does not close r), and must be called.
//
// A gzip stream whose first member states its size (NewCompressor's
// output) is inflated on up to min(GOMAXPROCS, MaxCompressors) cores, at
// most 2×that many 1 MiB members in memory; every later member must state
// its size too, and a member that breaks the rules of docs/format.md fails
// the read with ErrCorrupt. Any other gzip stream is inflated serially.
func Decompress(r io.Reader) (io.ReadCloser, Compression, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(4)
	if err != nil && err != io.EOF {
		return nil, "", err
	}
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		head, err := br.Peek(gzipHeaderSize)
		if err != nil && err != io.EOF {
			return nil, "", err
		}
		if _, ok := memberSize(head); ok {
			return newGzipReader(br, compressors()), Gzip, nil
		}
		zr, err := pgzip.NewReaderN(br, gzipBlockSize, 4)
		if err != nil {
			return nil, "", fmt.Errorf("%w: gzip: %w", ErrCorrupt, err)
		}
		return zr, Gzip, nil
	case bytes.HasPrefix(head, zstdMagic):
		zr, err := zstd.NewReader(br,
			zstd.WithDecoderMaxWindow(maxZstdWindow),
			zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, "", fmt.Errorf("%w: zstd: %w", ErrCorrupt, err)
		}
		// The decoder works synchronously inside Read: move it, and the
		// fetching and hashing below it, off the goroutine that writes files.
		return &zstdReader{readAhead: newReadAhead(zr, readAheadChunk, readAheadDepth), dec: zr}, Zstd, nil
	}
	return newReadAhead(br, readAheadChunk, readAheadDepth), None, nil
}

// Read-ahead of decompressed data: 4 chunks of 1 MiB.
const (
	readAheadChunk = 1 << 20
	readAheadDepth = 4
)

type zstdReader struct {
	*readAhead
	dec *zstd.Decoder
}

func (z *zstdReader) Close() error {
	z.readAhead.Close()
	z.dec.Close()
	return nil
}
