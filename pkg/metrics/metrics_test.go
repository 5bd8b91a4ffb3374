package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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
