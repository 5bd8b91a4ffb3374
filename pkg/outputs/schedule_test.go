package outputs

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tektoncd/artifacts-csi-driver/internal/atomicfile"
	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/store"
)

// TestStalledDestination: a registry that accepts connections and never
// answers holds at most all workers but one; another tenant's output,
// sealed after it, is pushed meanwhile.
func TestStalledDestination(t *testing.T) {
	stall := make(chan struct{})
	defer close(stall)
	stalled := testregistry.Handler(t, false, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-stall })
	})
	f := newFixture(t, testregistry.InMemory(t, false))
	f.opts.Workers = 2
	m := f.open()
	for i := range 3 {
		v := f.volume(fmt.Sprint("csi-stalled-", i))
		v.Repository, v.Pod.Namespace = stalled+"/slow/out", "slow"
		testtree.Write(t, f.publish(m, v), 1)
		f.seal(m, v.ID)
	}
	f.run(m)
	waitFor(t, "an upload to the stalled registry", func() bool {
		for i := range 3 {
			if got, _ := m.Get(fmt.Sprint("csi-stalled-", i)); got.Uploading {
				return true
			}
		}
		return false
	})
	// Frozen on workers of their own, even those that wait for a worker
	// to upload: a reboot now cannot tear them.
	waitFor(t, "every output frozen", func() bool {
		for _, v := range m.List() {
			if !v.Frozen {
				return false
			}
		}
		return true
	})
	v := f.volume("csi-other")
	testtree.Write(t, f.publish(m, v), 1)
	f.seal(m, v.ID)
	waitFor(t, "the other tenant's output", func() bool { return !m.Has(v.ID) })
	if got := f.rec.last(); got.VolumeID != v.ID || got.Phase != record.Pushed {
		t.Errorf("last record: %s %s", got.VolumeID, got.Phase)
	}
}

// TestNamespacesTakeTurns: with one worker, a namespace with one output
// does not wait behind every output of another that sealed first.
func TestNamespacesTakeTurns(t *testing.T) {
	f := newFixture(t, testregistry.InMemory(t, false))
	f.opts.Workers = 1
	m := f.open()
	for i := range 5 {
		v := f.volume(fmt.Sprint("csi-busy-", i))
		v.Pod.Namespace = "busy"
		testtree.Write(t, f.publish(m, v), 1)
		f.seal(m, v.ID)
		time.Sleep(time.Millisecond) // distinct seal times
	}
	v := f.volume("csi-quiet")
	v.Pod.Namespace = "quiet"
	testtree.Write(t, f.publish(m, v), 1)
	f.seal(m, v.ID)
	// Frozen already, so that all are ready for upload at once.
	for _, got := range m.List() {
		got.Frozen = true
		if err := atomicfile.WriteJSON(filepath.Join(f.dir, "spool", got.ID, journalFile), &got, 0o600, atomicfile.Durable); err != nil {
			t.Fatal(err)
		}
	}
	m = f.open()
	f.run(m)
	waitFor(t, "every push", func() bool { return m.Stats().Pending == 0 })
	var pushed []string
	for _, r := range f.rec.records {
		if r.Phase == record.Pushed {
			pushed = append(pushed, r.VolumeID)
		}
	}
	if i := slices.Index(pushed, v.ID); i < 0 || i > 1 {
		t.Errorf("pushed in the order %v: the quiet namespace waited for the busy one", pushed)
	}
}

func TestDestination(t *testing.T) {
	for _, tt := range []struct {
		v    Volume
		want string
	}{
		{Volume{Backend: store.OCI, Repository: "registry.example:5000/team/out"}, "registry.example:5000"},
		{Volume{Repository: "ghcr.io/org/x"}, "ghcr.io"},
		{Volume{Backend: "gcs", Repository: "bucket/prefix"}, "provider:gcs"},
	} {
		if got := destination(&tt.v); got != tt.want {
			t.Errorf("destination(%+v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}
