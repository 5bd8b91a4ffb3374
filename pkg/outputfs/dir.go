package outputfs

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Dir gives each output a plain directory of the state filesystem. Nothing
// bounds what the pod writes until push refuses an output over its limit;
// use it where loop devices are not available. Freeze syncs every file
// and directory but cannot stop a process that kept a file open. The zero
// value is ready to use and safe for concurrent use.
type Dir struct{}

// Create makes dir/data, owned as l asks.
func (Dir) Create(_ context.Context, dir string, l Limits) error {
	data := filepath.Join(dir, DataDir)
	if err := os.Mkdir(data, 0o700); err != nil {
		return err
	}
	return setOwner(data, l.GID)
}

// Mount checks that dir/data is there.
func (Dir) Mount(_ context.Context, dir string, _ bool) error {
	_, err := os.Lstat(filepath.Join(dir, DataDir))
	return err
}

// Freeze fsyncs every regular file and directory under dir/data, without
// following links: after an unclean reboot the tree is what it was.
func (Dir) Freeze(_ context.Context, dir string) error {
	return filepath.WalkDir(filepath.Join(dir, DataDir), func(path string, d fs.DirEntry, err error) error {
		if err != nil || !(d.IsDir() || d.Type().IsRegular()) {
			return err
		}
		f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		err = f.Sync()
		return errors.Join(err, f.Close())
	})
}

// Release does nothing: there is nothing to unmount.
func (Dir) Release(context.Context, string) error { return nil }

// Exhausted reports "": a plain directory has no bound of its own.
func (Dir) Exhausted(string) (string, error) { return "", nil }

// setOwner gives the data directory its mode: with gid >= 0 it belongs to
// that group, setgid and group-writable; otherwise it is world-writable.
func setOwner(data string, gid int) error {
	mode := os.FileMode(0o777)
	if gid >= 0 {
		if err := os.Lchown(data, 0, gid); err != nil {
			return err
		}
		mode = 0o775 | os.ModeSetgid
	}
	return os.Chmod(data, mode)
}
