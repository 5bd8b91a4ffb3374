package archive

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
)

// A gzip layer is a sequence of independent gzip members, each holding
// gzipBlockSize bytes of the input (the last one less) and stating its own
// size in a "TK" extra field, so that a reader finds every member without
// inflating the ones before it (docs/format.md, "gzip members").
const (
	gzipHeaderSize  = 20 // fixed header, XLEN and the TK subfield
	gzipTrailerSize = 8  // CRC-32 and ISIZE
	// gzipMinMember is the smallest member: an empty final stored or
	// fixed-Huffman deflate block takes at least 2 bytes.
	gzipMinMember = gzipHeaderSize + 2 + gzipTrailerSize
	// gzipMaxMember bounds the size a member may state. Deflate expands
	// 1 MiB by a few dozen bytes at worst; the slack admits any encoder
	// while bounding what a hostile stream makes a reader buffer.
	gzipMaxMember = 2*gzipBlockSize + 64<<10
)

// gzipMemberHeader is every member's header with a zero size: deflate,
// FLG = FEXTRA only, MTIME = 0, XFL = 0, OS = unknown, XLEN = 8, subfield
// 'T' 'K' of length 4. The size goes in bytes 16 to 19.
var gzipMemberHeader = [gzipHeaderSize]byte{0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 8, 0, 'T', 'K', 4, 0}

// memberSize returns the size that member header h states, and false if h
// is not the header of a member with a TK field (MTIME, XFL and OS are not
// checked: RFC 1952 leaves them to the writer).
func memberSize(h []byte) (int, bool) {
	if len(h) < gzipHeaderSize || !bytes.Equal(h[:4], gzipMemberHeader[:4]) ||
		!bytes.Equal(h[10:16], gzipMemberHeader[10:16]) {
		return 0, false
	}
	return int(binary.LittleEndian.Uint32(h[16:gzipHeaderSize])), true
}

// appendMember appends to dst the gzip member holding in, deflated by fw.
func appendMember(dst, in []byte, fw *flate.Writer) ([]byte, error) {
	start := len(dst)
	sink := &appender{b: append(dst, gzipMemberHeader[:]...)}
	fw.Reset(sink)
	if _, err := fw.Write(in); err != nil {
		return dst, err
	}
	if err := fw.Close(); err != nil {
		return dst, err
	}
	out := binary.LittleEndian.AppendUint32(sink.b, crc32.ChecksumIEEE(in))
	out = binary.LittleEndian.AppendUint32(out, uint32(len(in)))
	binary.LittleEndian.PutUint32(out[start+16:], uint32(len(out)-start))
	return out, nil
}

// appender is an io.Writer that appends to a slice.
type appender struct{ b []byte }

func (a *appender) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// newGzipWriter returns a writer of a gzip layer: its input cut into
// blocks of gzipBlockSize, each deflated into an independent member on up
// to `workers` goroutines at once, the members written in order, at most
// 2×workers of them waiting.
func newGzipWriter(w io.Writer, workers int) io.WriteCloser {
	deflaters := sync.Pool{New: func() any {
		fw, err := flate.NewWriter(nil, gzipLevel)
		if err != nil {
			panic(err) // gzipLevel is a valid constant
		}
		return fw
	}}
	return newBlockWriter(w, gzipBlockSize, 2*workers, workers, func(dst, in []byte) ([]byte, error) {
		fw := deflaters.Get().(*flate.Writer)
		defer deflaters.Put(fw)
		return appendMember(dst, in, fw)
	})
}
