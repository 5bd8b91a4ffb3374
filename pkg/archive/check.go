package archive

// TreeCheck applies Extract's rules to a tree that another format
// describes entry by entry (the chunked layout's index): names and link
// targets within MaxPathLength, no duplicate, no parent that is not a
// directory or that is a symlink, hardlinks to earlier regular files, no
// absolute symlink, every symlink resolving inside the root (checked by
// Close, once the tree is complete), and the footprint (Usage) within
// MaxBytes and MaxEntries. Names must be clean and relative. Not safe for
// concurrent use.
type TreeCheck struct {
	lim   Limits
	tree  *tree
	usage Usage
}

// NewTreeCheck returns a TreeCheck with lim (zero fields take Extract's
// defaults, negative ones no limit).
func NewTreeCheck(lim Limits) *TreeCheck {
	return &TreeCheck{lim: lim.WithDefaults(), tree: newTree()}
}

// Add checks and records one entry; size is a regular file's length,
// target a symlink's target or a hardlink's first name. Errors wrap
// ErrUnsafeEntry or ErrLimitExceeded and name the entry.
func (c *TreeCheck) Add(name string, k EntryKind, target string, size int64) error {
	n := len(name)
	if k == KindDir {
		n++ // "name/" in an archive
	}
	if n > c.lim.MaxPathLength || len(target) > c.lim.MaxPathLength {
		return entryErr(ErrLimitExceeded, name[:min(len(name), 64)], "name or link target longer than %d bytes", c.lim.MaxPathLength)
	}
	u, err := c.tree.add(name, kind(k), target, size)
	if err != nil {
		return err
	}
	return c.lim.charge(&c.usage, u, name)
}

// Close checks that every symlink resolves inside the root.
func (c *TreeCheck) Close() error { return c.tree.checkLinks() }

// Usage is the footprint of the entries added so far.
func (c *TreeCheck) Usage() Usage { return c.usage }
