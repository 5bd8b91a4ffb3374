// Package mounter makes and removes the bind mounts that expose a volume's
// directory at kubelet's target path.
//
// mount-utils would run mount(8) twice for a read-only bind mount (bind, then
// remount); that costs milliseconds per publish and a window in which the
// target is writable. This package issues the two mount(2) calls itself and
// uses mount-utils only to tell whether a path is a mount point.
package mounter

// Interface is what the CSI node service needs from the kernel's mount
// table. Implementations must be safe for concurrent use on different
// targets.
type Interface interface {
	// BindMount mounts source on target, which must be an existing
	// directory, always with nosuid and nodev, and read-only when readOnly
	// is set. On error nothing is left mounted on target.
	BindMount(source, target string, readOnly bool) error
	// Unmount removes every mount stacked on target. A target that is not
	// a mount point, or does not exist, is not an error: Unmount is
	// idempotent.
	Unmount(target string) error
	// IsMountPoint reports whether target is a mount point; a missing
	// target is not one.
	IsMountPoint(target string) (bool, error)
}
