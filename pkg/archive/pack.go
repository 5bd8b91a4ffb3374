package archive

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// Stats describes a packed or extracted tree.
type Stats struct {
	Entries int64 // entries in the archive, the root excluded
	Bytes   int64 // bytes of regular file content
	Usage   Usage // what the tree takes on disk, by the rule on Usage
}

// PackOption configures Pack.
type PackOption func(*packOptions)

type packOptions struct {
	lim Limits
}

// WithPackLimits makes Pack refuse a tree that Extract would refuse with
// lim. Default: Limits{}, Extract's defaults.
func WithPackLimits(lim Limits) PackOption {
	return func(o *packOptions) { o.lim = lim }
}

// Pack writes dir to w as an uncompressed, reproducible tar stream in one
// pass, without buffering file content in memory.
//
// Pack never follows a symlink: the tree is walked through directory file
// descriptors opened with O_NOFOLLOW, so a link inside dir cannot make it read
// anything outside. Symlinks whose target would leave dir, sockets, devices and
// FIFOs are refused with an error naming the path, because Extract would
// refuse them too. So are trees that Extract would refuse with the
// [WithPackLimits] limits (default: Extract's defaults): more than
// MaxEntries entries or inodes, a disk footprint ([Usage]) over MaxBytes,
// or a name or link target longer than MaxPathLength (ErrLimitExceeded),
// each detected before the entry is written; this also bounds what Pack
// keeps in memory, the names of the tree. Pack is safe for concurrent use
// on different directories; dir must not change while it runs (a file
// that shrinks is an error).
func Pack(ctx context.Context, dir string, w io.Writer, opts ...PackOption) (Stats, error) {
	var o packOptions
	for _, opt := range opts {
		opt(&o)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Stats{}, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	p := &packer{
		ctx:   ctx,
		lim:   o.lim.withDefaults(),
		tw:    tar.NewWriter(w),
		links: map[inode]string{},
		tree:  newTree(),
		buf:   make([]byte, 256<<10),
	}
	if err := p.walk(fd, ""); err != nil {
		return p.stats, err
	}
	if err := p.tree.checkLinks(); err != nil {
		return p.stats, err
	}
	return p.stats, p.tw.Close()
}

type inode struct{ dev, ino uint64 }

type packer struct {
	ctx   context.Context
	lim   Limits
	tw    *tar.Writer
	links map[inode]string // first name of each multiply-linked file
	tree  *tree
	buf   []byte
	stats Stats
}

func (p *packer) walk(dirfd int, prefix string) error {
	names, err := readDirNames(dirfd)
	if err != nil {
		return fmt.Errorf("read directory %q: %w", prefix, err)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := p.ctx.Err(); err != nil {
			return err
		}
		if err := p.entry(dirfd, prefix, name); err != nil {
			return err
		}
	}
	return nil
}

func (p *packer) entry(dirfd int, prefix, name string) error {
	rel := prefix + name
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "lstat", Path: rel, Err: err}
	}
	hdr := &tar.Header{
		Name:    rel,
		Mode:    int64(st.Mode & 0o777),
		ModTime: Epoch,
		Format:  tar.FormatPAX,
	}
	p.stats.Entries++
	if p.stats.Entries > p.lim.MaxEntries {
		return fmt.Errorf("%w: the tree has more than %d entries", ErrLimitExceeded, p.lim.MaxEntries)
	}
	n := len(rel)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		n++ // its name ends in "/"
	}
	if n > p.lim.MaxPathLength {
		return fmt.Errorf("%w: %q...: name longer than %d bytes", ErrLimitExceeded, rel[:min(len(rel), 64)], p.lim.MaxPathLength)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
		if err := p.add(rel, kindDir, "", 0); err != nil {
			return err
		}
		if err := p.tw.WriteHeader(hdr); err != nil {
			return err
		}
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: rel, Err: err}
		}
		defer unix.Close(fd)
		return p.walk(fd, rel+"/")
	case unix.S_IFLNK:
		target, err := readlinkat(dirfd, name)
		if err != nil {
			return &os.PathError{Op: "readlink", Path: rel, Err: err}
		}
		if len(target) > p.lim.MaxPathLength {
			return fmt.Errorf("%w: %q: link target longer than %d bytes", ErrLimitExceeded, rel, p.lim.MaxPathLength)
		}
		if err := p.add(rel, kindSymlink, target, 0); err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		return p.tw.WriteHeader(hdr)
	case unix.S_IFREG:
		if st.Nlink > 1 {
			key := inode{uint64(st.Dev), st.Ino}
			if first, ok := p.links[key]; ok {
				if err := p.add(rel, kindHardlink, first, 0); err != nil {
					return err
				}
				hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
				return p.tw.WriteHeader(hdr)
			}
			p.links[key] = rel
		}
		if err := p.add(rel, kindFile, "", st.Size); err != nil {
			return err
		}
		return p.file(dirfd, name, hdr, &st)
	default:
		return fmt.Errorf("%w: %q is a %s; only regular files, directories and symlinks can be archived",
			ErrUnsupportedFile, rel, fileKind(st.Mode))
	}
}

// add records an entry in the tree and charges its footprint against the
// limits, as Extract will.
func (p *packer) add(rel string, k kind, target string, size int64) error {
	u, err := p.tree.add(rel, k, target, size)
	if err != nil {
		return err
	}
	return p.lim.charge(&p.stats.Usage, u, rel)
}

func (p *packer) file(dirfd int, name string, hdr *tar.Header, st *unix.Stat_t) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: hdr.Name, Err: err}
	}
	f := os.NewFile(uintptr(fd), hdr.Name)
	defer f.Close()
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		return &os.PathError{Op: "stat", Path: hdr.Name, Err: err}
	}
	if fst.Ino != st.Ino || fst.Dev != st.Dev {
		return fmt.Errorf("%q was replaced while packing", hdr.Name)
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
	if err := p.tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.CopyBuffer(p.tw, io.LimitReader(f, st.Size), p.buf)
	p.stats.Bytes += n
	if err != nil {
		return fmt.Errorf("pack %q: %w", hdr.Name, err)
	}
	if n != st.Size {
		return fmt.Errorf("%q shrank while packing (%d of %d bytes)", hdr.Name, n, st.Size)
	}
	return nil
}

func readDirNames(dirfd int) ([]string, error) {
	dup, err := unix.Dup(dirfd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "")
	defer f.Close()
	return f.Readdirnames(-1)
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	}
	return fmt.Sprintf("file of mode %#o", mode)
}

// OnlyFile returns the name of the one regular file dir holds: the
// content of a single-file artifact. A directory holding anything else, or
// more, is an error wrapping ErrUnsupportedFile.
func OnlyFile(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	if len(entries) != 1 || !entries[0].Type().IsRegular() {
		return "", fmt.Errorf("%w: want exactly one regular file in %s, found %d entries", ErrUnsupportedFile, dir, len(entries))
	}
	return entries[0].Name(), nil
}
