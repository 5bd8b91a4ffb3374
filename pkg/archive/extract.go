package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Extract verifies and extracts a tar, tar+gzip or tar+zstd blob read from
// r into dest. The compression is detected from the stream.
//
// dest must be absent or an empty directory; its parent must exist. Entries
// are written into a private staging directory beside dest; the whole blob is
// read to its end and its digest and size checked against want before the
// staging directory is renamed to dest. On any error, including a cancelled
// ctx, the staging directory is removed and dest is left as it was.
//
// Every write goes through a directory file descriptor that Extract created
// itself and opened with O_NOFOLLOW, or through openat2 confined beneath the
// staging directory with symlinks refused, so no entry can be written
// outside dest. Entries that break the rules documented on [ErrUnsafeEntry] or
// exceed lim fail the extraction with an [*EntryError] naming the entry and
// the rule; lim.MaxBytes and lim.MaxEntries bound the tree's [Usage], which
// is charged entry by entry before anything of it is written and returned
// in Stats.Usage, so callers account the tree without walking it. When the archive is malformed and the digest does not match, the
// error reports the mismatch ([ErrDigestMismatch]) as the cause.
//
// Ownership is not restored (files belong to the caller), nor are times.
// Permission bits are, without setuid, setgid and sticky, unless
// [WithModes] chooses otherwise. Fetching,
// decompression and the writing of small files run on their own goroutines
// (GOMAXPROCS writers); all have stopped when Extract returns. Extract is
// safe for concurrent use with different destinations.
func Extract(ctx context.Context, r io.Reader, want Expect, dest string, lim Limits, opts ...Option) (Stats, Compression, error) {
	var stats Stats
	o := newOptions(opts)
	vr, err := newVerifier(r, want)
	if err != nil {
		return stats, "", err
	}
	staging, err := newStaging(dest, o.modes)
	if err != nil {
		return stats, "", err
	}
	defer staging.cleanup()

	// Fetching and hashing run on their own goroutine, ahead of
	// decompression, which runs ahead of the writes.
	raw := newReadAhead(vr, readAheadChunk, readAheadDepth)
	dr, comp, err := Decompress(raw)
	if err == nil {
		stats, err = extractTar(ctx, dr, staging, lim.WithDefaults())
		dr.Close()
	}
	raw.Close() // vr is ours again: drain may read it
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, ErrDigestMismatch) {
			// A tampered blob shows up as garbage to the tar reader: report
			// the mismatch, which is the cause, when there is one.
			if derr := vr.drain(); errors.Is(derr, ErrDigestMismatch) {
				return stats, comp, fmt.Errorf("%w (while extracting: %v)", derr, err)
			}
		}
		return stats, comp, err
	}
	if err := vr.drain(); err != nil {
		return stats, comp, err
	}
	return stats, comp, staging.commit()
}

// ExtractFile verifies a single-file blob read from r and stores it as
// dest/name, with the same staging, verification and atomicity as Extract.
// name must be a single path component. The file gets mode 0644, or 0444
// with ReadOnlyModes.
func ExtractFile(ctx context.Context, r io.Reader, want Expect, dest, name string, lim Limits, opts ...Option) (Stats, error) {
	lim = lim.WithDefaults()
	o := newOptions(opts)
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255 {
		return Stats{}, entryErr(ErrUnsafeEntry, name, "a single-file artifact needs a plain file name")
	}
	// The declared size, when there is one, fails a blob past the limit
	// before anything is fetched; the stream bound below holds it to that.
	if err := lim.charge(&Usage{}, footprint(kindFile, max(want.Size, 0), 0), name); err != nil {
		return Stats{}, err
	}
	vr, err := newVerifier(r, want)
	if err != nil {
		return Stats{}, err
	}
	staging, err := newStaging(dest, o.modes)
	if err != nil {
		return Stats{}, err
	}
	defer staging.cleanup()
	fd, err := unix.Openat(staging.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, o.modes.mode(0o644, false))
	if err != nil {
		return Stats{}, &os.PathError{Op: "create", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	lr := &limitedReader{r: vr}
	// Content up to MaxBytes rounded down to whole blocks takes at most
	// MaxBytes; the reader refuses to read at its bound, even at the end of
	// the stream, hence one byte more.
	lr.allow(satAdd(lim.MaxBytes&^(BlockSize-1), 1), fmt.Sprintf("entry %q: the artifact would take more than %d bytes of disk "+
		"(file content rounded up to 4 KiB blocks); raise maxArtifactBytes to allow more", name, lim.MaxBytes))
	n, err := io.Copy(f, lr)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = lim.charge(&Usage{}, footprint(kindFile, n, 0), name)
	}
	if err == nil {
		err = vr.drain()
	}
	if err != nil {
		return Stats{}, err
	}
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	return Stats{Entries: 1, Bytes: n, Usage: footprint(kindFile, n, 0)}, staging.commit()
}

// staging is a private directory beside its destination.
type staging struct {
	dest, dir string
	fd        int
	modes     Modes
	mode      uint32 // final mode of the root
	done      bool
}

func newStaging(dest string, modes Modes) (*staging, error) {
	dest = filepath.Clean(dest)
	if err := checkDest(dest); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".staging-")
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		os.Remove(dir)
		return nil, err
	}
	return &staging{dest: dest, dir: dir, fd: fd, modes: modes, mode: modes.mode(0o755, true)}, nil
}

func checkDest(dest string) error {
	f, err := os.Open(dest)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && err != io.EOF {
		return fmt.Errorf("destination %s: %w", dest, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("destination %s is not empty", dest)
	}
	return nil
}

func (s *staging) commit() error {
	if err := unix.Fchmod(s.fd, s.mode); err != nil {
		return err
	}
	// Not os.Rename: it refuses to replace a directory, even an empty one.
	if err := unix.Rename(s.dir, s.dest); err != nil {
		return fmt.Errorf("move extracted tree into place: %w",
			&os.LinkError{Op: "rename", Old: s.dir, New: s.dest, Err: err})
	}
	s.done = true
	return nil
}

func (s *staging) cleanup() {
	unix.Close(s.fd)
	if !s.done {
		makeWritable(s.dir)
		os.RemoveAll(s.dir)
	}
}

// makeWritable lets RemoveAll delete a tree whose directories were made
// read-only, as a non-root caller needs.
func makeWritable(dir string) {
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
}

// maxCachedDirs bounds the directory descriptors an extraction keeps open.
const maxCachedDirs = 128

// Bounds on the parts of a tar stream that are not file content.
const (
	// maxHeaderBytes bounds one entry's headers: padding of the previous
	// entry, PAX records, GNU long names and the header block. Names and
	// link targets are at most PATH_MAX; 64 KiB leaves room for extended
	// attributes.
	maxHeaderBytes = 64 << 10
	// maxTrailerBytes bounds what may follow the end-of-archive marker:
	// zero blocks up to a tar record (10 KiB by default), with room to spare.
	maxTrailerBytes = 1 << 20
)

// currentUmask returns the process umask, read from /proc (setting it to
// read it back would race with other goroutines creating files), or 0777
// when it cannot be read, which makes every file get an explicit chmod.
func currentUmask() uint32 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0o777
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return uint32(m)
			}
		}
	}
	return 0o777
}

type extractor struct {
	ctx     context.Context
	lim     Limits
	root    *staging
	tree    *tree
	dirs    map[string]int    // open descriptors of directories we created
	modes   map[string]uint32 // final modes of directories
	buf     []byte
	stats   Stats
	entries int64
	umask   uint32       // files whose mode it would change get an fchmod
	writers *fileWriters // nil: every file is written synchronously
}

// settle waits until every queued file is written.
func (x *extractor) settle() error {
	if x.writers == nil {
		return nil
	}
	return x.writers.wait()
}

func extractTar(ctx context.Context, r io.Reader, st *staging, lim Limits) (Stats, error) {
	x := &extractor{
		ctx:   ctx,
		lim:   lim,
		root:  st,
		tree:  newTree(),
		dirs:  map[string]int{},
		modes: map[string]uint32{},
		buf:   make([]byte, 256<<10),
		umask: currentUmask(),
	}
	defer x.closeDirs()
	x.writers = newFileWriters(st.fd, x.umask, runtime.GOMAXPROCS(0))
	defer x.writers.stop()
	lr := &limitedReader{r: r}
	tr := tar.NewReader(lr)
	for {
		if err := ctx.Err(); err != nil {
			return x.stats, err
		}
		// The last entry's padding, then this entry's headers (PAX and GNU
		// long names included); its content is allowed separately, so the
		// decompressed stream never exceeds what the entries justify.
		lr.allow(maxHeaderBytes, fmt.Sprintf("entry %d: headers larger than %d bytes", x.entries+1, maxHeaderBytes))
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, ErrLimitExceeded) || errors.Is(err, ErrDigestMismatch) {
				return x.stats, err
			}
			return x.stats, readFailure(err, "after %d entries", x.entries)
		}
		if x.entries++; x.entries > lim.MaxEntries {
			return x.stats, entryErr(ErrLimitExceeded, hdr.Name, "more than %d entries", lim.MaxEntries)
		}
		if hdr.Size != 0 && hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA {
			return x.stats, entryErr(ErrUnsafeEntry, hdr.Name, "entry of type %q carries %d bytes of data", hdr.Typeflag, hdr.Size)
		}
		lr.allow(max(hdr.Size, 0), fmt.Sprintf("entry %q: content longer than its header says", hdr.Name))
		if err := x.entry(tr, hdr); err != nil {
			return x.stats, err
		}
	}
	// Drain what follows the end-of-archive marker so the caller's digest
	// check sees every byte; the stream limit still applies. This reads the
	// decompressed stream itself (tr only returns io.EOF by now), so that a
	// truncated or corrupt compressed tail is detected too.
	lr.allow(maxTrailerBytes, fmt.Sprintf("more than %d bytes after the end of the archive", maxTrailerBytes))
	if _, err := io.Copy(io.Discard, lr); err != nil {
		if errors.Is(err, ErrLimitExceeded) || errors.Is(err, ErrDigestMismatch) {
			return x.stats, err
		}
		return x.stats, readFailure(err, "after the end of the archive")
	}
	if err := x.tree.checkLinks(); err != nil {
		return x.stats, err
	}
	if err := x.settle(); err != nil {
		return x.stats, err
	}
	return x.stats, x.applyDirModes()
}

func (x *extractor) entry(tr *tar.Reader, hdr *tar.Header) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil // Go's reader never applies global records to later entries
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return entryErr(ErrUnsafeEntry, hdr.Name, "device and FIFO entries are not allowed")
	case tar.TypeReg, tar.TypeRegA, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	default:
		return entryErr(ErrUnsafeEntry, hdr.Name, "unsupported entry type %q", hdr.Typeflag)
	}
	name, err := x.cleanName(hdr.Name)
	if err != nil {
		return err
	}
	mode := x.root.modes.mode(uint32(hdr.Mode), hdr.Typeflag == tar.TypeDir)
	if name == "" {
		if hdr.Typeflag != tar.TypeDir {
			return entryErr(ErrUnsafeEntry, hdr.Name, "the root entry must be a directory")
		}
		x.root.mode = mode
		return nil
	}
	x.stats.Entries++
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := x.add(hdr, name, kindDir, "", 0); err != nil {
			return err
		}
		x.modes[name] = mode
		_, err := x.dir(name)
		return err
	case tar.TypeSymlink:
		if len(hdr.Linkname) > x.lim.MaxPathLength {
			return entryErr(ErrLimitExceeded, hdr.Name, "link target longer than %d bytes", x.lim.MaxPathLength)
		}
		if hdr.Linkname == "" || strings.ContainsRune(hdr.Linkname, 0) {
			return entryErr(ErrUnsafeEntry, hdr.Name, "invalid symlink target %q", hdr.Linkname)
		}
		if err := x.add(hdr, name, kindSymlink, hdr.Linkname, 0); err != nil {
			return err
		}
		return x.inParent(name, func(dirfd int, base string) error {
			return unix.Symlinkat(hdr.Linkname, dirfd, base)
		})
	case tar.TypeLink:
		src, err := x.cleanName(hdr.Linkname)
		if errors.Is(err, ErrLimitExceeded) {
			return entryErr(ErrLimitExceeded, hdr.Name, "link target longer than %d bytes", x.lim.MaxPathLength)
		}
		if err != nil {
			return entryErr(ErrUnsafeEntry, hdr.Name, "hardlink target %q is unsafe", hdr.Linkname)
		}
		if err := x.add(hdr, name, kindHardlink, src, 0); err != nil {
			return err
		}
		if err := x.settle(); err != nil { // the source may still be queued
			return err
		}
		srcdir, err := x.dir(path.Dir(src))
		if err != nil {
			return err
		}
		// Opening the link's parent in inParent may evict srcdir from the
		// descriptor cache and close it: hold a private duplicate.
		srcfd, err := unix.FcntlInt(uintptr(srcdir), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "dup", Path: path.Dir(src), Err: err}
		}
		defer unix.Close(srcfd)
		return x.inParent(name, func(dirfd int, base string) error {
			return unix.Linkat(srcfd, path.Base(src), dirfd, base, 0)
		})
	default:
		if hdr.Size < 0 {
			return fmt.Errorf("%w: entry %q: negative size", ErrCorrupt, hdr.Name)
		}
		if err := x.add(hdr, name, kindFile, "", hdr.Size); err != nil {
			return err
		}
		return x.file(tr, hdr, name, mode)
	}
}

// add records an entry in the tree and charges its footprint, with that
// of the parents it implies, against the limits: before anything is
// written, so that an archive stops at the first entry past them.
func (x *extractor) add(hdr *tar.Header, name string, k kind, target string, size int64) error {
	u, err := x.tree.add(name, k, target, size)
	if err != nil {
		return err
	}
	return x.lim.charge(&x.stats.Usage, u, hdr.Name)
}

// cleanName returns the canonical relative form of an entry name, "" for
// the root, or an error for a name that could leave the root.
func (x *extractor) cleanName(raw string) (string, error) {
	if len(raw) > x.lim.MaxPathLength {
		return "", entryErr(ErrLimitExceeded, raw, "name longer than %d bytes", x.lim.MaxPathLength)
	}
	switch {
	case raw == "":
		return "", entryErr(ErrUnsafeEntry, raw, "empty name")
	case strings.ContainsRune(raw, 0):
		return "", entryErr(ErrUnsafeEntry, raw, "name contains NUL")
	case strings.HasPrefix(raw, "/"):
		return "", entryErr(ErrUnsafeEntry, raw, "absolute name")
	}
	for _, c := range strings.Split(raw, "/") {
		if c == ".." {
			return "", entryErr(ErrUnsafeEntry, raw, "name contains a \"..\" component")
		}
	}
	name := path.Clean(raw)
	if name == "." {
		return "", nil
	}
	return name, nil
}

// file writes a regular file's content; add has charged it.
func (x *extractor) file(tr *tar.Reader, hdr *tar.Header, name string, mode uint32) error {
	if w := x.writers; w != nil && hdr.Size <= smallFileMax {
		if err := w.failed(); err != nil {
			return err
		}
		if _, err := x.dir(path.Dir(name)); err != nil { // the writer needs the parent
			return err
		}
		buf := w.buffer(hdr.Size)
		if _, err := io.ReadFull(&contentReader{r: tr, entry: hdr.Name}, buf); err != nil {
			w.bufs <- buf[:0]
			if err == io.ErrUnexpectedEOF || err == io.EOF {
				err = fmt.Errorf("%w: entry %q: %w", ErrCorrupt, hdr.Name, io.ErrUnexpectedEOF)
			}
			return err
		}
		x.stats.Bytes += hdr.Size
		w.submit(name, mode, buf)
		return nil
	}
	return x.inParent(name, func(dirfd int, base string) error {
		fd, err := unix.Openat(dirfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
		if err != nil {
			return err
		}
		// A raw descriptor, not an *os.File: no poller registration and no
		// finalizer for each of many small files.
		n, err := io.CopyBuffer(fdWriter(fd), &contentReader{r: tr, entry: hdr.Name}, x.buf)
		x.stats.Bytes += n
		if err == nil && mode&x.umask != 0 {
			err = unix.Fchmod(fd, mode)
		}
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
		return err
	})
}

// fdWriter writes to a file descriptor, retrying short writes.
type fdWriter int

func (w fdWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := unix.Write(int(w), p[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += k
	}
	return n, nil
}

// contentReader marks a failure to read an entry's content, such as a
// stream cut in the middle of a file, as ErrCorrupt naming the entry, so it
// is not mistaken for a failure to write.
type contentReader struct {
	r     io.Reader
	entry string
}

func (c *contentReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, ErrLimitExceeded) && !errors.Is(err, ErrDigestMismatch) {
		err = readFailure(err, "entry %q", c.entry)
	}
	return n, err
}

// readFailure returns err, a failure to read the decompressed stream, as
// ErrCorrupt with the context format gives; an error that already is
// ErrCorrupt (a gzip member's, from Decompress) is not marked twice.
func readFailure(err error, format string, args ...any) error {
	where := fmt.Sprintf(format, args...)
	if errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("%s: %w", where, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrCorrupt, where, err)
}

// inParent runs op with the descriptor of name's parent directory.
func (x *extractor) inParent(name string, op func(dirfd int, base string) error) error {
	dirfd, err := x.dir(path.Dir(name))
	if err != nil {
		return err
	}
	if err := op(dirfd, path.Base(name)); err != nil {
		if errors.Is(err, ErrLimitExceeded) || errors.Is(err, ErrDigestMismatch) || errors.Is(err, ErrCorrupt) {
			return err
		}
		if errors.Is(err, unix.ENAMETOOLONG) {
			return entryErr(ErrLimitExceeded, name, "name or link target too long for the filesystem")
		}
		return fmt.Errorf("extract %q: %w", name, err)
	}
	return nil
}

// dir returns a descriptor for directory name ("." is the root), creating
// it and its parents as needed. Each component is created by us with mkdirat
// and opened with O_NOFOLLOW, so the descriptor can only point inside the
// staging directory. Directories start as 0700 and get their final mode at
// the end, so that a read-only directory can still be filled.
func (x *extractor) dir(name string) (int, error) {
	if name == "." || name == "" {
		return x.root.fd, nil
	}
	if fd, ok := x.dirs[name]; ok {
		return fd, nil
	}
	// An existing directory, however deep, opens in one call that the kernel
	// confines to the staging root and that follows no symlink.
	fd, err := openBeneath(x.root.fd, name)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOSYS) {
		fd, err = x.mkdir(name)
	}
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: name, Err: err}
	}
	if len(x.dirs) >= maxCachedDirs {
		x.closeDirs()
	}
	x.dirs[name] = fd
	return fd, nil
}

// mkdir creates name (if needed) in its parent, which dir opens or creates
// first, and opens it without following links. A directory that no entry
// describes gets mode 0755, as tar does (0555 with ReadOnlyModes).
func (x *extractor) mkdir(name string) (int, error) {
	parent, err := x.dir(path.Dir(name))
	if err != nil {
		return -1, err
	}
	base := path.Base(name)
	if err := unix.Mkdirat(parent, base, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	if _, ok := x.modes[name]; !ok {
		x.modes[name] = x.root.modes.mode(0o755, true)
	}
	return unix.Openat(parent, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// openBeneath opens directory name below dirfd with openat2(2), refusing
// any symlink and any escape from dirfd. It fails with ENOSYS where the
// kernel lacks openat2 (before Linux 5.6) or a sandbox forbids it.
func openBeneath(dirfd int, name string) (int, error) {
	fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.EPERM) {
		err = unix.ENOSYS
	}
	return fd, err
}

func (x *extractor) closeDirs() {
	for name, fd := range x.dirs {
		unix.Close(fd)
		delete(x.dirs, name)
	}
}

// applyDirModes sets each directory's final mode, deepest first.
func (x *extractor) applyDirModes() error {
	names := make([]string, 0, len(x.modes))
	for name := range x.modes {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		return strings.Count(b, "/") - strings.Count(a, "/")
	})
	for _, name := range names {
		err := x.inParent(name, func(dirfd int, base string) error {
			return unix.Fchmodat(dirfd, base, x.modes[name], 0)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func satAdd(a, b int64) int64 {
	if c := a + b; c >= a {
		return c
	}
	return int64(^uint64(0) >> 1)
}
