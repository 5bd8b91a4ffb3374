// Package outputs keeps output volumes from their publication to their
// store (a registry or a storage provider), losing nothing on the way: a journal on disk says at every
// moment what each volume needs next, so a plugin restart at any point
// resumes where it stopped.
//
// Layout of the state directory:
//
//	outputs/<volume id>/        a published volume, mounted in its pod
//	    volume.json             the journal (Volume), fsynced at each change
//	    credentials.json        the push credentials (mode 0600)
//	    data/                   what the pod writes (see pkg/outputfs:
//	    data.img                with Ext4, a filesystem of the output's
//	                            size, mounted on data/)
//	spool/<volume id>/          the same, once sealed: waiting for upload,
//	                            pushed but not recorded, or failed
//
// A volume moves from outputs/ to spool/ in one rename. Then, before any
// upload attempt, its data is frozen: read-only and synced to disk, so that
// what is pushed is what the pod wrote, never a tree an unclean reboot
// tore (a volume published before a reboot and never frozen is failed
// instead). Once pushed and recorded, its directory is deleted; a failed
// one loses its credentials at once and its data after FailedTTL.
package outputs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/internal/atomicfile"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/chunked"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/metrics"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputfs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/store"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// State of an output volume.
type State string

// States, in order.
const (
	Published State = "Published" // mounted in its pod
	Sealed    State = "Sealed"    // unmounted, waiting for upload
	Pushed    State = "Pushed"    // in the registry, record not stored yet
	Failed    State = "Failed"    // given up; the data stays on disk
)

// Volume is an output volume's journal: everything its push needs, because
// NodeUnpublishVolume carries only the volume id and target path.
type Volume struct {
	ID string `json:"volumeID"`
	// Fingerprint of the publish request: the same one again is a repeat,
	// another one a conflict.
	Fingerprint string     `json:"fingerprint"`
	Pod         volume.Pod `json:"pod"`
	// Owner is what the pod runs for, as Tekton's state confirmed it at
	// publish (journals of earlier versions have none: their records are
	// the pod's).
	Owner tekton.Identity `json:"owner,omitzero"`
	// Where and how to push: Backend is store.OCI or a storage provider's
	// name (a journal of an earlier version without one is OCI's);
	// Repository is the registry's or the provider's.
	Backend     string              `json:"backend,omitempty"`
	Repository  string              `json:"repository"`
	PlainHTTP   bool                `json:"plainHTTP,omitempty"`
	Tag         string              `json:"tag,omitempty"`
	Compression archive.Compression `json:"compression"`
	// Format is the layout of a directory output: "" (archive) or
	// "chunked".
	Format    string            `json:"format,omitempty"`
	MediaType string            `json:"mediaType,omitempty"`
	MaxBytes  int64             `json:"maxBytes"`
	Metadata  artifact.Metadata `json:"metadata"`
	Group     *artifact.Group   `json:"group,omitempty"`

	State       State     `json:"state"`
	PublishedAt time.Time `json:"publishedAt"`
	// Boot is the kernel boot the volume was published in: data not
	// frozen in that same boot may have been torn by a reboot.
	Boot     string    `json:"boot,omitempty"`
	SealedAt time.Time `json:"sealedAt,omitzero"`
	// Frozen says the data is read-only and on disk (outputfs Freeze).
	Frozen   bool `json:"frozen,omitempty"`
	Attempts int  `json:"attempts,omitempty"`
	// Uploading says an upload attempt started and has not ended: found
	// so at Open, the plugin died during it (killed, e.g. out of memory),
	// and Interrupted counts it.
	Uploading   bool      `json:"uploading,omitempty"`
	Interrupted int       `json:"interrupted,omitempty"`
	NextAttempt time.Time `json:"nextAttempt,omitzero"`
	LastError   string    `json:"lastError,omitempty"`
	Result      *Result   `json:"result,omitempty"`
	// FailedAt is when the volume was given up; its data is deleted
	// FailedTTL later. Recorded says the failure reached the recorder,
	// which is retried until it does.
	FailedAt time.Time `json:"failedAt,omitzero"`
	Recorded bool      `json:"recorded,omitempty"`
}

// Result is what a push produced.
type Result struct {
	Ref         string `json:"ref"`
	Digest      string `json:"digest"`
	LayerDigest string `json:"layerDigest"`
	Size        int64  `json:"size"`
	MediaType   string `json:"mediaType"`
	// Location is where a storage provider says the manifest is.
	Location string `json:"location,omitempty"`
	// Contents, for the chunked layout, says where its chunks and files
	// are in the output's tree. In memory only, for the Keeper of the
	// push that made it: not journaled.
	Contents *chunked.Contents `json:"-"`
}

// Options configures a Manager.
type Options struct {
	// Dir is the state directory; outputs/ and spool/ are created in it.
	// Required.
	Dir string
	// Stores opens the store each output goes to, with the output's own
	// credentials. Required.
	Stores store.Opener
	// Recorder is told when an output is sealed (Pending), pushed or
	// failed. Default record.Log.
	Recorder record.Recorder
	// Deadline is how long after its seal an output may wait for the
	// registry before it is marked Failed. Default 24h.
	Deadline time.Duration
	// Workers bounds concurrent uploads. Default 4.
	Workers int
	// HostWorkers bounds the concurrent uploads to one destination (a
	// registry host or a storage provider), so that a destination that
	// stalls leaves a worker to the others. Default Workers-1 (at least
	// 1).
	HostWorkers int
	// RetryMin and RetryMax bound the exponential backoff between upload
	// attempts (±20% jitter). Defaults 1s and 5m.
	RetryMin, RetryMax time.Duration
	// AttemptTimeout bounds one upload attempt, so that a registry that
	// stops answering mid-transfer does not hold a worker forever. Default
	// 1h.
	AttemptTimeout time.Duration
	// MaxInterrupted is how many upload attempts of one output the
	// plugin's death may interrupt before the output is marked Failed,
	// rather than make every restart resume the upload that killed it.
	// Default 3.
	MaxInterrupted int
	// Filesystem gives each volume its storage. Default outputfs.Dir: a
	// plain directory, bounded only at push.
	Filesystem outputfs.Filesystem
	// FailedTTL is how long a failed output's data stays on the node for
	// an administrator to inspect or retry. Default 7 days.
	FailedTTL time.Duration
	// Metrics, when set, counts uploads and pushed bytes.
	Metrics *metrics.Metrics
	// Events, when set, is told of a bound an output hit, to report it on
	// the pod.
	Events Warner
	// Keeper, when set, is offered each output's data once it is pushed
	// and recorded, before it is deleted. Default none.
	Keeper Keeper
}

// Keeper takes over the data of pushed outputs: the node plugin makes an
// output's tree the input cache entry of its digest (write-through).
type Keeper interface {
	// Keep is offered the data of v, pushed, in its directory dir (see
	// the layout above), once its storage is released
	// (Filesystem.Release succeeded: nothing holds it): the frozen tree
	// that was pushed. It is called before the output is recorded
	// Pushed, so that what waits for that record finds what it kept, and
	// again when the record is retried or a crash came between: it must
	// tolerate data it moved already. It may move what it wants out of
	// dir, which is deleted once the output is recorded, whatever it
	// did; what went wrong is its own to report.
	Keep(ctx context.Context, v Volume, dir string)
}

// Warner reports a Warning on a pod (record.Events does).
type Warner interface {
	Warn(pod volume.Pod, reason, message string)
}

// Manager owns the output volumes of a node. It is safe for concurrent
// use, provided no two calls concern the same volume id at once (the CSI
// node service serialises calls per volume).
type Manager struct {
	o                    Options
	outputsDir, spoolDir string
	wake                 chan struct{}

	mu        sync.Mutex
	published map[string]*Volume
	spool     map[string]*Volume // Sealed, Pushed and Failed
	running   map[string]bool
}

const (
	journalFile     = "volume.json"
	credentialsFile = "credentials.json"
	dataDir         = outputfs.DataDir
)

// Open loads every journal under o.Dir, finishing seals a crash
// interrupted and removing half-created volumes. Call Run to upload.
func Open(ctx context.Context, o Options) (*Manager, error) {
	if o.Dir == "" || o.Stores == nil {
		return nil, errors.New("outputs: Dir and Stores are required")
	}
	if o.Recorder == nil {
		o.Recorder = record.Log{}
	}
	if o.Deadline <= 0 {
		o.Deadline = 24 * time.Hour
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.HostWorkers <= 0 || o.HostWorkers > o.Workers {
		o.HostWorkers = max(o.Workers-1, 1)
	}
	if o.RetryMin <= 0 {
		o.RetryMin = time.Second
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(5*time.Minute, o.RetryMin)
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = time.Hour
	}
	if o.MaxInterrupted <= 0 {
		o.MaxInterrupted = 3
	}
	if o.Filesystem == nil {
		o.Filesystem = outputfs.Dir{}
	}
	if o.FailedTTL <= 0 {
		o.FailedTTL = 7 * 24 * time.Hour
	}
	m := &Manager{
		o:          o,
		outputsDir: filepath.Join(o.Dir, "outputs"),
		spoolDir:   filepath.Join(o.Dir, "spool"),
		wake:       make(chan struct{}, 1),
		published:  map[string]*Volume{},
		spool:      map[string]*Volume{},
		running:    map[string]bool{},
	}
	logger := klog.FromContext(ctx)
	// The spool first: a volume moved into it below is then read once.
	for _, dir := range []string{m.spoolDir, m.outputsDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			p := filepath.Join(dir, e.Name())
			if atomicfile.IsTemp(e.Name()) { // a volume whose creation did not finish
				if err := m.remove(ctx, p); err != nil {
					logger.Error(err, "Could not remove an unfinished output volume", "path", p)
				}
				continue
			}
			v := &Volume{}
			if err := atomicfile.ReadJSON(filepath.Join(p, journalFile), v); err != nil || v.ID != e.Name() {
				// Never delete data we cannot account for.
				logger.Error(err, "Ignoring an output directory without a valid journal", "path", p)
				continue
			}
			if v.Backend == "" { // journaled before backends were explicit
				v.Backend = store.OCI
			}
			if dir == m.outputsDir && v.State == Published {
				m.published[v.ID] = v
				continue
			}
			if dir == m.outputsDir { // sealed by an earlier version, before the rename
				if err := m.moveToSpool(v.ID); err != nil {
					return nil, err
				}
			}
			if v.State == Published {
				v.State, v.SealedAt = Sealed, time.Now()
			}
			if v.State == Failed && v.FailedAt.IsZero() { // failed before failures expired
				v.FailedAt = time.Now().UTC()
				os.Remove(filepath.Join(p, credentialsFile))
			}
			m.spool[v.ID] = v
			if v.Uploading {
				m.interrupted(ctx, *v)
			}
		}
	}
	q := m.Stats()
	logger.Info("Loaded output volumes", "published", len(m.published), "pending", q.Pending, "failed", q.Failed)
	return m, nil
}

// interrupted counts an upload attempt of v that the plugin's death
// interrupted, and gives v up after MaxInterrupted of them.
func (m *Manager) interrupted(ctx context.Context, v Volume) {
	v.Uploading = false
	v.Interrupted++
	if v.Interrupted >= m.o.MaxInterrupted {
		m.fail(ctx, v, errdefs.Limit("interrupted uploads", "fix what killed the plugin (see its pod's last state), then retry with artifacts-csi-node outputs retry",
			fmt.Errorf("the node plugin stopped during %d upload attempts of this output (killed, for example for lack of memory); given up so that it does not again", v.Interrupted)))
		return
	}
	m.save(ctx, v, atomicfile.Durable)
}

func (m *Manager) dataPath(dir, id string) string { return filepath.Join(dir, id, dataDir) }

// remove releases the storage of the volume in dir, then deletes dir.
func (m *Manager) remove(ctx context.Context, dir string) error {
	if err := m.o.Filesystem.Release(ctx, dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}
