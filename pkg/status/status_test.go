package status

import (
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
)

const repo = "registry.example:5000/team-a/artifacts"

var (
	hexA, hexB = strings.Repeat("a", 64), strings.Repeat("b", 64)
	uriA       = "pkg:oci/artifacts@sha256:" + hexA + "?repository_url=" + repo
	uriB       = "pkg:oci/artifacts@sha256:" + hexB + "?repository_url=" + repo
	valueA     = Value{URI: uriA, Digest: map[string]string{"sha256": hexA}}
	valueB     = Value{URI: uriB, Digest: map[string]string{"sha256": hexB}}
)

func TestNewValue(t *testing.T) {
	for _, tc := range []struct {
		repo, digest string
		want         Value
		err          bool
	}{
		{repo: repo, digest: "sha256:" + hexA, want: valueA},
		{repo: "r.example/x", digest: "sha512:" + strings.Repeat("c", 128), want: Value{
			URI:    "pkg:oci/x@sha512:" + strings.Repeat("c", 128) + "?repository_url=r.example/x",
			Digest: map[string]string{"sha512": strings.Repeat("c", 128)},
		}},
		{repo: repo, digest: "", err: true},
		{repo: repo, digest: hexA, err: true},
		{repo: repo, digest: "sha256:" + hexA[1:], err: true},
		{repo: repo, digest: "sha256:" + strings.ToUpper(hexA), err: true},
		{repo: repo, digest: "md5:" + hexA[:32], err: true},
		{repo: repo, digest: "sha256:" + hexA[1:] + "g", err: true},
		{repo: "", digest: "sha256:" + hexA, err: true},
		{repo: "artifacts", digest: "sha256:" + hexA, err: true},
		{repo: repo + "/", digest: "sha256:" + hexA, err: true},
		{repo: repo + "?x=y", digest: "sha256:" + hexA, err: true},
	} {
		got, err := NewValue(tc.repo, tc.digest)
		if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("NewValue(%q, %q) = %+v, %v; want %+v, error %t", tc.repo, tc.digest, got, err, tc.want, tc.err)
		}
	}
}

func TestNewProviderValue(t *testing.T) {
	d := "sha256:" + hexA
	for _, tc := range []struct {
		backend, repo, artifact, location string
		wantURI                           string
		err                               bool
	}{
		{"filesystem", "team-a", "dist", "file:///srv/team-a/blobs/sha256/" + hexA,
			"pkg:generic/dist@" + d + "?backend=filesystem&repository=team-a&download_url=file:///srv/team-a/blobs/sha256/" + hexA, false},
		{"s3", "team-a/x", "dist", "", "pkg:generic/dist@" + d + "?backend=s3&repository=team-a/x", false},
		// A location cannot add or split qualifiers.
		{"s3", "team-a", "dist", "s3://b/k?v=1&x=#y%", "pkg:generic/dist@" + d + "?backend=s3&repository=team-a&download_url=s3://b/k%3Fv=1%26x=%23y%25", false},
		{"", "team-a", "dist", "", "", true},
		{"s3", "team-a&x=y", "dist", "", "", true},
		{"s3", "team-a", "", "", "", true},
	} {
		got, err := NewProviderValue(tc.backend, tc.repo, tc.artifact, d, tc.location)
		if (err != nil) != tc.err || got.URI != tc.wantURI || (!tc.err && got.Digest["sha256"] != hexA) {
			t.Errorf("NewProviderValue(%q, %q, %q, %q) = %+v, %v; want %q, error %t", tc.backend, tc.repo, tc.artifact, tc.location, got, err, tc.wantURI, tc.err)
		}
	}
	if _, err := NewProviderValue("fs", "team-a", "dist", "sha256:abc", ""); err == nil {
		t.Error("a malformed digest was accepted")
	}
}

func record(name string, dir v1alpha1.Direction, artifact string, phase v1alpha1.Phase, digest string, build bool) v1alpha1.ArtifactRecord {
	return v1alpha1.ArtifactRecord{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a"},
		Spec:       v1alpha1.ArtifactRecordSpec{Direction: dir, Artifact: artifact, Repository: repo, BuildOutput: build},
		Status:     v1alpha1.ArtifactRecordStatus{Phase: phase, Digest: digest},
	}
}

func TestDesired(t *testing.T) {
	for _, tc := range []struct {
		name    string
		records []v1alpha1.ArtifactRecord
		want    Artifacts
		err     string
	}{
		{name: "none"},
		{
			name: "phases",
			records: []v1alpha1.ArtifactRecord{
				record("pushed", v1alpha1.Output, "bin", v1alpha1.Pushed, "sha256:"+hexA, false),
				record("pending", v1alpha1.Output, "pending", v1alpha1.Pending, "", false),
				record("failed", v1alpha1.Output, "failed", v1alpha1.Failed, "sha256:"+hexB, false),
				record("consumed", v1alpha1.Input, "src", v1alpha1.Consumed, "sha256:"+hexB, false),
				record("odd", v1alpha1.Input, "odd", v1alpha1.Pushed, "sha256:"+hexB, false),
			},
			want: Artifacts{
				Inputs:  []Artifact{{Name: "src", Values: []Value{valueB}}},
				Outputs: []Artifact{{Name: "bin", Values: []Value{valueA}}},
			},
		},
		{
			name: "grouped, deduplicated, sorted, build output if any",
			records: []v1alpha1.ArtifactRecord{
				record("z1", v1alpha1.Output, "z", v1alpha1.Pushed, "sha256:"+hexB, false),
				record("z2", v1alpha1.Output, "z", v1alpha1.Pushed, "sha256:"+hexA, true),
				record("z3", v1alpha1.Output, "z", v1alpha1.Pushed, "sha256:"+hexB, false),
				record("a", v1alpha1.Output, "a", v1alpha1.Pushed, "sha256:"+hexA, false),
			},
			want: Artifacts{Outputs: []Artifact{
				{Name: "a", Values: []Value{valueA}},
				{Name: "z", BuildOutput: true, Values: []Value{valueA, valueB}},
			}},
		},
		{
			name: "malformed digest reported, others kept",
			records: []v1alpha1.ArtifactRecord{
				record("bad", v1alpha1.Output, "bad", v1alpha1.Pushed, "sha256:nothex", false),
				record("good", v1alpha1.Output, "good", v1alpha1.Pushed, "sha256:"+hexA, false),
			},
			want: Artifacts{Outputs: []Artifact{{Name: "good", Values: []Value{valueA}}}},
			err:  "ArtifactRecord team-a/bad: malformed digest",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Desired(tc.records)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("error %v, want %q", err, tc.err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// value is a Value in its unstructured form.
func value(uri, hex string) any {
	return map[string]any{"uri": uri, "digest": map[string]any{"sha256": hex}}
}

func TestMerge(t *testing.T) {
	tekton := map[string]any{"name": "tekton-own", "values": []any{value("pkg:generic/x", hexB)}}
	for _, tc := range []struct {
		name    string
		have    []any
		ours    []Artifact
		want    []any
		changed bool
	}{
		{name: "nothing"},
		{name: "nothing of ours", have: []any{tekton}, want: []any{tekton}},
		{
			name:    "empty status",
			ours:    []Artifact{{Name: "bin", BuildOutput: true, Values: []Value{valueA}}},
			want:    []any{map[string]any{"name": "bin", "buildOutput": true, "values": []any{value(uriA, hexA)}}},
			changed: true,
		},
		{
			name: "Tekton's own entry kept, new names appended sorted",
			have: []any{tekton},
			ours: []Artifact{{Name: "z", Values: []Value{valueA}}, {Name: "b", Values: []Value{valueB}}},
			want: []any{
				tekton,
				map[string]any{"name": "b", "values": []any{value(uriB, hexB)}},
				map[string]any{"name": "z", "values": []any{value(uriA, hexA)}},
			},
			changed: true,
		},
		{
			name:    "same name merged, values deduplicated by uri",
			have:    []any{map[string]any{"name": "bin", "values": []any{value(uriA, hexA), value("pkg:generic/y", hexB)}}},
			ours:    []Artifact{{Name: "bin", Values: []Value{valueA, valueB}}},
			want:    []any{map[string]any{"name": "bin", "values": []any{value(uriA, hexA), value("pkg:generic/y", hexB), value(uriB, hexB)}}},
			changed: true,
		},
		{
			name:    "entry without values",
			have:    []any{map[string]any{"name": "bin"}},
			ours:    []Artifact{{Name: "bin", Values: []Value{valueA}}},
			want:    []any{map[string]any{"name": "bin", "values": []any{value(uriA, hexA)}}},
			changed: true,
		},
		{
			name: "already there",
			have: []any{map[string]any{"name": "bin", "buildOutput": true, "values": []any{value(uriA, hexA)}}},
			ours: []Artifact{{Name: "bin", BuildOutput: true, Values: []Value{valueA}}},
			want: []any{map[string]any{"name": "bin", "buildOutput": true, "values": []any{value(uriA, hexA)}}},
		},
		{
			name:    "buildOutput set",
			have:    []any{map[string]any{"name": "bin", "buildOutput": false, "values": []any{value(uriA, hexA)}}},
			ours:    []Artifact{{Name: "bin", BuildOutput: true, Values: []Value{valueA}}},
			want:    []any{map[string]any{"name": "bin", "buildOutput": true, "values": []any{value(uriA, hexA)}}},
			changed: true,
		},
		{
			name: "buildOutput never downgraded",
			have: []any{map[string]any{"name": "bin", "buildOutput": true, "values": []any{value(uriA, hexA)}}},
			ours: []Artifact{{Name: "bin", Values: []Value{valueA}}},
			want: []any{map[string]any{"name": "bin", "buildOutput": true, "values": []any{value(uriA, hexA)}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := deepCopy(tc.have)
			got, changed := Merge(tc.have, tc.ours)
			if !reflect.DeepEqual(got, tc.want) || changed != tc.changed {
				t.Errorf("Merge = %v, %t\nwant %v, %t", got, changed, tc.want, tc.changed)
			}
			if !reflect.DeepEqual(tc.have, before) {
				t.Errorf("Merge modified its input: %v, was %v", tc.have, before)
			}
			if again, changed := Merge(got, tc.ours); changed || !reflect.DeepEqual(again, got) {
				t.Errorf("merging again changed %v to %v", got, again)
			}
		})
	}
}

func deepCopy(v []any) []any {
	out, _ := runtime.DeepCopyJSONValue(v).([]any)
	return out
}
