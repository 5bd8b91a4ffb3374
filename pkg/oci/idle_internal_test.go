package oci

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// slowReader gives its chunks one per Read, sleeping pause before each.
type slowReader struct {
	chunks [][]byte
	pause  time.Duration
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	time.Sleep(r.pause)
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

// TestIdleTransportCountsOnlyTheRegistry: the time our side takes to
// produce a request body or to consume a response is not the registry's:
// pauses longer than the idle timeout there abort nothing.
func TestIdleTransportCountsOnlyTheRegistry(t *testing.T) {
	const timeout = 100 * time.Millisecond
	chunks := func() [][]byte { return [][]byte{[]byte("aaa"), []byte("bbb"), []byte("ccc")} }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Write(body)
		w.Write(bytes.Join(chunks(), nil))
	}))
	t.Cleanup(srv.Close)
	tests := []struct {
		name     string
		body     io.Reader // request body
		consumer time.Duration
		want     string
	}{
		{name: "slow producer", body: &slowReader{chunks: chunks(), pause: 4 * timeout}, want: "aaabbbcccaaabbbccc"},
		{name: "slow consumer", consumer: 4 * timeout, want: "aaabbbccc"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hc := &http.Client{Transport: withIdleTimeout(&http.Transport{}, timeout)}
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got []byte
			buf := make([]byte, 3)
			for {
				time.Sleep(tc.consumer)
				n, err := resp.Body.Read(buf)
				got = append(got, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("read after %q: %v", got, err)
				}
			}
			if string(got) != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
