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
	m := New(func() (int64, int) { return 0, 0 }, func() QueueStats { return QueueStats{} })
	m.Pushed(42)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), " 42") {
		t.Errorf("handler answered %d:\n%s", rec.Code, rec.Body.String())
	}
}
