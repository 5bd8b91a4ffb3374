package archive_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
)

// TestNormalize checks that a normalized tree is what extracting its
// archive gives, metadata included: owners, modes (setuid, setgid and
// sticky dropped), extended attributes.
func TestNormalize(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to give entries other owners")
	}
	ctx := context.Background()
	src := filepath.Join(tempDir(t), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	roundTripTree(t, src)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(src, "bin/setuid"), []byte("x"), 0o755))
	must(os.Chmod(filepath.Join(src, "bin/setuid"), 0o755|os.ModeSetuid|os.ModeSetgid))
	must(os.Mkdir(filepath.Join(src, "tmp"), 0o777))
	must(os.Chmod(filepath.Join(src, "tmp"), 0o777|os.ModeSticky))
	for _, p := range []string{".", "README", "bin", "bin/readme", "data/nested/deeper"} {
		must(os.Lchown(filepath.Join(src, p), 1234, 5678))
	}
	xattrs := unix.Lsetxattr(filepath.Join(src, "README"), "user.origin", []byte("pod"), 0) == nil
	if xattrs {
		must(unix.Lsetxattr(filepath.Join(src, "data"), "user.origin", []byte("pod"), 0))
	}

	var tarball bytes.Buffer
	packed, err := archive.Pack(ctx, src, &tarball)
	must(err)
	dest := filepath.Join(tempDir(t), "dest")
	_, _, err = archive.Extract(ctx, bytes.NewReader(tarball.Bytes()), expectOf(tarball.Bytes()), dest, archive.Limits{}, archive.WithModes(archive.ReadOnlyModes))
	must(err)

	u, err := archive.Normalize(ctx, src, archive.ReadOnlyModes, archive.Limits{})
	must(err)
	if u != packed.Usage {
		t.Errorf("Normalize = %+v, want Pack's usage %+v", u, packed.Usage)
	}
	if d := diffTrees(describe(t, dest), describe(t, src)); d != "" {
		t.Errorf("normalized tree differs from the extracted one:\n%s", d)
	}
	if got, want := linkGroups(t, src), linkGroups(t, dest); len(got) != len(want) {
		t.Errorf("hardlink groups = %v, want %v", got, want)
	}
	for _, root := range []string{src, dest} {
		must(filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
			must(err)
			var st syscall.Stat_t
			must(syscall.Lstat(p, &st))
			if int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid() {
				t.Errorf("%s: owner %d:%d, want the caller's", p, st.Uid, st.Gid)
			}
			if n, err := unix.Llistxattr(p, make([]byte, 1024)); xattrs && (err != nil || n != 0) {
				t.Errorf("%s: extended attributes left (%d bytes of names, %v)", p, n, err)
			}
			return nil
		}))
	}

	// Again: nothing to change.
	if u2, err := archive.Normalize(ctx, src, archive.ReadOnlyModes, archive.Limits{}); err != nil || u2 != u {
		t.Errorf("second Normalize = %+v, %v; want %+v", u2, err, u)
	}
}

func TestNormalizeRefuses(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		build func(root string) error
		lim   archive.Limits
		want  error
	}{
		"fifo": {build: func(root string) error { return unix.Mkfifo(filepath.Join(root, "pipe"), 0o644) },
			want: archive.ErrUnsafeEntry},
		"too large": {build: func(root string) error { return os.WriteFile(filepath.Join(root, "f"), make([]byte, 8192), 0o644) },
			lim: archive.Limits{MaxBytes: 4096}, want: archive.ErrLimitExceeded},
	} {
		t.Run(name, func(t *testing.T) {
			root := tempDir(t)
			if err := tc.build(root); err != nil {
				t.Fatal(err)
			}
			if _, err := archive.Normalize(ctx, root, archive.ReadOnlyModes, tc.lim); !errors.Is(err, tc.want) {
				t.Errorf("Normalize = %v, want %v", err, tc.want)
			}
		})
	}
}
