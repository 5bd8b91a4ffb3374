package archive

import (
	"path"
	"strings"
)

type kind uint8

const (
	kindDir kind = iota + 1
	kindFile
	kindHardlink
	kindSymlink
)

// maxLinkHops mirrors the kernel's limit on symlinks followed in one lookup.
const maxLinkHops = 40

// maxLinkSteps bounds the work of resolving all symlinks of one archive
// together (well under a second): chains of long targets would otherwise
// cost up to maxLinkHops × MaxPathLength steps per link. A step is one
// path component, plus one per 64 bytes of each path looked up.
const maxLinkSteps = 1 << 24

type node struct {
	kind   kind
	target string // symlink target or hardlink source
}

// tree models the entries of one archive so that link rules can be checked
// on names alone, without asking the filesystem.
type tree struct {
	nodes map[string]node
	links []string // symlink names, in archive order
	steps int      // components resolved so far by checkLinks
}

func newTree() *tree { return &tree{nodes: map[string]node{}} }

// add records the entry name (clean, relative, non-empty) and returns the
// Usage it adds to the tree: its footprint (size is a file's content), plus
// that of the parents it implies, and nothing for a directory already
// present. Parents that are absent are recorded as directories, as tar
// extractors create them.
func (t *tree) add(name string, k kind, target string, size int64) (Usage, error) {
	implied, err := t.addParents(name)
	if err != nil {
		return Usage{}, err
	}
	u := Usage{Bytes: implied * BlockSize, Inodes: implied}
	if old, ok := t.nodes[name]; ok {
		if old.kind == kindDir && k == kindDir {
			return u, nil
		}
		return Usage{}, entryErr(ErrUnsafeEntry, name, "duplicate entry")
	}
	switch k {
	case kindHardlink:
		src, ok := t.nodes[target]
		if !ok || (src.kind != kindFile && src.kind != kindHardlink) {
			return Usage{}, entryErr(ErrUnsafeEntry, name, "hardlink target %q is not a regular file earlier in the archive", target)
		}
	case kindSymlink:
		if path.IsAbs(target) {
			return Usage{}, entryErr(ErrUnsafeEntry, name, "symlink target %q is absolute", target)
		}
		t.links = append(t.links, name)
	}
	t.nodes[name] = node{kind: k, target: target}
	f := footprint(k, size, len(target))
	return Usage{Bytes: u.Bytes + f.Bytes, Inodes: u.Inodes + f.Inodes}, nil
}

// addParents records name's absent parents as directories and returns how
// many it recorded.
func (t *tree) addParents(name string) (implied int64, err error) {
	for i := 0; i < len(name); i++ {
		if name[i] != '/' {
			continue
		}
		dir := name[:i]
		n, ok := t.nodes[dir]
		switch {
		case !ok:
			t.nodes[dir] = node{kind: kindDir}
			implied++
		case n.kind == kindSymlink:
			return 0, entryErr(ErrUnsafeEntry, name, "path resolves through symlink %q", dir)
		case n.kind != kindDir:
			return 0, entryErr(ErrUnsafeEntry, name, "parent %q is not a directory", dir)
		}
	}
	return implied, nil
}

// checkLinks resolves every symlink against the final tree, following links
// to other entries as the kernel would, and fails if any resolution climbs
// above the root. It runs after the last entry because a later entry can
// change how an earlier link resolves.
func (t *tree) checkLinks() error {
	for _, name := range t.links {
		if err := t.resolve(name); err != nil {
			return err
		}
	}
	return nil
}

func (t *tree) resolve(link string) error {
	// key is the path resolved so far, ends[i] its length up to component
	// i, and known how many of its leading components are entries. Growing
	// key in place, and not looking up what lies below a missing entry
	// (nothing does), keeps a deep target from costing time quadratic in
	// its length.
	var key []byte
	var ends []int
	known := 0
	push := func(c string) {
		if len(ends) > 0 {
			key = append(key, '/')
		}
		key = append(key, c...)
		ends = append(ends, len(key))
	}
	pop := func() {
		ends = ends[:len(ends)-1]
		n := 0
		if len(ends) > 0 {
			n = ends[len(ends)-1]
		}
		key = key[:n]
		known = min(known, len(ends))
	}
	if dir := path.Dir(link); dir != "." {
		for _, c := range strings.Split(dir, "/") {
			push(c)
		}
	}
	known = len(ends) // the link's parents are entries
	// Components still to resolve, as a stack of targets: following a link
	// pushes its target instead of copying what remains.
	pending := [][]string{splitPath(t.nodes[link].target)}
	for hops := 0; len(pending) > 0; {
		top := pending[len(pending)-1]
		if len(top) == 0 {
			pending = pending[:len(pending)-1]
			continue
		}
		c := top[0]
		pending[len(pending)-1] = top[1:]
		if err := t.spend(link, 1); err != nil {
			return err
		}
		switch c {
		case "", ".":
			continue
		case "..":
			if len(ends) == 0 {
				return entryErr(ErrUnsafeEntry, link, "symlink target %q leaves the root", t.nodes[link].target)
			}
			pop()
			continue
		}
		push(c)
		if known < len(ends)-1 {
			continue
		}
		if err := t.spend(link, len(key)>>6); err != nil {
			return err
		}
		n, ok := t.nodes[string(key)]
		if !ok {
			continue
		}
		known = len(ends)
		if n.kind != kindSymlink {
			continue
		}
		if hops++; hops > maxLinkHops {
			return entryErr(ErrUnsafeEntry, link, "too many levels of symlinks")
		}
		if path.IsAbs(n.target) {
			return entryErr(ErrUnsafeEntry, link, "symlink target %q is absolute", n.target)
		}
		pop()
		pending = append(pending, splitPath(n.target))
	}
	return nil
}

// spend charges n steps of symlink resolution to the archive.
func (t *tree) spend(link string, n int) error {
	if t.steps += n; t.steps > maxLinkSteps {
		return entryErr(ErrLimitExceeded, link, "resolving the archive's symlinks takes more than %d steps", maxLinkSteps)
	}
	return nil
}

func splitPath(p string) []string { return strings.Split(p, "/") }
