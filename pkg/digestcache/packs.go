package digestcache

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/tektoncd/artifacts-csi-driver/pkg/chunked"
)

// Packs returns the cache's memory of chunked packs (chunked.PackCache):
// which pack digest, size and chunk lengths a pack of given chunks became,
// so that a re-push of a tree whose packs the registry has compresses
// nothing. Entries live in the same directory, with the same trust. A nil
// *Cache gives a cache that remembers nothing.
func (c *Cache) Packs() chunked.PackCache { return packs{c} }

type packs struct{ c *Cache }

func (p packs) path(key string) string { return filepath.Join(p.c.dir, "pack-"+key) }

// Get implements chunked.PackCache.
func (p packs) Get(key string) (chunked.PackEntry, bool) {
	if p.c == nil {
		return chunked.PackEntry{}, false
	}
	b, err := os.ReadFile(p.path(key))
	if err != nil {
		return chunked.PackEntry{}, false
	}
	var e chunked.PackEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return chunked.PackEntry{}, false
	}
	return e, true
}

// Put implements chunked.PackCache; it replaces an entry atomically.
func (p packs) Put(key string, e chunked.PackEntry) error {
	if p.c == nil {
		return nil
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(p.c.dir, ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p.path(key))
}
