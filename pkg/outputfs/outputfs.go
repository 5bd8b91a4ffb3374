// Package outputfs gives each output volume the storage its pod writes to,
// bounded while the pod writes: a pod that passes its output's size or
// inode bound gets ENOSPC from the kernel, whatever its uid and
// capabilities, instead of filling the node's disk.
//
// Two implementations:
//   - Ext4 (the node plugin's default) gives each output an ext4
//     filesystem of its own, in a sparse image file loop-mounted at the
//     volume's data directory. Images are cloned from a template formatted
//     once per size, so a publish costs no mkfs.
//   - Dir gives each output a plain directory of the state filesystem: no
//     bound while the pod writes (push still refuses an output over its
//     limit). It needs no loop device; unit tests and nodes that cannot
//     loop-mount use it.
//
// Why not project quotas (XFS, or ext4 with the project feature): the owner
// of a file may change its project id (FS_IOC_FSSETXATTR needs no
// capability in the initial user namespace, where pods run), so a pod can
// move its files out of the quota; and most nodes' filesystems are not
// mounted with prjquota. A filesystem of the output's size has no such
// escape.
//
// Every method takes the volume's directory: the data directory is
// dir/data, and an implementation may keep files of its own beside it.
// Implementations are safe for concurrent use on different directories.
package outputfs

import (
	"context"
	"fmt"

	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
)

// DataDir is the name, in a volume's directory, of the directory that
// holds its files.
const DataDir = "data"

// ErrBusy reports an output filesystem something outside this plugin still
// holds: it cannot be made read-only or released yet
// [errdefs.ErrUnavailable].
var ErrBusy = errdefs.New("output filesystem still in use", errdefs.ErrUnavailable)

// Limits bound an output volume.
type Limits struct {
	// Bytes is the output's size bound (maxArtifactBytes): the pod gets
	// ENOSPC a little past it (the filesystem's own overhead; see Ext4),
	// never before. Required.
	Bytes int64
	// Inodes bounds the files, directories and links the pod may create.
	// Zero: DefaultInodes(Bytes).
	Inodes int64
	// GID, when >= 0, is the pod's fsGroup: the data directory belongs to
	// it, setgid and group-writable. Otherwise it is world-writable, which
	// exposes nothing since only the volume's pod mounts it.
	GID int
}

// DefaultInodes is the inode bound of an output of maxBytes: one inode
// per KiB, at least 1024 and at most 1,000,000 (the entry bound of an
// archive, so no more could be pushed). The inode table then takes at most
// a quarter of the output's bytes.
func DefaultInodes(maxBytes int64) int64 {
	return min(max(maxBytes/1024, 1024), 1_000_000)
}

// Filesystem makes, exposes and releases the storage of output volumes.
type Filesystem interface {
	// Create makes the storage of a new output in dir, an existing empty
	// directory private to the plugin, and leaves dir/data ready for the
	// pod to write: mounted read-write, owned as Limits says. It is not
	// idempotent; on error, Release then removing dir undoes it.
	Create(ctx context.Context, dir string, l Limits) error
	// Mount makes dir/data show the output's files again after a plugin
	// restart (read-only when readOnly), or does nothing when it does.
	// Idempotent.
	Mount(ctx context.Context, dir string, readOnly bool) error
	// Freeze makes the output's content read-only everywhere and durable:
	// once it returns, nothing can change the files, and they survive an
	// unclean reboot. ErrBusy reports a writer that is still there.
	// Idempotent.
	Freeze(ctx context.Context, dir string) error
	// Release undoes Mount and Create's mount, so that dir can be removed.
	// Idempotent: a dir already released, or missing, is not an error.
	Release(ctx context.Context, dir string) error
	// Exhausted reports which bound of a mounted output the pod used up,
	// "bytes" or "inodes", so that it got ENOSPC; "" when none, or when
	// the storage has no bound of its own. It sees a pod that filled its
	// output, as cp or tar do, not one refused a single write larger than
	// the room left.
	Exhausted(dir string) (string, error)
}

// Kind names a Filesystem implementation, as the node plugin's
// --output-filesystem flag does.
type Kind string

// Kinds.
const (
	KindExt4 Kind = "ext4"
	KindDir  Kind = "directory"
)

// Set implements pflag.Value.
func (k *Kind) Set(s string) error {
	switch Kind(s) {
	case KindExt4, KindDir:
		*k = Kind(s)
		return nil
	}
	return fmt.Errorf("must be %q or %q", KindExt4, KindDir)
}

func (k *Kind) String() string { return string(*k) }

// Type implements pflag.Value.
func (k *Kind) Type() string { return "kind" }
