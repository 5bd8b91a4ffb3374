package chunked

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/chunker"
)

// Pack boundaries (docs/format.md, "What the writer chooses"): a pack ends
// after a chunk whose digest's first four bytes are divisible by
// packDivisor once it holds packMin stored bytes, and at packMax.
const (
	packMin     = 1 << 20
	packMax     = 8 << 20
	packDivisor = 64
)

// Options configure Build.
type Options struct {
	// Compression of the chunks: CompressionZstd (default) or
	// CompressionNone.
	Compression string
	// Limits refuse a tree that a reader would refuse, as Pack's do.
	// Default: Extract's.
	Limits archive.Limits
}

// Blob is a finished pack.
type Blob struct {
	Digest string
	Data   []byte
}

// Build cuts the tree of dir into chunks, stores each unique chunk once,
// compressed, groups them into packs and hands each finished pack to
// sink, in order, from the calling goroutine; sink must not keep Data
// after it returns. It returns the index, whose Packs are the packs sink
// received, and what the tree holds. The same tree and options give the
// same packs and index, whatever the machine. Chunks are hashed and
// compressed on every core up to archive.MaxCompressors; memory stays
// within one pack plus a few chunks per core.
func Build(ctx context.Context, dir string, o Options, sink func(ctx context.Context, b Blob) error) (*Index, archive.Stats, error) {
	if o.Compression == "" {
		o.Compression = CompressionZstd
	}
	if o.Compression != CompressionZstd && o.Compression != CompressionNone {
		return nil, archive.Stats{}, fmt.Errorf("chunked: compression %q (want %s or %s)", o.Compression, CompressionZstd, CompressionNone)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b := &builder{ix: &Index{Version: Version, Compression: o.Compression, Packs: []Pack{}, Chunks: []Chunk{}, Entries: []Entry{}},
		seen: map[string]int{}, sink: sink}
	workers := min(runtime.GOMAXPROCS(0), archive.MaxCompressors)
	jobs := make(chan *job, workers)
	results := make(chan *job, 2*workers) // in order
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.work(jobs, o.Compression)
		}()
	}
	// The assembler takes results in order as the walk produces them.
	assembled := make(chan error, 1)
	go func() {
		var err error
		for j := range results {
			<-j.done
			if err == nil {
				err = j.err
			}
			if err == nil {
				err = b.add(ctx, j)
			}
			j.release()
			if err != nil {
				cancel()
			}
		}
		assembled <- err
	}()
	var bufs sync.Pool
	stats, walkErr := archive.Walk(ctx, dir, o.Limits, func(e *archive.Entry) error {
		ent := Entry{Path: e.Name, Mode: e.Mode}
		switch e.Kind {
		case archive.KindDir:
			ent.Type = entryDir
		case archive.KindSymlink:
			ent.Type, ent.Target, ent.Mode = entrySymlink, e.Target, 0
		case archive.KindHardlink:
			ent.Type, ent.Target, ent.Mode = entryHardlink, e.Target, 0
		case archive.KindFile:
			ent.Type, ent.Size = entryFile, e.Size
		}
		entry := b.entry(ent)
		if e.Kind != archive.KindFile {
			return nil
		}
		c := chunker.New(e.Content)
		for {
			data, err := c.Next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			buf, _ := bufs.Get().(*[]byte)
			if buf == nil {
				buf = new([]byte)
			}
			*buf = append((*buf)[:0], data...)
			j := &job{entry: entry, data: *buf, done: make(chan struct{}), release: func() { bufs.Put(buf) }}
			select {
			case results <- j:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case jobs <- j:
			case <-ctx.Done():
				j.err = ctx.Err()
				close(j.done) // the assembler waits for it
				return ctx.Err()
			}
		}
	})
	close(jobs)
	wg.Wait()
	close(results)
	err := <-assembled
	if walkErr != nil {
		return nil, stats, walkErr
	}
	if err != nil {
		return nil, stats, err
	}
	if err := b.finishPack(ctx); err != nil {
		return nil, stats, err
	}
	return b.ix, stats, nil
}

// job is one chunk on its way: hashed and compressed by a worker, then
// added by the assembler.
type job struct {
	entry   int
	data    []byte
	digest  [32]byte
	stored  []byte
	err     error
	done    chan struct{}
	release func()
}

type builder struct {
	ix   *Index
	seen map[string]int // chunk digest → index
	sink func(context.Context, Blob) error

	mu   sync.Mutex // guards ix.Entries between the walk and the assembler
	pack []byte     // the pack being filled
}

// entry appends e to the index and returns its position.
func (b *builder) entry(e Entry) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ix.Entries = append(b.ix.Entries, e)
	return len(b.ix.Entries) - 1
}

// work hashes and compresses chunks.
func (b *builder) work(jobs <-chan *job, compression string) {
	var enc *zstd.Encoder
	if compression == CompressionZstd {
		var err error
		enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(false), zstd.WithSingleSegment(true))
		if err != nil {
			for j := range jobs {
				j.err = err
				close(j.done)
			}
			return
		}
		defer enc.Close()
	}
	for j := range jobs {
		j.digest = sha256.Sum256(j.data)
		if enc != nil {
			j.stored = enc.EncodeAll(j.data, make([]byte, 0, len(j.data)/2))
		} else {
			j.stored = j.data
		}
		close(j.done)
	}
}

// add appends a hashed chunk to its entry, and to the current pack unless
// an earlier one holds it already.
func (b *builder) add(ctx context.Context, j *job) error {
	d := "sha256:" + hex.EncodeToString(j.digest[:])
	idx, ok := b.seen[d]
	if !ok {
		idx = len(b.ix.Chunks)
		b.seen[d] = idx
		b.ix.Chunks = append(b.ix.Chunks, Chunk{Digest: d, Size: int64(len(j.data)), Pack: len(b.ix.Packs),
			Length: int64(len(j.stored)), offset: int64(len(b.pack))})
		b.pack = append(b.pack, j.stored...)
		if len(b.pack) >= packMax || len(b.pack) >= packMin && binary.BigEndian.Uint32(j.digest[:4])%packDivisor == 0 {
			if err := b.finishPack(ctx); err != nil {
				return err
			}
		}
	}
	b.mu.Lock()
	e := &b.ix.Entries[j.entry]
	e.Chunks = append(e.Chunks, idx)
	b.mu.Unlock()
	return nil
}

// finishPack hands the current pack, if any, to the sink.
func (b *builder) finishPack(ctx context.Context) error {
	if len(b.pack) == 0 {
		return nil
	}
	sum := sha256.Sum256(b.pack)
	p := Pack{Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(b.pack))}
	if err := b.sink(ctx, Blob{Digest: p.Digest, Data: b.pack}); err != nil {
		return err
	}
	b.ix.Packs = append(b.ix.Packs, p)
	b.pack = b.pack[:0]
	return nil
}
