package driver

import (
	"os"
	"path/filepath"
	"sync"

	"github.com/tektoncd/artifacts-csi-driver/pkg/chunked"
)

// localChunks knows where the chunks of the chunked artifacts in the
// input cache are, so that a pull of another version takes what the node
// has from its cache rather than from the registry: the node downloads
// only the chunks it lacks. It is in memory only; after a restart, the
// cache's entries are not reused until pulled again. What it gives is
// verified by the pull against the digests of the artifact's index, which
// the pod's credentials fetched: a pod gets only content its artifact
// names. Whole files whose chunks are all the same are linked from the
// cached tree (hardlinks within the cache's filesystem: cached trees are
// immutable and trusted as cache hits are). Safe for concurrent use.
type localChunks struct {
	cache InputCache

	mu    sync.Mutex
	byKey map[string]*chunked.Contents // by cache key
}

func newLocalChunks(c InputCache) *localChunks {
	return &localChunks{cache: c, byKey: map[string]*chunked.Contents{}}
}

// add records the contents of cache entry key.
func (l *localChunks) add(key string, c *chunked.Contents) {
	if c == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byKey[key] = c
}

// forFill returns the chunked.Local of one fill; release unpins the
// entries it read from.
func (l *localChunks) forFill() (local *fillChunks, release func()) {
	f := &fillChunks{l: l, pinned: map[string]*os.Root{}}
	return f, f.release
}

// fillChunks is the chunked.Local of one fill: it pins each cache entry
// it reads from until the fill ends, so that eviction cannot remove it
// meanwhile, and reads through an os.Root of the entry.
type fillChunks struct {
	l      *localChunks
	mu     sync.Mutex
	pinned map[string]*os.Root
}

var (
	_ chunked.Local      = (*fillChunks)(nil)
	_ chunked.LocalFiles = (*fillChunks)(nil)
)

// File implements chunked.LocalFiles: a whole file of a cached tree,
// which stays pinned until the fill ends (the new entry links it).
func (f *fillChunks) File(fileKey string) (string, bool) {
	f.l.mu.Lock()
	var key, p string
	for k, c := range f.l.byKey {
		if got, ok := c.Files[fileKey]; ok {
			key, p = k, got
			break
		}
	}
	f.l.mu.Unlock()
	if key == "" {
		return "", false
	}
	if _, ok := f.root(key); !ok {
		return "", false
	}
	return filepath.Join(f.l.cache.Path(key), filepath.FromSlash(p)), true
}

// Chunk implements chunked.Local.
func (f *fillChunks) Chunk(digest string, p []byte) bool {
	f.l.mu.Lock()
	var key string
	var loc chunked.Location
	for k, c := range f.l.byKey {
		if got, ok := c.Chunks[digest]; ok && got.Size == int64(len(p)) {
			key, loc = k, got
			break
		}
	}
	f.l.mu.Unlock()
	if key == "" {
		return false
	}
	root, ok := f.root(key)
	return ok && loc.Read(root, p)
}

// root pins key's entry and opens it, once per fill; an entry that is
// gone is forgotten.
func (f *fillChunks) root(key string) (*os.Root, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r, ok := f.pinned[key]; ok {
		return r, r != nil
	}
	if !f.l.cache.Pin(key) {
		f.l.mu.Lock()
		delete(f.l.byKey, key)
		f.l.mu.Unlock()
		f.pinned[key] = nil
		return nil, false
	}
	r, err := os.OpenRoot(f.l.cache.Path(key))
	if err != nil {
		f.l.cache.Release(key)
		f.pinned[key] = nil
		return nil, false
	}
	f.pinned[key] = r
	return r, true
}

func (f *fillChunks) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for key, r := range f.pinned {
		if r != nil {
			r.Close()
			f.l.cache.Release(key)
		}
	}
	f.pinned = map[string]*os.Root{}
}
