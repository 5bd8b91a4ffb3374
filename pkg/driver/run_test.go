package driver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/klog/v2/ktesting"

	"github.com/tektoncd/artifacts-csi-driver/pkg/outputfs"
)

// TestStateDirLock: a second plugin on the same state directory stops
// before it touches anything in it, such as the first one's unfinished
// output volumes.
func TestStateDirLock(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := t.TempDir()
	o := NewOptions()
	o.NodeID, o.StateDir, o.ConfigDir = "node-1", filepath.Join(root, "state"), filepath.Join(root, "config")
	o.OutputFilesystem = outputfs.KindDir
	first, err := newPlugin(ctx, o, "test")
	if err != nil {
		t.Fatal(err)
	}
	staging := filepath.Join(o.StateDir, "outputs", ".new-123")
	if err := os.Mkdir(staging, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := newPlugin(ctx, o, "test"); err == nil || !strings.Contains(err.Error(), "in use by another node plugin") {
		t.Fatalf("second plugin: %v", err)
	}
	if _, err := os.Stat(staging); err != nil {
		t.Errorf("the second plugin touched the first one's state: %v", err)
	}
	first.close()
	second, err := newPlugin(ctx, o, "test")
	if err != nil {
		t.Fatalf("after the first stopped: %v", err)
	}
	second.close()
}
