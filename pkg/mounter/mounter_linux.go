package mounter

import (
	"errors"
	"fmt"
	"io/fs"

	"golang.org/x/sys/unix"
	mountutils "k8s.io/mount-utils"
)

// maxStacked bounds Unmount's loop: a retried publish after a crash can have
// stacked a mount or two on a target, never more.
const maxStacked = 16

type linux struct{ detector *mountutils.Mounter }

// New returns the Linux implementation. It needs CAP_SYS_ADMIN in the mount
// namespace kubelet's pod directories are in (a privileged container with
// Bidirectional propagation on the kubelet directory).
func New() Interface {
	return linux{detector: mountutils.New("").(*mountutils.Mounter)}
}

func (m linux) BindMount(source, target string, readOnly bool) error {
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return &fs.PathError{Op: "bind mount " + source + " on", Path: target, Err: err}
	}
	// Flags of a bind mount only change on a remount of it.
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV)
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount("", target, "", flags, ""); err != nil {
		err = &fs.PathError{Op: "remount", Path: target, Err: err}
		if uerr := unix.Unmount(target, unix.UMOUNT_NOFOLLOW); uerr != nil {
			err = errors.Join(err, fmt.Errorf("undo bind mount on %s: %w", target, uerr))
		}
		return err
	}
	return nil
}

func (m linux) Unmount(target string) error {
	for range maxStacked {
		mounted, err := m.IsMountPoint(target)
		if err != nil || !mounted {
			return err
		}
		if err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW); err != nil && err != unix.EINVAL {
			return &fs.PathError{Op: "unmount", Path: target, Err: err}
		}
	}
	return fmt.Errorf("unmount %s: still a mount point after %d unmounts", target, maxStacked)
}

func (m linux) IsMountPoint(target string) (bool, error) {
	mounted, err := m.detector.IsMountPoint(target)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return mounted, err
}
