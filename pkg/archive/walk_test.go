package archive_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
)

// TestWalk: entries come in archive order with their kinds, modes,
// sizes and targets; content left unread by the visit is still read and
// counted; a file that shrinks while it is read is an error.
func TestWalk(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "b/c"), 0o750))
	must(os.WriteFile(filepath.Join(dir, "a"), []byte("hello"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "b/c/big"), make([]byte, 300<<10), 0o644))
	must(os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b/z")))
	must(os.Symlink("../a", filepath.Join(dir, "b/link")))
	var got []string
	stats, err := archive.Walk(context.Background(), dir, archive.Limits{}, func(e *archive.Entry) error {
		got = append(got, strings.Join([]string{e.Name, string("?dfhs"[e.Kind]), e.Mode.String(), e.Target}, " "))
		return nil // content unread
	})
	must(err)
	want := []string{"a f -rwxr-xr-x ", "b d -rwxr-x--- ", "b/c d -rwxr-x--- ", "b/c/big f -rw-r--r-- ", "b/link s -rwxrwxrwx ../a", "b/z h -rwxr-xr-x a"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("entries\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if stats.Entries != 6 || stats.Bytes != 5+300<<10 {
		t.Errorf("stats %+v", stats)
	}

	_, err = archive.Walk(context.Background(), dir, archive.Limits{}, func(e *archive.Entry) error {
		if e.Name == "b/c/big" {
			must(os.Truncate(filepath.Join(dir, e.Name), 1000))
		}
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), `"b/c/big" shrank`) {
		t.Errorf("a file that shrank: %v", err)
	}
}
