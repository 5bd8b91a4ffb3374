// Package atomicfile writes small state files so that a reader after a crash
// at any point sees either the old content or the new one, never a mix.
package atomicfile

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Sync says whether a write must survive a power loss.
type Sync bool

const (
	// Durable fsyncs the file before the rename and the directory after
	// it: the new content survives a power loss once the write returns.
	Durable Sync = true
	// BestEffort leaves both to the kernel: after a crash, the file holds
	// the old content or the new one.
	BestEffort Sync = false
)

// WriteJSON stores v as JSON at path with mode perm: it writes a temporary
// file in the same directory and renames it over path, with sync's
// guarantee.
func WriteJSON(path string, v any, perm os.FileMode, sync Sync) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return Write(path, b, perm, sync)
}

// Write is WriteJSON for bytes.
func Write(path string, b []byte, perm os.FileMode, sync Sync) (err error) {
	durable := sync == Durable
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(b); err != nil {
		return err
	}
	if durable {
		if err = f.Sync(); err != nil {
			return err
		}
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	if durable {
		return SyncDir(dir)
	}
	return nil
}

// ReadJSON decodes the JSON file at path into v.
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error { return Fsync(dir) }

// Fsync fsyncs the file or directory at path.
func Fsync(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// IsTemp reports whether name is a temporary file Write left behind when it
// was interrupted; directory scans skip and remove them.
func IsTemp(name string) bool {
	return len(name) > 0 && name[0] == '.'
}
