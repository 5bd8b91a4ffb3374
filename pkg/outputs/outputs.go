// Package outputs keeps output volumes from their publication to the
// registry, losing nothing on the way: a journal on disk says at every
// moment what each volume needs next, so a plugin restart at any point
// resumes where it stopped.
//
// Layout of the state directory:
//
//	outputs/<volume id>/        a published volume, mounted in its pod
//	    volume.json             the journal (Volume), fsynced at each change
//	    credentials.json        the push credentials (mode 0600)
//	    data/                   what the pod writes
//	spool/<volume id>/          the same, once sealed: waiting for upload,
//	                            pushed but not recorded, or failed
//
// A volume moves from outputs/ to spool/ in one rename. Once pushed and
// recorded, its directory is deleted; a failed one stays for an
// administrator.
package outputs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/internal/atomicfile"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/metrics"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// Errors Publish returns.
var (
	// ErrConflict: the volume exists with different publish arguments.
	ErrConflict = errors.New("volume already published with different arguments")
	// ErrSealed: the volume was unpublished already and waits for upload.
	ErrSealed = errors.New("volume already unpublished")
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
	// Where and how to push: Backend is empty for an OCI registry, else
	// the storage provider's name; Repository is then the provider's.
	Backend     string              `json:"backend,omitempty"`
	Repository  string              `json:"repository"`
	PlainHTTP   bool                `json:"plainHTTP,omitempty"`
	Tag         string              `json:"tag,omitempty"`
	Compression archive.Compression `json:"compression"`
	MediaType   string              `json:"mediaType,omitempty"`
	MaxBytes    int64               `json:"maxBytes"`
	Metadata    artifact.Metadata   `json:"metadata"`
	Group       *artifact.Group     `json:"group,omitempty"`

	State       State     `json:"state"`
	PublishedAt time.Time `json:"publishedAt"`
	SealedAt    time.Time `json:"sealedAt,omitzero"`
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"nextAttempt,omitzero"`
	LastError   string    `json:"lastError,omitempty"`
	Result      *Result   `json:"result,omitempty"`
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
}

// Pusher uploads a directory. oci.Client serves it through Registry.
type Pusher interface {
	Push(ctx context.Context, kc authn.Keychain, req oci.PushRequest) (*oci.PushResult, error)
}

// ProviderPusher stores outputs in storage providers; provider.Client
// serves it.
type ProviderPusher interface {
	Push(ctx context.Context, req provider.PushRequest) (*provider.PushResult, error)
}

// Options configures a Manager.
type Options struct {
	// Dir is the state directory; outputs/ and spool/ are created in it.
	// Required.
	Dir string
	// Pusher uploads outputs to OCI registries. Required.
	Pusher Pusher
	// Providers stores outputs whose Backend names a storage provider.
	// Default none: such outputs fail.
	Providers ProviderPusher
	// Recorder is told when an output is sealed (Pending), pushed or
	// failed. Default record.Log.
	Recorder record.Recorder
	// Deadline is how long after its seal an output may wait for the
	// registry before it is marked Failed. Default 24h.
	Deadline time.Duration
	// Workers bounds concurrent uploads. Default 2.
	Workers int
	// RetryMin and RetryMax bound the exponential backoff between upload
	// attempts (±20% jitter). Defaults 1s and 5m.
	RetryMin, RetryMax time.Duration
	// AttemptTimeout bounds one upload attempt, so that a registry that
	// stops answering mid-transfer does not hold a worker forever. Default
	// 1h.
	AttemptTimeout time.Duration
	// Metrics, when set, counts uploads and pushed bytes.
	Metrics *metrics.Metrics
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
	dataDir         = "data"
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidID reports whether id can name a volume's directory.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// Open loads every journal under o.Dir, finishing seals a crash
// interrupted and removing half-created volumes. Call Run to upload.
func Open(ctx context.Context, o Options) (*Manager, error) {
	if o.Dir == "" || o.Pusher == nil {
		return nil, errors.New("outputs: Dir and Pusher are required")
	}
	if o.Recorder == nil {
		o.Recorder = record.Log{}
	}
	if o.Deadline <= 0 {
		o.Deadline = 24 * time.Hour
	}
	if o.Workers <= 0 {
		o.Workers = 2
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
			if atomicfile.IsTemp(e.Name()) {
				os.RemoveAll(p) // a volume whose creation did not finish
				continue
			}
			v := &Volume{}
			if err := atomicfile.ReadJSON(filepath.Join(p, journalFile), v); err != nil || v.ID != e.Name() {
				// Never delete data we cannot account for.
				logger.Error(err, "Ignoring an output directory without a valid journal", "path", p)
				continue
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
			m.spool[v.ID] = v
		}
	}
	q := m.Stats()
	logger.Info("Loaded output volumes", "published", len(m.published), "pending", q.Pending, "failed", q.Failed)
	return m, nil
}

// Publish creates the output volume v.ID (v.State and times are set here)
// with credentials creds and returns the directory to bind-mount for the
// pod. With gid >= 0 (the pod's fsGroup) the directory belongs to that
// group, setgid and group-writable; otherwise it is world-writable, which
// exposes nothing since only this volume's pod mounts it.
//
// Publish is idempotent: a volume that exists with the same fingerprint
// returns its directory. ErrConflict and ErrSealed report the other cases.
// The volume is durable on disk before Publish returns.
func (m *Manager) Publish(ctx context.Context, v Volume, creds credentials.Snapshot, gid int) (string, error) {
	if !ValidID(v.ID) {
		return "", fmt.Errorf("invalid volume id %q", v.ID)
	}
	if dir, found, err := m.Lookup(v.ID, v.Fingerprint); found || err != nil {
		return dir, err
	}
	v.State, v.PublishedAt = Published, time.Now().UTC()
	tmp, err := os.MkdirTemp(m.outputsDir, ".new-")
	if err != nil {
		return "", err
	}
	err = m.prepare(tmp, &v, creds, gid)
	if err == nil {
		err = os.Rename(tmp, filepath.Join(m.outputsDir, v.ID))
	}
	if err == nil {
		err = atomicfile.SyncDir(m.outputsDir)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("create output volume %s: %w", v.ID, err)
	}
	m.mu.Lock()
	m.published[v.ID] = &v
	m.mu.Unlock()
	klog.FromContext(ctx).V(4).Info("Created output volume", "repository", v.Repository, "tag", v.Tag)
	return m.dataPath(m.outputsDir, v.ID), nil
}

func (m *Manager) prepare(dir string, v *Volume, creds credentials.Snapshot, gid int) error {
	data := filepath.Join(dir, dataDir)
	if err := os.Mkdir(data, 0o700); err != nil {
		return err
	}
	mode := os.FileMode(0o777)
	if gid >= 0 {
		if err := os.Lchown(data, 0, gid); err != nil {
			return err
		}
		mode = 0o775 | os.ModeSetgid
	}
	if err := os.Chmod(data, mode); err != nil {
		return err
	}
	if err := atomicfile.WriteJSON(filepath.Join(dir, credentialsFile), creds, 0o600, true); err != nil {
		return err
	}
	if err := atomicfile.WriteJSON(filepath.Join(dir, journalFile), v, 0o600, true); err != nil {
		return err
	}
	return atomicfile.SyncDir(dir)
}

// Lookup returns the directory of published volume id when its
// fingerprint matches, ErrConflict when it does not, ErrSealed when the
// volume is sealed already, and found=false when it does not exist.
func (m *Manager) Lookup(id, fingerprint string) (dir string, found bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, published := m.published[id]
	switch {
	case m.spool[id] != nil:
		return "", true, fmt.Errorf("%w: output %s is sealed for upload", ErrSealed, id)
	case !published:
		return "", false, nil
	case v.Fingerprint != fingerprint:
		return "", true, fmt.Errorf("%w: output %s", ErrConflict, id)
	}
	return m.dataPath(m.outputsDir, id), true, nil
}

// Has reports whether id is an output volume in any state.
func (m *Manager) Has(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.published[id] != nil || m.spool[id] != nil
}

// Seal hands a published volume, already unmounted, to the uploader: its
// directory moves into the spool in one rename, made durable before Seal
// returns. The location is the state: the journal then records the time
// of the seal, but a volume found in the spool is sealed whatever its
// journal says. Sealing allocates no disk space, so a full disk cannot make
// it fail. It returns quickly; the upload runs in Run. found is false for a
// volume this node does not know. Seal is idempotent.
func (m *Manager) Seal(ctx context.Context, id string) (found bool, err error) {
	m.mu.Lock()
	v, published := m.published[id]
	_, sealed := m.spool[id]
	m.mu.Unlock()
	if sealed {
		return true, nil
	}
	if !published {
		return false, nil
	}
	if err := m.moveToSpool(id); err != nil {
		return true, fmt.Errorf("seal output %s: %w", id, err)
	}
	next := *v
	next.State, next.SealedAt = Sealed, time.Now().UTC()
	m.mu.Lock()
	delete(m.published, id)
	m.spool[id] = &next
	m.mu.Unlock()
	// Not durable: after a crash, Open finds the volume in the spool and
	// seals it again with the time of the restart.
	if err := atomicfile.WriteJSON(filepath.Join(m.spoolDir, id, journalFile), &next, 0o600, false); err != nil {
		klog.FromContext(ctx).Error(err, "Sealed output, but could not record when", "volumeID", id)
	}
	m.poke()
	klog.FromContext(ctx).V(2).Info("Sealed output for upload", "artifact", v.Metadata.Name, "repository", v.Repository)
	return true, nil
}

func (m *Manager) moveToSpool(id string) error {
	if err := os.Rename(filepath.Join(m.outputsDir, id), filepath.Join(m.spoolDir, id)); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(m.spoolDir); err != nil {
		return err
	}
	return atomicfile.SyncDir(m.outputsDir)
}

// Stats describes the upload queue.
func (m *Manager) Stats() metrics.QueueStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	var q metrics.QueueStats
	for _, v := range m.spool {
		if v.State == Failed {
			q.Failed++
			continue
		}
		q.Pending++
		if q.Oldest.IsZero() || v.SealedAt.Before(q.Oldest) {
			q.Oldest = v.SealedAt
		}
	}
	return q
}

// Get returns a copy of volume id's journal.
func (m *Manager) Get(id string) (Volume, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.published[id]
	if v == nil {
		v = m.spool[id]
	}
	if v == nil {
		return Volume{}, false
	}
	return *v, true
}

func (m *Manager) dataPath(dir, id string) string { return filepath.Join(dir, id, dataDir) }

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Run uploads sealed outputs, Workers at a time, retrying with backoff,
// until ctx is cancelled; then it waits for running uploads to stop. Every
// output found by Open is resumed.
func (m *Manager) Run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithName("uploader")
	sem := make(chan struct{}, m.o.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := time.Now()
		next := time.Time{}
		m.mu.Lock()
		for id, v := range m.spool {
			if v.State == Failed || m.running[id] {
				continue
			}
			if v.NextAttempt.After(now) {
				if next.IsZero() || v.NextAttempt.Before(next) {
					next = v.NextAttempt
				}
				continue
			}
			m.running[id] = true
			wg.Go(func() {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
				}
				if ctx.Err() == nil {
					m.process(klog.NewContext(ctx, logger.WithValues("volumeID", id)), id)
					<-sem
				}
				m.mu.Lock()
				delete(m.running, id)
				m.mu.Unlock()
				m.poke()
			})
		}
		m.mu.Unlock()

		wait := time.Hour
		if !next.IsZero() {
			wait = time.Until(next)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-timer.C:
		}
	}
}

// process takes one output one step further: push, then record and
// delete; or fail once the deadline has passed.
func (m *Manager) process(ctx context.Context, id string) {
	logger := klog.FromContext(ctx)
	v, _ := m.Get(id)
	dir := filepath.Join(m.spoolDir, id)

	if v.State == Sealed {
		if v.Attempts == 0 {
			m.record(ctx, v, record.Pending, "")
		}
		attempt, cancel := context.WithTimeout(ctx, m.o.AttemptTimeout)
		res, err := m.push(attempt, dir, v)
		cancel()
		if ctx.Err() != nil {
			return // shutting down: the journal still says Sealed
		}
		now := time.Now()
		switch {
		case err != nil && (permanent(err) || !now.Before(v.SealedAt.Add(m.o.Deadline))):
			m.fail(ctx, v, err)
			return
		case err != nil:
			v.Attempts++
			v.LastError = err.Error()
			v.NextAttempt = now.Add(min(m.backoff(v.Attempts), v.SealedAt.Add(m.o.Deadline).Sub(now)))
			m.o.Metrics.Upload(metrics.UploadRetry)
			logger.Error(err, "Output upload failed; will retry", "attempts", v.Attempts, "retryIn", v.NextAttempt.Sub(now).Round(time.Millisecond))
			m.save(ctx, v, false)
			return
		}
		v.State, v.Result, v.LastError = Pushed, res, ""
		v.Attempts, v.NextAttempt = 0, time.Time{}
		// If this does not reach the disk (it is full), a crash before the
		// deletion below means one more, idempotent, push.
		m.save(ctx, v, true)
	}
	if v.State != Pushed {
		return
	}
	if err := m.record(ctx, v, record.Pushed, ""); err != nil {
		v.Attempts++
		v.NextAttempt = time.Now().Add(m.backoff(v.Attempts))
		m.save(ctx, v, false)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		logger.Error(err, "Could not delete pushed output; will retry", "path", dir)
		v.NextAttempt = time.Now().Add(m.o.RetryMax)
		m.save(ctx, v, false)
		return
	}
	m.mu.Lock()
	delete(m.spool, id)
	m.mu.Unlock()
	m.o.Metrics.Upload(metrics.UploadPushed)
	logger.Info("Pushed output", "ref", v.Result.Ref, "size", v.Result.Size, "pod", klog.KRef(v.Pod.Namespace, v.Pod.Name),
		"waited", time.Since(v.SealedAt).Round(time.Millisecond))
}

// push uploads the sealed output in dir.
func (m *Manager) push(ctx context.Context, dir string, v Volume) (*Result, error) {
	data := filepath.Join(dir, dataDir)
	if n, err := treeSize(data, v.MaxBytes); err != nil {
		return nil, err
	} else if n > v.MaxBytes {
		return nil, fmt.Errorf("%w: the output holds more than maxArtifactBytes (%d bytes)", archive.ErrLimitExceeded, v.MaxBytes)
	}
	if v.Backend != "" {
		return m.pushToProvider(ctx, data, v)
	}
	repo, _, err := oci.ParseRepositoryTag(v.Repository, v.PlainHTTP)
	if err != nil {
		return nil, fmt.Errorf("%w: repository %q: %w", errPermanent, v.Repository, err)
	}
	var creds credentials.Snapshot
	if err := atomicfile.ReadJSON(filepath.Join(dir, credentialsFile), &creds); err != nil {
		return nil, fmt.Errorf("%w: read push credentials: %w", errPermanent, err)
	}
	kc, err := creds.Keychain(ctx)
	if err != nil {
		return nil, err
	}
	res, err := m.o.Pusher.Push(ctx, kc, oci.PushRequest{
		Dir: data, Repository: repo, Tag: v.Tag, Metadata: v.Metadata,
		Compression: v.Compression, MediaType: v.MediaType, Group: v.Group,
	})
	if err != nil {
		return nil, err
	}
	if !res.Reused {
		m.o.Metrics.Pushed(res.Layer.Size)
	}
	return &Result{Ref: res.Ref.Name(), Digest: res.Manifest.Digest.String(), LayerDigest: res.Layer.Digest.String(),
		Size: res.Layer.Size, MediaType: string(res.Layer.MediaType)}, nil
}

// pushToProvider stores the sealed output in data with its storage
// provider, in the namespace of its pod.
func (m *Manager) pushToProvider(ctx context.Context, data string, v Volume) (*Result, error) {
	if m.o.Providers == nil {
		return nil, fmt.Errorf("%w: backend %q: this node plugin has no storage provider client", errPermanent, v.Backend)
	}
	res, err := m.o.Providers.Push(ctx, provider.PushRequest{
		Backend: v.Backend, Scope: provider.Scope{Namespace: v.Pod.Namespace, Repository: v.Repository},
		Dir: data, Metadata: v.Metadata, Compression: v.Compression, MediaType: v.MediaType,
	})
	if err != nil {
		return nil, err
	}
	m.o.Metrics.Pushed(res.Layer.Size)
	return &Result{Ref: provider.Ref(v.Backend, v.Repository, res.Manifest.Digest.String()), Digest: res.Manifest.Digest.String(),
		LayerDigest: res.Layer.Digest.String(), Size: res.Layer.Size, MediaType: string(res.Layer.MediaType), Location: res.Location}, nil
}

// fail gives up on an output: its journal says Failed with the reason, the
// recorder is told, and the data stays where it is.
func (m *Manager) fail(ctx context.Context, v Volume, cause error) {
	v.State, v.LastError, v.NextAttempt = Failed, cause.Error(), time.Time{}
	m.o.Metrics.Upload(metrics.UploadFailed)
	klog.FromContext(ctx).Error(cause, "Output could not be pushed; its data stays on the node",
		"pod", klog.KRef(v.Pod.Namespace, v.Pod.Name), "artifact", v.Metadata.Name,
		"path", filepath.Join(m.spoolDir, v.ID, dataDir), "attempts", v.Attempts+1)
	m.save(ctx, v, true)
	m.record(ctx, v, record.Failed, v.LastError)
}

// save updates v in memory and in its journal. A failure to write is
// logged: the journal on disk still holds an earlier state, from which a
// restart redoes at most idempotent steps.
func (m *Manager) save(ctx context.Context, v Volume, durable bool) {
	if err := atomicfile.WriteJSON(filepath.Join(m.spoolDir, v.ID, journalFile), &v, 0o600, durable); err != nil {
		klog.FromContext(ctx).Error(err, "Could not update output journal")
	}
	m.mu.Lock()
	m.spool[v.ID] = &v
	m.mu.Unlock()
}

func (m *Manager) record(ctx context.Context, v Volume, phase record.Phase, msg string) error {
	r := record.Record{
		VolumeID: v.ID, Direction: volume.Output, Artifact: v.Metadata.Name, Pod: v.Pod,
		Backend: v.Backend, Repository: v.Repository, Tag: v.Tag, BuildOutput: v.Metadata.BuildOutput,
		Phase: phase, Message: msg, Time: time.Now().UTC(),
	}
	if res := v.Result; res != nil {
		r.Digest, r.LayerDigest, r.Size, r.MediaType, r.Location = res.Digest, res.LayerDigest, res.Size, res.MediaType, res.Location
	}
	err := m.o.Recorder.Record(ctx, r)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Could not record output", "phase", phase)
	}
	return err
}

func (m *Manager) backoff(attempts int) time.Duration {
	d := m.o.RetryMax
	if attempts < 30 {
		d = min(m.o.RetryMin<<(attempts-1), m.o.RetryMax)
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// errPermanent marks failures that no retry can fix.
var errPermanent = errors.New("cannot be pushed")

// permanent reports whether err will fail again however often it is tried:
// the output's content or the request is at fault, not the registry.
func permanent(err error) bool {
	for _, target := range []error{errPermanent, archive.ErrUnsafeEntry, archive.ErrLimitExceeded,
		archive.ErrUnsupportedFile, oci.ErrInvalidArtifact, credentials.ErrInvalid, provider.ErrRejected} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// treeSize sums the sizes of the regular files under dir, stopping early
// once it passes limit. It does not follow symbolic links.
func treeSize(dir string, limit int64) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			if n += info.Size(); n > limit {
				return filepath.SkipAll
			}
		}
		return nil
	})
	return n, err
}

// OCIPusher pushes with an oci.Client, using each output's own credentials.
type OCIPusher struct{ Client *oci.Client }

var _ Pusher = OCIPusher{}

// Push implements Pusher.
func (p OCIPusher) Push(ctx context.Context, kc authn.Keychain, req oci.PushRequest) (*oci.PushResult, error) {
	return p.Client.With(kc).Push(ctx, req)
}
