// Package digestcache remembers which compressed blob an uncompressed
// archive became, so that pushing an unchanged tree again needs no
// compression: hash the tar stream, look up the blob, and skip the upload
// when the registry already has it.
//
// An entry states a fact about content ("the blob with digest D decompresses
// to the tar stream with digest U"), true whatever the compressor version or
// level. Entries are small files written atomically, so several processes
// may share a cache directory. The cache directory must be private to its
// user: whoever can write it can make a later push reference a different
// blob.
package digestcache

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Entry is a remembered compressed blob.
type Entry struct {
	Digest v1.Hash
	Size   int64
}

// Cache is a directory of entries keyed by uncompressed digest and
// compression. A nil *Cache is valid and remembers nothing. Safe for
// concurrent use, also across processes.
type Cache struct{ dir string }

// Open returns the cache stored in dir, creating it with mode 0700.
func Open(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open digest cache: %w", err)
	}
	return &Cache{dir: dir}, nil
}

// DefaultDir is the user's cache directory (for example
// ~/.cache/tekton-artifacts/digests), or "" when the user has none.
func DefaultDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "tekton-artifacts", "digests")
}

func (c *Cache) path(diffID v1.Hash, compression string) string {
	return filepath.Join(c.dir, compression+"-"+diffID.Hex)
}

// Get returns the blob that diffID was compressed to with compression.
func (c *Cache) Get(diffID v1.Hash, compression string) (Entry, bool) {
	if c == nil {
		return Entry{}, false
	}
	b, err := os.ReadFile(c.path(diffID, compression))
	if err != nil {
		return Entry{}, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return Entry{}, false
	}
	h, err := v1.NewHash(f[0])
	if err != nil {
		return Entry{}, false
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || n < 0 {
		return Entry{}, false
	}
	return Entry{Digest: h, Size: n}, true
}

// Put records that diffID compressed with compression is e. It replaces
// an earlier entry atomically.
func (c *Cache) Put(diffID v1.Hash, compression string, e Entry) error {
	if c == nil {
		return nil
	}
	tmp, err := os.CreateTemp(c.dir, ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := fmt.Fprintf(tmp, "%s %d\n", e.Digest, e.Size); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), c.path(diffID, compression))
}
