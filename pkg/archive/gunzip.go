package archive

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
)

// gzipReader inflates a stream of TK members (see gzip.go) on several
// goroutines: one reads the members from the source in order, `workers`
// inflate them, and Read returns their content in order. At most
// 2×workers members, plus the one Read is returning and the one being
// read, are in memory at once.
//
// Every member must carry the TK field, state a size in [gzipMinMember,
// gzipMaxMember], hold a deflate stream that ends exactly at its trailer
// and inflates to at most gzipBlockSize bytes, and match its CRC-32 and
// ISIZE; nothing may follow the last member. A stream that breaks any of
// these fails with ErrCorrupt.
type gzipReader struct {
	src   io.Reader
	jobs  chan *gzipBlock // to the inflaters
	order chan *gzipBlock // to Read, in stream order; its capacity bounds memory
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	cur   *gzipBlock // block being returned, from cur.out[off:]
	off   int
	err   error // sticky error of Read
}

// gzipBlock is one member and, once ready is closed, its content or err.
type gzipBlock struct {
	member []byte
	out    []byte
	err    error
	ready  chan struct{}
	index  int   // of the member in the stream, from 0
	offset int64 // of the member in the stream
}

// gzipBlocks recycles blocks across readers: a member is up to
// gzipMaxMember bytes and its content gzipBlockSize+1.
var gzipBlocks = sync.Pool{New: func() any { return new(gzipBlock) }}

var errReadAfterClose = errors.New("archive: read of a closed decompressor")

func newGzipReader(src io.Reader, workers int) *gzipReader {
	g := &gzipReader{
		src:   src,
		jobs:  make(chan *gzipBlock),
		order: make(chan *gzipBlock, 2*workers),
		stop:  make(chan struct{}),
	}
	g.wg.Add(1 + workers)
	go g.readMembers()
	for range workers {
		go g.inflate()
	}
	return g
}

// readMembers reads members from src and hands each to Read (through
// order) and to an inflater (through jobs), until the end of the stream,
// an error, or Close.
func (g *gzipReader) readMembers() {
	defer g.wg.Done()
	defer close(g.jobs)
	defer close(g.order)
	var offset int64
	for index := 0; ; index++ {
		b := gzipBlocks.Get().(*gzipBlock)
		b.index, b.offset, b.err, b.ready = index, offset, nil, make(chan struct{})
		err := g.readMember(b)
		if err == io.EOF {
			if index > 0 {
				gzipBlocks.Put(b)
				return
			}
			err = b.corrupt(io.ErrUnexpectedEOF) // Decompress saw a header
		}
		if err != nil {
			b.err = err
			close(b.ready)
			g.send(g.order, b)
			return
		}
		// Once sent, b belongs to Read, which returns it to the pool when
		// done: nothing of it is read here after that.
		offset += int64(len(b.member))
		if !g.send(g.order, b) || !g.send(g.jobs, b) {
			return
		}
	}
}

// send sends b on ch unless the reader is closed first.
func (g *gzipReader) send(ch chan<- *gzipBlock, b *gzipBlock) bool {
	select {
	case ch <- b:
		return true
	case <-g.stop:
		return false
	}
}

// readMember reads the next member into b.member. It returns io.EOF if the
// stream ends before it, an error wrapping ErrCorrupt if what follows is
// not a whole member with a valid TK field, and src's other errors as they
// are (a digest mismatch, a failed fetch).
func (g *gzipReader) readMember(b *gzipBlock) error {
	var h [gzipHeaderSize]byte
	n, err := io.ReadFull(g.src, h[:])
	switch {
	case err == io.EOF:
		return io.EOF
	case err == io.ErrUnexpectedEOF:
		return b.corrupt(fmt.Errorf("%d bytes, not a member header: %w", n, err))
	case err != nil:
		return err
	}
	size, ok := memberSize(h[:])
	switch {
	case !ok:
		return b.corrupt(errors.New("not a member with a TK size field (trailing data, or a member of another writer)"))
	case size < gzipMinMember || size > gzipMaxMember:
		return b.corrupt(fmt.Errorf("stated size %d is outside [%d, %d]", size, gzipMinMember, gzipMaxMember))
	}
	if cap(b.member) < size {
		b.member = make([]byte, size)
	}
	b.member = b.member[:size]
	copy(b.member, h[:])
	if _, err := io.ReadFull(g.src, b.member[gzipHeaderSize:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return b.corrupt(fmt.Errorf("stream ends inside a member of %d bytes: %w", size, io.ErrUnexpectedEOF))
		}
		return err
	}
	return nil
}

// corrupt returns err as ErrCorrupt, naming the member.
func (b *gzipBlock) corrupt(err error) error {
	return fmt.Errorf("%w: gzip member %d at offset %d: %w", ErrCorrupt, b.index, b.offset, err)
}

// inflate inflates the members sent on jobs until it is closed; after
// Close it only marks them ready.
func (g *gzipReader) inflate() {
	defer g.wg.Done()
	var fr io.ReadCloser
	for b := range g.jobs {
		select {
		case <-g.stop:
			b.err = errReadAfterClose
		default:
			fr, b.err = inflateMember(fr, b)
		}
		close(b.ready)
	}
}

// inflateMember inflates b.member into b.out with fr, or a new inflater
// when fr is nil, checks it against the rules on gzipReader, and returns
// the inflater for the next member.
func inflateMember(fr io.ReadCloser, b *gzipBlock) (io.ReadCloser, error) {
	m := b.member
	data := bytes.NewReader(m[gzipHeaderSize : len(m)-gzipTrailerSize])
	if fr == nil {
		fr = flate.NewReader(data)
	} else if err := fr.(flate.Resetter).Reset(data, nil); err != nil {
		return nil, b.corrupt(err)
	}
	if cap(b.out) < gzipBlockSize+1 {
		b.out = make([]byte, gzipBlockSize+1)
	}
	n, err := readAtMost(fr, b.out[:gzipBlockSize+1])
	b.out = b.out[:n]
	switch {
	case err != nil:
		return nil, b.corrupt(fmt.Errorf("deflate: %w", err))
	case n > gzipBlockSize:
		return fr, b.corrupt(fmt.Errorf("inflates to more than %d bytes", gzipBlockSize))
	case data.Len() != 0:
		return fr, b.corrupt(fmt.Errorf("deflate stream ends %d bytes before the trailer", data.Len()))
	}
	crc := binary.LittleEndian.Uint32(m[len(m)-8:])
	isize := binary.LittleEndian.Uint32(m[len(m)-4:])
	if got := crc32.ChecksumIEEE(b.out); got != crc {
		return fr, b.corrupt(fmt.Errorf("CRC-32 %08x, trailer says %08x", got, crc))
	}
	if uint32(n) != isize {
		return fr, b.corrupt(fmt.Errorf("inflates to %d bytes, ISIZE says %d", n, isize))
	}
	return fr, nil
}

// readAtMost reads r to its end into buf and returns how much it read; it
// stops, without error, once buf is full.
func readAtMost(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Read returns the members' content in stream order.
func (g *gzipReader) Read(p []byte) (int, error) {
	for g.cur == nil || g.off == len(g.cur.out) {
		if g.err != nil {
			return 0, g.err
		}
		if g.cur != nil {
			gzipBlocks.Put(g.cur)
			g.cur = nil
		}
		b, ok := <-g.order
		if !ok {
			g.err = io.EOF
			continue
		}
		<-b.ready
		if b.err != nil {
			g.err = b.err
			continue
		}
		g.cur, g.off = b, 0
	}
	n := copy(p, g.cur.out[g.off:])
	g.off += n
	return n, nil
}

// Close stops the goroutines and waits for them, a read of the source in
// progress included. It does not close the source. Read fails after it.
func (g *gzipReader) Close() error {
	g.once.Do(func() {
		close(g.stop)
		g.wg.Wait()
		if g.cur != nil {
			gzipBlocks.Put(g.cur)
		}
		g.cur, g.off, g.err = nil, 0, errReadAfterClose
	})
	return nil
}
