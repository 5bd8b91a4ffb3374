package outputfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Loop devices, through their ioctls: no losetup(8), no mount(8).

const (
	loopControl = "/dev/loop-control"
	sysBlock    = "/sys/block"
)

// attach binds image to a free loop device that detaches itself once the
// last mount of it goes away, and returns the device opened: the caller
// mounts it, then closes it.
func attach(image string, readOnly bool) (*os.File, error) {
	mode, flags := os.O_RDWR, uint32(unix.LO_FLAGS_AUTOCLEAR)
	if readOnly {
		mode, flags = os.O_RDONLY, flags|unix.LO_FLAGS_READ_ONLY
	}
	backing, err := os.OpenFile(image, mode|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer backing.Close()
	ctl, err := os.OpenFile(loopControl, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop devices: %w", err)
	}
	defer ctl.Close()
	// Another process may take the free device between the two calls.
	for range 32 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop devices: get a free one: %w", err)
		}
		dev, err := openLoop(n, mode)
		if err != nil {
			return nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd()), Info: unix.LoopInfo64{Flags: flags}}
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], image)
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			err = setFD(dev, backing, &cfg.Info) // before Linux 5.8
		}
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("bind %s to %s: %w", image, dev.Name(), err)
		}
	}
	return nil, fmt.Errorf("bind %s to a loop device: every free one was taken first", image)
}

func setFD(dev, backing *os.File, info *unix.LoopInfo64) error {
	if err := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_SET_FD, int(backing.Fd())); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(int(dev.Fd()), info); err != nil {
		unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}

// openLoop opens loop device n, creating its node when /dev lacks it: a
// container's /dev holds the devices that existed when it started, and
// LOOP_CTL_GET_FREE creates new ones.
func openLoop(n int, mode int) (*os.File, error) {
	path := fmt.Sprintf("/dev/loop%d", n)
	f, err := os.OpenFile(path, mode|unix.O_CLOEXEC, 0)
	if !errors.Is(err, os.ErrNotExist) {
		return f, err
	}
	b, err := os.ReadFile(filepath.Join(sysBlock, fmt.Sprintf("loop%d", n), "dev"))
	if err != nil {
		return nil, err
	}
	var major, minor uint32
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &major, &minor); err != nil {
		return nil, fmt.Errorf("loop%d: device number %q: %w", n, b, err)
	}
	if err := unix.Mknod(path, unix.S_IFBLK|0o660, int(unix.Mkdev(major, minor))); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	return os.OpenFile(path, mode|unix.O_CLOEXEC, 0)
}

// findLoop returns the loop device image is bound to, or "" when there is
// none. It is how a restarted plugin finds a filesystem that a pod's mount
// still holds: mounting that device again gives the same filesystem, where
// binding the image anew would give a second one over the same blocks.
func findLoop(image string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(image, &st); err != nil {
		return "", err
	}
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		var n int
		if _, err := fmt.Sscanf(e.Name(), "loop%d", &n); err != nil || e.Name() != fmt.Sprintf("loop%d", n) {
			continue
		}
		if _, err := os.Stat(filepath.Join(sysBlock, e.Name(), "loop")); err != nil {
			continue // not bound
		}
		dev, err := openLoop(n, os.O_RDONLY)
		if err != nil {
			continue
		}
		info, err := unix.IoctlLoopGetStatus64(int(dev.Fd()))
		dev.Close()
		if err == nil && info.Device == uint64(st.Dev) && info.Inode == st.Ino {
			return dev.Name(), nil
		}
	}
	return "", nil
}
