// Package chunker cuts a byte stream into content-defined chunks with
// FastCDC (Xia et al., "FastCDC: a Fast and Efficient Content-Defined
// Chunking Approach for Data Deduplication", USENIX ATC 2016) and its
// normalized chunking: a cut point depends only on the bytes just before
// it, so inserting or changing bytes in a file changes the chunks around
// the change and leaves the others identical. The chunked artifact format
// (docs/format.md) uses it with its defaults; the gear table and masks
// are fixed here, since they decide every chunk boundary and so every
// digest.
package chunker

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
)

// Chunk size bounds of the chunked artifact format.
const (
	MinSize = 16 << 10
	AvgSize = 64 << 10
	MaxSize = 256 << 10
)

// gear is the table the rolling hash adds one entry of per byte: 256
// pseudo-random words, the first eight bytes of
// sha256("tekton-artifacts-fastcdc-gear" || i).
var gear = func() (g [256]uint64) {
	for i := range g {
		sum := sha256.Sum256(append([]byte("tekton-artifacts-fastcdc-gear"), byte(i)))
		g[i] = binary.BigEndian.Uint64(sum[:8])
	}
	return g
}()

// mask returns a mask of n one-bits spread over the hash's top 48 bits: bit
// k of the gear hash depends on the last k+1 bytes, so the high bits see a
// window of up to 64 bytes.
func mask(n int) uint64 {
	var m uint64
	step := 48 / n
	for i := range n {
		m |= 1 << (63 - i*step)
	}
	return m
}

// Normalized chunking, level 2: below the average size, a cut needs two
// more zero bits than log2(AvgSize); above it, two fewer. Chunk sizes then
// cluster around the average.
var (
	maskS = mask(16 + 2)
	maskL = mask(16 - 2)
)

// Cut returns the length of the first chunk of data: all of it when it is
// no longer than MinSize, never more than MaxSize. Pass at least MaxSize
// bytes unless data is the end of the stream.
func Cut(data []byte) int {
	n := len(data)
	if n <= MinSize {
		return n
	}
	n = min(n, MaxSize)
	normal := min(n, AvgSize)
	var h uint64
	i := MinSize
	for ; i < normal; i++ {
		h = h<<1 + gear[data[i]]
		if h&maskS == 0 {
			return i + 1
		}
	}
	for ; i < n; i++ {
		h = h<<1 + gear[data[i]]
		if h&maskL == 0 {
			return i + 1
		}
	}
	return n
}

// Chunker reads a stream and returns its chunks, as Cut cuts them. Not
// safe for concurrent use.
type Chunker struct {
	r        io.Reader
	buf      []byte
	start    int // of the unread part of buf
	end      int // of the bytes read into buf
	eof      bool
	returned int // bytes returned by the last Next, released at the next
}

// New returns a Chunker over r with a buffer of 2 × MaxSize.
func New(r io.Reader) *Chunker {
	return &Chunker{r: r, buf: make([]byte, 2*MaxSize)}
}

// Next returns the next chunk, valid until the following call, or io.EOF
// after the last one. An empty stream has no chunk.
func (c *Chunker) Next() ([]byte, error) {
	c.start += c.returned
	c.returned = 0
	if err := c.fill(); err != nil {
		return nil, err
	}
	if c.start == c.end {
		return nil, io.EOF
	}
	n := Cut(c.buf[c.start:c.end])
	c.returned = n
	return c.buf[c.start : c.start+n], nil
}

// fill reads until buf holds MaxSize unread bytes or the stream ended.
func (c *Chunker) fill() error {
	if c.end-c.start >= MaxSize || c.eof {
		return nil
	}
	if c.start > 0 {
		c.end = copy(c.buf, c.buf[c.start:c.end])
		c.start = 0
	}
	for c.end < MaxSize && !c.eof {
		n, err := c.r.Read(c.buf[c.end:])
		c.end += n
		switch {
		case errors.Is(err, io.EOF):
			c.eof = true
		case err != nil:
			return err
		}
	}
	return nil
}
