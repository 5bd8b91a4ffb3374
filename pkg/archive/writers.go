package archive

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// Small files are written by a pool of goroutines: creating and writing
// thousands of small files is system-call bound, and spreading the calls
// over cores is what lets extraction keep up with `cp -r`, which also has to
// decompress nothing. Larger files are written in place by the extractor.
const (
	smallFileMax = 1 << 20 // bytes; larger files are written synchronously
	writeBuffers = 8       // small files in flight per extraction
)

// fileWriters creates and fills small files. Each job names its file by its
// path from the staging root and is opened with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS) and O_EXCL: the kernel confines it to the root and
// refuses any symlink on the way, as the extractor's own descriptors do.
type fileWriters struct {
	root    int
	umask   uint32
	jobs    chan fileJob
	bufs    chan []byte // free buffers; bound memory and jobs in flight
	pending sync.WaitGroup
	done    sync.WaitGroup
	mu      sync.Mutex
	err     error
}

type fileJob struct {
	name string
	mode uint32
	data []byte
}

// newFileWriters starts n writers, or returns nil when the kernel has no
// openat2 (the extractor then writes every file itself).
func newFileWriters(root int, umask uint32, n int) *fileWriters {
	fd, err := openBeneath(root, ".")
	if err != nil {
		return nil
	}
	unix.Close(fd)
	w := &fileWriters{
		root:  root,
		umask: umask,
		jobs:  make(chan fileJob),
		bufs:  make(chan []byte, writeBuffers),
	}
	for range writeBuffers {
		w.bufs <- nil // allocated on first use
	}
	w.done.Add(n)
	for range n {
		go w.run()
	}
	return w
}

// buffer returns a buffer of n bytes, waiting while every buffer is in use.
func (w *fileWriters) buffer(n int64) []byte {
	b := <-w.bufs
	if int64(cap(b)) < n {
		b = make([]byte, n, max(n, 64<<10))
	}
	return b[:n]
}

// submit queues a file; data must come from buffer.
func (w *fileWriters) submit(name string, mode uint32, data []byte) {
	w.pending.Add(1)
	w.jobs <- fileJob{name: name, mode: mode, data: data}
}

// wait returns once every submitted file is written, with the first error.
func (w *fileWriters) wait() error {
	w.pending.Wait()
	return w.failed()
}

// stop waits for the writers to finish and stops them. Safe on nil.
func (w *fileWriters) stop() {
	if w == nil {
		return
	}
	close(w.jobs)
	w.done.Wait()
}

func (w *fileWriters) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *fileWriters) run() {
	defer w.done.Done()
	for j := range w.jobs {
		if w.failed() == nil {
			if err := w.write(j); err != nil {
				w.mu.Lock()
				if w.err == nil {
					w.err = err
				}
				w.mu.Unlock()
			}
		}
		w.bufs <- j.data[:0]
		w.pending.Done()
	}
}

func (w *fileWriters) write(j fileJob) error {
	fd, err := unix.Openat2(w.root, j.name, &unix.OpenHow{
		Flags:   unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_CLOEXEC,
		Mode:    uint64(j.mode),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err == nil {
		_, err = fdWriter(fd).Write(j.data)
		if err == nil && j.mode&w.umask != 0 {
			err = unix.Fchmod(fd, j.mode)
		}
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
	}
	if errors.Is(err, unix.ENAMETOOLONG) {
		return entryErr(ErrLimitExceeded, j.name, "name too long for the filesystem")
	}
	if err != nil {
		return fmt.Errorf("extract %q: %w", j.name, err)
	}
	return nil
}
