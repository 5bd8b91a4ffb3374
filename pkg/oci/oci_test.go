package oci_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/digestcache"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

// registries are the registries every integration test runs against.
var registries = []struct {
	name      string
	start     func(t *testing.T) string
	referrers bool
}{
	{"ggcr-referrers", func(t *testing.T) string { return testregistry.InMemory(t, true) }, true},
	{"ggcr-no-referrers", func(t *testing.T) string { return testregistry.InMemory(t, false) }, false},
	{"distribution", func(t *testing.T) string { return testregistry.StartDistribution(t).Host }, false},
}

func repo(t testing.TB, host, path string) name.Repository {
	t.Helper()
	r, err := name.NewRepository(host+"/"+path, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPushPullRoundTrip(t *testing.T) {
	for _, reg := range registries {
		t.Run(reg.name, func(t *testing.T) {
			host := reg.start(t)
			src := t.TempDir()
			testtree.Write(t, src, 1)
			ctx := context.Background()
			c := oci.New(oci.Options{})
			for _, comp := range []archive.Compression{archive.Gzip, archive.Zstd, archive.None} {
				t.Run(string(comp), func(t *testing.T) {
					r := repo(t, host, "team/"+string(comp))
					meta := artifact.Metadata{Name: "build", Namespace: "ns", TaskRun: "tr", PipelineRun: "pr", BuildOutput: true}
					res, err := c.Push(ctx, oci.PushRequest{Dir: src, Repository: r, Tag: "v1", Metadata: meta, Compression: comp})
					if err != nil {
						t.Fatal(err)
					}
					again, err := c.Push(ctx, oci.PushRequest{Dir: src, Repository: r, Tag: "v1", Metadata: meta, Compression: comp})
					if err != nil {
						t.Fatal(err)
					}
					if again.Ref != res.Ref {
						t.Errorf("re-push gave %s, first push %s: not reproducible", again.Ref, res.Ref)
					}
					checkManifest(t, res.Ref, meta, comp)

					for _, ref := range []string{res.Ref.Name(), r.Tag("v1").Name()} {
						dest := filepath.Join(t.TempDir(), "out")
						parsed, err := oci.ParseReference(ref, oci.PlainHTTP)
						if err != nil {
							t.Fatal(err)
						}
						pr, err := c.Pull(ctx, parsed, dest)
						if err != nil {
							t.Fatal(err)
						}
						if pr.Ref != res.Ref.Name() {
							t.Errorf("pull %s resolved to %s, want %s", ref, pr.Ref, res.Ref)
						}
						if pr.Metadata == nil || *pr.Metadata != meta {
							t.Errorf("pull metadata = %+v, want %+v", pr.Metadata, meta)
						}
						if pr.Compression != comp {
							t.Errorf("detected compression %q, want %q", pr.Compression, comp)
						}
						testtree.Equal(t, src, dest)
					}
				})
			}
		})
	}
}

func checkManifest(t *testing.T, ref name.Digest, meta artifact.Metadata, comp archive.Compression) {
	t.Helper()
	desc, err := remote.Get(ref)
	if err != nil {
		t.Fatal(err)
	}
	var mf v1.Manifest
	if err := json.Unmarshal(desc.Manifest, &mf); err != nil {
		t.Fatal(err)
	}
	if mf.MediaType != types.OCIManifestSchema1 || mf.ArtifactType != artifact.ArtifactType {
		t.Errorf("manifest media type %q artifact type %q", mf.MediaType, mf.ArtifactType)
	}
	if mf.Config.MediaType != artifact.ConfigMediaType {
		t.Errorf("config media type %q", mf.Config.MediaType)
	}
	if len(mf.Layers) != 1 {
		t.Fatalf("%d layers", len(mf.Layers))
	}
	l := mf.Layers[0]
	if want := "application/vnd.tekton.artifact." + comp.ArchiveName(); string(l.MediaType) != want {
		t.Errorf("layer media type %q, want %q", l.MediaType, want)
	}
	if l.Annotations[artifact.AnnotationTitle] != meta.Name || l.Annotations[artifact.AnnotationArchive] != comp.ArchiveName() {
		t.Errorf("layer annotations %v", l.Annotations)
	}
	wantAnn := map[string]string{
		"dev.tekton.artifact/name": meta.Name, "dev.tekton.artifact/namespace": meta.Namespace,
		"dev.tekton.artifact/taskrun": meta.TaskRun, "dev.tekton.artifact/pipelinerun": meta.PipelineRun,
		"dev.tekton.artifact/build-output": "true",
	}
	for k, v := range wantAnn {
		if mf.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, mf.Annotations[k], v)
		}
	}
	cfg, err := remote.Layer(ref.Context().Digest(mf.Config.Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := cfg.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var c artifact.Config
	if err := json.NewDecoder(rc).Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c.Artifact != meta {
		t.Errorf("config %+v, want %+v", c.Artifact, meta)
	}
}

func TestPipelineRunGroup(t *testing.T) {
	for _, reg := range registries {
		t.Run(reg.name, func(t *testing.T) {
			host := reg.start(t)
			r := repo(t, host, "team/run")
			c := oci.New(oci.Options{})
			group := &artifact.Group{Namespace: "ns", PipelineRun: "pr-1", UID: "uid-1"}
			var (
				wg   sync.WaitGroup
				refs [4]name.Digest
				errs [4]error
			)
			// Concurrent pushers into one group: none may be lost from the
			// referrers list, also where it is a read-modify-write tag.
			for i := range refs {
				wg.Go(func() {
					src := t.TempDir()
					testtree.Write(t, src, uint64(10+i))
					res, err := c.Push(context.Background(), oci.PushRequest{
						Dir: src, Repository: r, Metadata: artifact.Metadata{Name: "a" + string(rune('0'+i))}, Group: group,
					})
					if err == nil {
						refs[i] = res.Ref
					}
					errs[i] = err
				})
			}
			wg.Wait()
			if err := errors.Join(errs[:]...); err != nil {
				t.Fatal(err)
			}
			groupDigest := artifact.Descriptor(types.OCIManifestSchema1, group.Manifest()).Digest
			idx, err := remote.Referrers(r.Digest(groupDigest.String()))
			if err != nil {
				t.Fatal(err)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			listed := map[string]bool{}
			for _, m := range im.Manifests {
				listed[m.Digest.String()] = true
				// go-containerregistry's registry reports the config media
				// type instead of the manifest's artifactType.
				if m.ArtifactType != artifact.ArtifactType && !(reg.referrers && m.ArtifactType == artifact.ConfigMediaType) {
					t.Errorf("referrer %s has artifact type %q", m.Digest, m.ArtifactType)
				}
			}
			for _, ref := range refs {
				if !listed[ref.DigestStr()] {
					t.Errorf("%s missing from the referrers of the group: %v", ref, listed)
				}
			}
			// The fallback tag exists exactly when the registry lacks the API.
			_, err = remote.Head(r.Tag("sha256-" + groupDigest.Hex))
			if reg.referrers && err == nil {
				t.Error("fallback tag written although the registry has the referrers API")
			}
			if !reg.referrers && err != nil {
				t.Errorf("fallback tag missing: %v", err)
			}
		})
	}
}

// uploadCounter counts blob upload sessions started on a registry.
func uploadCounter(t *testing.T) (host string, uploads *atomic.Int64) {
	uploads = new(atomic.Int64)
	host = testregistry.Handler(t, true, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/blobs/uploads") {
				uploads.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	})
	return host, uploads
}

func TestRepushUsesDigestCache(t *testing.T) {
	host, uploads := uploadCounter(t)
	cache, err := digestcache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := oci.New(oci.Options{DigestCache: cache})
	src := t.TempDir()
	testtree.Write(t, src, 2)
	req := oci.PushRequest{Dir: src, Repository: repo(t, host, "cache/x"), Metadata: artifact.Metadata{Name: "x"}, Compression: archive.Zstd}
	first, err := c.Push(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if first.Reused {
		t.Fatal("first push reported reuse")
	}
	before := uploads.Load()
	second, err := c.Push(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Reused || second.Ref != first.Ref || second.Layer.Digest != first.Layer.Digest {
		t.Fatalf("re-push: reused=%v ref=%s layer=%s; first ref=%s layer=%s", second.Reused, second.Ref, second.Layer.Digest, first.Ref, first.Layer.Digest)
	}
	if n := uploads.Load() - before; n != 0 {
		t.Errorf("re-push started %d uploads, want 0", n)
	}
	// A changed tree must not reuse the old blob.
	if err := os.WriteFile(filepath.Join(src, "README.md"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	third, err := c.Push(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if third.Reused || third.Layer.Digest == first.Layer.Digest {
		t.Errorf("changed tree reused blob %s", third.Layer.Digest)
	}
	// Same tree into another repository of a registry that lacks the blob
	// there must upload, not trust the cache.
	req.Repository = repo(t, testregistry.InMemory(t, true), "other/x")
	fourth, err := c.Push(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if fourth.Reused {
		t.Error("push to a registry without the blob reported reuse")
	}
}

func TestSingleFileArtifact(t *testing.T) {
	host := testregistry.InMemory(t, true)
	src := t.TempDir()
	content := []byte(`{"bomFormat":"CycloneDX"}`)
	if err := os.WriteFile(filepath.Join(src, "sbom.json"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	c := oci.New(oci.Options{})
	const mt = "application/vnd.cyclonedx+json"
	res, err := c.Push(context.Background(), oci.PushRequest{Dir: src, Repository: repo(t, host, "f/sbom"), Metadata: artifact.Metadata{Name: "sbom"}, MediaType: mt})
	if err != nil {
		t.Fatal(err)
	}
	if res.Layer.MediaType != mt || res.Layer.Annotations[artifact.AnnotationTitle] != "sbom.json" {
		t.Errorf("layer = %+v", res.Layer)
	}
	dest := filepath.Join(t.TempDir(), "in")
	ref, _ := oci.ParseReference(res.Ref.Name(), oci.PlainHTTP)
	pr, err := c.Pull(context.Background(), ref, dest)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dest, "sbom.json"))
	if err != nil || !bytes.Equal(got, content) || pr.FileName != "sbom.json" {
		t.Errorf("pulled %q (%v), file name %q", got, err, pr.FileName)
	}

	// More than one file is refused with a clear error.
	os.WriteFile(filepath.Join(src, "other"), nil, 0o644)
	_, err = c.Push(context.Background(), oci.PushRequest{Dir: src, Repository: repo(t, host, "f/sbom"), Metadata: artifact.Metadata{Name: "sbom"}, MediaType: mt})
	if !errors.Is(err, artifact.ErrInvalid) {
		t.Errorf("two files: err = %v, want artifact.ErrInvalid", err)
	}
}

func tarball(t *testing.T, files map[string]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for n, c := range files {
		tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(c)), Typeflag: tar.TypeReg})
		tw.Write([]byte(c))
	}
	tw.Close()
	return buf.Bytes()
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func TestForeignArtifacts(t *testing.T) {
	host := testregistry.InMemory(t, true)
	ctx := context.Background()
	c := oci.New(oci.Options{})
	files := map[string]string{"dir/hello.txt": "hello", "top": "x"}
	tgz := gzipped(tarball(t, files))

	// An image built by another tool with one plain tar+gzip layer, the way
	// `oras push` stores a directory (title annotation, OCI layer type).
	layer := static.NewLayer(tgz, types.OCILayer)
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer, Annotations: map[string]string{"org.opencontainers.image.title": "dir"}})
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	imgRef := repo(t, host, "foreign/img").Tag("v1")
	if err := remote.Write(imgRef, img); err != nil {
		t.Fatal(err)
	}
	// A Konflux trusted artifact: a bare tar+gzip blob.
	blobRepo := repo(t, host, "konflux/ta")
	if err := remote.WriteLayer(blobRepo, static.NewLayer(tgz, types.OCILayer)); err != nil {
		t.Fatal(err)
	}
	blobDigest, _ := layer.Digest()

	for _, ref := range []string{imgRef.Name(), "oci:" + blobRepo.Digest(blobDigest.String()).Name()} {
		t.Run(ref, func(t *testing.T) {
			parsed, err := oci.ParseReference(ref, oci.PlainHTTP)
			if err != nil {
				t.Fatal(err)
			}
			dest := filepath.Join(t.TempDir(), "in")
			res, err := c.Pull(ctx, parsed, dest)
			if err != nil {
				t.Fatal(err)
			}
			if res.Metadata != nil {
				t.Errorf("foreign artifact has metadata %+v", res.Metadata)
			}
			for n, want := range files {
				got, err := os.ReadFile(filepath.Join(dest, n))
				if err != nil || string(got) != want {
					t.Errorf("%s = %q (%v), want %q", n, got, err, want)
				}
			}
		})
	}
}

// corrupting serves every blob GET with its last byte flipped.
func corrupting(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/sha256:") {
			h.ServeHTTP(w, r)
			return
		}
		rec := &recorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if n := len(rec.body); n > 0 {
			rec.body[n-1] ^= 0xff
		}
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.code)
		w.Write(rec.body)
	})
}

type recorder struct {
	header http.Header
	code   int
	body   []byte
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(c int)   { r.code = c }
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	r.body = append(r.body, b...)
	return len(b), nil
}

func TestPullErrors(t *testing.T) {
	ctx := context.Background()
	good := testregistry.InMemory(t, true)
	bad := testregistry.Handler(t, true, corrupting)
	denied := testregistry.Handler(t, true, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/private/") && r.Method == http.MethodGet {
				http.Error(w, `{"errors":[{"code":"DENIED","message":"no"}]}`, http.StatusForbidden)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	src := t.TempDir()
	testtree.Write(t, src, 3)
	c := oci.New(oci.Options{})
	push := func(host, path string) name.Digest {
		res, err := c.Push(ctx, oci.PushRequest{Dir: src, Repository: repo(t, host, path), Metadata: artifact.Metadata{Name: "x"}})
		if err != nil {
			t.Fatal(err)
		}
		return res.Ref
	}
	corrupt := push(bad, "team/x")
	private := push(denied, "private/x")
	index := repo(t, good, "team/index").Tag("v1")
	if err := remote.WriteIndex(index, mutate.IndexMediaType(empty.Index, types.OCIImageIndex)); err != nil {
		t.Fatal(err)
	}
	missing := repo(t, good, "team/x").Digest("sha256:" + strings.Repeat("0", 64))

	tests := []struct {
		name string
		ref  string
		want error
	}{
		{"corrupted blob", corrupt.Name(), archive.ErrDigestMismatch},
		{"missing manifest", missing.Name(), errdefs.ErrNotFound},
		{"missing tag", repo(t, good, "team/x").Tag("nope").Name(), errdefs.ErrNotFound},
		{"denied", private.Name(), errdefs.ErrDenied},
		{"index", index.Name(), artifact.ErrInvalid},
		{"missing blob", "oci:" + missing.Name(), errdefs.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ref, err := oci.ParseReference(tc.ref, oci.PlainHTTP)
			if err != nil {
				t.Fatal(err)
			}
			parent := t.TempDir()
			dest := filepath.Join(parent, "in")
			_, err = c.Pull(ctx, ref, dest)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if entries, _ := os.ReadDir(parent); len(entries) != 0 {
				t.Errorf("left behind: %v", entries)
			}
		})
	}
}

func TestParseReference(t *testing.T) {
	hex := strings.Repeat("a", 64)
	tests := []struct {
		in      string
		kind    oci.Kind
		wantErr bool
	}{
		{"reg.io/team/app@sha256:" + hex, oci.KindManifest, false},
		{"localhost:5000/app:v1", oci.KindTag, false},
		{"app:v1", oci.KindTag, false},
		{"oci:reg.io/team/app@sha256:" + hex, oci.KindBlob, false},
		{"localhost:5000/app", 0, true},             // no implicit latest
		{"reg.io/app@sha512:" + hex + hex, 0, true}, // only sha256
		{"oci:reg.io/app:v1", 0, true},              // blob refs need a digest
		{"reg.io/app@sha256:abc", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			ref, err := oci.ParseReference(tc.in, oci.HTTPS)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && ref.Kind != tc.kind {
				t.Errorf("kind = %v, want %v", ref.Kind, tc.kind)
			}
			if err == nil && ref.String() != tc.in && !strings.HasPrefix(tc.in, "app:") {
				t.Errorf("String() = %q, want %q", ref.String(), tc.in)
			}
		})
	}
}

var _ = io.EOF

// TestManifestSizeCap: a registry that serves a 99 MiB manifest, with or
// without declaring its length, gets no more than the cap read from it:
// the pull fails as too large, and the server could write only what the
// connection's buffers take before the client hung up.
func TestManifestSizeCap(t *testing.T) {
	const huge = 99 << 20
	for _, declared := range []bool{true, false} {
		t.Run(fmt.Sprintf("declared length %v", declared), func(t *testing.T) {
			var written atomic.Int64
			host := testregistry.Handler(t, true, func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/manifests/") {
						h.ServeHTTP(w, r)
						return
					}
					w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
					if declared {
						w.Header().Set("Content-Length", fmt.Sprint(huge))
					}
					chunk := bytes.Repeat([]byte(" "), 64<<10)
					for n := 0; n < huge; n += len(chunk) {
						m, err := w.Write(chunk)
						written.Add(int64(m))
						if err != nil {
							return
						}
					}
				})
			})
			ref, err := oci.ParseReference(host+"/team/huge@sha256:"+strings.Repeat("a", 64), oci.PlainHTTP)
			if err != nil {
				t.Fatal(err)
			}
			_, err = oci.New(oci.Options{}).Pull(t.Context(), ref, filepath.Join(t.TempDir(), "dest"))
			if errdefs.ClassOf(err) != errdefs.ErrTooLarge {
				t.Errorf("Pull = %v, want too large", err)
			}
			if n := written.Load(); n > 32<<20 {
				t.Errorf("the registry wrote %d MiB of the manifest: the client read on past the cap", n>>20)
			}
		})
	}
}
