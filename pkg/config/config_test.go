package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
)

func TestApply(t *testing.T) {
	tests := []struct {
		name    string
		data    map[string]string
		check   func(Config) bool
		badKeys []string
	}{
		{"defaults", nil, func(c Config) bool { return reflect.DeepEqual(c, Defaults()) }, nil},
		{"all keys", map[string]string{
			KeyRepository: "localhost:5000/team/artifacts", KeyTagPattern: "{{pod}}-{{artifact}}",
			KeyGroupByPipelineRun: "false", KeyCredentialsSecret: "registry-creds", KeyPlainHTTP: "true",
			KeyCompression: "zstd\n", KeyMaxArtifactBytes: "500Mi", KeyVerifyAccess: "false",
			KeyBackend: "filesystem", KeyProviderRepository: "team-a/artifacts",
			KeyRetentionPolicy: "OnRunDeletion", KeyRetentionMaxAge: "30d", KeyFormat: "chunked",
			KeyProvenanceRequired: "true", KeyProvenanceSameNamespace: "true",
		}, func(c Config) bool {
			return reflect.DeepEqual(c, Config{Backend: "filesystem", ProviderRepository: "team-a/artifacts",
				Repository: "localhost:5000/team/artifacts", TagPattern: "{{pod}}-{{artifact}}",
				CredentialsSecret: "registry-creds", PlainHTTP: true, Compression: archive.Zstd, Format: FormatChunked, MaxArtifactBytes: 500 << 20,
				Retention:  Retention{Policy: RetainOnRunDeletion, MaxAge: 30 * 24 * time.Hour},
				Provenance: Provenance{Required: true, SameNamespace: true}})
		}, nil},
		{"retention age as a duration", map[string]string{KeyRetentionMaxAge: "36h"},
			func(c Config) bool { return c.Retention == Retention{Policy: RetainKeep, MaxAge: 36 * time.Hour} }, nil},
		{"no maximum age", map[string]string{KeyRetentionMaxAge: "0"},
			func(c Config) bool { return reflect.DeepEqual(c, Defaults()) }, nil},
		{"bad retention values keep the defaults", map[string]string{KeyRetentionPolicy: "Delete", KeyRetentionMaxAge: "-1d"},
			func(c Config) bool { return reflect.DeepEqual(c, Defaults()) }, []string{KeyRetentionPolicy, KeyRetentionMaxAge}},
		{"retention age too short", map[string]string{KeyRetentionMaxAge: "30s"}, nil, []string{KeyRetentionMaxAge}},
		{"retention age of zero days", map[string]string{KeyRetentionMaxAge: "0d"}, nil, []string{KeyRetentionMaxAge}},
		{"retention policy is case-sensitive", map[string]string{KeyRetentionPolicy: "onrundeletion"}, nil, []string{KeyRetentionPolicy}},
		{"repository with tag", map[string]string{KeyRepository: "reg.io/a:latest"}, nil, []string{KeyRepository}},
		{"repository with digest", map[string]string{KeyRepository: "reg.io/a@sha256:" + string(make([]byte, 0))}, nil, []string{KeyRepository}},
		{"unknown placeholder", map[string]string{KeyTagPattern: "{{node}}"}, nil, []string{KeyTagPattern}},
		{"bad values keep defaults, good ones apply", map[string]string{
			KeyCompression: "brotli", KeyMaxArtifactBytes: "-1", KeyVerifyAccess: "yes please", KeyPlainHTTP: "true",
			KeyCredentialsSecret: "Bad_Name", "oci.repo": "typo",
		}, func(c Config) bool {
			d := Defaults()
			d.PlainHTTP = true
			return reflect.DeepEqual(c, d)
		}, []string{KeyCompression, KeyMaxArtifactBytes, KeyVerifyAccess, KeyCredentialsSecret, "oci.repo"}},
		{"empty compression", map[string]string{KeyCompression: ""}, nil, []string{KeyCompression}},
		{"unknown format", map[string]string{KeyFormat: "zip"}, nil, []string{KeyFormat}},
		{"backend not a name", map[string]string{KeyBackend: "../fs"}, nil, []string{KeyBackend}},
		{"provider repository escaping", map[string]string{KeyProviderRepository: "../team-b"}, nil, []string{KeyProviderRepository}},
		{"provider repository absolute", map[string]string{KeyProviderRepository: "/etc"}, nil, []string{KeyProviderRepository}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Defaults().Apply(tt.data)
			if tt.check != nil && !tt.check(c) {
				t.Errorf("config = %+v", c)
			}
			got := map[string]bool{}
			for _, e := range unwrap(err) {
				var ke *KeyError
				if !errors.As(e, &ke) {
					t.Fatalf("error %v is not a *KeyError", e)
				}
				got[ke.Key] = true
			}
			if len(got) != len(tt.badKeys) {
				t.Errorf("invalid keys reported: %v, want %v (err: %v)", got, tt.badKeys, err)
			}
			for _, k := range tt.badKeys {
				if !got[k] {
					t.Errorf("key %s not reported (err: %v)", k, err)
				}
			}
		})
	}
}

func unwrap(err error) []error { return unwrapAll(err) }

func TestRepositoryFor(t *testing.T) {
	for _, tt := range []struct {
		backend, repository, providerRepository, namespace, want string
	}{
		{"oci", "r.example/team-a", "", "team-a", "r.example/team-a"},
		{"oci", "", "shared/artifacts", "team-a", ""},
		{"filesystem", "r.example/team-a", "", "team-a", "team-a"},
		{"filesystem", "", "shared/artifacts", "team-a", "shared/artifacts"},
	} {
		c := Defaults()
		c.Backend, c.Repository, c.ProviderRepository = tt.backend, tt.repository, tt.providerRepository
		if got := c.RepositoryFor(tt.namespace); got != tt.want {
			t.Errorf("%+v: RepositoryFor(%q) = %q, want %q", tt, tt.namespace, got, tt.want)
		}
	}
}

func TestResolveLevels(t *testing.T) {
	c, err := Resolve(
		Layer{LevelCluster, map[string]string{KeyRepository: "reg.example/cluster", KeyCompression: "zstd", KeyMaxArtifactBytes: "1Gi"}},
		Layer{LevelNamespace, map[string]string{KeyRepository: "reg.example/team", KeyCompression: "lz4"}},
		Layer{LevelAnnotation, map[string]string{KeyRepository: "reg.example/run"}},
	)
	if c.Repository != "reg.example/run" || c.Compression != archive.Zstd || c.MaxArtifactBytes != 1<<30 || c.TagPattern != Defaults().TagPattern {
		t.Errorf("config = %+v: want the run's repository, the cluster's compression (the namespace's is invalid) and size", c)
	}
	errs := unwrap(err)
	var ke *KeyError
	if len(errs) != 1 || !errors.As(errs[0], &ke) || ke.Level != LevelNamespace || ke.Key != KeyCompression {
		t.Fatalf("errors = %v, want one for compression at the namespace level", err)
	}
	if msg := ke.Error(); msg != `namespace ConfigMap: compression="lz4": want gzip, zstd or none` {
		t.Errorf("message = %q", msg)
	}
}

func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	// The layout kubelet gives a mounted ConfigMap.
	data := filepath.Join(dir, "..2026_11_28_00_00_00.1")
	os.Mkdir(data, 0o755)
	os.WriteFile(filepath.Join(data, KeyCompression), []byte("zstd\n"), 0o644)
	os.Symlink(filepath.Base(data), filepath.Join(dir, "..data"))
	os.Symlink(filepath.Join("..data", KeyCompression), filepath.Join(dir, KeyCompression))

	got, err := ReadDir(dir)
	if err != nil || len(got) != 1 || got[KeyCompression] != "zstd\n" {
		t.Fatalf("ReadDir = %v, %v", got, err)
	}
	if got, err := ReadDir(filepath.Join(dir, "missing")); err != nil || len(got) != 0 {
		t.Errorf("missing dir: %v, %v", got, err)
	}
}

// TestCeilings: a level may tighten the security settings of the levels
// below it, never relax them; the cluster's allowed repositories bound
// every level; a repository the namespace did not choose keeps the
// namespace in its tags.
func TestCeilings(t *testing.T) {
	cluster := map[string]string{KeyRepository: "reg.example/shared", KeyMaxArtifactBytes: "1Gi",
		KeyAllowedRepositories: "reg.example/shared, reg.example/teams,other.example:5000"}
	for _, tc := range []struct {
		name       string
		cluster    map[string]string
		namespace  map[string]string
		annotation map[string]string
		check      func(Config) bool
		refused    map[string]Level // key → level of the refusal
	}{
		{"tightened", cluster, map[string]string{KeyMaxArtifactBytes: "100Mi", KeyRepository: "reg.example/teams/a"}, nil,
			func(c Config) bool { return c.MaxArtifactBytes == 100<<20 && c.Repository == "reg.example/teams/a" }, nil},
		{"limit raised", cluster, map[string]string{KeyMaxArtifactBytes: "2Gi"}, nil,
			func(c Config) bool { return c.MaxArtifactBytes == 1<<30 }, map[string]Level{KeyMaxArtifactBytes: LevelNamespace}},
		{"access checks turned off", cluster, map[string]string{KeyVerifyAccess: "false"}, nil,
			func(c Config) bool { return c.VerifyAccess }, map[string]Level{KeyVerifyAccess: LevelNamespace}},
		{"access checks off at the cluster level may stay off", map[string]string{KeyVerifyAccess: "false"}, map[string]string{KeyVerifyAccess: "false"}, nil,
			func(c Config) bool { return !c.VerifyAccess }, nil},
		{"provenance no longer required", map[string]string{KeyProvenanceRequired: "true", KeyProvenanceSameNamespace: "true"},
			map[string]string{KeyProvenanceRequired: "false", KeyProvenanceSameNamespace: "false"}, nil,
			func(c Config) bool { return c.Provenance.Required && c.Provenance.SameNamespace },
			map[string]Level{KeyProvenanceRequired: LevelNamespace, KeyProvenanceSameNamespace: LevelNamespace}},
		{"chunked outputs", cluster, map[string]string{KeyFormat: "chunked"}, nil,
			func(c Config) bool { return c.Format == FormatChunked }, nil},
		{"a namespace requires provenance", cluster, map[string]string{KeyProvenanceRequired: "true", KeyProvenanceSameNamespace: "true"}, nil,
			func(c Config) bool {
				return c.Provenance.Required && c.Provenance.SameNamespace && c.Provenance.Enabled()
			}, nil},
		{"plain HTTP turned on", cluster, map[string]string{KeyPlainHTTP: "true"}, nil,
			func(c Config) bool { return !c.PlainHTTP }, map[string]Level{KeyPlainHTTP: LevelNamespace}},
		{"allowed repositories set by a namespace", cluster, map[string]string{KeyAllowedRepositories: "evil.example"}, nil,
			func(c Config) bool { return len(c.AllowedRepositories) == 3 }, map[string]Level{KeyAllowedRepositories: LevelNamespace}},
		{"annotation redirects outputs", cluster, nil, map[string]string{KeyRepository: "evil.example/loot"},
			func(c Config) bool { return c.Repository == "reg.example/shared" }, map[string]Level{KeyRepository: LevelAnnotation}},
		{"a prefix matches whole segments only", cluster, map[string]string{KeyRepository: "reg.example/teamsX/a"}, nil,
			func(c Config) bool { return c.Repository == "reg.example/shared" }, map[string]Level{KeyRepository: LevelNamespace}},
		{"a host prefix allows its repositories", cluster, map[string]string{KeyRepository: "other.example:5000/any/repo"}, nil,
			func(c Config) bool { return c.Repository == "other.example:5000/any/repo" }, nil},
		{"the cluster's own repository must be allowed", map[string]string{KeyRepository: "reg.example/x", KeyAllowedRepositories: "reg.example/y"}, nil, nil,
			func(c Config) bool { return c.Repository == "" }, map[string]Level{KeyRepository: LevelCluster}},
		{"bad prefix", map[string]string{KeyAllowedRepositories: "Reg.example/UPPER"}, nil, nil,
			func(c Config) bool { return c.AllowedRepositories == nil }, map[string]Level{KeyAllowedRepositories: LevelCluster}},
		{"a namespace opts in to retention", cluster, map[string]string{KeyRetentionPolicy: "OnRunDeletion", KeyRetentionMaxAge: "7d"}, nil,
			func(c Config) bool {
				return c.Retention == Retention{Policy: RetainOnRunDeletion, MaxAge: 7 * 24 * time.Hour}
			}, nil},
		{"retention is not a run's to set", cluster, nil, map[string]string{KeyRetentionPolicy: "OnRunDeletion", KeyRetentionMaxAge: "1d"},
			func(c Config) bool { return c.Retention == Retention{Policy: RetainKeep} },
			map[string]Level{KeyRetentionPolicy: LevelAnnotation, KeyRetentionMaxAge: LevelAnnotation}},
		{"an annotation cannot lift the cluster's retention either", map[string]string{KeyRetentionPolicy: "OnRunDeletion", KeyRetentionMaxAge: "30d"},
			nil, map[string]string{KeyRetentionPolicy: "Keep", KeyRetentionMaxAge: "0"},
			func(c Config) bool {
				return c.Retention == Retention{Policy: RetainOnRunDeletion, MaxAge: 30 * 24 * time.Hour}
			},
			map[string]Level{KeyRetentionPolicy: LevelAnnotation, KeyRetentionMaxAge: LevelAnnotation}},
		{"the cluster's retention is a ceiling", map[string]string{KeyRetentionPolicy: "OnRunDeletion", KeyRetentionMaxAge: "30d"},
			map[string]string{KeyRetentionPolicy: "Keep", KeyRetentionMaxAge: "60d"}, nil,
			func(c Config) bool {
				return c.Retention == Retention{Policy: RetainOnRunDeletion, MaxAge: 30 * 24 * time.Hour}
			},
			map[string]Level{KeyRetentionPolicy: LevelNamespace, KeyRetentionMaxAge: LevelNamespace}},
		{"no maximum age lifts the cluster's", map[string]string{KeyRetentionMaxAge: "30d"}, map[string]string{KeyRetentionMaxAge: "0"}, nil,
			func(c Config) bool { return c.Retention.MaxAge == 30*24*time.Hour }, map[string]Level{KeyRetentionMaxAge: LevelNamespace}},
		{"a shorter age is tighter", map[string]string{KeyRetentionMaxAge: "30d"}, map[string]string{KeyRetentionMaxAge: "12h"}, nil,
			func(c Config) bool { return c.Retention.MaxAge == 12*time.Hour }, nil},
		{"shared repository, tags without the namespace", cluster, map[string]string{KeyTagPattern: "{{taskrun}}.{{artifact}}"}, nil,
			nil, map[string]Level{KeyTagPattern: LevelNamespace}},
		{"the namespace's own repository, tags without the namespace", cluster,
			map[string]string{KeyTagPattern: "{{taskrun}}.{{artifact}}", KeyRepository: "reg.example/teams/a"}, nil,
			func(c Config) bool { return c.TagPattern == "{{taskrun}}.{{artifact}}" }, nil},
		{"a run's repository, tags without the namespace", cluster,
			map[string]string{KeyTagPattern: "{{taskrun}}.{{artifact}}", KeyRepository: "reg.example/teams/a"}, map[string]string{KeyRepository: "reg.example/teams/b"},
			nil, map[string]Level{KeyTagPattern: LevelNamespace}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Resolve(Layer{LevelCluster, tc.cluster}, Layer{LevelNamespace, tc.namespace}, Layer{LevelAnnotation, tc.annotation})
			if tc.check != nil && !tc.check(c) {
				t.Errorf("config = %+v", c)
			}
			got := map[string]Level{}
			for _, e := range unwrap(err) {
				var ke *KeyError
				if !errors.As(e, &ke) {
					t.Fatalf("error %v is not a *KeyError", e)
				}
				got[ke.Key] = ke.Level
			}
			if !reflect.DeepEqual(got, tc.refused) && (len(got) > 0 || len(tc.refused) > 0) {
				t.Errorf("refused %v, want %v (err: %v)", got, tc.refused, err)
			}
		})
	}
}

func TestParseAgeRoundTrip(t *testing.T) {
	for _, s := range []string{"30d", "36h", "1h30m", "1m", "1h0m30s"} {
		d, err := ParseAge(s)
		if err != nil || FormatAge(d) != s {
			t.Errorf("ParseAge(%q) = %s, %v; formatted %q", s, d, err, FormatAge(d))
		}
	}
}
