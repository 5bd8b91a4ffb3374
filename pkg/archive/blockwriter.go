package archive

import (
	"io"
	"sync"
)

// blockWriter cuts its input into blocks of a fixed size, compresses each
// independently (compress appends the block's compressed form to dst) on
// up to `workers` goroutines at once, and writes the results in input
// order. The output depends on the input alone, never on the number of
// workers. gzip members and zstd frames are both written this way:
// klauspost's streaming encoders do not spread one stream over cores.
type blockWriter struct {
	w        io.Writer
	size     int
	compress func(dst, in []byte) ([]byte, error)
	buf      []byte
	queue    chan *block   // blocks in input order; its capacity bounds memory
	sem      chan struct{} // bounds the blocks compressed at once
	done     chan struct{}
	mu       sync.Mutex
	err      error     // the first failure
	bufs     sync.Pool // input blocks
	outs     sync.Pool // compressed blocks; sized so that random data fits
	written  bool
}

type block struct {
	in, out []byte
	err     error
	ready   chan struct{}
}

// newBlockWriter returns a blockWriter of blocks of size bytes; queue
// bounds the blocks waiting to be written, workers those compressed at
// once.
func newBlockWriter(w io.Writer, size, queue, workers int, compress func(dst, in []byte) ([]byte, error)) *blockWriter {
	z := &blockWriter{
		w:        w,
		size:     size,
		compress: compress,
		queue:    make(chan *block, queue),
		sem:      make(chan struct{}, workers),
		done:     make(chan struct{}),
	}
	z.bufs.New = func() any { return make([]byte, 0, size) }
	z.outs.New = func() any { return make([]byte, 0, size+size/64+1024) }
	z.buf = z.bufs.Get().([]byte)
	go z.writeBlocks()
	return z
}

func (z *blockWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if err := z.failed(); err != nil {
			return n - len(p), err
		}
		k := min(len(p), z.size-len(z.buf))
		z.buf = append(z.buf, p[:k]...)
		p = p[k:]
		if len(z.buf) == z.size {
			z.flush()
		}
	}
	return n, nil
}

func (z *blockWriter) flush() {
	b := &block{in: z.buf, ready: make(chan struct{})}
	z.buf = z.bufs.Get().([]byte)[:0]
	z.written = true
	go func() {
		defer close(b.ready)
		z.sem <- struct{}{}
		defer func() { <-z.sem }()
		b.out, b.err = z.compress(z.outs.Get().([]byte)[:0], b.in)
	}()
	z.queue <- b // blocks while the queue is full
}

func (z *blockWriter) writeBlocks() {
	defer close(z.done)
	for b := range z.queue {
		<-b.ready
		err := b.err
		if err == nil && z.failed() == nil {
			_, err = z.w.Write(b.out)
		}
		if err != nil {
			z.fail(err)
		}
		z.bufs.Put(b.in[:0])
		z.outs.Put(b.out[:0])
	}
}

func (z *blockWriter) fail(err error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.err == nil {
		z.err = err
	}
}

func (z *blockWriter) failed() error {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.err
}

// Close compresses what is buffered (an empty input gives one block of
// empty content), writes every block and waits for them. It does not
// close the underlying writer.
func (z *blockWriter) Close() error {
	if len(z.buf) > 0 || !z.written {
		z.flush()
	}
	close(z.queue)
	<-z.done
	return z.failed()
}
