package chunked

import (
	"sync"

	"github.com/tektoncd/artifacts-csi-driver/pkg/chunker"
)

// bufClass is the step of the buffers' size classes: a buffer is at most
// that much larger than what it was taken for.
const bufClass = 16 << 10

// buffers recycles the buffers of chunks, raw and stored, so that a build
// in its steady state allocates none: the heap then stays near what the
// packs in flight hold, rather than twice that between collections. A
// buffer goes back to the class of its capacity, so one class never
// hands out a buffer too small for it. Safe for concurrent use.
var buffers bufferPool

type bufferPool struct {
	// classes[c] holds buffers of capacity at least c×bufClass, enough
	// for a chunk (at most chunker.MaxSize) and for the most a reader
	// accepts of it stored (maxStored).
	classes [(chunker.MaxSize+chunker.MaxSize/maxChunkOverheadDiv+maxChunkOverhead)/bufClass + 2]sync.Pool
}

// get returns an empty buffer of capacity at least n.
func (p *bufferPool) get(n int) *[]byte {
	c := (n + bufClass - 1) / bufClass
	if c < len(p.classes) {
		if b, ok := p.classes[c].Get().(*[]byte); ok {
			return b
		}
	}
	b := make([]byte, 0, c*bufClass)
	return &b
}

// put hands b back; its owner must not use it after.
func (p *bufferPool) put(b *[]byte) {
	if c := cap(*b) / bufClass; c > 0 && c < len(p.classes) {
		*b = (*b)[:0]
		p.classes[c].Put(b)
	}
}
