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
// packDivisor once it holds packMin bytes of chunks (uncompressed), and
// at packMax. They depend on the chunks alone, not on the compression, so
// that a known pack is recognised before anything is compressed.
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
	// Packs remembers the packs built before, so that a pack of the same
	// chunks is neither compressed nor handed to sink again when Exists
	// says the destination has it. Default: none.
	Packs PackCache
	// Exists reports whether the destination has blob digest. Default:
	// never asked (every pack is built).
	Exists func(ctx context.Context, digest string) (bool, error)
}

// PackCache remembers packs by their chunks, as the archive layout's
// digest cache remembers compressed layers, and with the same trust: it
// must be private to its user, since an entry that lies about a pack's
// chunk lengths makes the artifact unreadable (never different: every
// chunk is verified when read). A lost entry costs a rebuild. A pack is
// reused only when the destination has its digest. Implementations are
// safe for concurrent use.
type PackCache interface {
	Get(key string) (PackEntry, bool)
	Put(key string, e PackEntry) error
}

// PackEntry is what a PackCache keeps of a pack: its digest and size, and
// the stored length of each of its chunks, in order.
type PackEntry struct {
	Digest  string  `json:"digest"`
	Size    int64   `json:"size"`
	Lengths []int64 `json:"lengths"`
}

// Build cuts the tree of dir into chunks, stores each unique chunk once,
// compressed, groups them into packs and hands each new pack to sink, in
// order, from one goroutine (not the caller's: the next pack fills
// meanwhile). The sink owns each Blob it is handed and releases it once
// done with it, typically after an upload that may outlast the call: its
// buffers then serve the next packs. Build waits for sink, so a sink that
// blocks bounds how many packs it holds. A pack o.Packs knows and
// o.Exists finds is not rebuilt nor handed to sink. It returns the index,
// whose Packs list every pack, and what the tree holds. The same tree and
// options give the same packs and index, whatever the machine. Chunks are
// hashed, and packs compressed, on every core up to
// archive.MaxCompressors; besides the packs the sink holds, memory stays
// within two packs (one filling, one being compressed) plus a few chunks
// per core.
func Build(ctx context.Context, dir string, o Options, sink func(ctx context.Context, b Blob) error) (*Index, archive.Stats, error) {
	if o.Compression == "" {
		o.Compression = CompressionZstd
	}
	if o.Compression != CompressionZstd && o.Compression != CompressionNone {
		return nil, archive.Stats{}, fmt.Errorf("chunked: compression %q (want %s or %s)", o.Compression, CompressionZstd, CompressionNone)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := min(runtime.GOMAXPROCS(0), archive.MaxCompressors)
	b := &builder{o: o, workers: workers, sink: sink, seen: map[string]int{},
		ix: &Index{Version: Version, Compression: o.Compression, Packs: []Pack{}, Chunks: []Chunk{}, Entries: []Entry{}}}
	jobs := make(chan *job, workers)
	results := make(chan *job, 2*workers) // in order
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				j.digest = sha256.Sum256(*j.buf)
				close(j.done)
			}
		})
	}
	// The packer compresses and hands out each finished pack while the
	// next one fills. No pack waits between them: when the sink holds
	// back (its uploads are the slower part), the finished pack stays
	// with the assembler, and the walk stops, rather than a third pack
	// filling.
	b.packJobs = make(chan *packJob)
	packed := make(chan error, 1)
	go func() {
		var err error
		for pj := range b.packJobs {
			if err == nil {
				err = b.finish(ctx, pj)
			}
			if err != nil {
				cancel()
			}
		}
		packed <- err
	}()
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
			} else {
				buffers.put(j.buf)
			}
			if err != nil {
				cancel()
			}
		}
		assembled <- err
	}()
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
			buf := buffers.get(len(data))
			*buf = append(*buf, data...)
			j := &job{entry: entry, buf: buf, done: make(chan struct{})}
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
	defer func() {
		for _, enc := range b.encs {
			enc.Close()
		}
	}()
	if err == nil && walkErr == nil {
		b.finishPack()
	}
	close(b.packJobs)
	if perr := <-packed; err == nil {
		err = perr
	}
	if walkErr != nil {
		return nil, stats, walkErr
	}
	if err != nil {
		return nil, stats, err
	}
	return b.ix, stats, nil
}

// job is one chunk on its way: hashed by a worker, then added by the
// assembler, which keeps its buffer, taken from buffers, until its pack
// is compressed.
type job struct {
	entry  int
	buf    *[]byte
	digest [32]byte
	err    error
	done   chan struct{}
}

type builder struct {
	o       Options
	workers int
	ix      *Index
	seen    map[string]int // chunk digest → index
	sink    func(context.Context, Blob) error

	mu       sync.Mutex // guards ix between the walk, the assembler and the packer
	pending  []*job     // the chunks of the pack being filled
	raw      int        // their bytes
	packs    int        // packs finished so far
	packJobs chan *packJob
	encs     []*zstd.Encoder
}

// packJob is a finished pack on its way to the packer: its chunks, which
// are ix.Chunks[first:first+len(pending)].
type packJob struct {
	pending []*job
	first   int
	key     string
}

// entry appends e to the index and returns its position.
func (b *builder) entry(e Entry) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ix.Entries = append(b.ix.Entries, e)
	return len(b.ix.Entries) - 1
}

// add appends a hashed chunk to its entry, and to the current pack unless
// an earlier one holds it already.
func (b *builder) add(ctx context.Context, j *job) error {
	d := "sha256:" + hex.EncodeToString(j.digest[:])
	idx, ok := b.seen[d]
	if !ok {
		b.mu.Lock()
		idx = len(b.ix.Chunks)
		b.ix.Chunks = append(b.ix.Chunks, Chunk{Digest: d, Size: int64(len(*j.buf)), Pack: b.packs})
		b.mu.Unlock()
		b.seen[d] = idx
		b.pending = append(b.pending, j)
		b.raw += len(*j.buf)
	} else {
		buffers.put(j.buf)
	}
	b.mu.Lock()
	e := &b.ix.Entries[j.entry]
	e.Chunks = append(e.Chunks, idx)
	b.mu.Unlock()
	if !ok && (b.raw >= packMax || b.raw >= packMin && binary.BigEndian.Uint32(j.digest[:4])%packDivisor == 0) {
		b.finishPack()
	}
	return nil
}

// finishPack hands the current pack, if any, to the packer.
func (b *builder) finishPack() {
	if len(b.pending) == 0 {
		return
	}
	b.mu.Lock()
	first := len(b.ix.Chunks) - len(b.pending)
	key := b.packKey(b.ix.Chunks[first:])
	b.mu.Unlock()
	b.packJobs <- &packJob{pending: b.pending, first: first, key: key}
	b.pending, b.raw = nil, 0
	b.packs++
}

// finish, on the packer's goroutine, reuses pj's pack when the cache
// knows it and the destination has it, else compresses it and hands it
// to the sink; then records it in the index. It takes the buffers of
// pj's chunks.
func (b *builder) finish(ctx context.Context, pj *packJob) error {
	lengths, p, reused := []int64(nil), Pack{}, false
	if e, ok := b.known(ctx, pj.key, len(pj.pending)); ok {
		for _, j := range pj.pending {
			buffers.put(j.buf)
		}
		lengths, p, reused = e.Lengths, Pack{Digest: e.Digest, Size: e.Size}, true
	} else {
		stored, err := b.compress(pj.pending)
		if err != nil {
			return err
		}
		h := sha256.New()
		lengths = make([]int64, len(stored))
		for i, s := range stored {
			lengths[i] = int64(len(*s))
			p.Size += lengths[i]
			h.Write(*s)
		}
		p.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
		if err := b.sink(ctx, newBlob(p.Digest, p.Size, stored)); err != nil {
			return err
		}
	}
	b.mu.Lock()
	var off int64
	for i, l := range lengths {
		c := &b.ix.Chunks[pj.first+i]
		c.Length, c.offset = l, off
		off += l
	}
	b.ix.Packs = append(b.ix.Packs, p)
	b.mu.Unlock()
	if b.o.Packs != nil && !reused {
		// Only saves work; a failure to remember costs a rebuild next time.
		_ = b.o.Packs.Put(pj.key, PackEntry{Digest: p.Digest, Size: p.Size, Lengths: lengths})
	}
	return nil
}

// packKey names a pack by its compression and chunks.
func (b *builder) packKey(chunks []Chunk) string {
	h := sha256.New()
	h.Write([]byte(b.ix.Compression))
	for _, c := range chunks {
		h.Write([]byte{0})
		h.Write([]byte(c.Digest))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// known returns the cache's entry for key when the destination has the
// pack already.
func (b *builder) known(ctx context.Context, key string, n int) (PackEntry, bool) {
	if b.o.Packs == nil || b.o.Exists == nil {
		return PackEntry{}, false
	}
	e, ok := b.o.Packs.Get(key)
	if !ok || len(e.Lengths) != n || !isDigest(e.Digest) {
		return PackEntry{}, false
	}
	var sum int64
	for _, l := range e.Lengths {
		sum += l
	}
	if sum != e.Size {
		return PackEntry{}, false
	}
	have, err := b.o.Exists(ctx, e.Digest)
	return e, err == nil && have
}

// compress returns the stored chunks of chunks, compressed on up to
// b.workers cores, in buffers from buffers. It takes the chunks' buffers:
// it hands each back once compressed, or, without compression, returns
// them as they are.
func (b *builder) compress(chunks []*job) ([]*[]byte, error) {
	out := make([]*[]byte, len(chunks))
	if b.o.Compression == CompressionNone {
		for i, j := range chunks {
			out[i] = j.buf
		}
		return out, nil
	}
	for len(b.encs) < b.workers {
		// A chunk is at most MaxChunkSize: a window of that size loses
		// nothing, and keeps the encoder's memory small.
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(false), zstd.WithSingleSegment(true), zstd.WithWindowSize(MaxChunkSize), zstd.WithLowerEncoderMem(true))
		if err != nil {
			return nil, err
		}
		b.encs = append(b.encs, enc)
	}
	var (
		wg   sync.WaitGroup
		next = make(chan int)
	)
	for _, enc := range b.encs {
		wg.Go(func() {
			for i := range next {
				raw := chunks[i].buf
				stored := buffers.get(int(maxStored(int64(len(*raw)))))
				*stored = enc.EncodeAll(*raw, *stored)
				buffers.put(raw)
				out[i] = stored
			}
		})
	}
	for i := range chunks {
		next <- i
	}
	close(next)
	wg.Wait()
	return out, nil
}
