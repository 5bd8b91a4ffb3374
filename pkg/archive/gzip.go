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

// gzipWriter cuts its input into blocks of gzipBlockSize, deflates each as
// an independent member on up to `workers` goroutines at once, and writes
// the members in order. The output depends on the input alone. It is
// zstdWriter's scheme, with members in place of frames.
type gzipWriter struct {
	w         io.Writer
	buf       []byte
	queue     chan *gzipOut // members in input order; its capacity bounds memory
	sem       chan struct{} // bounds the members deflated at once
	done      chan struct{}
	err       error // set by the writing goroutine before done closes
	mu        sync.Mutex
	bufs      sync.Pool // input blocks
	outs      sync.Pool // members; sized so that random data fits
	deflaters sync.Pool // *flate.Writer at gzipLevel
	written   bool
}

type gzipOut struct {
	in, out []byte
	err     error
	ready   chan struct{}
}

func newGzipWriter(w io.Writer, workers int) *gzipWriter {
	z := &gzipWriter{
		w:     w,
		queue: make(chan *gzipOut, 2*workers),
		sem:   make(chan struct{}, workers),
		done:  make(chan struct{}),
	}
	z.bufs.New = func() any { return make([]byte, 0, gzipBlockSize) }
	z.outs.New = func() any { return make([]byte, 0, gzipBlockSize+gzipBlockSize/64+1024) }
	z.deflaters.New = func() any {
		fw, err := flate.NewWriter(nil, gzipLevel)
		if err != nil {
			panic(err) // gzipLevel is a valid constant
		}
		return fw
	}
	z.buf = z.bufs.Get().([]byte)
	go z.writeMembers()
	return z
}

func (z *gzipWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if err := z.failed(); err != nil {
			return n - len(p), err
		}
		k := min(len(p), gzipBlockSize-len(z.buf))
		z.buf = append(z.buf, p[:k]...)
		p = p[k:]
		if len(z.buf) == gzipBlockSize {
			z.flushBlock()
		}
	}
	return n, nil
}

func (z *gzipWriter) flushBlock() {
	m := &gzipOut{in: z.buf, ready: make(chan struct{})}
	z.buf = z.bufs.Get().([]byte)[:0]
	z.written = true
	go z.deflate(m)
	z.queue <- m // blocks while 2×workers members wait to be written
}

func (z *gzipWriter) deflate(m *gzipOut) {
	defer close(m.ready)
	z.sem <- struct{}{}
	defer func() { <-z.sem }()
	fw := z.deflaters.Get().(*flate.Writer)
	defer z.deflaters.Put(fw)
	m.out, m.err = appendMember(z.outs.Get().([]byte)[:0], m.in, fw)
}

func (z *gzipWriter) writeMembers() {
	defer close(z.done)
	for m := range z.queue {
		<-m.ready
		err := m.err
		if err == nil && z.failed() == nil {
			_, err = z.w.Write(m.out)
		}
		if err != nil {
			z.fail(err)
		}
		z.bufs.Put(m.in[:0])
		z.outs.Put(m.out[:0])
	}
}

func (z *gzipWriter) fail(err error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.err == nil {
		z.err = err
	}
}

func (z *gzipWriter) failed() error {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.err
}

// Close deflates what is buffered (an empty input gives one member of
// empty content), writes every member and waits for them. It does not
// close the underlying writer.
func (z *gzipWriter) Close() error {
	if len(z.buf) > 0 || !z.written {
		z.flushBlock()
	}
	close(z.queue)
	<-z.done
	return z.failed()
}
