package artifact_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
)

var tagGrammar = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

func TestTag(t *testing.T) {
	long := strings.Repeat("x", 200)
	tests := []struct {
		name, pattern string
		vars          artifact.TagVars
		want          string
		wantErr       bool
	}{
		{"default", artifact.DefaultTagPattern, artifact.TagVars{"namespace": "team", "taskrun": "build-run", "artifact": "src"}, "team.build-run.src", false},
		{"plain pod falls back to pod", artifact.DefaultTagPattern, artifact.TagVars{"namespace": "team", "pod": "p1", "artifact": "src"}, "team.p1.src", false},
		{"spaces in braces", "{{ namespace }}-{{artifact}}", artifact.TagVars{"namespace": "a", "artifact": "b"}, "a-b", false},
		{"invalid characters", "{{artifact}}", artifact.TagVars{"artifact": "a/b:c@d"}, "a-b-c-d", false},
		{"leading dot dropped", ".{{artifact}}", artifact.TagVars{"artifact": "x"}, "x", false},
		{"unknown placeholder", "{{owner}}", nil, "", true},
		{"renders empty", "{{taskrun}}", nil, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := artifact.Tag(tc.pattern, tc.vars)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("Tag = %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("long tags are cut with a hash", func(t *testing.T) {
		a, _ := artifact.Tag("{{artifact}}", artifact.TagVars{"artifact": long + "a"})
		b, _ := artifact.Tag("{{artifact}}", artifact.TagVars{"artifact": long + "b"})
		if len(a) != 128 || len(b) != 128 || a == b || !tagGrammar.MatchString(a) {
			t.Errorf("long tags %q (%d) and %q (%d): want distinct valid 128-character tags", a, len(a), b, len(b))
		}
	})
}

func FuzzSanitizeTag(f *testing.F) {
	for _, s := range []string{"a", "-.-x", "ns.tr.art", strings.Repeat("é", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tag, err := artifact.SanitizeTag(s)
		if err == nil && !tagGrammar.MatchString(tag) {
			t.Fatalf("SanitizeTag(%q) = %q, not a valid tag", s, tag)
		}
	})
}

func TestManifestShape(t *testing.T) {
	meta := artifact.Metadata{Name: "junit", Namespace: "ns", TaskRun: "tr", BuildOutput: true}
	cfg := artifact.Descriptor(artifact.ConfigMediaType, artifact.ConfigBlob(meta))
	layer := v1.Descriptor{MediaType: artifact.LayerMediaType(archive.Zstd), Digest: cfg.Digest, Size: 1}
	g := artifact.Group{Namespace: "ns", PipelineRun: "pr", UID: "u"}
	subject := artifact.Descriptor("application/vnd.oci.image.manifest.v1+json", g.Manifest())
	raw := artifact.Manifest(meta, cfg, layer, &subject)
	if string(raw) != string(artifact.Manifest(meta, cfg, layer, &subject)) {
		t.Fatal("manifest is not deterministic")
	}
	if string(g.Manifest()) != string(artifact.Group{Namespace: "ns", PipelineRun: "pr", UID: "u"}.Manifest()) {
		t.Fatal("group manifest is not deterministic")
	}
	if string(g.Manifest()) == string(artifact.Group{Namespace: "ns", PipelineRun: "pr", UID: "other"}.Manifest()) {
		t.Fatal("groups of different runs collide")
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m["artifactType"] != artifact.ArtifactType || m["subject"] == nil {
		t.Errorf("manifest = %s", raw)
	}
	if string(artifact.LayerMediaType(archive.Gzip)) != "application/vnd.tekton.artifact.tar+gzip" {
		t.Errorf("gzip layer media type = %s", artifact.LayerMediaType(archive.Gzip))
	}
	var c map[string]map[string]any
	json.Unmarshal(artifact.ConfigBlob(meta), &c)
	if c["artifact"]["name"] != "junit" || c["artifact"]["buildOutput"] != true || c["artifact"]["taskrun"] != "tr" {
		t.Errorf("config = %s", artifact.ConfigBlob(meta))
	}
}

func TestParseManifest(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	layer := func(mt string, ann string) string {
		return `{"mediaType":"` + mt + `","digest":"` + d + `","size":3` + ann + `}`
	}
	mf := func(mt string, layers ...string) string {
		return `{"schemaVersion":2,"mediaType":"` + mt + `","config":{"mediaType":"x","digest":"` + d + `","size":2},"layers":[` + strings.Join(layers, ",") + `]}`
	}
	const oci = "application/vnd.oci.image.manifest.v1+json"
	tests := []struct {
		name    string
		raw     string
		file    string
		wantErr string
	}{
		{"ours", mf(oci, layer("application/vnd.tekton.artifact.tar+gzip", "")), "", ""},
		{"oras directory", mf(oci, layer("application/vnd.oci.image.layer.v1.tar+gzip", `,"annotations":{"org.opencontainers.image.title":"dir"}`)), "", ""},
		{"docker layer", mf("application/vnd.docker.distribution.manifest.v2+json", layer("application/vnd.docker.image.rootfs.diff.tar.gzip", "")), "", ""},
		{"zstd layer", mf(oci, layer("application/vnd.oci.image.layer.v1.tar+zstd", "")), "", ""},
		{"single file", mf(oci, layer("application/spdx+json", `,"annotations":{"org.opencontainers.image.title":"sbom.json"}`)), "sbom.json", ""},
		{"untitled file", mf(oci, layer("application/spdx+json", "")), "", "neither a tar archive nor a titled file"},
		{"two layers", mf(oci, layer("application/vnd.oci.image.layer.v1.tar", ""), layer("application/vnd.oci.image.layer.v1.tar", "")), "", "2 layers"},
		{"index", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`, "", "image index"},
		{"garbage", `{`, "", "parse manifest"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := artifact.ParseManifest([]byte(tc.raw))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.FileName != tc.file {
				t.Errorf("FileName = %q, want %q", l.FileName, tc.file)
			}
		})
	}
}
