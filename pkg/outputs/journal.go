package outputs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/internal/atomicfile"
	"github.com/tektoncd/artifacts-csi-driver/internal/bootid"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/metrics"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputfs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// Publish creates the output volume v.ID (v.State and times are set here)
// with credentials creds and returns the directory to bind-mount for the
// pod: its storage, from Options.Filesystem, bounded by v.MaxBytes. With
// gid >= 0 (the pod's fsGroup) the directory belongs to that group,
// setgid and group-writable; otherwise it is world-writable, which exposes
// nothing since only this volume's pod mounts it.
//
// Publish is idempotent: a volume that exists with the same fingerprint
// returns its directory. volume.ErrConflict and volume.ErrSealed report
// the other cases.
// The volume is durable on disk before Publish returns.
func (m *Manager) Publish(ctx context.Context, v Volume, creds credentials.Snapshot, gid int) (string, error) {
	if !volume.ValidID(v.ID) {
		return "", fmt.Errorf("invalid volume id %q", v.ID)
	}
	if dir, found, err := m.Lookup(ctx, v.ID, v.Fingerprint); found || err != nil {
		return dir, err
	}
	v.State, v.PublishedAt, v.Boot = Published, time.Now().UTC(), bootid.Current()
	tmp, err := os.MkdirTemp(m.outputsDir, ".new-")
	if err != nil {
		return "", err
	}
	err = m.prepare(ctx, tmp, &v, creds, gid)
	if err == nil {
		err = os.Rename(tmp, filepath.Join(m.outputsDir, v.ID))
	}
	if err == nil {
		err = atomicfile.SyncDir(m.outputsDir)
	}
	if err != nil {
		if rerr := m.remove(ctx, tmp); rerr != nil {
			klog.FromContext(ctx).Error(rerr, "Could not remove an unfinished output volume", "path", tmp)
		}
		return "", fmt.Errorf("create output volume %s: %w", v.ID, err)
	}
	m.mu.Lock()
	m.published[v.ID] = &v
	m.mu.Unlock()
	klog.FromContext(ctx).V(4).Info("Created output volume", "repository", v.Repository, "tag", v.Tag)
	return m.dataPath(m.outputsDir, v.ID), nil
}

func (m *Manager) prepare(ctx context.Context, dir string, v *Volume, creds credentials.Snapshot, gid int) error {
	if err := atomicfile.WriteJSON(filepath.Join(dir, credentialsFile), creds, 0o600, atomicfile.Durable); err != nil {
		return err
	}
	if err := atomicfile.WriteJSON(filepath.Join(dir, journalFile), v, 0o600, atomicfile.Durable); err != nil {
		return err
	}
	if err := m.o.Filesystem.Create(ctx, dir, outputfs.Limits{Bytes: v.MaxBytes, GID: gid}); err != nil {
		return err
	}
	return atomicfile.SyncDir(dir)
}

// Lookup returns the directory of published volume id when its
// fingerprint matches, volume.ErrConflict when it does not,
// volume.ErrSealed when the volume is sealed already, and found=false when
// it does not exist. A directory it returns shows the volume's storage
// (mounted again, if a restart lost the mount).
func (m *Manager) Lookup(ctx context.Context, id, fingerprint string) (dir string, found bool, err error) {
	m.mu.Lock()
	v, published := m.published[id]
	_, sealed := m.spool[id]
	m.mu.Unlock()
	switch {
	case sealed:
		return "", true, fmt.Errorf("%w: output %s is sealed for upload", volume.ErrSealed, id)
	case !published:
		return "", false, nil
	case v.Fingerprint != fingerprint:
		return "", true, fmt.Errorf("%w: output %s", volume.ErrConflict, id)
	}
	if err := m.o.Filesystem.Mount(ctx, filepath.Join(m.outputsDir, id), false); err != nil {
		return "", true, fmt.Errorf("output %s: %w", id, err)
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
	if err := atomicfile.WriteJSON(filepath.Join(m.spoolDir, id, journalFile), &next, 0o600, atomicfile.BestEffort); err != nil {
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

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// save updates v in memory and in its journal. A failure to write is
// logged: the journal on disk still holds an earlier state, from which a
// restart redoes at most idempotent steps.
func (m *Manager) save(ctx context.Context, v Volume, sync atomicfile.Sync) {
	if err := atomicfile.WriteJSON(filepath.Join(m.spoolDir, v.ID, journalFile), &v, 0o600, sync); err != nil {
		klog.FromContext(ctx).Error(err, "Could not update output journal")
	}
	m.mu.Lock()
	m.spool[v.ID] = &v
	m.mu.Unlock()
}

// List returns a copy of the journal of every sealed volume (waiting for
// upload, pushed but not recorded, or failed), oldest seal first.
func (m *Manager) List() []Volume {
	m.mu.Lock()
	vs := make([]Volume, 0, len(m.spool))
	for _, v := range m.spool {
		vs = append(vs, *v)
	}
	m.mu.Unlock()
	slices.SortFunc(vs, func(a, b Volume) int { return a.SealedAt.Compare(b.SealedAt) })
	return vs
}

// Retry hands failed output id back to the uploader, as if it had just
// been sealed, with credentials creds (the ones it had were deleted when
// it failed; an empty snapshot pushes anonymously). It refuses an output
// that is not Failed (ErrNotFailed), whose data has expired (fs.ErrNotExist)
// or that a reboot may have torn.
func (m *Manager) Retry(ctx context.Context, id string, creds credentials.Snapshot) error {
	// Claimed like an upload, so that the uploader does not settle it
	// meanwhile.
	m.mu.Lock()
	p, ok := m.spool[id]
	if !ok {
		m.mu.Unlock()
		return fmt.Errorf("output %s: %w", id, fs.ErrNotExist)
	}
	v := *p
	if v.State != Failed || m.running[id] {
		m.mu.Unlock()
		return fmt.Errorf("output %s is %s: %w", id, v.State, ErrNotFailed)
	}
	m.running[id] = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.running, id)
		m.mu.Unlock()
		m.poke()
	}()
	if !v.Frozen && v.Boot != "" && v.Boot != bootid.Current() {
		return fmt.Errorf("output %s: %w", id, errTorn)
	}
	dir := filepath.Join(m.spoolDir, id)
	if _, err := os.Stat(filepath.Join(dir, dataDir)); err != nil {
		return fmt.Errorf("output %s: %w", id, err)
	}
	if err := atomicfile.WriteJSON(filepath.Join(dir, credentialsFile), creds, 0o600, atomicfile.Durable); err != nil {
		return err
	}
	v.State, v.SealedAt, v.LastError = Sealed, time.Now().UTC(), ""
	v.Attempts, v.Interrupted, v.NextAttempt = 0, 0, time.Time{}
	v.FailedAt, v.Recorded = time.Time{}, false
	m.save(ctx, v, atomicfile.Durable)
	klog.FromContext(ctx).Info("Retrying a failed output", "volumeID", id, "artifact", v.Metadata.Name, "pod", klog.KRef(v.Pod.Namespace, v.Pod.Name))
	return nil
}

// ErrNotFailed: only a failed output can be retried.
var ErrNotFailed = errors.New("not failed")
