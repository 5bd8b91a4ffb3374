package driver

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

func TestProviderSource(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		ref      string
		wantRepo string
	}{
		{"team-a@" + d, "team-a"},
		{"team-a/artifacts@" + d, "team-a/artifacts"},
		{"team-a", ""},
		{"@" + d, ""},
		{"../team-b@" + d, ""},
		{"/etc@" + d, ""},
		{"Team-A@" + d, ""},
		{"registry.example:5000/team@" + d, ""},
		{"team-a@sha256:abc", ""},
		{"team-a@sha512:" + strings.Repeat("ab", 64), ""},
	} {
		src, err := providerSource("filesystem", "team-a", tc.ref)
		if tc.wantRepo == "" {
			if !errors.Is(err, volume.ErrInvalid) {
				t.Errorf("providerSource(%q) = %+v, %v; want an invalid volume", tc.ref, src, err)
			}
			continue
		}
		if err != nil || src.scope.Repository != tc.wantRepo || src.scope.Namespace != "team-a" || src.Digest() != d {
			t.Errorf("providerSource(%q) = %+v, %v", tc.ref, src, err)
		}
	}
}

// cacheKeyPattern is pkg/cache's rule for keys.
var cacheKeyPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,199}$`)

func TestSourceCacheKeys(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	manifest, _ := oci.ParseReference("r.example/a@"+d, false)
	blob, _ := oci.ParseReference("oci:r.example/a@"+d, false)
	fs, _ := providerSource("filesystem", "ns", "ns@"+d)
	s3, _ := providerSource("s3", "ns", "ns@"+d)
	other, _ := providerSource("s3", "ns", "ns/other@"+d)
	keys := map[string]bool{}
	for _, s := range []source{{oci: manifest}, {oci: blob}, fs, s3, other} {
		k := s.cacheKey()
		if !cacheKeyPattern.MatchString(k) || keys[k] {
			t.Errorf("cache key %q of %s: invalid or shared", k, s)
		}
		keys[k] = true
	}
}
