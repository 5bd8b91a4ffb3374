package archive_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
)

// benchTrees are the shapes extraction cost depends on: many small files
// (the writers and the per-entry bookkeeping), many directories (mkdir and
// descriptors) and one large file (the copy loop).
var benchTrees = []struct {
	name  string
	build func(b *tarBuilder)
}{
	{"small-files", func(t *tarBuilder) {
		body := string(randomBytes(512, 5))
		for i := range 5000 {
			t.file(fmt.Sprintf("d%02d/f%04d", i%50, i), 0o644, body)
		}
	}},
	{"empty-dirs", func(t *tarBuilder) {
		for i := range 5000 {
			t.dir(fmt.Sprintf("d%02d/e%04d/", i%50, i), 0o755)
		}
	}},
	{"large-file", func(t *tarBuilder) { t.file("big", 0o644, string(randomBytes(64<<20, 6))) }},
}

func BenchmarkExtract(b *testing.B) {
	for _, tc := range benchTrees {
		b.Run(tc.name, func(b *testing.B) {
			tb := newTar(b)
			tc.build(tb)
			blob := tb.bytes()
			want := expectOf(blob)
			parent := tempDir(b)
			b.SetBytes(int64(len(blob)))
			b.ResetTimer()
			for i := range b.N {
				dest := filepath.Join(parent, fmt.Sprint(i))
				if _, _, err := archive.Extract(context.Background(), bytes.NewReader(blob), want, dest, archive.Limits{}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(dest)
				b.StartTimer()
			}
		})
	}
}

func BenchmarkPack(b *testing.B) {
	for _, tc := range benchTrees {
		b.Run(tc.name, func(b *testing.B) {
			tb := newTar(b)
			tc.build(tb)
			blob := tb.bytes()
			src := filepath.Join(tempDir(b), "src")
			if _, _, err := archive.Extract(context.Background(), bytes.NewReader(blob), expectOf(blob), src, archive.Limits{}); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(blob)))
			b.ResetTimer()
			for range b.N {
				if _, err := archive.Pack(context.Background(), src, discard{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// discard is io.Discard without its ReaderFrom, so that Pack's writes are
// what is measured.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkMeasure is what the node cache pays, after a fill that does not
// report its usage, to account the tree.
func BenchmarkMeasure(b *testing.B) {
	for _, tc := range benchTrees {
		b.Run(tc.name, func(b *testing.B) {
			tb := newTar(b)
			tc.build(tb)
			blob := tb.bytes()
			src := filepath.Join(tempDir(b), "src")
			stats, _, err := archive.Extract(context.Background(), bytes.NewReader(blob), expectOf(blob), src, archive.Limits{})
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if u, err := archive.Measure(context.Background(), src, archive.Limits{}); err != nil || u != stats.Usage {
					b.Fatalf("Measure = %+v, %v; want %+v", u, err, stats.Usage)
				}
			}
		})
	}
}

// BenchmarkDecompressGzip reads 64 MiB of text-like data through
// Decompress to its end: "serial" is one pgzip member (the format before
// issue 17, and other tools'), inflated on one core; "members" is
// NewCompressor's sized members, inflated on every core. The ratio metric
// is compressed size over input size.
func BenchmarkDecompressGzip(b *testing.B) {
	data := textLike(64<<20, 64)
	for _, tc := range []struct {
		name     string
		compress func() []byte
	}{
		{"serial", func() []byte { return pgzipCompress(b, data) }},
		{"members", func() []byte { return compress(b, data, archive.Gzip) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			blob := tc.compress()
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			for range b.N {
				rc, c, err := archive.Decompress(bytes.NewReader(blob))
				if err != nil || c != archive.Gzip {
					b.Fatalf("Decompress: %v, %q", err, c)
				}
				n, err := io.Copy(io.Discard, rc)
				rc.Close()
				if err != nil || n != int64(len(data)) {
					b.Fatalf("read %d bytes, %v; want %d", n, err, len(data))
				}
			}
			b.ReportMetric(float64(len(blob))/float64(len(data)), "ratio")
		})
	}
}
