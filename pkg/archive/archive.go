// Package archive turns a directory into a reproducible tar stream and back.
//
// Packing is deterministic: entries are sorted, timestamps are fixed at the
// Unix epoch, ownership is 0:0 without names, setuid/setgid/sticky bits are
// dropped, symlinks are stored as links and hardlinked files are stored once.
// The same tree therefore gives the same bytes, and so the same digest, on
// every run and machine.
//
// Unpacking treats the stream as hostile. Extraction happens in a private
// staging directory through directory file descriptors that this package
// created itself, so no write can follow a link out of the destination. Every
// entry is checked against [Limits] and the rules listed on [ErrUnsafeEntry];
// the blob digest and size are verified before the staging directory is
// renamed into place. On any failure nothing is left behind.
package archive

import (
	"fmt"
	"io/fs"
	"time"

	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
)

// Epoch is the modification time written for every packed entry.
var Epoch = time.Unix(0, 0).UTC()

// Sentinel errors. Functions in this package wrap them with the offending
// entry and rule, so callers test with errors.Is and show err.Error().
// Each belongs to an errdefs class, given in brackets.
var (
	// ErrUnsafeEntry marks an archive entry that would escape the destination
	// or is otherwise refused: absolute names, ".." components, names that
	// resolve through a symlink, links whose target leaves the root,
	// hardlinks to anything but a regular file already extracted, duplicate
	// names, and device, FIFO or socket entries [ErrInvalid].
	ErrUnsafeEntry = errdefs.New("unsafe archive entry", errdefs.ErrInvalid)
	// ErrLimitExceeded marks an archive that exceeds one of the [Limits]
	// [ErrTooLarge].
	ErrLimitExceeded = errdefs.New("archive limit exceeded", errdefs.ErrTooLarge)
	// ErrDigestMismatch marks a blob whose content does not match the
	// expected digest or size [ErrCorrupt].
	ErrDigestMismatch = errdefs.New("digest mismatch", errdefs.ErrCorrupt)
	// ErrUnsupportedFile marks a file that cannot be packed: a socket,
	// device or FIFO [ErrInvalid].
	ErrUnsupportedFile = errdefs.New("unsupported file type", errdefs.ErrInvalid)
	// ErrCorrupt marks a stream that is not a readable archive
	// [ErrCorrupt].
	ErrCorrupt = errdefs.New("corrupt archive", errdefs.ErrCorrupt)
)

// EntryError reports the entry and the rule an archive violated.
type EntryError struct {
	Entry string // entry name as it appears in the archive
	Rule  string // human-readable rule, e.g. "symlink target leaves the root"
	Err   error  // one of the sentinel errors
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("%v: entry %q: %s", e.Err, e.Entry, e.Rule)
}

func (e *EntryError) Unwrap() error { return e.Err }

func entryErr(sentinel error, entry, format string, args ...any) error {
	return &EntryError{Entry: entry, Rule: fmt.Sprintf(format, args...), Err: sentinel}
}

// Limits bounds what Extract accepts, and what Pack and Measure do with the
// same rules. A zero field takes the default given in its comment; a
// negative field disables that limit.
type Limits struct {
	// MaxBytes caps the disk footprint of the tree, Usage.Bytes: file
	// content rounded up to whole blocks, plus a block per directory and
	// long symlink. Default 10 GiB.
	MaxBytes int64
	// MaxEntries caps the number of entries, and the inodes of the tree,
	// Usage.Inodes, which counts the directories entries' paths imply but
	// not hardlinks. Default 1,000,000.
	MaxEntries int64
	// MaxPathLength caps the length in bytes of an entry name or link
	// target. Default 4096 (PATH_MAX).
	MaxPathLength int
}

// Modes selects the permission bits extracted entries get.
type Modes int

const (
	// ArchiveModes gives each entry the permission bits the archive
	// records, without setuid, setgid and sticky. The default.
	ArchiveModes Modes = iota
	// ReadOnlyModes makes the tree readable by every user and writable by
	// none: directories 0555, regular files 0555 when the archive gives
	// them any execute bit and 0444 otherwise. It is for trees that pods
	// mount read-only whatever uid they run as: the archive's owner is not
	// the reader's, so its private modes would lock the reader out, and a
	// tree shared by several readers must not be writable by any of them.
	ReadOnlyModes
)

// Of returns the permission bits an entry recorded with perm gets: what
// Extract gives it, for other layouts' readers.
func (m Modes) Of(perm fs.FileMode, dir bool) fs.FileMode {
	return fs.FileMode(m.mode(uint32(perm.Perm()), dir))
}

// mode returns the permission bits an entry with the archive's mode gets.
func (m Modes) mode(archived uint32, dir bool) uint32 {
	archived &= 0o777
	switch {
	case m != ReadOnlyModes:
		return archived
	case dir || archived&0o111 != 0:
		return 0o555
	default:
		return 0o444
	}
}

// Option configures Extract and ExtractFile.
type Option func(*options)

type options struct {
	modes Modes
}

// WithModes selects the permission bits of what is extracted. Default:
// ArchiveModes.
func WithModes(m Modes) Option {
	return func(o *options) { o.modes = m }
}

func newOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Default limits.
const (
	DefaultMaxBytes      = 10 << 30
	DefaultMaxEntries    = 1_000_000
	DefaultMaxPathLength = 4096
)

// WithDefaults returns l with zero fields replaced by defaults and negative
// ones by "no limit" (the largest value), as Extract applies them.
func (l Limits) WithDefaults() Limits {
	const unlimited = int64(^uint64(0) >> 1)
	fix := func(v, def int64) int64 {
		switch {
		case v == 0:
			return def
		case v < 0:
			return unlimited
		}
		return v
	}
	l.MaxBytes = fix(l.MaxBytes, DefaultMaxBytes)
	l.MaxEntries = fix(l.MaxEntries, DefaultMaxEntries)
	l.MaxPathLength = int(fix(int64(l.MaxPathLength), DefaultMaxPathLength))
	return l
}
