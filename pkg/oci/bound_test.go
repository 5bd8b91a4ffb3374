package oci_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

// countingTransport counts the bytes read from blob bodies.
type countingTransport struct {
	blobGets, read atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := remote.DefaultTransport.RoundTrip(r)
	if err == nil && isBlobGet(r) {
		c.blobGets.Add(1)
		resp.Body = countingBody{resp.Body, &c.read}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// rawManifest is a manifest to put as is.
type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error)        { return m, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

// TestBlobBound: a blob is read through a bound derived from
// maxArtifactBytes. A blob reference, which declares no size, fails as too
// large at the first byte past it, without the rest being read; a layer
// that declares more is refused before it is fetched.
func TestBlobBound(t *testing.T) {
	const (
		maxBytes = 64 << 10
		bound    = maxBytes + maxBytes/64 + 1<<20 // see newBlobSource
		served   = 8 << 20
	)
	tgz := gzipped(tarball(t, map[string]string{"a.txt": "hello"}))
	layer := static.NewLayer(tgz, types.OCILayer)
	d, _ := layer.Digest()
	host, faulty := faultyRegistry(t, func(w http.ResponseWriter, r *http.Request, next http.Handler, hang func()) bool {
		if !isBlobGet(r) || !strings.Contains(r.URL.Path, "/junk/") {
			return false
		}
		w.Write(tgz) // then junk, as long as the client reads
		junk := make([]byte, 64<<10)
		for n := len(tgz); n < served; n += len(junk) {
			if _, err := w.Write(junk); err != nil {
				return true
			}
		}
		return true
	})
	ctx := t.Context()
	for _, path := range []string{"team/good", "team/junk"} {
		if err := remote.WriteLayer(repo(t, host, path), layer); err != nil {
			t.Fatal(err)
		}
	}
	cfg := static.NewLayer([]byte("{}"), types.OCIConfigJSON)
	if err := remote.WriteLayer(repo(t, host, "team/big"), cfg); err != nil {
		t.Fatal(err)
	}
	cfgDigest, _ := cfg.Digest()
	big := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: cfgDigest, Size: 2},
		Layers: []v1.Descriptor{{MediaType: types.OCILayer, Digest: d, Size: bound + 1}}}
	raw, err := json.Marshal(big)
	if err != nil {
		t.Fatal(err)
	}
	bigRef := repo(t, host, "team/big").Tag("v1")
	if err := remote.Put(bigRef, rawManifest(raw)); err != nil {
		t.Fatal(err)
	}
	faulty.Store(true)

	tests := []struct {
		name    string
		ref     string
		want    error
		maxRead int64
	}{
		{name: "blob reference within the bound", ref: "oci:" + repo(t, host, "team/good").Digest(d.String()).Name(), maxRead: int64(len(tgz))},
		{name: "blob reference with junk past the bound", ref: "oci:" + repo(t, host, "team/junk").Digest(d.String()).Name(), want: archive.ErrLimitExceeded, maxRead: bound + 1},
		{name: "layer declared larger than the bound", ref: bigRef.Name(), want: archive.ErrLimitExceeded, maxRead: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ct := &countingTransport{}
			c := oci.New(oci.Options{Transport: ct, Limits: archive.Limits{MaxBytes: maxBytes}})
			ref, err := oci.ParseReference(tc.ref, oci.PlainHTTP)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Pull(ctx, ref, filepath.Join(t.TempDir(), "dest"))
			if !errors.Is(err, tc.want) || (tc.want != nil && errdefs.ClassOf(err) != errdefs.ErrTooLarge) {
				t.Fatalf("err = %v, want %v (too large)", err, tc.want)
			}
			if n := ct.read.Load(); n > tc.maxRead {
				t.Errorf("read %d bytes of the blob, more than %d", n, tc.maxRead)
			}
			if tc.maxRead == 0 && ct.blobGets.Load() != 0 {
				t.Errorf("the blob was fetched")
			}
		})
	}
}
