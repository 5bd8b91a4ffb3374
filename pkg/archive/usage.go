package archive

import (
	"context"
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// BlockSize is the allocation unit of the footprint rule: the default block
// size of ext4 and XFS, and the page size tmpfs allocates by.
const BlockSize = 4096

// inlineSymlinkMax is the longest symlink target the footprint rule keeps
// in the inode: ext4 stores targets shorter than 60 bytes there (a "fast"
// symlink); XFS and btrfs inline longer ones, so the rule errs high there.
const inlineSymlinkMax = 59

// Usage is what a tree takes on disk, by the one rule that Pack, Extract
// and Measure apply alike, so that a tree a producer may pack under a limit
// a consumer may extract under the same limit:
//
//   - a regular file: its content rounded up to BlockSize, and one inode;
//   - a hardlink to a file already counted: nothing;
//   - a directory, whether an entry or implied by an entry's path:
//     BlockSize, and one inode;
//   - a symlink: one inode, and BlockSize when its target is longer than
//     59 bytes (a shorter one lives in the inode);
//   - the root directory: nothing (it is the caller's: Extract's dest,
//     Pack's dir).
//
// The rule is a model, not a measurement of st_blocks, so that an
// artifact counts the same on every node and at every moment (right after
// a write, st_blocks includes delayed-allocation reservations and XFS's
// speculative preallocation). It errs high for small files on filesystems
// that inline or compress them (btrfs), and low for a directory whose
// entries outgrow one block (some 170 names of 16 bytes on ext4; each name
// takes at most 264 bytes, so the inode bound bounds that error too) and
// for the extent trees of fragmented large files.
type Usage struct {
	Bytes  int64 // disk space
	Inodes int64 // files, directories and symlinks
}

// footprint returns the Usage of one entry of kind k: size is a file's
// content, targetLen a symlink's target length.
func footprint(k kind, size int64, targetLen int) Usage {
	switch k {
	case kindFile:
		return Usage{Bytes: blocks(size), Inodes: 1}
	case kindDir:
		return Usage{Bytes: BlockSize, Inodes: 1}
	case kindSymlink:
		if targetLen > inlineSymlinkMax {
			return Usage{Bytes: BlockSize, Inodes: 1}
		}
		return Usage{Inodes: 1}
	}
	return Usage{} // a hardlink
}

// blocks rounds n up to whole blocks, saturating near MaxInt64.
func blocks(n int64) int64 {
	if n <= 0 {
		return 0
	}
	return satAdd(n, BlockSize-1) &^ (BlockSize - 1)
}

// charge adds u, what entry takes, to *total, or fails with
// ErrLimitExceeded, naming the bound, when the sum would pass l (which
// has its defaults applied); *total is then unchanged.
func (l Limits) charge(total *Usage, u Usage, entry string) error {
	if u.Bytes > l.MaxBytes-total.Bytes {
		return entryErr(ErrLimitExceeded, entry, "the artifact would take more than %d bytes of disk "+
			"(file content rounded up to 4 KiB blocks, plus 4 KiB per directory and long symlink); "+
			"raise maxArtifactBytes to allow more", l.MaxBytes)
	}
	if u.Inodes > l.MaxEntries-total.Inodes {
		return entryErr(ErrLimitExceeded, entry, "the artifact would take more than %d inodes "+
			"(files, directories, including those its paths imply, and symlinks); "+
			"that is the most entries an artifact may have", l.MaxEntries)
	}
	total.Bytes += u.Bytes
	total.Inodes += u.Inodes
	return nil
}

// Measure returns the Usage of the tree below dir by the rule documented on
// Usage, counting each multiply-linked file once. It stops at the first
// entry that takes the tree past lim.MaxBytes or lim.MaxEntries (zero
// fields take their defaults, negative ones no limit) with an error
// wrapping ErrLimitExceeded, and returns the usage counted so far with any
// error. It follows no symlink, counts sockets, devices and FIFOs as one
// inode each, and reads no file content: its cost is one fstatat per
// entry. Safe for concurrent use; dir should not change while it runs.
func Measure(ctx context.Context, dir string, lim Limits) (Usage, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Usage{}, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	m := &measurer{ctx: ctx, lim: lim.WithDefaults(), links: map[inode]struct{}{}}
	err = m.walk(fd, "")
	return m.usage, err
}

type measurer struct {
	ctx   context.Context
	lim   Limits
	links map[inode]struct{}
	usage Usage
	// normalize, when set, gives each entry what Extract would: see
	// Normalize.
	normalize *normalizer
}

func (m *measurer) walk(dirfd int, prefix string) error {
	names, err := readDirNames(dirfd)
	if err != nil {
		return fmt.Errorf("read directory %q: %w", prefix, err)
	}
	slices.Sort(names) // in Pack's order, so that both blame the same entry
	for _, name := range names {
		if err := m.ctx.Err(); err != nil {
			return err
		}
		if err := m.entry(dirfd, prefix, name); err != nil {
			return err
		}
	}
	return nil
}

func (m *measurer) entry(dirfd int, prefix, name string) error {
	rel := prefix + name
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "lstat", Path: rel, Err: err}
	}
	var u Usage
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := m.lim.charge(&m.usage, footprint(kindDir, 0, 0), rel); err != nil {
			return err
		}
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: rel, Err: err}
		}
		defer unix.Close(fd)
		if err := m.walk(fd, rel+"/"); err != nil {
			return err
		}
		return m.normalize.entry(dirfd, name, rel, &st) // after its entries: a directory may become read-only
	case unix.S_IFLNK:
		u = footprint(kindSymlink, 0, int(st.Size)) // a symlink's size is its target's length
	case unix.S_IFREG:
		u = footprint(kindFile, st.Size, 0)
		if st.Nlink > 1 {
			key := inode{uint64(st.Dev), st.Ino}
			if _, seen := m.links[key]; seen {
				u = footprint(kindHardlink, 0, 0)
			} else {
				m.links[key] = struct{}{}
			}
		}
	default:
		if m.normalize != nil {
			return entryErr(ErrUnsafeEntry, rel, "sockets, devices and FIFOs are not archived")
		}
		u = Usage{Inodes: 1}
	}
	if err := m.lim.charge(&m.usage, u, rel); err != nil {
		return err
	}
	return m.normalize.entry(dirfd, name, rel, &st)
}
