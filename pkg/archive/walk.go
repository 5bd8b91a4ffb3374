package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// EntryKind is the type of a tree entry.
type EntryKind uint8

// Entry kinds. A file with several names is a KindFile at its first name
// (in walk order) and a KindHardlink, whose Target is that name, at the
// others.
const (
	KindDir EntryKind = iota + 1
	KindFile
	KindHardlink
	KindSymlink
)

// Entry is one entry of a tree, as Walk visits it.
type Entry struct {
	// Name is the entry's path relative to the root, "/"-separated, with
	// no trailing slash.
	Name string
	Kind EntryKind
	// Mode holds the permission bits, without setuid, setgid and sticky.
	Mode fs.FileMode
	// Size is a regular file's length.
	Size int64
	// Target is a symlink's target, or a hardlink's first name.
	Target string
	// Content reads a regular file's first Size bytes, and fails if the
	// file shrank meanwhile; nil for other kinds. Valid during the visit
	// only; what the visit leaves unread is read, and checked, after it.
	Content io.Reader
}

// Walk visits the tree of dir in archive order (sorted by name, a
// directory before what it holds) with Pack's rules: symlinks are never
// followed, a symlink whose target would leave dir and a socket, device
// or FIFO are refused, and a tree that Extract would refuse with lim
// (default: Extract's defaults) is refused before the entry that breaks
// it is visited. It returns what the tree holds and takes on disk. dir
// must not change while Walk runs. Safe for concurrent use on different
// directories.
func Walk(ctx context.Context, dir string, lim Limits, visit func(*Entry) error) (Stats, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Stats{}, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	w := &walker{ctx: ctx, lim: lim.WithDefaults(), visit: visit, links: map[inode]string{}, check: NewTreeCheck(lim)}
	err = w.walk(fd, "")
	if err == nil {
		err = w.check.Close()
	}
	w.stats.Usage = w.check.Usage()
	return w.stats, err
}

type inode struct{ dev, ino uint64 }

type walker struct {
	ctx   context.Context
	lim   Limits
	visit func(*Entry) error
	links map[inode]string // first name of each multiply-linked file
	check *TreeCheck
	stats Stats
}

func (w *walker) walk(dirfd int, prefix string) error {
	names, err := readDirNames(dirfd)
	if err != nil {
		return fmt.Errorf("read directory %q: %w", prefix, err)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		if err := w.entry(dirfd, prefix, name); err != nil {
			return err
		}
	}
	return nil
}

func (w *walker) entry(dirfd int, prefix, name string) error {
	rel := prefix + name
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "lstat", Path: rel, Err: err}
	}
	e := &Entry{Name: rel, Mode: fs.FileMode(st.Mode & 0o777)}
	w.stats.Entries++
	if w.stats.Entries > w.lim.MaxEntries {
		return fmt.Errorf("%w: the tree has more than %d entries", ErrLimitExceeded, w.lim.MaxEntries)
	}
	n := len(rel)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		n++ // its name ends in "/" in an archive
	}
	if n > w.lim.MaxPathLength {
		return fmt.Errorf("%w: %q...: name longer than %d bytes", ErrLimitExceeded, rel[:min(len(rel), 64)], w.lim.MaxPathLength)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		e.Kind = KindDir
		if err := w.add(rel, KindDir, "", 0); err != nil {
			return err
		}
		if err := w.visit(e); err != nil {
			return err
		}
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: rel, Err: err}
		}
		defer unix.Close(fd)
		return w.walk(fd, rel+"/")
	case unix.S_IFLNK:
		target, err := readlinkat(dirfd, name)
		if err != nil {
			return &os.PathError{Op: "readlink", Path: rel, Err: err}
		}
		if len(target) > w.lim.MaxPathLength {
			return fmt.Errorf("%w: %q: link target longer than %d bytes", ErrLimitExceeded, rel, w.lim.MaxPathLength)
		}
		if err := w.add(rel, KindSymlink, target, 0); err != nil {
			return err
		}
		e.Kind, e.Target = KindSymlink, target
		return w.visit(e)
	case unix.S_IFREG:
		if st.Nlink > 1 {
			key := inode{uint64(st.Dev), st.Ino}
			if first, ok := w.links[key]; ok {
				if err := w.add(rel, KindHardlink, first, 0); err != nil {
					return err
				}
				e.Kind, e.Target = KindHardlink, first
				return w.visit(e)
			}
			w.links[key] = rel
		}
		if err := w.add(rel, KindFile, "", st.Size); err != nil {
			return err
		}
		return w.file(dirfd, name, e, &st)
	default:
		return fmt.Errorf("%w: %q is a %s; only regular files, directories and symlinks can be archived",
			ErrUnsupportedFile, rel, fileKind(st.Mode))
	}
}

// add records an entry in the tree and charges its footprint against the
// limits, as Extract will.
func (w *walker) add(rel string, k EntryKind, target string, size int64) error {
	return w.check.Add(rel, k, target, size)
}

// file visits a regular file, open and checked to be the one stat saw.
func (w *walker) file(dirfd int, name string, e *Entry, st *unix.Stat_t) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: e.Name, Err: err}
	}
	f := os.NewFile(uintptr(fd), e.Name)
	defer f.Close()
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		return &os.PathError{Op: "stat", Path: e.Name, Err: err}
	}
	if fst.Ino != st.Ino || fst.Dev != st.Dev {
		return fmt.Errorf("%q was replaced while packing", e.Name)
	}
	c := &content{f: f, name: e.Name, left: st.Size}
	e.Kind, e.Size, e.Content = KindFile, st.Size, c
	err = w.visit(e)
	w.stats.Bytes += st.Size - c.left
	if err != nil {
		return err
	}
	if c.left > 0 { // the visit did not read it all: read the rest, to check it
		n, err := io.Copy(io.Discard, c)
		w.stats.Bytes += n
		if err != nil {
			return err
		}
	}
	return nil
}

// content reads a file's expected size, and fails if it has fewer bytes.
type content struct {
	f    *os.File
	name string
	left int64
}

func (c *content) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, io.EOF
	}
	n, err := c.f.Read(p[:min(int64(len(p)), c.left)])
	c.left -= int64(n)
	switch {
	case errors.Is(err, io.EOF) && c.left > 0:
		return n, fmt.Errorf("%q shrank while packing (%d bytes missing)", c.name, c.left)
	case err != nil && !errors.Is(err, io.EOF):
		return n, fmt.Errorf("read %q: %w", c.name, err)
	case c.left == 0:
		return n, io.EOF
	}
	return n, nil
}
