package driver

import (
	"os"
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
// names. Safe for concurrent use.
type localChunks struct {
	cache InputCache

	mu    sync.Mutex
	byKey map[string]map[string]chunked.Location // cache key → chunk digest → location
}

func newLocalChunks(c InputCache) *localChunks {
	return &localChunks{cache: c, byKey: map[string]map[string]chunked.Location{}}
}

// add records the chunks of cache entry key.
func (l *localChunks) add(key string, locs map[string]chunked.Location) {
	if len(locs) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byKey[key] = locs
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

var _ chunked.Local = (*fillChunks)(nil)

// Chunk implements chunked.Local.
func (f *fillChunks) Chunk(digest string, p []byte) bool {
	f.l.mu.Lock()
	var key string
	var loc chunked.Location
	for k, locs := range f.l.byKey {
		if got, ok := locs[digest]; ok && got.Size == int64(len(p)) {
			key, loc = k, got
			break
		}
	}
	f.l.mu.Unlock()
	if key == "" {
		return false
	}
	root, ok := f.root(key)
	if !ok {
		return false
	}
	file, err := root.Open(loc.Path)
	if err != nil {
		return false
	}
	defer file.Close()
	_, err = file.ReadAt(p, loc.Offset)
	return err == nil
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
