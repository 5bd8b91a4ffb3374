// Package cache is the node's content-addressed store of extracted input
// artifacts. Each entry is a directory named by the digest it was fetched
// by; it is filled once however many volumes ask for it at the same time,
// becomes visible only once complete and verified, is pinned while a volume
// mounts it, and is evicted least recently used first when the cache grows
// beyond its bound on disk space or on inodes.
//
// An entry counts for the disk footprint of its tree by archive's rule
// ([archive.Usage]: whole blocks per file, a block per directory, an inode
// for each), plus its own directory and metadata file: two inodes and 8 KiB.
// So a tree of 40,000 empty directories counts 160 MB, not nothing.
//
// Layout of the cache directory:
//
//	<key>/        the extracted content, bind-mounted read-only into pods
//	<key>.json    the entry's metadata, its usage; written after <key>/,
//	              so a directory without it is incomplete and removed at
//	              Open
//	<key>.img     for an adopted entry (AdoptImage), the filesystem image
//	              mounted read-only on <key>/
//	boot_id       the kernel boot the entries were written in
//	.*            staging and trash directories, removed at Open
//
// An adopted entry is an output's filesystem image, which the node plugin
// hands over once the output is pushed (write-through): its tree is
// served where it was written, with nothing copied.
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

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/internal/atomicfile"
	"github.com/tektoncd/artifacts-csi-driver/internal/bootid"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
)

// FillTimeout bounds one fill. A fill runs detached from the context of the
// call that started it, so that a caller timing out (kubelet retries
// NodePublishVolume after two minutes) does not waste the transfer.
const FillTimeout = 30 * time.Minute

// DefaultMaxInodes bounds the inodes of a cache opened without
// WithMaxInodes: archive.DefaultMaxEntries, so that, as with the byte
// bounds (both 10 GiB by default), any artifact the default per-artifact
// limits admit fits an empty cache.
const DefaultMaxInodes = archive.DefaultMaxEntries

// entryOverhead is what an entry takes besides its tree: the tree's root
// directory and the metadata file.
var entryOverhead = archive.Usage{Bytes: 2 * archive.BlockSize, Inodes: 2}

// ErrTooLarge marks a fill whose content alone exceeds a bound of the
// cache; it is of class errdefs.ErrTooLarge, and nothing of it is kept.
var ErrTooLarge = errdefs.New("larger than the input cache", errdefs.ErrTooLarge)

var keyPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,199}$`)

// FillFunc writes an entry's content into dest, which does not exist yet:
// it must create dest only once the content is complete and verified (as
// archive.Extract does, through a staging directory beside it). The size
// it returns is not used: Acquire measures what it wrote with
// archive.Measure, one fstatat per entry. A fill that knows the usage of
// what it wrote is a FillUsageFunc, which spares that walk.
type FillFunc func(ctx context.Context, dest string) (size int64, err error)

// FillUsageFunc is a FillFunc that returns the Usage of the tree it wrote
// in dest, by archive's rule: what archive.Extract returns in Stats.Usage.
// The cache trusts it, for its accounting and its bounds.
type FillUsageFunc func(ctx context.Context, dest string) (archive.Usage, error)

// Option configures Open.
type Option func(*options)

type options struct {
	maxInodes int64
	images    Images
}

// Images mounts the filesystem images of adopted entries; outputfs.Ext4
// does. Implementations are safe for concurrent use.
type Images interface {
	// MountImage mounts image's filesystem at target, an existing
	// directory, read-only when readOnly, nosuid and nodev; a target
	// that is a mount point already is left as it is.
	MountImage(ctx context.Context, image, target string, readOnly bool) error
	// Unmount unmounts target; one that is not a mount point, or is
	// missing, is not an error.
	Unmount(ctx context.Context, target string) error
}

// WithImages lets the cache adopt filesystem images (AdoptImage), and
// mount again at Open those it holds. Without it, AdoptImage adopts
// nothing and Open discards adopted entries.
func WithImages(i Images) Option {
	return func(o *options) { o.images = i }
}

// WithMaxInodes bounds the inodes the cache's entries take; n must be
// positive. Default DefaultMaxInodes.
func WithMaxInodes(n int64) Option {
	return func(o *options) { o.maxInodes = n }
}

// Stats describes what the cache holds.
type Stats struct {
	Entries int
	// Bytes and Inodes are the entries' usage, as the bounds count it.
	Bytes, Inodes int64
}

// Cache is safe for concurrent use.
type Cache struct {
	dir    string
	max    archive.Usage // the bounds
	images Images        // nil: no adopted entries

	trash sync.WaitGroup

	mu      sync.Mutex
	entries map[string]*entry
	fills   map[string]*fillCall
	used    archive.Usage
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
	usage    archive.Usage // overhead included
	refs     int
	lastUsed time.Time
	image    bool // adopted: its tree is its image, mounted
}

// imageSuffix names an adopted entry's image: <key>.img.
const imageSuffix = ".img"

// meta is an entry's <key>.json.
type meta struct {
	// Size and Inodes are the entry's usage, overhead included. Entries
	// written before inodes were counted have no Inodes, and a Size
	// counting file content only.
	Size   int64 `json:"size"`
	Inodes int64 `json:"inodes,omitempty"`
	// Image says the entry is adopted: <key>/ is <key>.img mounted.
	Image bool `json:"image,omitempty"`
}

// Open loads the cache in dir (created if missing, mode 0700), bounded to
// maxBytes of disk (which must be positive) and to the inodes of
// WithMaxInodes. Incomplete entries, leftovers of interrupted fills and
// evictions, and every entry from an earlier boot are removed; entries an
// earlier version wrote without their inodes are measured, once, and their
// metadata rewritten. Entries over the bounds stay until eviction can take
// them.
func Open(ctx context.Context, dir string, maxBytes int64, opts ...Option) (*Cache, error) {
	o := options{maxInodes: DefaultMaxInodes}
	for _, opt := range opts {
		opt(&o)
	}
	if maxBytes <= 0 || o.maxInodes <= 0 {
		return nil, fmt.Errorf("input cache %s: bounds must be positive, got %d bytes and %d inodes", dir, maxBytes, o.maxInodes)
	}
	// Only the plugin walks in: pods reach an entry through its bind
	// mount, and no host user may reach a verified tree to alter it (the
	// entries themselves are writable by their owner, root).
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	c := &Cache{dir: dir, max: archive.Usage{Bytes: maxBytes, Inodes: o.maxInodes}, images: o.images,
		entries: map[string]*entry{}, fills: map[string]*fillCall{}}
	logger := klog.FromContext(ctx)
	fresh, err := c.sameBoot()
	if err != nil {
		return nil, err
	}
	discarded, measured := 0, 0
	names, err := readDirNames(dir)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		key, isMeta := strings.CutSuffix(n, ".json")
		imageOf, isImage := strings.CutSuffix(n, imageSuffix)
		switch {
		case n == bootIDFile:
			continue
		case isImage && keyPattern.MatchString(imageOf):
			// Its entry's metadata says whether it is one.
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
		if m.Image {
			if err := c.mountImage(ctx, key); err != nil {
				logger.Error(err, "Discarded an adopted input cache entry whose image could not be mounted", "dir", dir, "key", key)
				c.discard(key)
				continue
			}
		}
		info, _ := os.Stat(filepath.Join(dir, n))
		u := archive.Usage{Bytes: m.Size, Inodes: m.Inodes}
		if m.Inodes == 0 {
			if u, err = c.measure(ctx, key, info.ModTime()); err != nil {
				logger.Error(err, "Discarded an input cache entry that could not be measured", "dir", dir, "key", key)
				c.discard(key)
				continue
			}
			measured++
		}
		c.entries[key] = &entry{usage: u, lastUsed: info.ModTime(), image: m.Image}
		c.used = add(c.used, u)
	}
	for _, n := range names { // images of no entry
		if key, ok := strings.CutSuffix(n, imageSuffix); ok && c.entries[key] == nil {
			c.remove(n)
		}
	}
	if measured > 0 {
		logger.Info("Measured input cache entries an earlier version wrote without their inodes", "dir", dir, "entries", measured)
	}
	if !fresh {
		if discarded > 0 {
			logger.Info("Discarded input cache entries of an earlier boot: a node crash may have torn them", "dir", dir, "entries", discarded)
		}
		if err := c.writeBootID(); err != nil {
			return nil, err
		}
	}
	logger.V(2).Info("Opened input cache", "dir", dir, "entries", len(c.entries), "bytes", c.used.Bytes, "inodes", c.used.Inodes,
		"maxBytes", c.max.Bytes, "maxInodes", c.max.Inodes)
	return c, nil
}

// measure returns the usage of key's tree, overhead included, and records
// it in the metadata, whose modification time, the entry's last use, stays
// lastUsed.
func (c *Cache) measure(ctx context.Context, key string, lastUsed time.Time) (archive.Usage, error) {
	u, err := archive.Measure(ctx, c.Path(key), archive.Limits{MaxBytes: -1, MaxEntries: -1})
	if err != nil {
		return archive.Usage{}, err
	}
	u = add(u, entryOverhead)
	p := c.Path(key) + ".json"
	if err := atomicfile.WriteJSON(p, meta{Size: u.Bytes, Inodes: u.Inodes}, 0o644, atomicfile.BestEffort); err != nil {
		return archive.Usage{}, err
	}
	return u, os.Chtimes(p, lastUsed, lastUsed)
}

func add(a, b archive.Usage) archive.Usage {
	return archive.Usage{Bytes: a.Bytes + b.Bytes, Inodes: a.Inodes + b.Inodes}
}

// Acquire returns the directory holding key's content and pins it until
// Release(key). On a miss it runs fill; concurrent callers for one key
// share a single fill, each waiting no longer than its own ctx allows. hit
// reports whether the content was there already. key must be a lower-case
// file name such as "manifest-sha256-<hex>".
//
// A filled entry counts for the usage of what fill wrote, measured once
// fill returns. When that alone exceeds the cache's bounds, Acquire fails
// with ErrTooLarge and removes it; otherwise least recently used unpinned
// entries are evicted until the cache is within both bounds again, or
// only pinned entries are left.
func (c *Cache) Acquire(ctx context.Context, key string, fill FillFunc) (path string, hit bool, err error) {
	if fill == nil {
		return c.AcquireUsage(ctx, key, nil)
	}
	return c.AcquireUsage(ctx, key, func(ctx context.Context, dest string) (archive.Usage, error) {
		if _, err := fill(ctx, dest); err != nil {
			return archive.Usage{}, err
		}
		return archive.Measure(ctx, dest, archive.Limits{MaxBytes: -1, MaxEntries: -1})
	})
}

// AcquireUsage is Acquire with a fill that reports the usage of what it
// wrote, which the cache then does not measure.
func (c *Cache) AcquireUsage(ctx context.Context, key string, fill FillUsageFunc) (path string, hit bool, err error) {
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
		go c.fill(context.WithoutCancel(ctx), key, fill, false, call)
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

// Stats reports what the cache holds.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Entries: len(c.entries), Bytes: c.used.Bytes, Inodes: c.used.Inodes}
}

// Wait blocks until background removals of evicted entries have finished.
func (c *Cache) Wait() { c.trash.Wait() }

// Close unmounts the trees of adopted entries, which Open mounts again,
// so that a stopped plugin leaves mounted only what pods use (their bind
// mounts keep the filesystems they show), and waits for background
// removals. Call it once, after the last use of c.
func (c *Cache) Close(ctx context.Context) error {
	c.mu.Lock()
	var images []string
	for key, e := range c.entries {
		if e.image {
			images = append(images, key)
		}
	}
	c.mu.Unlock()
	var errs []error
	for _, key := range images {
		errs = append(errs, c.images.Unmount(ctx, c.Path(key)))
	}
	c.Wait()
	return errors.Join(errs...)
}

func (c *Cache) fill(ctx context.Context, key string, fill FillUsageFunc, image bool, call *fillCall) {
	u, err := c.runFill(ctx, key, fill, image)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.fills, key)
	call.err = err
	if err == nil {
		// Pinned for every waiter; with none left (all gave up), kept
		// unpinned for their retries.
		c.entries[key] = &entry{usage: u, refs: call.waiters, lastUsed: time.Now(), image: image}
		c.used = add(c.used, u)
		c.evictLocked()
	}
	close(call.done)
}

// runFill fills key, an adopted image's entry when image, and returns its
// usage, overhead included.
func (c *Cache) runFill(ctx context.Context, key string, fill FillUsageFunc, image bool) (archive.Usage, error) {
	ctx, cancel := context.WithTimeout(ctx, FillTimeout)
	defer cancel()
	dest := c.Path(key)
	// Leftovers of a fill interrupted by a crash are removed at Open; a
	// directory without metadata here is from a fill that failed after the
	// rename (writing the metadata), so it is safe to replace.
	if err := c.clear(ctx, key); err != nil {
		return archive.Usage{}, err
	}
	u, err := fill(ctx, dest)
	if err != nil {
		c.clear(ctx, key) // a FillFunc's measurement may fail after the fill
		return archive.Usage{}, err
	}
	u = add(u, entryOverhead)
	if err := c.fits(key, u); err != nil {
		c.clear(ctx, key)
		return archive.Usage{}, err
	}
	if err := atomicfile.WriteJSON(dest+".json", meta{Size: u.Bytes, Inodes: u.Inodes, Image: image}, 0o644, atomicfile.BestEffort); err != nil {
		c.clear(ctx, key)
		return archive.Usage{}, fmt.Errorf("record cache entry %s: %w", key, err)
	}
	return u, nil
}

// clear removes what a fill of key left, now: its tree, unmounted first
// when it is an image's, and the image.
func (c *Cache) clear(ctx context.Context, key string) error {
	dest := c.Path(key)
	if c.images != nil {
		if err := c.images.Unmount(ctx, dest); err != nil {
			return err
		}
		if err := os.Remove(dest + imageSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return os.RemoveAll(dest)
}

// AdoptImage makes image, a filesystem image on the cache's filesystem
// whose root holds key's content, the entry of key, with nothing copied:
// it moves image to <key>.img, mounts it read-write on <key>/ for prepare,
// which readies the tree there (as archive.Normalize does) and returns its
// usage, then mounts it again read-only (on a read-only loop device, with
// Images from outputfs.Ext4), and only then is the entry visible.
// Acquire calls for key meanwhile wait for it, as for a fill, and the
// cache's bounds and eviction apply as to a fill; the entry's usage counts
// the larger of its tree's bytes and its image's allocated blocks, and an
// inode for the image.
//
// It reports whether it adopted image: not when key is cached or being
// filled already, nor without WithImages; image is then left where it is.
// On error, image is deleted (when it had been moved) and nothing of it
// stays in the cache. A rename across filesystems fails (EXDEV). Safe for
// concurrent use; not idempotent (the image moves).
func (c *Cache) AdoptImage(ctx context.Context, key, image string, prepare FillUsageFunc) (adopted bool, err error) {
	if c.images == nil {
		return false, nil
	}
	if !keyPattern.MatchString(key) {
		return false, fmt.Errorf("invalid cache key %q", key)
	}
	c.mu.Lock()
	if _, ok := c.entries[key]; ok || c.fills[key] != nil {
		c.mu.Unlock()
		return false, nil
	}
	call := &fillCall{done: make(chan struct{})}
	c.fills[key] = call
	c.mu.Unlock()
	c.fill(ctx, key, func(ctx context.Context, dest string) (archive.Usage, error) {
		img := dest + imageSuffix
		if err := os.Rename(image, img); err != nil {
			return archive.Usage{}, fmt.Errorf("move the image into the input cache: %w", err)
		}
		if err := os.Mkdir(dest, 0o700); err != nil {
			return archive.Usage{}, err
		}
		if err := c.images.MountImage(ctx, img, dest, false); err != nil {
			return archive.Usage{}, err
		}
		u, err := prepare(ctx, dest)
		if err != nil {
			return archive.Usage{}, err
		}
		// Written back by the unmount; read-only for the kernel from now on.
		if err := c.images.Unmount(ctx, dest); err != nil {
			return archive.Usage{}, err
		}
		if err := c.images.MountImage(ctx, img, dest, true); err != nil {
			return archive.Usage{}, err
		}
		var st unix.Stat_t
		if err := unix.Stat(img, &st); err != nil {
			return archive.Usage{}, &os.PathError{Op: "stat", Path: img, Err: err}
		}
		u.Bytes = max(u.Bytes, st.Blocks*512)
		u.Inodes++
		return u, nil
	}, true, call)
	return call.err == nil, call.err
}

// mountImage mounts key's image, read-only, on its tree, unless it is
// mounted there already.
func (c *Cache) mountImage(ctx context.Context, key string) error {
	if c.images == nil {
		return errors.New("the cache was opened without WithImages")
	}
	return c.images.MountImage(ctx, c.Path(key)+imageSuffix, c.Path(key), true)
}

// fits fails with ErrTooLarge when u, an entry's usage, exceeds a bound of
// the cache by itself: no eviction could make room for it.
func (c *Cache) fits(key string, u archive.Usage) error {
	const raise = "raise it on the node plugin, or lower maxArtifactBytes so that no input can outgrow the cache"
	switch {
	case u.Bytes > c.max.Bytes:
		return errdefs.Limit("--cache-size", raise, fmt.Errorf("%w: %s takes %d bytes of disk (file content in 4 KiB blocks, 4 KiB per directory), "+
			"more than the whole cache may hold, %d bytes", ErrTooLarge, key, u.Bytes, c.max.Bytes))
	case u.Inodes > c.max.Inodes:
		return errdefs.Limit("--cache-max-inodes", raise, fmt.Errorf("%w: %s takes %d inodes (files, directories and symlinks), "+
			"more than the whole cache may hold, %d", ErrTooLarge, key, u.Inodes, c.max.Inodes))
	}
	return nil
}

// evictLocked removes unpinned entries, least recently used first, until
// the cache fits both its bounds.
func (c *Cache) evictLocked() {
	for c.used.Bytes > c.max.Bytes || c.used.Inodes > c.max.Inodes {
		victim := ""
		for k, e := range c.entries {
			if e.refs == 0 && (victim == "" || e.lastUsed.Before(c.entries[victim].lastUsed)) {
				victim = k
			}
		}
		if victim == "" {
			return // everything left is mounted
		}
		c.used = add(c.used, archive.Usage{Bytes: -c.entries[victim].usage.Bytes, Inodes: -c.entries[victim].usage.Inodes})
		delete(c.entries, victim)
		c.discard(victim)
	}
}

// discard removes key's entry: its metadata first (so that, from then on,
// Open removes whatever is left), its tree and its image.
func (c *Cache) discard(key string) {
	c.remove(key + ".json")
	c.remove(key)
	c.remove(key + imageSuffix)
}

// remove deletes a cache file or directory: a directory is first
// unmounted, when it is an adopted image's, and renamed out of the way, so
// that the name is free at once, then deleted in the background. A
// directory that cannot be unmounted stays, for Open to retry.
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
	if c.images != nil {
		if err := c.images.Unmount(context.Background(), p); err != nil {
			klog.Background().Error(err, "Could not unmount an input cache entry; it stays until the plugin restarts", "path", p)
			return
		}
	}
	trash, err := os.MkdirTemp(c.dir, ".trash-")
	if err != nil || os.Rename(p, filepath.Join(trash, "d")) != nil {
		os.RemoveAll(trash)
		trash = p
	}
	c.trash.Go(func() { os.RemoveAll(trash) })
}

const bootIDFile = "boot_id"

func (c *Cache) sameBoot() (bool, error) {
	b, err := os.ReadFile(filepath.Join(c.dir, bootIDFile))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil && string(b) == bootid.Current(), err
}

func (c *Cache) writeBootID() error {
	return atomicfile.Write(filepath.Join(c.dir, bootIDFile), []byte(bootid.Current()), 0o644, atomicfile.Durable)
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}
