package chunked_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/chunked"
)

// store keeps packs in memory, as a registry would.
type store map[string][]byte

func (s store) sink(_ context.Context, b chunked.Blob) error {
	defer b.Release()
	r := b.Reader()
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if sum := sha256.Sum256(data); int64(len(data)) != b.Size || !bytes.Equal(data, bytes.Join(b.Chunks, nil)) || b.Digest != "sha256:"+hex.EncodeToString(sum[:]) {
		return fmt.Errorf("pack %s of %d bytes: read %d bytes, of digest %x", b.Digest, b.Size, len(data), sum)
	}
	s[b.Digest] = data
	return nil
}

func (s store) opener(ix *chunked.Index) chunked.OpenPack {
	return func(_ context.Context, i int) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(s[ix.Packs[i].Digest])), nil
	}
}

// build builds dir and returns its index, as a reader parses it back.
func build(t *testing.T, dir string, s store, o chunked.Options) (*chunked.Index, []byte) {
	t.Helper()
	ix, _, err := chunked.Build(t.Context(), dir, o, s.sink)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := chunked.Marshal(ix)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := chunked.Parse(blob, ix.Packs, archive.Limits{})
	if err != nil {
		t.Fatalf("parse what Build wrote: %v", err)
	}
	return parsed, blob
}

func writeRandom(t *testing.T, p string, seed uint64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRoundTrip: what Build writes, Assemble gives back, entry for entry,
// for both compressions, with repeated chunks within and across files.
func TestRoundTrip(t *testing.T) {
	for _, comp := range []string{chunked.CompressionZstd, chunked.CompressionNone} {
		t.Run(comp, func(t *testing.T) {
			src := t.TempDir()
			testtree.Write(t, src, 1)
			b := writeRandom(t, filepath.Join(src, "dup/one"), 2, 300<<10)
			if err := os.WriteFile(filepath.Join(src, "dup/two"), append(bytes.Clone(b), b...), 0o640); err != nil {
				t.Fatal(err)
			}
			s := store{}
			ix, _ := build(t, src, s, chunked.Options{Compression: comp})
			dest := filepath.Join(t.TempDir(), "out")
			if _, err := chunked.Assemble(t.Context(), ix, dest, s.opener(ix), archive.ArchiveModes, nil); err != nil {
				t.Fatal(err)
			}
			if want, got := testtree.Snapshot(t, src), testtree.Snapshot(t, dest); !reflect.DeepEqual(want, got) {
				t.Errorf("assembled tree differs:\nwant %v\ngot  %v", want, got)
			}
			var stored int64
			for _, p := range ix.Packs {
				stored += p.Size
			}
			if comp == chunked.CompressionNone && stored >= int64(3*len(b))+3<<20 {
				t.Errorf("repeated chunks stored again: %d bytes of packs", stored)
			}
		})
	}
}

// TestDeterministic: the same tree gives the same index and packs,
// whatever the number of cores.
func TestDeterministic(t *testing.T) {
	src := t.TempDir()
	testtree.Write(t, src, 3)
	writeRandom(t, filepath.Join(src, "big"), 4, 12<<20)
	var blobs [][]byte
	for _, procs := range []int{1, 2, 4} {
		old := runtime.GOMAXPROCS(procs)
		_, blob := build(t, src, store{}, chunked.Options{})
		runtime.GOMAXPROCS(old)
		blobs = append(blobs, blob)
	}
	for i := range blobs[1:] {
		if !bytes.Equal(blobs[0], blobs[i+1]) {
			t.Fatalf("index with GOMAXPROCS %d differs", []int{1, 2, 4}[i+1])
		}
	}
}

// TestLocality: changing 1 MiB inside a 64 MiB file of a tree changes the
// packs that hold it and at most the next one (at most 8 MiB each); every
// other pack is shared with the previous version.
func TestLocality(t *testing.T) {
	src := t.TempDir()
	b := writeRandom(t, filepath.Join(src, "data/big"), 5, 64<<20)
	writeRandom(t, filepath.Join(src, "data/other"), 6, 8<<20)
	before, after := store{}, store{}
	ix1, _ := build(t, src, before, chunked.Options{Compression: chunked.CompressionNone})
	copy(b[30<<20:], bytes.Repeat([]byte{7}, 1<<20))
	if err := os.WriteFile(filepath.Join(src, "data/big"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	ix2, _ := build(t, src, after, chunked.Options{Compression: chunked.CompressionNone})
	var newBytes, total int64
	for _, p := range ix2.Packs {
		total += p.Size
		if _, ok := before[p.Digest]; !ok {
			newBytes += p.Size
		}
	}
	if len(ix1.Packs) < 8 || newBytes > 3*8<<20 {
		t.Errorf("%d packs before, %d after; %d of %d bytes in new packs", len(ix1.Packs), len(ix2.Packs), newBytes, total)
	}
	t.Logf("%d packs; after a 1 MiB change, %d of %d bytes (%.1f%%) are in new packs", len(ix2.Packs), newBytes, total, 100*float64(newBytes)/float64(total))
}

// TestCorruptPack: packs that lie about their chunks (altered, cut
// short, padded, swapped, empty) are refused, and nothing is left of the
// destination or beside it.
func TestCorruptPack(t *testing.T) {
	src := t.TempDir()
	testtree.Write(t, src, 7)
	for _, big := range []int{3 << 20, 5 << 20} { // two packs at least
		writeRandom(t, filepath.Join(src, fmt.Sprint("big-", big)), uint64(big), big)
	}
	s := store{}
	ix, _ := build(t, src, s, chunked.Options{})
	if len(ix.Packs) < 2 {
		t.Fatalf("%d packs, want 2 or more", len(ix.Packs))
	}
	first, second := ix.Packs[0].Digest, ix.Packs[1].Digest
	for _, tc := range []struct {
		name string
		edit func(s store)
	}{
		{"flipped byte", func(s store) { s[first][len(s[first])/2] ^= 0xff }},
		{"cut short", func(s store) { s[first] = s[first][:len(s[first])-1] }},
		{"padded", func(s store) { s[first] = append(s[first], 0) }},
		{"swapped", func(s store) { s[first], s[second] = s[second], s[first] }},
		{"empty", func(s store) { s[second] = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lied := store{}
			for d, p := range s {
				lied[d] = bytes.Clone(p)
			}
			tc.edit(lied)
			parent := t.TempDir()
			_, err := chunked.Assemble(t.Context(), ix, filepath.Join(parent, "out"), lied.opener(ix), archive.ArchiveModes, nil)
			if !errors.Is(err, chunked.ErrCorrupt) {
				t.Errorf("Assemble = %v, want ErrCorrupt", err)
			}
			if left, _ := os.ReadDir(parent); len(left) != 0 {
				t.Errorf("left beside the destination after %v: %v", err, left)
			}
		})
	}
}

// TestParseRefuses: an index that lies is refused before anything it
// names is fetched.
func TestParseRefuses(t *testing.T) {
	src := t.TempDir()
	testtree.Write(t, src, 8)
	good, _, err := chunked.Build(t.Context(), src, chunked.Options{}, store{}.sink)
	if err != nil {
		t.Fatal(err)
	}
	file := -1
	for i, e := range good.Entries {
		if e.Type == "file" && len(e.Chunks) > 0 && file < 0 {
			file = i
		}
	}
	for _, tc := range []struct {
		name string
		edit func(ix *chunked.Index)
		says string
	}{
		{"version", func(ix *chunked.Index) { ix.Version = 2 }, "version 2"},
		{"compression", func(ix *chunked.Index) { ix.Compression = "lz4" }, "compression"},
		{"pack size", func(ix *chunked.Index) { ix.Packs[0].Size++ }, "the manifest's layer is"},
		{"chunk length", func(ix *chunked.Index) { ix.Chunks[0].Length++ }, ""},
		{"chunk size", func(ix *chunked.Index) { ix.Chunks[0].Size = 2 << 20 }, "size"},
		{"chunk digest", func(ix *chunked.Index) { ix.Chunks[0].Digest = "sha256:xyz" }, "digest"},
		{"file size", func(ix *chunked.Index) { ix.Entries[file].Size++ }, "its chunks hold"},
		{"chunk used before its turn", func(ix *chunked.Index) {
			ix.Entries[file].Chunks = append([]int{len(ix.Chunks) - 1}, ix.Entries[file].Chunks...)
		}, "before chunk"},
		{"traversal", func(ix *chunked.Index) { ix.Entries[0].Path = "../x" }, "path"},
		{"absolute", func(ix *chunked.Index) { ix.Entries[0].Path = "/etc/x" }, "path"},
		{"out of order", func(ix *chunked.Index) {
			ix.Entries[0], ix.Entries[1] = ix.Entries[1], ix.Entries[0]
		}, "out of order"},
		{"symlink out of the root", func(ix *chunked.Index) {
			ix.Entries = append(ix.Entries, chunked.Entry{Path: "zz-escape", Type: "symlink", Target: "../../etc/passwd"})
		}, "escape"},
		{"unknown type", func(ix *chunked.Index) { ix.Entries[0].Type = "fifo" }, "type"},
		{"setuid", func(ix *chunked.Index) { ix.Entries[0].Mode |= 0o4000 }, "mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob, err := chunked.Marshal(good)
			if err != nil {
				t.Fatal(err)
			}
			ix, err := chunked.Parse(blob, good.Packs, archive.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(ix)
			blob, err = chunked.Marshal(ix)
			if err != nil {
				t.Fatal(err)
			}
			_, err = chunked.Parse(blob, good.Packs, archive.Limits{})
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("Parse = %v, want a refusal saying %q", err, tc.says)
			}
		})
	}
	// The limits of the consumer apply: a tree too large for it.
	blob, _ := chunked.Marshal(good)
	if _, err := chunked.Parse(blob, good.Packs, archive.Limits{MaxBytes: 1 << 20}); !errors.Is(err, archive.ErrLimitExceeded) {
		t.Errorf("Parse within 1 MiB = %v, want ErrLimitExceeded", err)
	}
	// Negative limits mean none, as for Extract.
	if _, err := chunked.Parse(blob, good.Packs, archive.Limits{MaxBytes: -1, MaxEntries: -1, MaxPathLength: -1}); err != nil {
		t.Errorf("Parse without limits = %v", err)
	}
}

// lying is a Local that gives wrong bytes for every chunk, and offers
// whole files only when files is set.
type lying struct {
	chunked.Tree
	lie, files bool
}

func (l lying) File(key string) (string, bool) {
	p, ok := l.Tree.File(key)
	return p, ok && l.files && !l.lie
}

func (l lying) Chunk(digest string, p []byte) bool {
	ok := l.Tree.Chunk(digest, p)
	if ok && l.lie {
		p[0] ^= 1
	}
	return ok
}

// TestLocal: a node holding the previous version of a tree fetches only
// the packs of the chunks it lacks; chunks it holds wrongly are fetched.
func TestLocal(t *testing.T) {
	src := t.TempDir()
	b := writeRandom(t, filepath.Join(src, "data/big"), 9, 40<<20)
	testtree.Write(t, filepath.Join(src, "tree"), 10)
	s := store{}
	v1, _ := build(t, src, s, chunked.Options{})
	old := filepath.Join(t.TempDir(), "v1")
	total, err := chunked.Assemble(t.Context(), v1, old, s.opener(v1), archive.ReadOnlyModes, nil)
	if err != nil {
		t.Fatal(err)
	}
	copy(b[20<<20:], bytes.Repeat([]byte{3}, 1<<20))
	if err := os.WriteFile(filepath.Join(src, "data/big"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	v2, _ := build(t, src, s, chunked.Options{})
	for _, tc := range []struct{ lie, files bool }{{false, false}, {false, true}, {true, false}} {
		lie := tc.lie
		dest := filepath.Join(old+"-next", fmt.Sprint(tc.lie, tc.files)) // on old's filesystem, for links
		if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
			t.Fatal(err)
		}
		fetched, err := chunked.Assemble(t.Context(), v2, dest, s.opener(v2), archive.ReadOnlyModes, lying{chunked.Tree{Dir: old, C: v1.Contents()}, lie, tc.files})
		if err != nil {
			t.Fatal(err)
		}
		testtree.EqualMounted(t, src, dest)
		switch {
		case !lie && fetched > 3*8<<20:
			t.Errorf("fetched %d bytes of %d with the previous version at hand", fetched, total)
		case lie && fetched < total*9/10:
			t.Errorf("a lying local store: fetched %d bytes of %d", fetched, total)
		}
		t.Logf("lie=%v files=%v: fetched %d of %d bytes (%.1f%%)", lie, tc.files, fetched, total, 100*float64(fetched)/float64(total))
		if tc.files {
			a, _ := os.Stat(filepath.Join(old, "tree/bin/tool"))
			b, _ := os.Stat(filepath.Join(dest, "tree/bin/tool"))
			if !os.SameFile(a, b) {
				t.Error("an unchanged file was not linked from the previous version")
			}
		}
	}
}

// memPacks is a PackCache in memory.
type memPacks map[string]chunked.PackEntry

func (m memPacks) Get(k string) (chunked.PackEntry, bool)  { e, ok := m[k]; return e, ok }
func (m memPacks) Put(k string, e chunked.PackEntry) error { m[k] = e; return nil }

// TestPackCache: a re-build of a tree whose packs the destination has
// builds none of them and gives the same index; when the destination
// lacks them, they are built again.
func TestPackCache(t *testing.T) {
	src := t.TempDir()
	writeRandom(t, filepath.Join(src, "a"), 12, 20<<20)
	cache := memPacks{}
	s := store{}
	o := chunked.Options{Packs: cache, Exists: func(_ context.Context, d string) (bool, error) { _, ok := s[d]; return ok, nil }}
	first, _, err := chunked.Build(t.Context(), src, o, s.sink)
	if err != nil {
		t.Fatal(err)
	}
	built := 0
	again, _, err := chunked.Build(t.Context(), src, o, func(ctx context.Context, b chunked.Blob) error { built++; return s.sink(ctx, b) })
	if err != nil {
		t.Fatal(err)
	}
	a, _ := chunked.Marshal(first)
	b, _ := chunked.Marshal(again)
	if built != 0 || !bytes.Equal(a, b) || len(cache) != len(first.Packs) {
		t.Errorf("re-build: %d packs built, same index %v, %d cached of %d", built, bytes.Equal(a, b), len(cache), len(first.Packs))
	}
	clear(s)
	if _, _, err := chunked.Build(t.Context(), src, o, func(ctx context.Context, b chunked.Blob) error { built++; return s.sink(ctx, b) }); err != nil {
		t.Fatal(err)
	}
	if built != len(first.Packs) {
		t.Errorf("the destination lost the packs: %d rebuilt of %d", built, len(first.Packs))
	}
}

// TestImpliedDirectories: an index (of another writer) that lists no
// directory gets them created, traversable, as a tar extractor would.
func TestImpliedDirectories(t *testing.T) {
	src := t.TempDir()
	testtree.Write(t, src, 13)
	s := store{}
	ix, _, err := chunked.Build(t.Context(), src, chunked.Options{}, s.sink)
	if err != nil {
		t.Fatal(err)
	}
	var kept []chunked.Entry
	for _, e := range ix.Entries {
		if e.Type != "dir" {
			kept = append(kept, e)
		}
	}
	ix.Entries = kept
	blob, _ := chunked.Marshal(ix)
	parsed, err := chunked.Parse(blob, ix.Packs, archive.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := chunked.Assemble(t.Context(), parsed, dest, s.opener(parsed), archive.ArchiveModes, nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"src", "src/a/b/c", "bin"} {
		if st, err := os.Stat(filepath.Join(dest, d)); err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("implied directory %s: %v, %v; want 0755", d, st.Mode(), err)
		}
	}
}
