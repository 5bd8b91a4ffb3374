package store

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	v1alpha1 "github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider"
)

var digest = "sha256:" + strings.Repeat("ab", 32)

func open(t *testing.T, id Identity) Store {
	t.Helper()
	s, err := Stores{Registry: oci.New(oci.Options{}), Providers: provider.NewClient(provider.Options{Dir: t.TempDir()})}.Open(id)
	if err != nil {
		t.Fatalf("Open(%+v): %v", id, err)
	}
	return s
}

func TestParse(t *testing.T) {
	registry := Identity{Backend: OCI}
	fs := Identity{Backend: "filesystem", Namespace: "team-a"}
	for _, tc := range []struct {
		id   Identity
		ref  string
		want Ref // zero: an ErrInvalid
	}{
		{registry, "r.example/team/a@" + digest, Ref{Backend: OCI, Repository: "r.example/team/a", Digest: digest}},
		{registry, "oci:r.example/team/a@" + digest, Ref{Backend: OCI, Repository: "r.example/team/a", Digest: digest, Blob: true}},
		{registry, "ubuntu@" + digest, Ref{Backend: OCI, Repository: "index.docker.io/library/ubuntu", Digest: digest}},
		{registry, "r.example/team/a:v1", Ref{}},
		{registry, "r.example/team/a@sha256:abc", Ref{}},
		{fs, "team-a@" + digest, Ref{Backend: "filesystem", Repository: "team-a", Digest: digest}},
		{fs, "team-a/artifacts@" + digest, Ref{Backend: "filesystem", Repository: "team-a/artifacts", Digest: digest}},
		{fs, "team-a", Ref{}},
		{fs, "@" + digest, Ref{}},
		{fs, "../team-b@" + digest, Ref{}},
		{fs, "/etc@" + digest, Ref{}},
		{fs, "Team-A@" + digest, Ref{}},
		{fs, "registry.example:5000/team@" + digest, Ref{}},
		{fs, "team-a@sha256:abc", Ref{}},
		{fs, "team-a@sha512:" + strings.Repeat("ab", 64), Ref{}},
		{fs, "oci:team-a@" + digest, Ref{}},
	} {
		got, err := open(t, tc.id).Parse(tc.ref)
		if tc.want == (Ref{}) {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("%s: Parse(%q) = %+v, %v; want an ErrInvalid", tc.id.Backend, tc.ref, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: Parse(%q) = %+v, %v; want %+v", tc.id.Backend, tc.ref, got, err, tc.want)
		}
	}
}

func TestRefString(t *testing.T) {
	for _, tc := range []struct {
		ref  Ref
		want string
	}{
		{Ref{Backend: OCI, Repository: "r.example/a", Digest: digest}, "r.example/a@" + digest},
		{Ref{Backend: OCI, Repository: "r.example/a", Digest: digest, Blob: true}, "oci:r.example/a@" + digest},
		{Ref{Backend: "filesystem", Repository: "team-a", Digest: digest}, "filesystem:team-a@" + digest},
	} {
		if got := tc.ref.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.ref, got, tc.want)
		}
	}
}

// cacheKeyPattern is pkg/cache's rule for keys.
var cacheKeyPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,199}$`)

// TestCacheKeys: every kind of ref has a valid key of its own; registry
// keys are the ones earlier versions used, so a plugin upgrade keeps its
// cache.
func TestCacheKeys(t *testing.T) {
	hex := strings.TrimPrefix(digest, "sha256:")
	refs := []Ref{
		{Backend: OCI, Repository: "r.example/a", Digest: digest},
		{Backend: OCI, Repository: "r.example/a", Digest: digest, Blob: true},
		{Backend: "filesystem", Repository: "ns", Digest: digest},
		{Backend: "s3", Repository: "ns", Digest: digest},
		{Backend: "s3", Repository: "ns/other", Digest: digest},
	}
	keys := map[string]bool{}
	for _, r := range refs {
		k := r.CacheKey()
		if !cacheKeyPattern.MatchString(k) || keys[k] {
			t.Errorf("cache key %q of %s: invalid or shared", k, r)
		}
		keys[k] = true
	}
	if !keys["manifest-sha256-"+hex] || !keys["blob-sha256-"+hex] {
		t.Errorf("registry keys changed: %v", keys)
	}
	other := Ref{Backend: OCI, Repository: "r.example/b", Digest: digest}
	if other.CacheKey() != refs[0].CacheKey() {
		t.Error("a registry's key depends on the repository")
	}
}

func TestOpen(t *testing.T) {
	full := Stores{Registry: oci.New(oci.Options{}), Providers: provider.NewClient(provider.Options{Dir: t.TempDir()})}
	for _, tc := range []struct {
		stores Stores
		id     Identity
		class  error // nil: opens
	}{
		{full, Identity{Backend: OCI}, nil},
		{full, Identity{Backend: "filesystem", Namespace: "a"}, nil},
		{full, Identity{Backend: ""}, errdefs.ErrInvalid},
		{full, Identity{Backend: "../x"}, errdefs.ErrInvalid},
		{Stores{Registry: full.Registry}, Identity{Backend: "filesystem"}, errdefs.ErrInvalid},
	} {
		_, err := tc.stores.Open(tc.id)
		if errdefs.ClassOf(err) != tc.class {
			t.Errorf("Open(%+v) = %v, want class %v", tc.id, err, tc.class)
		}
	}
}

// TestBackendName: the API's name of the registry backend is OCI.
func TestBackendName(t *testing.T) {
	if OCI != v1alpha1.BackendOCI {
		t.Errorf("store.OCI = %q, v1alpha1.BackendOCI = %q", OCI, v1alpha1.BackendOCI)
	}
}
