// Package unixsock listens on unix sockets the way a restarted daemon
// must: replacing the socket file a crashed predecessor left, but never one
// a live process still answers on, nor a file that is not a socket. Path
// reads the endpoints the daemons and tools are given.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Path returns the socket path of an endpoint written unix:///abs/path or
// /abs/path. Other schemes and relative paths are refused.
func Path(endpoint string) (string, error) {
	p := endpoint
	if scheme, rest, ok := strings.Cut(endpoint, "://"); ok {
		if scheme != "unix" {
			return "", fmt.Errorf("want unix:///absolute/path or /absolute/path, got %q", endpoint)
		}
		p = rest
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("want unix:///absolute/path or /absolute/path, got %q", endpoint)
	}
	return filepath.Clean(p), nil
}

// ErrInUse reports that a live process serves the socket, e.g. the previous
// plugin pod during a rolling update.
var ErrInUse = errors.New("socket is in use by another process")

// Listen creates path's directory if needed, removes a stale socket at
// path, listens on it and sets its mode.
func Listen(path string, mode os.FileMode) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		lis.Close()
		return nil, fmt.Errorf("chmod socket %s: %w", path, err)
	}
	return lis, nil
}

// removeStale removes the socket at path if nothing answers on it.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode().Type() != os.ModeSocket:
		return fmt.Errorf("%s exists and is not a socket (%s); remove it by hand", path, fi.Mode().Type())
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	switch {
	case err == nil:
		conn.Close()
		return fmt.Errorf("%w: %s", ErrInUse, path)
	case !errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("probe existing socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}
