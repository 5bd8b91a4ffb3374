package digestcache_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tektoncd/artifacts-csi-driver/pkg/digestcache"
)

func TestCache(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "c")
	c, err := digestcache.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("cache dir mode %o, want 700", st.Mode().Perm())
	}
	diff := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("1", 64)}
	blob := digestcache.Entry{Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("2", 64)}, Size: 42}
	if _, ok := c.Get(diff, "gzip"); ok {
		t.Fatal("empty cache hit")
	}
	if err := c.Put(diff, "gzip", blob); err != nil {
		t.Fatal(err)
	}
	if got, ok := c.Get(diff, "gzip"); !ok || got != blob {
		t.Errorf("Get = %+v %v, want %+v", got, ok, blob)
	}
	if _, ok := c.Get(diff, "zstd"); ok {
		t.Error("entry leaked across compressions")
	}
	// A second process sees the entry; a corrupt entry is a miss.
	c2, _ := digestcache.Open(dir)
	if _, ok := c2.Get(diff, "gzip"); !ok {
		t.Error("entry not shared")
	}
	os.WriteFile(filepath.Join(dir, "gzip-"+diff.Hex), []byte("garbage"), 0o600)
	if _, ok := c2.Get(diff, "gzip"); ok {
		t.Error("corrupt entry was a hit")
	}
	var nilCache *digestcache.Cache
	if _, ok := nilCache.Get(diff, "gzip"); ok || nilCache.Put(diff, "gzip", blob) != nil {
		t.Error("nil cache must be a no-op")
	}
}
