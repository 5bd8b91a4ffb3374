package outputfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/internal/atomicfile"
)

// ImageFile is the name, in a volume's directory, of an Ext4 output's
// filesystem image.
const ImageFile = "data.img"

const (
	blockSize = 4096
	inodeSize = 256
	// groupBlocks is an ext4 block group with 4 KiB blocks.
	groupBlocks = 8 * blockSize
	// mountData: the inode tables of a cloned image are not zeroed, and
	// need not be (the group descriptors say which inodes are unused); do
	// not let the kernel write them all in the background.
	mountData = "noinit_itable"
)

// Ext4Options configures Ext4.
type Ext4Options struct {
	// Templates is a directory of the state filesystem where formatted
	// images are kept, one per geometry, to be cloned. Required.
	Templates string
	// Mke2fs is the mke2fs program (e2fsprogs). Default "mke2fs", looked
	// up in PATH, then in /usr/sbin and /sbin.
	Mke2fs string
}

// Ext4 gives each output an ext4 filesystem of its own: a sparse image
// file, dir/data.img, bound to a loop device and mounted at dir/data.
//
// Its geometry: Limits.Bytes of data blocks, plus the inode table of
// Limits.Inodes inodes, plus the block and inode bitmaps; no journal (an
// image is only ever read back after it was frozen cleanly, see Freeze),
// no reserved blocks. The pod can write its Bytes and a little more (the
// blocks of its directories and extent trees come from the same pool),
// and gets ENOSPC from the kernel past that, or once it has created
// Inodes entries. The image takes only what was written on the state
// filesystem.
//
// Each geometry is formatted once with mke2fs into Templates; an image is
// a sparse copy of its template's few written blocks. The copies share a
// filesystem UUID, which ext4 does not mind.
//
// Ext4 needs CAP_SYS_ADMIN (loop devices, mounts) and safe for concurrent
// use.
type Ext4 struct {
	o Ext4Options

	mu        sync.Mutex
	templates map[string]*templateCall
}

type templateCall struct {
	done chan struct{}
	err  error
}

// NewExt4 checks that mke2fs and loop devices are there and prepares the
// templates directory, removing what an interrupted format left.
func NewExt4(o Ext4Options) (*Ext4, error) {
	if o.Templates == "" {
		return nil, errors.New("outputfs: Templates is required")
	}
	if o.Mke2fs == "" {
		o.Mke2fs = "mke2fs"
	}
	path, err := exec.LookPath(o.Mke2fs)
	for _, dir := range []string{"/usr/sbin", "/sbin"} { // a container may have no PATH
		if err != nil && !strings.ContainsRune(o.Mke2fs, '/') {
			path, err = exec.LookPath(filepath.Join(dir, o.Mke2fs))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ext4 output filesystems need mke2fs (e2fsprogs): %w", err)
	}
	o.Mke2fs = path
	ctl, err := os.OpenFile(loopControl, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("ext4 output filesystems need loop devices: %w", err)
	}
	ctl.Close()
	if err := os.MkdirAll(o.Templates, 0o700); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(o.Templates)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if atomicfile.IsTemp(e.Name()) {
			os.Remove(filepath.Join(o.Templates, e.Name()))
		}
	}
	return &Ext4{o: o, templates: map[string]*templateCall{}}, nil
}

// Geometry returns the size in bytes of the image of an output bounded by
// l, and its inode count.
func Geometry(l Limits) (size, inodes int64) {
	inodes = l.Inodes
	if inodes <= 0 {
		inodes = DefaultInodes(l.Bytes)
	}
	inodes += reservedInodes
	ceil := func(a, b int64) int64 { return (a + b - 1) / b }
	fixed := ceil(max(l.Bytes, 0), blockSize) + ceil(inodes*inodeSize, blockSize) + 16
	blocks := fixed
	for range 3 { // what follows depends on the total
		groups := ceil(blocks, groupBlocks)
		// Bitmaps, descriptors and their backups, and the clusters ext4
		// keeps back so that writeback never lacks a block for metadata
		// (2%, at most 4096).
		blocks = fixed + 2*groups + ceil(groups*64, blockSize)*2 + min(ceil(blocks, 49), 4096)
	}
	return blocks * blockSize, inodes
}

// reservedInodes are the inodes ext4 keeps for itself (1 to 10; the root
// directory is one of them, lost+found, 11, is removed).
const reservedInodes = 10

// Create clones the template of l's geometry into dir/data.img, mounts it
// at dir/data and gives its root the owner and mode l asks.
func (e *Ext4) Create(ctx context.Context, dir string, l Limits) error {
	size, inodes := Geometry(l)
	tpl, err := e.template(ctx, size, inodes)
	if err != nil {
		return err
	}
	image := filepath.Join(dir, ImageFile)
	if err := cloneSparse(tpl, image); err != nil {
		return fmt.Errorf("clone %s: %w", tpl, err)
	}
	data := filepath.Join(dir, DataDir)
	if err := os.Mkdir(data, 0o700); err != nil {
		return err
	}
	if err := e.mount(image, data, false); err != nil {
		return err
	}
	// mke2fs makes lost+found; the pod's output must not hold it.
	if err := os.Remove(filepath.Join(data, "lost+found")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return setOwner(data, l.GID)
}

// Mount mounts dir/data again when it is not: the loop device a pod's
// mount still holds when there is one (the same filesystem), else the
// image on a new one. A filesystem frozen read-only is mounted so.
func (e *Ext4) Mount(ctx context.Context, dir string, readOnly bool) error {
	return e.MountImage(ctx, filepath.Join(dir, ImageFile), filepath.Join(dir, DataDir), readOnly)
}

// MountImage mounts the filesystem of image, an image this Ext4 made, at
// target, an existing directory, unless target is a mount point already
// (then it does nothing), nosuid and nodev: through the loop device that
// still holds image when there is one, so that a filesystem is never
// mounted from two devices, in the state it is in there (read-only once
// frozen); else through a new one, read-only when readOnly. Idempotent.
func (e *Ext4) MountImage(ctx context.Context, image, target string, readOnly bool) error {
	if mounted, err := isMountPoint(target); mounted || err != nil {
		return err
	}
	dev, err := findLoop(image)
	if err != nil {
		return err
	}
	if dev == "" {
		return e.mount(image, target, readOnly)
	}
	klog.FromContext(ctx).V(2).Info("Mounting a filesystem that is still in use", "device", dev, "path", target)
	// The kernel refuses to mount a superblock in another state than its
	// own (EBUSY).
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	err = unix.Mount(dev, target, "ext4", flags, mountData)
	if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EROFS) {
		// Its superblock is read-only already: it was frozen.
		err = unix.Mount(dev, target, "ext4", flags|unix.MS_RDONLY, mountData)
	}
	if err != nil {
		return &os.PathError{Op: "mount " + dev + " on", Path: target, Err: err}
	}
	return nil
}

// Freeze remounts the filesystem read-only: the superblock's flag, so
// every mount of it, anywhere, becomes read-only, and the kernel writes
// everything back first; then it syncs the image. ErrBusy: a file is still
// open for writing.
func (e *Ext4) Freeze(ctx context.Context, dir string) error {
	data := filepath.Join(dir, DataDir)
	if err := e.Mount(ctx, dir, true); err != nil {
		return err
	}
	err := unix.Mount("", data, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, mountData)
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("%w: %s: a file is still open for writing", ErrBusy, data)
	}
	if err != nil {
		return &os.PathError{Op: "remount read-only", Path: data, Err: err}
	}
	// Remounting synced the filesystem, and the loop device flushed what
	// it wrote to the image; this makes sure of it.
	return atomicfile.Fsync(filepath.Join(dir, ImageFile))
}

// Release unmounts dir/data; the loop device goes when its last mount
// does.
func (e *Ext4) Release(ctx context.Context, dir string) error {
	return e.Unmount(ctx, filepath.Join(dir, DataDir))
}

// Unmount unmounts target, every mount stacked there, without following
// a symlink; the loop device goes when its last mount does. A target that
// is not a mount point, or is missing, is not an error: idempotent.
// ErrBusy: something still uses the filesystem there.
func (e *Ext4) Unmount(_ context.Context, target string) error {
	for range 16 { // a crashed retry may have stacked mounts
		mounted, err := isMountPoint(target)
		if err != nil || !mounted {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("%w: %s", ErrBusy, target)
			}
			return &os.PathError{Op: "unmount", Path: target, Err: err}
		}
	}
	return fmt.Errorf("unmount %s: still a mount point after 16 unmounts", target)
}

// Exhausted reports whether the filesystem mounted at dir/data has no
// block left for its pod (beyond what ext4 keeps back for its own
// metadata) or no inode.
func (e *Ext4) Exhausted(dir string) (string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(dir, DataDir), &st); err != nil {
		return "", err
	}
	switch {
	case st.Ffree == 0:
		return "inodes", nil
	case st.Bavail == 0:
		return "bytes", nil
	}
	return "", nil
}

func (e *Ext4) mount(image, target string, readOnly bool) error {
	dev, err := attach(image, readOnly)
	if err != nil {
		return err
	}
	defer dev.Close() // the mount holds the device from now on
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(dev.Name(), target, "ext4", flags, mountData); err != nil {
		return &os.PathError{Op: "mount " + image + " on", Path: target, Err: err}
	}
	return nil
}

// template returns the image of the given geometry, formatting it the
// first time; concurrent callers share one format.
func (e *Ext4) template(ctx context.Context, size, inodes int64) (string, error) {
	key := fmt.Sprintf("ext4-%d-%d.img", size, inodes)
	path := filepath.Join(e.o.Templates, key)
	e.mu.Lock()
	call, ok := e.templates[key]
	if !ok {
		call = &templateCall{done: make(chan struct{})}
		e.templates[key] = call
		go func() {
			call.err = e.format(ctx, path, size, inodes)
			if call.err != nil {
				e.mu.Lock()
				delete(e.templates, key) // the next publish tries again
				e.mu.Unlock()
			}
			close(call.done)
		}()
	}
	e.mu.Unlock()
	select {
	case <-call.done:
		return path, call.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (e *Ext4) format(ctx context.Context, path string, size, inodes int64) error {
	if _, err := os.Stat(path); err == nil {
		return nil // formatted by an earlier run
	}
	f, err := os.CreateTemp(e.o.Templates, ".format-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	// Detached from the caller: a publish that gives up must not leave the
	// others that share this format with a cancelled one.
	ctx = context.WithoutCancel(ctx)
	cmd := exec.CommandContext(ctx, e.o.Mke2fs, "-q", "-F", "-t", "ext4",
		"-b", fmt.Sprint(blockSize), "-I", fmt.Sprint(inodeSize), "-N", fmt.Sprint(inodes), "-m", "0",
		"-O", "^has_journal,^resize_inode", "-E", "lazy_itable_init=1,nodiscard,root_owner=0:0",
		tmp, fmt.Sprint(size/blockSize))
	cmd.Env = []string{"MKE2FS_SYNC=0", "PATH=/usr/sbin:/sbin:/usr/bin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mke2fs: %w: %s", err, strings.TrimSpace(string(out)))
	}
	// A template torn by a crash would tear every image cloned from it.
	if err := atomicfile.Fsync(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	klog.FromContext(ctx).V(2).Info("Formatted an output filesystem template", "size", size, "inodes", inodes, "path", path)
	return atomicfile.SyncDir(e.o.Templates)
}

// cloneSparse copies src's data extents to a new file dst of the same
// size, leaving its holes holes.
func cloneSparse(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	size := st.Size()
	if err := out.Truncate(size); err != nil {
		return err
	}
	for off := int64(0); off < size; {
		start, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return err
		}
		end, err := unix.Seek(int(in.Fd()), start, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.NewOffsetWriter(out, start), io.NewSectionReader(in, start, end-start)); err != nil {
			return err
		}
		off = end
	}
	return nil
}

// isMountPoint tells whether path is mounted on, by comparing its device
// with its parent's: the mounts here are of filesystems of their own, never
// bind mounts of the same one.
func isMountPoint(path string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return false, err
	}
	if err := unix.Lstat(filepath.Dir(path), &parent); err != nil {
		return false, err
	}
	return st.Dev != parent.Dev, nil
}
