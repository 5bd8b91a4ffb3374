package metrics

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestNil: every method of a nil *Metrics is safe, as documented.
func TestNil(t *testing.T) {
	var m *Metrics
	m.Operation("publish", "input", "OK", time.Second)
	m.Pulled(1)
	m.Pushed(1)
	m.CacheLookup(true)
	m.Upload("pushed")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("a nil Metrics' handler answered %d", rec.Code)
	}
}

// TestHandler: recorded values are served in the exposition format.
func TestHandler(t *testing.T) {
	m := New(func() CacheStats { return CacheStats{Bytes: 8192, Inodes: 7, Entries: 1} }, func() QueueStats { return QueueStats{} })
	m.Pushed(42)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	if rec.Code != http.StatusOK || !strings.Contains(body, " 42") {
		t.Errorf("handler answered %d:\n%s", rec.Code, body)
	}
	for _, want := range []string{"artifacts_csi_cache_bytes 8192", "artifacts_csi_cache_inodes 7", "artifacts_csi_cache_entries 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("no %q in:\n%s", want, body)
		}
	}
}

// TestRetention: a second registration shares the first's counters, and
// a nil *Retention is safe.
func TestRetention(t *testing.T) {
	var none *Retention
	none.Deletion(ObjectTag, RetentionDeleted)
	none.Record(RecordCleaned)
	reg := prometheus.NewRegistry()
	a, err := NewRetention(reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewRetention(reg)
	if err != nil {
		t.Fatal(err)
	}
	a.Deletion(ObjectManifest, RetentionUnsupported)
	b.Deletion(ObjectManifest, RetentionUnsupported)
	b.Record(RecordGaveUp)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetValue()
			}
			got[key] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"artifacts_csi_retention_deletions_total,manifest,unsupported": 2, "artifacts_csi_retention_records_total,gaveup": 1}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("gathered %v, want %v", got, want)
	}
}
