package provenance

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

const (
	dig  = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	dig2 = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

func taskRunFacts() Facts {
	start := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	return Facts{
		Repository: "registry.example/team/artifacts", Digest: dig, Artifact: "report",
		Namespace: "team", Pod: Ref{Name: "run-1-build-pod", UID: "pod-uid"},
		TaskRun: &Ref{Name: "run-1-build", UID: "tr-uid"}, PipelineRun: &Ref{Name: "run-1", UID: "pr-uid"},
		TaskRef: map[string]any{"name": "produce", "kind": "Task"}, PipelineRef: map[string]any{"name": "build-and-test"},
		PipelineTask: "build", Params: map[string]any{"megabytes": "4"}, Node: "node-1", ServiceAccount: "default",
		Inputs:    []Dependency{{Artifact: "source", URI: "oci://registry.example/team/src@" + dig2, Digest: dig2}},
		StartedOn: start, FinishedOn: start.Add(time.Minute), BuilderVersion: "v0.1.0", BuildOutput: true,
	}
}

// TestStatementShape checks the JSON a verifier reads against what the
// in-toto Statement v1 and SLSA Provenance v1 specifications require.
func TestStatementShape(t *testing.T) {
	st, err := Statement(taskRunFacts())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]any{
		"_type":                               "https://in-toto.io/Statement/v1",
		"predicateType":                       "https://slsa.dev/provenance/v1",
		"subject.0.name":                      "registry.example/team/artifacts",
		"subject.0.digest.sha256":             strings.TrimPrefix(dig, "sha256:"),
		"predicate.buildDefinition.buildType": BuildTypeTaskRun,
		"predicate.buildDefinition.externalParameters.taskRun":           "run-1-build",
		"predicate.buildDefinition.externalParameters.pipelineRun":       "run-1",
		"predicate.buildDefinition.externalParameters.pipelineTask":      "build",
		"predicate.buildDefinition.externalParameters.taskRef.name":      "produce",
		"predicate.buildDefinition.externalParameters.params.megabytes":  "4",
		"predicate.buildDefinition.internalParameters.node":              "node-1",
		"predicate.buildDefinition.internalParameters.pipelineRunUID":    "pr-uid",
		"predicate.buildDefinition.resolvedDependencies.0.uri":           "oci://registry.example/team/src@" + dig2,
		"predicate.buildDefinition.resolvedDependencies.0.digest.sha256": strings.TrimPrefix(dig2, "sha256:"),
		"predicate.runDetails.builder.id":                                BuilderID,
		"predicate.runDetails.builder.version.artifacts-csi-driver":      "v0.1.0",
		"predicate.runDetails.metadata.invocationId":                     "taskrun/tr-uid",
		"predicate.runDetails.metadata.startedOn":                        "2026-12-03T10:00:00Z",
		"predicate.runDetails.metadata.finishedOn":                       "2026-12-03T10:01:00Z",
	} {
		if got := lookup(doc, path); got != want {
			t.Errorf("%s = %v, want %v", path, got, want)
		}
	}
	back, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse of Marshal: %v", err)
	}
	if _, err := Predicate(back); err != nil {
		t.Errorf("Predicate: %v", err)
	}
}

func TestStatementRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Facts)
		want string
	}{
		{"no repository", func(f *Facts) { f.Repository = "" }, "required"},
		{"a tag, not a digest", func(f *Facts) { f.Digest = "v1" }, "subject"},
		{"upper-case hex", func(f *Facts) { f.Digest = strings.ToUpper(dig) }, "subject"},
		{"an input without digest", func(f *Facts) { f.Inputs[0].Digest = "" }, `input "source"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := taskRunFacts()
			tc.edit(&f)
			if _, err := Statement(f); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Statement = %v, want an error about %s", err, tc.want)
			}
		})
	}
}

// TestPlainPod: a pod of no TaskRun is its own invocation.
func TestPlainPod(t *testing.T) {
	st, err := Statement(Facts{Repository: "r.example/a", Digest: dig, Artifact: "out", Namespace: "ns", Pod: Ref{Name: "p", UID: "u"}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := Predicate(st)
	if err != nil {
		t.Fatal(err)
	}
	if p.GetBuildDefinition().GetBuildType() != BuildTypePod || p.GetRunDetails().GetMetadata().GetInvocationId() != "pod/u" {
		t.Errorf("build type %q, invocation %q", p.GetBuildDefinition().GetBuildType(), p.GetRunDetails().GetMetadata().GetInvocationId())
	}
	if _, ok := p.GetBuildDefinition().GetExternalParameters().GetFields()["taskRun"]; ok {
		t.Error("a plain pod's provenance names a TaskRun")
	}
}

func TestParseRefuses(t *testing.T) {
	for _, in := range []string{`{}`, `not json`, `{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"x"}`} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%s) accepted", in)
		}
	}
}

// lookup walks a dotted path of keys and list indices.
func lookup(doc any, path string) any {
	for _, k := range strings.Split(path, ".") {
		switch v := doc.(type) {
		case map[string]any:
			doc = v[k]
		case []any:
			i := int(k[0] - '0')
			if i >= len(v) {
				return nil
			}
			doc = v[i]
		default:
			return nil
		}
	}
	return doc
}
