package chunker_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	"github.com/tektoncd/artifacts-csi-driver/pkg/chunker"
)

func random(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// chunks returns the digests and sizes of r's chunks.
func chunks(t testing.TB, r io.Reader) ([][32]byte, []int) {
	t.Helper()
	c := chunker.New(r)
	var (
		sums  [][32]byte
		sizes []int
	)
	for {
		b, err := c.Next()
		if errors.Is(err, io.EOF) {
			return sums, sizes
		}
		if err != nil {
			t.Fatal(err)
		}
		sums, sizes = append(sums, sha256.Sum256(b)), append(sizes, len(b))
	}
}

// TestChunks: chunks join to the stream, respect the bounds, average
// near AvgSize on random data, and do not depend on how the stream is
// read.
func TestChunks(t *testing.T) {
	data := random(1, 32<<20)
	sums, sizes := chunks(t, bytes.NewReader(data))
	total := 0
	for i, n := range sizes {
		if n > chunker.MaxSize || n < chunker.MinSize && i != len(sizes)-1 {
			t.Errorf("chunk %d: %d bytes, out of [%d, %d]", i, n, chunker.MinSize, chunker.MaxSize)
		}
		if sums[i] != sha256.Sum256(data[total:total+n]) {
			t.Fatalf("chunk %d is not the stream's bytes at %d", i, total)
		}
		total += n
	}
	if total != len(data) {
		t.Fatalf("chunks hold %d bytes of %d", total, len(data))
	}
	if avg := total / len(sizes); avg < chunker.AvgSize*3/4 || avg > chunker.AvgSize*3/2 {
		t.Errorf("average chunk %d bytes, want about %d", avg, chunker.AvgSize)
	}
	// One byte at a time, or in odd pieces: the same chunks.
	for name, r := range map[string]io.Reader{
		"one byte": iotest.OneByteReader(bytes.NewReader(data[:2<<20])),
		"half":     iotest.HalfReader(bytes.NewReader(data[:2<<20])),
	} {
		got, _ := chunks(t, r)
		want, _ := chunks(t, bytes.NewReader(data[:2<<20]))
		if len(got) != len(want) {
			t.Fatalf("%s: %d chunks, want %d", name, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: chunk %d differs", name, i)
			}
		}
	}
}

// TestLocality: an insertion, a deletion or an overwrite in the middle of
// a 16 MiB stream changes at most a few chunks; every other chunk keeps
// its digest.
func TestLocality(t *testing.T) {
	data := random(2, 16<<20)
	before, _ := chunks(t, bytes.NewReader(data))
	mid := len(data) / 2
	for name, edited := range map[string][]byte{
		"insert":    append(append(bytes.Clone(data[:mid]), random(3, 100)...), data[mid:]...),
		"delete":    append(bytes.Clone(data[:mid]), data[mid+4096:]...),
		"overwrite": append(append(bytes.Clone(data[:mid]), random(4, 1<<20)...), data[mid+1<<20:]...),
	} {
		after, _ := chunks(t, bytes.NewReader(edited))
		have := map[[32]byte]bool{}
		for _, s := range before {
			have[s] = true
		}
		changed := 0
		for _, s := range after {
			if !have[s] {
				changed++
			}
		}
		// An overwrite of 1 MiB replaces about 16 chunks of 64 KiB.
		limit := 4
		if name == "overwrite" {
			limit = 1<<20/chunker.AvgSize + 4
		}
		if changed > limit {
			t.Errorf("%s: %d of %d chunks changed, want at most %d", name, changed, len(after), limit)
		}
	}
}

// TestCut: short data is one chunk; the cut points are fixed (they decide
// every digest of the chunked format, so a change here is a format
// change).
func TestCut(t *testing.T) {
	for _, n := range []int{0, 1, chunker.MinSize} {
		if got := chunker.Cut(make([]byte, n)); got != n {
			t.Errorf("Cut of %d bytes = %d", n, got)
		}
	}
	if got := chunker.Cut(make([]byte, 1<<20)); got != chunker.MaxSize {
		t.Errorf("Cut of zeros = %d, want MaxSize (no cut point in a constant run)", got)
	}
	_, sizes := chunks(t, bytes.NewReader(random(5, 1<<20)))
	want := []int{100608, 85823, 79109, 73900, 62967, 62893, 71192, 114743, 52238, 85384, 80369, 57939}
	if len(sizes) < len(want) {
		t.Fatalf("sizes %v", sizes)
	}
	for i, w := range want {
		if sizes[i] != w {
			t.Fatalf("chunk sizes %v, want %v: the gear table or the masks changed", sizes[:len(want)], want)
		}
	}
}

func BenchmarkChunker(b *testing.B) {
	data := random(6, 64<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c := chunker.New(bytes.NewReader(data))
		for {
			if _, err := c.Next(); err != nil {
				break
			}
		}
	}
}
