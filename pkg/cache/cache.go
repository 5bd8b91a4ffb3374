// Package cache is the node's content-addressed store of extracted input
// artifacts. Each entry is a directory named by the digest it was fetched
// by; it is filled once however many volumes ask for it at the same time,
// becomes visible only once complete and verified, is pinned while a volume
// mounts it, and is evicted least recently used first when the cache grows
// beyond its byte bound.
//
// Layout of the cache directory:
//
//	<key>/        the extracted content, bind-mounted read-only into pods
//	<key>.json    the entry's metadata; written after <key>/, so a
//	              directory without it is incomplete and removed at Open
//	boot_id       the kernel boot the entries were written in
//	.*            staging and trash directories, removed at Open
//
// Extraction does not fsync: a plugin crash loses nothing the kernel has
// not already accepted, but a node crash may tear files. Open therefore
// discards every entry written during an earlier boot.
package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/internal/atomicfile"
)

// FillTimeout bounds one fill. A fill runs detached from the context of the
// call that started it, so that a caller timing out (kubelet retries
// NodePublishVolume after two minutes) does not waste the transfer.
const FillTimeout = 30 * time.Minute

var keyPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,199}$`)

// FillFunc writes an entry's content into dest, which does not exist yet:
// it must create dest only once the content is complete and verified (as
// archive.Extract does, through a staging directory beside it). It returns
// the size in bytes the entry should count for.
type FillFunc func(ctx context.Context, dest string) (size int64, err error)

// Cache is safe for concurrent use.
type Cache struct {
	dir      string
	maxBytes int64

	trash sync.WaitGroup

	mu      sync.Mutex
	entries map[string]*entry
	fills   map[string]*fillCall
	bytes   int64
}

// fillCall is a fill in progress and the callers waiting for it; when it
// succeeds, the entry starts pinned once for each of them, so no eviction
// can take it between the fill and their use.
type fillCall struct {
	done    chan struct{}
	err     error
	waiters int
}

type entry struct {
	size     int64
	refs     int
	lastUsed time.Time
}

type meta struct {
	Size int64 `json:"size"`
}

// Open loads the cache in dir (created if missing, mode 0700) bounded to
// maxBytes.
// Incomplete entries, leftovers of interrupted fills and evictions, and
// every entry from an earlier boot are removed.
func Open(ctx context.Context, dir string, maxBytes int64) (*Cache, error) {
	// Only the plugin walks in: pods reach an entry through its bind
	// mount, and no host user may reach a verified tree to alter it (the
	// entries themselves are writable by their owner, root).
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	c := &Cache{dir: dir, maxBytes: maxBytes, entries: map[string]*entry{}, fills: map[string]*fillCall{}}
	logger := klog.FromContext(ctx)
	fresh, err := c.sameBoot()
	if err != nil {
		return nil, err
	}
	discarded := 0
	names, err := readDirNames(dir)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		key, isMeta := strings.CutSuffix(n, ".json")
		switch {
		case n == bootIDFile:
			continue
		case atomicfile.IsTemp(n) || !keyPattern.MatchString(key):
			c.remove(n)
			continue
		case !isMeta:
			if !slices.Contains(names, n+".json") || !fresh {
				c.remove(n)
				discarded++
			}
			continue
		}
		var m meta
		st, serr := os.Stat(filepath.Join(dir, key))
		if !fresh || serr != nil || !st.IsDir() || atomicfile.ReadJSON(filepath.Join(dir, n), &m) != nil {
			c.remove(n)
			continue
		}
		info, _ := os.Stat(filepath.Join(dir, n))
		c.entries[key] = &entry{size: m.Size, lastUsed: info.ModTime()}
		c.bytes += m.Size
	}
	if !fresh {
		if discarded > 0 {
			logger.Info("Discarded input cache entries of an earlier boot: a node crash may have torn them", "dir", dir, "entries", discarded)
		}
		if err := c.writeBootID(); err != nil {
			return nil, err
		}
	}
	logger.V(2).Info("Opened input cache", "dir", dir, "entries", len(c.entries), "bytes", c.bytes, "maxBytes", maxBytes)
	return c, nil
}

// Acquire returns the directory holding key's content and pins it until
// Release(key). On a miss it runs fill; concurrent callers for one key
// share a single fill, each waiting no longer than its own ctx allows. hit
// reports whether the content was there already. key must be a lower-case
// file name such as "manifest-sha256-<hex>".
func (c *Cache) Acquire(ctx context.Context, key string, fill FillFunc) (path string, hit bool, err error) {
	if !keyPattern.MatchString(key) {
		return "", false, fmt.Errorf("invalid cache key %q", key)
	}
	c.mu.Lock()
	if e, ok := c.entries[key]; ok {
		e.refs++
		e.lastUsed = time.Now()
		c.mu.Unlock()
		return c.Path(key), true, nil
	}
	call, ok := c.fills[key]
	if !ok {
		call = &fillCall{done: make(chan struct{})}
		c.fills[key] = call
		go c.fill(context.WithoutCancel(ctx), key, fill, call)
	}
	call.waiters++
	c.mu.Unlock()

	select {
	case <-call.done:
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		select {
		case <-call.done: // finished meanwhile: give back the pin it took for us
			if call.err == nil {
				c.releaseLocked(key)
			}
		default:
			call.waiters--
		}
		return "", false, context.Cause(ctx)
	}
	if call.err != nil {
		return "", false, call.err
	}
	return c.Path(key), false, nil
}

// Has reports whether key's content is in the cache now.
func (c *Cache) Has(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.entries[key]
	return ok
}

// Pin pins an entry that is already there, as a volume found mounted when
// the plugin starts does. It reports whether the entry exists.
func (c *Cache) Pin(key string) bool { return c.pin(key) }

func (c *Cache) pin(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if ok {
		e.refs++
		e.lastUsed = time.Now()
	}
	return ok
}

// Release unpins key, once per Acquire or Pin. The entry stays cached until
// eviction needs its space.
func (c *Cache) Release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.releaseLocked(key)
}

func (c *Cache) releaseLocked(key string) {
	if e, ok := c.entries[key]; ok && e.refs > 0 {
		e.refs--
		e.lastUsed = time.Now()
	}
	c.evictLocked()
}

// Path returns where key's content lives (whether or not it is there).
func (c *Cache) Path(key string) string { return filepath.Join(c.dir, key) }

// Stats reports the bytes and entries the cache holds.
func (c *Cache) Stats() (bytes int64, entries int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes, len(c.entries)
}

// Wait blocks until background removals of evicted entries have finished.
func (c *Cache) Wait() { c.trash.Wait() }

func (c *Cache) fill(ctx context.Context, key string, fill FillFunc, call *fillCall) {
	size, err := c.runFill(ctx, key, fill)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.fills, key)
	call.err = err
	if err == nil {
		// Pinned for every waiter; with none left (all gave up), kept
		// unpinned for their retries.
		c.entries[key] = &entry{size: size, refs: call.waiters, lastUsed: time.Now()}
		c.bytes += size
		c.evictLocked()
	}
	close(call.done)
}

func (c *Cache) runFill(ctx context.Context, key string, fill FillFunc) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, FillTimeout)
	defer cancel()
	dest := c.Path(key)
	// Leftovers of a fill interrupted by a crash are removed at Open; a
	// directory without metadata here is from a fill that failed after the
	// rename (writing the metadata), so it is safe to replace.
	if err := os.RemoveAll(dest); err != nil {
		return 0, err
	}
	size, err := fill(ctx, dest)
	if err != nil {
		return 0, err
	}
	if err := atomicfile.WriteJSON(dest+".json", meta{Size: size}, 0o644, atomicfile.BestEffort); err != nil {
		os.RemoveAll(dest)
		return 0, fmt.Errorf("record cache entry %s: %w", key, err)
	}
	return size, nil
}

// evictLocked removes unpinned entries, least recently used first, until
// the cache fits its bound.
func (c *Cache) evictLocked() {
	for c.bytes > c.maxBytes {
		victim := ""
		for k, e := range c.entries {
			if e.refs == 0 && (victim == "" || e.lastUsed.Before(c.entries[victim].lastUsed)) {
				victim = k
			}
		}
		if victim == "" {
			return // everything left is mounted
		}
		c.bytes -= c.entries[victim].size
		delete(c.entries, victim)
		c.remove(victim + ".json")
		c.remove(victim)
	}
}

// remove deletes a cache file or directory: a directory is first renamed
// out of the way, so that the name is free at once, then deleted in the
// background.
func (c *Cache) remove(name string) {
	p := filepath.Join(c.dir, name)
	st, err := os.Lstat(p)
	if err != nil {
		return
	}
	if !st.IsDir() {
		os.Remove(p)
		return
	}
	trash, err := os.MkdirTemp(c.dir, ".trash-")
	if err != nil || os.Rename(p, filepath.Join(trash, "d")) != nil {
		os.RemoveAll(trash)
		trash = p
	}
	c.trash.Go(func() { os.RemoveAll(trash) })
}

const bootIDFile = "boot_id"

func currentBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func (c *Cache) sameBoot() (bool, error) {
	b, err := os.ReadFile(filepath.Join(c.dir, bootIDFile))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil && string(b) == currentBootID(), err
}

func (c *Cache) writeBootID() error {
	return atomicfile.Write(filepath.Join(c.dir, bootIDFile), []byte(currentBootID()), 0o644, atomicfile.Durable)
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}
