package archive

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"

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
	tw := tar.NewWriter(w)
	buf := make([]byte, 256<<10)
	stats, err := Walk(ctx, dir, o.lim, func(e *Entry) error {
		hdr := &tar.Header{Name: e.Name, Mode: int64(e.Mode), ModTime: Epoch, Format: tar.FormatPAX}
		switch e.Kind {
		case KindDir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, e.Name+"/"
		case KindSymlink:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.Target
		case KindHardlink:
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, e.Target
		case KindFile:
			hdr.Typeflag, hdr.Size = tar.TypeReg, e.Size
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if e.Kind == KindFile {
			if _, err := io.CopyBuffer(tw, e.Content, buf); err != nil {
				return fmt.Errorf("pack %q: %w", e.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return stats, err
	}
	return stats, tw.Close()
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
