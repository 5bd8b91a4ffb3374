package archive

import (
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// zstdChunkSize is the input size of each zstd frame. Frames are compressed
// independently, so the output depends on it and not on how many frames
// are compressed at once.
const zstdChunkSize = 4 << 20

// zstdWriter cuts its input into fixed-size chunks, compresses each as an
// independent zstd frame on up to `workers` goroutines, and writes the frames
// in order. A zstd stream may hold any number of frames (RFC 8878 §3.1), so
// every decoder reads the result. klauspost's streaming encoder does not
// spread one stream over cores; this does, the way pgzip does for gzip.
type zstdWriter struct {
	w       io.Writer
	enc     *zstd.Encoder // EncodeAll is safe for concurrent use
	buf     []byte
	queue   chan *zstdFrame // frames in input order; its capacity bounds memory
	done    chan struct{}
	err     error // set by the writing goroutine before done closes
	mu      sync.Mutex
	bufs    sync.Pool // input chunks
	outs    sync.Pool // compressed frames; sized so random data fits
	written bool
}

type zstdFrame struct {
	in, out []byte
	ready   chan struct{}
}

func newZstdWriter(w io.Writer, level zstd.EncoderLevel, workers int) (*zstdWriter, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(workers),
		zstd.WithEncoderCRC(true),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, err
	}
	z := &zstdWriter{
		w:     w,
		enc:   enc,
		queue: make(chan *zstdFrame, workers),
		done:  make(chan struct{}),
	}
	z.bufs.New = func() any { return make([]byte, 0, zstdChunkSize) }
	z.outs.New = func() any { return make([]byte, 0, zstdChunkSize+zstdChunkSize/64+1024) }
	z.buf = z.bufs.Get().([]byte)
	go z.writeFrames()
	return z, nil
}

func (z *zstdWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if err := z.failed(); err != nil {
			return n - len(p), err
		}
		k := min(len(p), zstdChunkSize-len(z.buf))
		z.buf = append(z.buf, p[:k]...)
		p = p[k:]
		if len(z.buf) == zstdChunkSize {
			z.flushChunk()
		}
	}
	return n, nil
}

func (z *zstdWriter) flushChunk() {
	f := &zstdFrame{in: z.buf, ready: make(chan struct{})}
	z.buf = z.bufs.Get().([]byte)[:0]
	z.written = true
	go func() {
		f.out = z.enc.EncodeAll(f.in, z.outs.Get().([]byte)[:0])
		close(f.ready)
	}()
	z.queue <- f // blocks while `workers` frames wait to be written
}

func (z *zstdWriter) writeFrames() {
	defer close(z.done)
	for f := range z.queue {
		<-f.ready
		if z.failed() == nil {
			if _, err := z.w.Write(f.out); err != nil {
				z.mu.Lock()
				z.err = err
				z.mu.Unlock()
			}
		}
		z.bufs.Put(f.in[:0])
		z.outs.Put(f.out[:0])
	}
}

func (z *zstdWriter) failed() error {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.err
}

// Close compresses what is buffered, writes every frame and waits for
// them. It does not close the underlying writer.
func (z *zstdWriter) Close() error {
	if len(z.buf) > 0 || !z.written {
		z.flushChunk()
	}
	close(z.queue)
	<-z.done
	z.enc.Close()
	return z.failed()
}
