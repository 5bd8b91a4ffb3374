package chunked_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/chunked"
)

// FuzzIndex feeds Parse an index (JSON, compressed here) and Assemble the
// packs: whatever they claim about sizes, offsets, digests or paths, the
// result is a refusal or a tree made only of verified chunks inside dest,
// never a panic.
func FuzzIndex(f *testing.F) {
	src := f.TempDir()
	testtree.Write(f, src, 1)
	s := store{}
	ix, _, err := chunked.Build(context.Background(), src, chunked.Options{Compression: chunked.CompressionNone}, s.sink)
	if err != nil {
		f.Fatal(err)
	}
	raw, _ := json.Marshal(ix)
	var packs []byte
	for _, p := range ix.Packs {
		packs = append(packs, s[p.Digest]...)
	}
	f.Add(raw, packs)
	f.Add([]byte(`{"version":1,"compression":"none","packs":[],"chunks":[],"entries":[{"path":"a","type":"symlink","target":"../b"}]}`), []byte{})
	enc, _ := zstd.NewWriter(nil)
	f.Fuzz(func(t *testing.T, raw, packs []byte) {
		var claimed struct{ Packs []chunked.Pack }
		_ = json.Unmarshal(raw, &claimed) // the manifest agrees with the index, at worst
		ix, err := chunked.Parse(enc.EncodeAll(raw, nil), claimed.Packs, archive.Limits{MaxBytes: 64 << 20, MaxEntries: 1000})
		if err != nil {
			return
		}
		open := func(_ context.Context, i int) (io.ReadCloser, error) {
			// Every pack reads from the same fuzzed bytes.
			return io.NopCloser(bytes.NewReader(packs)), nil
		}
		parent := t.TempDir()
		_, err = chunked.Assemble(context.Background(), ix, filepath.Join(parent, "out"), open, archive.ReadOnlyModes, nil)
		left, _ := os.ReadDir(parent)
		switch {
		case err != nil && len(left) != 0:
			t.Fatalf("a refused index left %v visible: %v", left, err)
		case err == nil && (len(left) != 1 || left[0].Name() != "out"):
			t.Fatalf("an assembled tree left %v beside it", left)
		}
	})
}
