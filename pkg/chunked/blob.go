package chunked

import (
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
)

// Blob is a finished pack, as Build hands it to its sink, which owns it
// from then on.
type Blob struct {
	// Digest and Size are the pack's.
	Digest string
	Size   int64
	// Chunks are the pack's stored chunks, in order: the pack is their
	// concatenation. Read-only, and valid until Release.
	Chunks [][]byte

	refs *blobRefs // nil: nothing to hand back
}

// blobRefs counts the holders of a Blob's buffers: its owner until
// Release, and each Reader until closed. The last one hands them back.
type blobRefs struct {
	n        atomic.Int64
	released atomic.Bool
	bufs     []*[]byte
}

func (r *blobRefs) drop() {
	if r.n.Add(-1) == 0 {
		for _, b := range r.bufs {
			buffers.put(b)
		}
	}
}

// newBlob makes the Blob of a pack whose stored chunks are bufs, which it
// takes: they go back to buffers once the Blob is released and its
// readers closed.
func newBlob(digest string, size int64, bufs []*[]byte) Blob {
	chunks := make([][]byte, len(bufs))
	for i, b := range bufs {
		chunks[i] = *b
	}
	refs := &blobRefs{bufs: bufs}
	refs.n.Store(1)
	return Blob{Digest: digest, Size: size, Chunks: chunks, refs: refs}
}

// Reader returns a reader of the pack's bytes, read from Chunks: a new one
// for each attempt at an upload, taken before Release. It holds Chunks
// until closed, which may happen after Release and from another goroutine
// (net/http may close a request body after the request returned, and
// read it until then).
func (b Blob) Reader() io.ReadCloser {
	if b.refs != nil {
		b.refs.n.Add(1)
	}
	return &blobReader{bufs: slices.Clone(b.Chunks), refs: b.refs}
}

// Release gives the pack's buffers back to Build, for the packs that
// follow, once every Reader is closed too. The sink, or whoever it hands
// the Blob to, calls it once done with Chunks, from any goroutine, after
// the sink returned or before; later calls do nothing. A Blob never
// released costs only the reuse of its buffers.
func (b Blob) Release() {
	if b.refs != nil && b.refs.released.CompareAndSwap(false, true) {
		b.refs.drop()
	}
}

var errReaderClosed = errors.New("chunked: read of a closed pack reader")

// blobReader reads a Blob's chunks until it is closed. Read and Close may
// come from different goroutines.
type blobReader struct {
	mu     sync.Mutex
	bufs   net.Buffers // Read consumes this slice, not the chunks
	refs   *blobRefs
	closed bool
}

func (r *blobReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errReaderClosed
	}
	return r.bufs.Read(p)
}

func (r *blobReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed, r.bufs = true, nil
		if r.refs != nil {
			r.refs.drop()
		}
	}
	return nil
}
