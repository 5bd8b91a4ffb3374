// Package metrics defines the node plugin's Prometheus metrics, and the
// controller's retention metrics (Retention). Labels are bounded
// (operation, direction, gRPC code, object, result): never a digest, a
// pod or a volume id. Every method is safe on a nil *Metrics or
// *Retention, which records nothing, and safe for concurrent use.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "artifacts_csi"

// Upload results.
const (
	UploadPushed = "pushed" // pushed and recorded
	UploadRetry  = "retry"  // failed, will be tried again
	UploadFailed = "failed" // given up: deadline passed or the output can never be pushed
)

// CacheStats describes the input cache.
type CacheStats struct {
	// Bytes and Inodes are what its entries take on disk, as its bounds
	// count them.
	Bytes, Inodes int64
	Entries       int
}

// QueueStats describes the outputs waiting for upload.
type QueueStats struct {
	// Pending counts sealed outputs not pushed yet; Oldest is when the
	// oldest of them was sealed (zero when none).
	Pending int
	Oldest  time.Time
	// Failed counts outputs given up on, whose data stays on the node.
	Failed int
}

// Metrics holds the collectors.
type Metrics struct {
	registry     *prometheus.Registry
	operations   *prometheus.HistogramVec
	pulled       prometheus.Counter
	pushed       prometheus.Counter
	cacheLookups *prometheus.CounterVec
	uploads      *prometheus.CounterVec
	limits       *prometheus.CounterVec
	provenance   *prometheus.CounterVec
	writeThrough *prometheus.CounterVec
}

// New registers the metrics, with Go and process collectors, in a registry
// of their own. cache and queue are read at every scrape.
func New(cache func() CacheStats, queue func() QueueStats) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		operations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "operation_duration_seconds",
			Help:    "Duration of NodePublishVolume and NodeUnpublishVolume calls, by direction and gRPC code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"operation", "direction", "code"}),
		pulled: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "pulled_bytes_total",
			Help: "Compressed bytes fetched from registries into the input cache.",
		}),
		pushed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "pushed_bytes_total",
			Help: "Compressed bytes of output layers uploaded to registries.",
		}),
		cacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cache_lookups_total",
			Help: "Input cache lookups by result (hit, miss).",
		}, []string{"result"}),
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "uploads_total",
			Help: "Output upload attempts by result (pushed, retry, failed).",
		}, []string{"result"}),
		provenance: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "provenance_checks_total",
			Help: "Inputs whose provenance was checked before they were mounted, by result: verified, cached (a verification of the same digest and keys reused) or refused.",
		}, []string{"result"}),
		writeThrough: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "write_through_total",
			Help: "Pushed outputs offered to the input cache, by result: adopted (its tree became the cache entry of its digest), skipped (the entry was there already, or the output is not eligible) or failed.",
		}, []string{"result"}),
		limits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "limits_hit_total",
			Help: "Operations refused or given up because they hit a bound, by bound (a configuration key or flag).",
		}, []string{"bound"}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, f)
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.operations, m.pulled, m.pushed, m.cacheLookups, m.uploads, m.limits, m.provenance, m.writeThrough,
		gauge("cache_bytes", "Disk footprint of the input cache: file content in 4 KiB blocks, 4 KiB per directory.", func() float64 { return float64(cache().Bytes) }),
		gauge("cache_inodes", "Inodes of the input cache: its files, directories and symlinks.", func() float64 { return float64(cache().Inodes) }),
		gauge("cache_entries", "Artifacts held by the input cache.", func() float64 { return float64(cache().Entries) }),
		gauge("upload_queue_depth", "Sealed outputs waiting to be pushed.", func() float64 { return float64(queue().Pending) }),
		gauge("upload_oldest_pending_seconds", "Age of the oldest output waiting to be pushed, 0 when none.", func() float64 {
			if q := queue(); !q.Oldest.IsZero() {
				return time.Since(q.Oldest).Seconds()
			}
			return 0
		}),
		gauge("failed_outputs", "Outputs that could not be pushed; their data stays on the node.", func() float64 { return float64(queue().Failed) }),
	)
	return m
}

// Handler serves the metrics in the Prometheus exposition format; that of
// a nil *Metrics answers 404 Not Found.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// Operation records one publish or unpublish.
func (m *Metrics) Operation(operation, direction, code string, d time.Duration) {
	if m != nil {
		m.operations.WithLabelValues(operation, direction, code).Observe(d.Seconds())
	}
}

// Pulled counts bytes fetched.
func (m *Metrics) Pulled(n int64) {
	if m != nil {
		m.pulled.Add(float64(n))
	}
}

// Pushed counts bytes uploaded.
func (m *Metrics) Pushed(n int64) {
	if m != nil {
		m.pushed.Add(float64(n))
	}
}

// CacheLookup counts an input cache hit or miss.
func (m *Metrics) CacheLookup(hit bool) {
	if m != nil {
		m.cacheLookups.WithLabelValues(map[bool]string{true: "hit", false: "miss"}[hit]).Inc()
	}
}

// Upload counts an upload attempt's result: UploadPushed, UploadRetry or
// UploadFailed.
func (m *Metrics) Upload(result string) {
	if m != nil {
		m.uploads.WithLabelValues(result).Inc()
	}
}

// Provenance results.
const (
	ProvenanceVerified = "verified"
	ProvenanceCached   = "cached"
	ProvenanceRefused  = "refused"
)

// ProvenanceCheck counts an input's provenance check: ProvenanceVerified,
// ProvenanceCached or ProvenanceRefused.
func (m *Metrics) ProvenanceCheck(result string) {
	if m != nil {
		m.provenance.WithLabelValues(result).Inc()
	}
}

// Write-through results.
const (
	WriteThroughAdopted = "adopted"
	WriteThroughSkipped = "skipped"
	WriteThroughFailed  = "failed"
)

// WriteThrough counts a pushed output offered to the input cache:
// WriteThroughAdopted, WriteThroughSkipped or WriteThroughFailed.
func (m *Metrics) WriteThrough(result string) {
	if m != nil {
		m.writeThrough.WithLabelValues(result).Inc()
	}
}

// LimitHit counts an operation that hit bound (see errdefs.Limit).
func (m *Metrics) LimitHit(bound string) {
	if m != nil {
		m.limits.WithLabelValues(bound).Inc()
	}
}
