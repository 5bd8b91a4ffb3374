package archive

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Normalize gives the tree below dir, and dir itself, the metadata that
// Extract with modes gives what Pack archives of it, so that a tree
// packed on a node can be served there as if it had been extracted: every
// entry owned by the caller's effective uid and gid; the permission bits
// of modes ([Modes.Of]) on files and directories, which drops setuid,
// setgid and sticky; no extended attributes (so no ACL and no file
// capability), except the security.selinux label, which the host's
// policy owns, as it does on extracted files. Times are left as they are:
// Extract does not restore them either.
//
// It returns the tree's Usage as Measure does, with lim, and refuses,
// wrapping ErrUnsafeEntry, a socket, device or FIFO, which Pack refuses
// too. It follows no symlink. It needs the rights to chown (root), and
// nothing else may change the tree while it runs: on error the tree is
// left partly normalized. Safe for concurrent use on different trees.
func Normalize(ctx context.Context, dir string, modes Modes, lim Limits) (Usage, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Usage{}, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	n := &normalizer{modes: modes, uid: os.Geteuid(), gid: os.Getegid()}
	m := &measurer{ctx: ctx, lim: lim.WithDefaults(), links: map[inode]struct{}{}, normalize: n}
	if err := m.walk(fd, ""); err != nil {
		return m.usage, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return m.usage, &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	return m.usage, n.entry(fd, "", ".", &st)
}

// normalizer gives entries Extract's metadata; a nil one does nothing.
type normalizer struct {
	modes    Modes
	uid, gid int
	names    []byte // listxattr's buffer
}

// entry normalizes name, an entry of dirfd ("" for dirfd itself) whose
// stat is st; rel names it in errors.
func (n *normalizer) entry(dirfd int, name, rel string, st *unix.Stat_t) error {
	if n == nil {
		return nil
	}
	if err := n.dropXattrs(dirfd, name, rel); err != nil {
		return err
	}
	if int(st.Uid) != n.uid || int(st.Gid) != n.gid {
		flags := unix.AT_SYMLINK_NOFOLLOW
		if name == "" {
			flags |= unix.AT_EMPTY_PATH
		}
		if err := unix.Fchownat(dirfd, name, n.uid, n.gid, flags); err != nil {
			return &os.PathError{Op: "chown", Path: rel, Err: err}
		}
	}
	typ := st.Mode & unix.S_IFMT
	if typ == unix.S_IFLNK {
		return nil // a symlink's own mode means nothing
	}
	// After the chown, which may have cleared setuid and setgid: st's
	// bits are not the file's any more.
	want := n.modes.mode(st.Mode, typ == unix.S_IFDIR)
	if name == "" {
		if err := unix.Fchmod(dirfd, want); err != nil {
			return &os.PathError{Op: "chmod", Path: rel, Err: err}
		}
		return nil
	}
	if err := unix.Fchmodat(dirfd, name, want, 0); err != nil { // not a symlink: nothing to follow
		return &os.PathError{Op: "chmod", Path: rel, Err: err}
	}
	return nil
}

// dropXattrs removes the extended attributes of name in dirfd ("" for
// dirfd itself), but its SELinux label. There is no listxattrat: a path
// through /proc/self/fd stays short whatever the entry's depth, and the
// kernel resolves it from dirfd.
func (n *normalizer) dropXattrs(dirfd int, name, rel string) error {
	if n.names == nil {
		n.names = make([]byte, 4096)
	}
	list, remove := func(dest []byte) (int, error) { return unix.Flistxattr(dirfd, dest) },
		func(attr string) error { return unix.Fremovexattr(dirfd, attr) }
	if name != "" {
		path := "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
		list, remove = func(dest []byte) (int, error) { return unix.Llistxattr(path, dest) },
			func(attr string) error { return unix.Lremovexattr(path, attr) }
	}
	for {
		size, err := list(n.names)
		switch {
		case errors.Is(err, unix.ERANGE):
			if len(n.names) >= 1<<16 { // the kernel's bound of a list
				return &os.PathError{Op: "listxattr", Path: rel, Err: err}
			}
			n.names = make([]byte, 2*len(n.names))
			continue
		case errors.Is(err, unix.ENOTSUP):
			return nil
		case err != nil:
			return &os.PathError{Op: "listxattr", Path: rel, Err: err}
		}
		for attr := range bytes.SplitSeq(n.names[:size], []byte{0}) {
			if len(attr) == 0 || string(attr) == "security.selinux" {
				continue
			}
			if err := remove(string(attr)); err != nil && !errors.Is(err, unix.ENODATA) {
				return &os.PathError{Op: "removexattr " + string(attr), Path: rel, Err: err}
			}
		}
		return nil
	}
}
