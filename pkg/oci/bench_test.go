package oci_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/chunked"
	"github.com/tektoncd/artifacts-csi-driver/pkg/digestcache"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

// BenchmarkVersions measures a tree of four files (BENCH_TREE_MB in all,
// default 256; the figure is 1024) pushed and pulled as the
// zstd archive (the baseline) and as the chunked layout, cold, and after
// 1 MiB changed inside one file, through a registry whose traffic is
// counted: up-MB and down-MB report the blob bytes moved. The client has
// a digest cache, as the CLI and the node plugin do.
func BenchmarkVersions(b *testing.B) {
	total := 256
	if v, err := strconv.Atoi(os.Getenv("BENCH_TREE_MB")); err == nil && v >= 4 {
		total = v
	}
	var up, down atomic.Int64
	host := testregistry.Handler(b, true, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if (r.Method == http.MethodPut || r.Method == http.MethodPatch) && strings.Contains(r.URL.Path, "/blobs/uploads/") {
				r.Body = countingBody{r.Body, &up}
			}
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
				w = countingWriter{w, &down}
			}
			next.ServeHTTP(w, r)
		})
	})
	src := b.TempDir()
	files := make([][]byte, 4)
	for i := range files {
		files[i] = make([]byte, total<<20/4)
		rnd := rand.New(rand.NewPCG(uint64(i), 7))
		for j := range files[i] {
			files[i][j] = byte(rnd.Uint32())
		}
		if err := os.WriteFile(filepath.Join(src, fmt.Sprint("part", i)), files[i], 0o644); err != nil {
			b.Fatal(err)
		}
	}
	// fresh gives every file new content: nothing of it is in the
	// registry, or in a cache.
	fresh := func(round int) {
		for i, f := range files {
			rnd := rand.New(rand.NewPCG(uint64(i), uint64(round)<<8))
			for j := range f {
				f[j] = byte(rnd.Uint32())
			}
			if err := os.WriteFile(filepath.Join(src, fmt.Sprint("part", i)), f, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	change := func(round int) {
		f := files[1]
		off := len(f) / 2
		copy(f[off:], bytes.Repeat([]byte{byte(round)}, 1<<20))
		if err := os.WriteFile(filepath.Join(src, "part1"), f, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	dc, err := digestcache.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	c := oci.New(oci.Options{Limits: archive.Limits{MaxBytes: -1}, DigestCache: dc})
	round := 0
	push := func(b *testing.B, format string, comp archive.Compression) string {
		r := repo(b, host, "bench/"+format)
		res, err := c.Push(ctx, oci.PushRequest{Dir: src, Repository: r, Format: format, Compression: comp,
			Metadata: artifact.Metadata{Name: "tree", TaskRun: fmt.Sprint(time.Now().UnixNano())}})
		if err != nil {
			b.Fatal(err)
		}
		return res.Ref.Name()
	}
	pull := func(b *testing.B, ref string, local chunked.Local) (string, *chunked.Contents) {
		dest := filepath.Join(b.TempDir(), "out")
		parsed, _ := oci.ParseReference(ref, oci.PlainHTTP)
		res, err := c.WithLocal(local).Pull(ctx, parsed, dest)
		if err != nil {
			b.Fatal(err)
		}
		return dest, res.Contents
	}
	report := func(b *testing.B, start time.Time, u, d int64) {
		b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N), "ms/op")
		b.ReportMetric(float64(u)/float64(b.N)/(1<<20), "up-MB")
		b.ReportMetric(float64(d)/float64(b.N)/(1<<20), "down-MB")
	}
	measure := func(b *testing.B, setup func(), op func()) {
		var u, d int64
		var spent time.Duration
		for b.Loop() {
			b.StopTimer()
			setup()
			u0, d0 := up.Load(), down.Load()
			b.StartTimer()
			start := time.Now()
			op()
			spent += time.Since(start)
			u, d = u+up.Load()-u0, d+down.Load()-d0
		}
		report(b, time.Now().Add(-spent), u, d)
	}
	for _, f := range []struct {
		name   string
		format string
		comp   archive.Compression
	}{{"zstd-archive", "", archive.Zstd}, {"chunked", oci.FormatChunked, ""}} {
		ref := push(b, f.format, f.comp) // for the pulls, when run alone
		b.Run("push-cold/format="+f.name, func(b *testing.B) {
			measure(b, func() { round++; fresh(round) }, func() { ref = push(b, f.format, f.comp) })
		})
		b.Run("push-changed/format="+f.name, func(b *testing.B) {
			measure(b, func() { push(b, f.format, f.comp); round++; change(round) }, func() { ref = push(b, f.format, f.comp) })
		})
		b.Run("pull-cold/format="+f.name, func(b *testing.B) {
			measure(b, func() {}, func() { pull(b, ref, nil) })
		})
		if f.format == oci.FormatChunked {
			// needed-MB is what the pull would fetch with HTTP range
			// requests for exactly the chunks it lacks (the data is
			// random: stored as large as it is), against down-MB, the
			// packs it reads up to its last missing chunk.
			b.Run("pull-changed-with-previous/format="+f.name, func(b *testing.B) {
				var local chunked.Local
				var previous, got *chunked.Contents
				var next string
				var needed int64
				measure(b, func() {
					if got != nil {
						for d, loc := range got.Chunks {
							if _, ok := previous.Chunks[d]; !ok {
								needed += loc.Size
							}
						}
					}
					var dir string
					dir, previous = pull(b, ref, nil)
					local = chunked.Tree{Dir: dir, C: previous}
					round++
					change(round)
					next = push(b, f.format, f.comp)
				}, func() { _, got = pull(b, next, local) })
				for d, loc := range got.Chunks {
					if _, ok := previous.Chunks[d]; !ok {
						needed += loc.Size
					}
				}
				b.ReportMetric(float64(needed)/float64(b.N)/(1<<20), "needed-MB")
			})
		}
	}
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}
