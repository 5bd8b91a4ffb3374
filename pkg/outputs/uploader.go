package outputs

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/internal/atomicfile"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/metrics"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

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
		// On disk before the attempt: if the plugin dies during it, Open
		// counts it (see interrupted).
		v.Uploading = true
		m.save(ctx, v, atomicfile.Durable)
		v.Uploading = false
		attempt, cancel := context.WithTimeout(ctx, m.o.AttemptTimeout)
		res, err := m.push(attempt, dir, v)
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
	if err := m.record(ctx, v, record.Pushed, ""); err != nil {
		v.Attempts++
		v.NextAttempt = time.Now().Add(m.backoff(v.Attempts))
		m.save(ctx, v, atomicfile.BestEffort)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		logger.Error(err, "Could not delete pushed output; will retry", "path", dir)
		v.NextAttempt = time.Now().Add(m.o.RetryMax)
		m.save(ctx, v, atomicfile.BestEffort)
		return
	}
	m.mu.Lock()
	delete(m.spool, id)
	m.mu.Unlock()
	m.o.Metrics.Upload(metrics.UploadPushed)
	logger.Info("Pushed output", "ref", v.Result.Ref, "size", v.Result.Size, "pod", klog.KRef(v.Pod.Namespace, v.Pod.Name),
		"waited", time.Since(v.SealedAt).Round(time.Millisecond))
}

// fail gives up on an output: its journal says Failed with the reason, the
// recorder is told, and the data stays where it is.
func (m *Manager) fail(ctx context.Context, v Volume, cause error) {
	v.State, v.LastError, v.NextAttempt = Failed, cause.Error(), time.Time{}
	m.o.Metrics.Upload(metrics.UploadFailed)
	klog.FromContext(ctx).Error(cause, "Output could not be pushed; its data stays on the node",
		"pod", klog.KRef(v.Pod.Namespace, v.Pod.Name), "artifact", v.Metadata.Name,
		"path", filepath.Join(m.spoolDir, v.ID, dataDir), "attempts", v.Attempts+1)
	m.save(ctx, v, atomicfile.Durable)
	m.record(ctx, v, record.Failed, v.LastError)
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
