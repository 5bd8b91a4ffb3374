package outputs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/internal/atomicfile"
	"github.com/tektoncd/artifacts-csi-driver/internal/bootid"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/metrics"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/store"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// Run uploads sealed outputs, Workers at a time, retrying with backoff,
// until ctx is cancelled; then it waits for running uploads to stop. Every
// output found by Open is resumed.
//
// Uploads are scheduled fairly: at most HostWorkers at once go to the same
// destination (a registry host or a storage provider), so that one that
// stalls cannot hold every worker while others' outputs wait; and among
// the outputs ready, the next one comes from the namespace with the fewest
// uploads running, served least recently, then sealed first.
func (m *Manager) Run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithName("uploader")
	s := scheduler{host: map[string]int{}, namespace: map[string]int{}, served: map[string]int{}}
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		m.releaseSpool(ctx)
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := time.Now()
		next := time.Time{}
		var ready []*Volume
		m.mu.Lock()
		for id, v := range m.spool {
			if m.running[id] {
				continue
			}
			due := v.NextAttempt
			if v.State == Failed && v.Recorded {
				due = v.FailedAt.Add(m.o.FailedTTL)
			}
			if due.After(now) {
				if next.IsZero() || due.Before(next) {
					next = due
				}
				continue
			}
			ready = append(ready, v)
		}
		start := func(v *Volume, quick bool) {
			id, host, ns := v.ID, destination(v), v.Pod.Namespace
			m.running[id] = true
			s.start(host, ns, quick)
			wg.Go(func() {
				m.process(klog.NewContext(ctx, logger.WithValues("volumeID", id)), id)
				m.mu.Lock()
				delete(m.running, id)
				s.done(host, ns, quick)
				m.mu.Unlock()
				m.poke()
			})
		}
		// Quick work first, on workers of its own: it never waits on a
		// destination, and nothing should wait for it behind one.
		for i, v := range ready {
			if quickWork(v) && s.quick < m.o.Workers {
				start(v, true)
				ready[i] = nil
			}
		}
		for s.busy < m.o.Workers {
			v := s.pick(ready, m.o.HostWorkers)
			if v == nil {
				break
			}
			start(v, false)
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

// quickWork reports whether what v needs next involves no destination:
// freezing its data, recording its failure, deleting it once expired.
func quickWork(v *Volume) bool {
	return v.State == Failed || v.State == Sealed && !v.Frozen
}

// scheduler counts the uploads running, by destination and namespace, and
// the quick work running. The Manager's mutex guards it.
type scheduler struct {
	quick     int
	busy      int
	host      map[string]int // running, by destination
	namespace map[string]int // running, by namespace
	served    map[string]int // when each namespace last had an upload start
	clock     int
}

// pick removes from ready and returns the next output to upload, or nil
// when none may start.
func (s *scheduler) pick(ready []*Volume, perHost int) *Volume {
	best := -1
	for i, v := range ready {
		if v == nil || quickWork(v) || s.host[destination(v)] >= perHost {
			continue
		}
		if best < 0 || s.before(v, ready[best]) {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	v := ready[best]
	ready[best] = nil
	return v
}

func (s *scheduler) before(a, b *Volume) bool {
	na, nb := a.Pod.Namespace, b.Pod.Namespace
	if s.namespace[na] != s.namespace[nb] {
		return s.namespace[na] < s.namespace[nb]
	}
	if s.served[na] != s.served[nb] {
		return s.served[na] < s.served[nb]
	}
	return a.SealedAt.Before(b.SealedAt)
}

func (s *scheduler) start(host, ns string, quick bool) {
	if quick {
		s.quick++
		return
	}
	s.clock++
	s.busy++
	s.host[host]++
	s.namespace[ns]++
	s.served[ns] = s.clock
}

func (s *scheduler) done(host, ns string, quick bool) {
	if quick {
		s.quick--
		return
	}
	s.busy--
	if s.host[host]--; s.host[host] == 0 {
		delete(s.host, host)
	}
	if s.namespace[ns]--; s.namespace[ns] == 0 {
		delete(s.namespace, ns)
	}
}

// destination names where v goes: its registry host, or its storage
// provider.
func destination(v *Volume) string {
	if v.Backend != "" && v.Backend != store.OCI {
		return "provider:" + v.Backend
	}
	host, _, _ := strings.Cut(v.Repository, "/")
	return host
}

// process takes one output one step further: freeze and push, then
// record and delete; or fail once the deadline has passed. A failed output
// has its failure recorded, then, after FailedTTL, its data deleted.
func (m *Manager) process(ctx context.Context, id string) {
	logger := klog.FromContext(ctx)
	v, _ := m.Get(id)
	dir := filepath.Join(m.spoolDir, id)

	if v.State == Failed {
		m.settle(ctx, v, dir)
		return
	}
	if v.State == Sealed && !v.Frozen {
		m.freeze(ctx, v, dir)
		return
	}
	if v.State == Sealed {
		// On disk before the attempt: if the plugin dies during it, Open
		// counts it (see interrupted).
		v.Uploading = true
		m.save(ctx, v, atomicfile.Durable)
		v.Uploading = false
		attempt, cancel := context.WithTimeout(ctx, m.o.AttemptTimeout)
		res, err := m.attempt(attempt, dir, &v)
		cancel()
		if ctx.Err() != nil {
			m.save(ctx, v, atomicfile.Durable) // shutting down: still Sealed, and not interrupted
			return
		}
		now := time.Now()
		switch {
		case err != nil && (!errdefs.Retryable(err) || !now.Before(v.SealedAt.Add(m.o.Deadline))):
			m.fail(ctx, v, err)
			return
		case err != nil:
			v.Attempts++
			v.LastError = err.Error()
			v.NextAttempt = now.Add(min(m.backoff(v.Attempts), v.SealedAt.Add(m.o.Deadline).Sub(now)))
			m.o.Metrics.Upload(metrics.UploadRetry)
			if bound, _, ok := errdefs.LimitOf(err); ok {
				m.o.Metrics.LimitHit(bound)
			}
			logger.Error(err, "Output upload failed; will retry", "attempts", v.Attempts, "retryIn", v.NextAttempt.Sub(now).Round(time.Millisecond))
			m.save(ctx, v, atomicfile.BestEffort)
			return
		}
		v.State, v.Result, v.LastError = Pushed, res, ""
		v.Attempts, v.NextAttempt = 0, time.Time{}
		// If this does not reach the disk (it is full), a crash before the
		// deletion below means one more, idempotent, push.
		m.save(ctx, v, atomicfile.Durable)
	}
	if v.State != Pushed {
		return
	}
	// Before the record, which a from: consumer waits for: on this node,
	// it then finds what the Keeper kept. Released after the push
	// already, unless a restart came between; offered only if nothing
	// else holds it.
	if m.o.Keeper != nil && m.o.Filesystem.Release(ctx, dir) == nil {
		m.o.Keeper.Keep(ctx, v, dir)
	}
	if err := m.record(ctx, v, record.Pushed, ""); err != nil {
		m.later(ctx, v)
		return
	}
	if err := m.remove(ctx, dir); err != nil {
		logger.Error(err, "Could not delete pushed output; will retry", "path", dir)
		v.NextAttempt = time.Now().Add(m.o.RetryMax)
		m.save(ctx, v, atomicfile.BestEffort)
		return
	}
	m.forget(id)
	m.o.Metrics.Upload(metrics.UploadPushed)
	logger.Info("Pushed output", "ref", v.Result.Ref, "size", v.Result.Size, "pod", klog.KRef(v.Pod.Namespace, v.Pod.Name),
		"waited", time.Since(v.SealedAt).Round(time.Millisecond))
}

// errTorn: the data of an output that a reboot interrupted before it was
// frozen.
var errTorn = errdefs.New("the node restarted before this output's data was synced to disk: what the pod wrote may be incomplete, so it is not pushed", errdefs.ErrCorrupt)

// freeze makes a sealed output's data read-only and durable, as soon as
// it is sealed (on workers no destination holds): from then on a reboot
// cannot tear it. It records the output Pending, for a from: consumer to
// wait. Data a reboot may have torn before it was frozen is never pushed:
// the output fails instead.
func (m *Manager) freeze(ctx context.Context, v Volume, dir string) {
	m.record(ctx, v, record.Pending, "")
	if v.Boot != "" && v.Boot != bootid.Current() {
		m.fail(ctx, v, errTorn)
		return
	}
	if err := m.o.Filesystem.Freeze(ctx, dir); err != nil {
		err = fmt.Errorf("freeze the output's data: %w", err)
		if !errdefs.Retryable(err) || !time.Now().Before(v.SealedAt.Add(m.o.Deadline)) {
			m.fail(ctx, v, err)
			return
		}
		v.LastError = err.Error()
		klog.FromContext(ctx).Error(err, "Could not freeze an output's data; will retry")
		m.later(ctx, v)
		return
	}
	v.Frozen, v.Attempts, v.NextAttempt, v.LastError = true, 0, time.Time{}, ""
	m.save(ctx, v, atomicfile.Durable)
	m.exhausted(ctx, v, dir)
}

// exhausted reports an output whose pod used up its filesystem, and so got
// ENOSPC: the pod's own error says little of why.
func (m *Manager) exhausted(ctx context.Context, v Volume, dir string) {
	which, err := m.o.Filesystem.Exhausted(dir)
	if err != nil || which == "" {
		return
	}
	msg := fmt.Sprintf("output %q used up its filesystem's %s, and the pod got ENOSPC (bound maxArtifactBytes: %s; an output has an inode per KiB of it)", v.Metadata.Name, which, raiseMaxBytes)
	klog.FromContext(ctx).Info("Output hit its bound", "bound", which, "pod", klog.KRef(v.Pod.Namespace, v.Pod.Name))
	m.o.Metrics.LimitHit("maxArtifactBytes")
	if m.o.Events != nil {
		m.o.Events.Warn(v.Pod, record.ReasonLimitExceeded, msg)
	}
}

// attempt pushes v's frozen data.
func (m *Manager) attempt(ctx context.Context, dir string, v *Volume) (*Result, error) {
	// Mounted for the attempt only: outputs waiting for a registry hold
	// no loop device.
	defer m.release(ctx, dir)
	if err := m.o.Filesystem.Mount(ctx, dir, true); err != nil {
		return nil, err
	}
	return m.push(ctx, dir, *v)
}

func (m *Manager) release(ctx context.Context, dir string) {
	if err := m.o.Filesystem.Release(ctx, dir); err != nil {
		klog.FromContext(ctx).Error(err, "Could not release an output's storage", "path", dir)
	}
}

// releaseSpool releases the storage of every sealed volume, once uploads
// have stopped: a stopped plugin leaves mounted only what pods use.
func (m *Manager) releaseSpool(ctx context.Context) {
	m.mu.Lock()
	ids := slices.Collect(maps.Keys(m.spool))
	m.mu.Unlock()
	for _, id := range ids {
		m.release(ctx, filepath.Join(m.spoolDir, id))
	}
}

// fail gives up on an output: its journal says Failed with the reason, its
// credentials are deleted, its storage released (the data stays for
// FailedTTL) and the recorder is told, until it takes it (see settle).
func (m *Manager) fail(ctx context.Context, v Volume, cause error) {
	logger := klog.FromContext(ctx)
	v.State, v.LastError, v.FailedAt = Failed, cause.Error(), time.Now().UTC()
	v.Attempts, v.NextAttempt = 0, time.Time{}
	m.o.Metrics.Upload(metrics.UploadFailed)
	if bound, _, ok := errdefs.LimitOf(cause); ok {
		m.o.Metrics.LimitHit(bound)
	}
	dir := filepath.Join(m.spoolDir, v.ID)
	logger.Error(cause, "Output could not be pushed; its data stays on the node until it expires",
		"pod", klog.KRef(v.Pod.Namespace, v.Pod.Name), "artifact", v.Metadata.Name,
		"path", filepath.Join(dir, dataDir), "expires", v.FailedAt.Add(m.o.FailedTTL))
	if err := os.Remove(filepath.Join(dir, credentialsFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		logger.Error(err, "Could not delete a failed output's credentials")
	}
	m.release(ctx, dir)
	m.save(ctx, v, atomicfile.Durable)
	m.settle(ctx, v, dir)
}

// settle takes a failed output further: its failure recorded (retried with
// backoff until the recorder takes it, so that no from: consumer waits
// forever on a Pending record), then its data deleted once FailedTTL has
// passed.
func (m *Manager) settle(ctx context.Context, v Volume, dir string) {
	logger := klog.FromContext(ctx)
	if !v.Recorded {
		if err := m.record(ctx, v, record.Failed, v.LastError); err != nil {
			m.later(ctx, v)
			return
		}
		v.Recorded, v.Attempts, v.NextAttempt = true, 0, time.Time{}
		m.save(ctx, v, atomicfile.BestEffort)
	}
	if time.Now().Before(v.FailedAt.Add(m.o.FailedTTL)) {
		return
	}
	if err := m.remove(ctx, dir); err != nil {
		logger.Error(err, "Could not delete an expired failed output; will retry", "path", dir)
		v.NextAttempt = time.Now().Add(m.o.RetryMax)
		m.save(ctx, v, atomicfile.BestEffort)
		return
	}
	m.forget(v.ID)
	logger.Info("Deleted a failed output's data after its time to live", "artifact", v.Metadata.Name,
		"pod", klog.KRef(v.Pod.Namespace, v.Pod.Name), "failedAt", v.FailedAt)
}

// later counts a failed step of v and schedules the next after a
// backoff. The journal need not reach the disk: a restart only retries
// sooner.
func (m *Manager) later(ctx context.Context, v Volume) {
	v.Attempts++
	v.NextAttempt = time.Now().Add(m.backoff(v.Attempts))
	m.save(ctx, v, atomicfile.BestEffort)
}

func (m *Manager) forget(id string) {
	m.mu.Lock()
	delete(m.spool, id)
	m.mu.Unlock()
}

func (m *Manager) record(ctx context.Context, v Volume, phase record.Phase, msg string) error {
	r := record.Record{
		VolumeID: v.ID, Direction: volume.Output, Artifact: v.Metadata.Name, Pod: v.Pod, Owner: v.Owner,
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
