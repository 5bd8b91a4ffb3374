// Package status turns ArtifactRecords into the artifacts of a Tekton
// TaskRun's status, in the TEP-0147 shape Tekton's TaskRun schema keeps
// (status.artifacts.inputs and .outputs), and merges them into what is
// already there. Its functions are pure: no API client, no shared state,
// safe for concurrent use.
package status

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
)

// Value is one value of an artifact: a package URL and its digest.
type Value struct {
	// URI is pkg:oci/<name>@<digest>?repository_url=<repository>.
	URI string
	// Digest maps the digest's algorithm to its hex, e.g. sha256 → ab….
	Digest map[string]string
}

// Artifact is one entry of status.artifacts.inputs or .outputs.
type Artifact struct {
	Name string
	// BuildOutput marks an output for Tekton Chains; omitted when false.
	BuildOutput bool
	Values      []Value
}

// Artifacts are a TaskRun's inputs and outputs, each sorted by name.
type Artifacts struct {
	Inputs, Outputs []Artifact
}

// hexLen is the hex length of each digest algorithm accepted.
var hexLen = map[string]int{"sha256": 64, "sha384": 96, "sha512": 128}

// NewValue returns the value of the OCI artifact whose manifest digest is
// digest (sha256:<hex>) in repository (registry/path/name), e.g.
// pkg:oci/name@sha256:<hex>?repository_url=registry/path/name. It rejects
// a malformed digest or repository.
func NewValue(repository, digest string) (Value, error) {
	v, err := digestValue(digest)
	if err != nil {
		return Value{}, err
	}
	i := strings.LastIndexByte(repository, '/')
	if i <= 0 || i == len(repository)-1 || strings.ContainsAny(repository, "?#@& ") {
		return Value{}, fmt.Errorf("malformed repository %q: want registry/path", repository)
	}
	v.URI = fmt.Sprintf("pkg:oci/%s@%s?repository_url=%s", repository[i+1:], digest, repository)
	return v, nil
}

// NewProviderValue returns the value of an artifact a storage provider
// holds: a generic package URL naming the artifact, its manifest digest,
// the backend, the repository and, when the provider gave one, the
// location, e.g. pkg:generic/report@sha256:<hex>?backend=filesystem&
// repository=team-a&download_url=file:///var/lib/…. Tekton's TaskRun schema
// keeps only uri and digest in status.artifacts, so the URI carries what
// TEP-0164 calls ref.backend and ref.location.
func NewProviderValue(backend, repository, artifact, digest, location string) (Value, error) {
	v, err := digestValue(digest)
	if err != nil {
		return Value{}, err
	}
	if backend == "" || repository == "" || artifact == "" || strings.ContainsAny(backend+repository+artifact, "?#@&=% ") {
		return Value{}, fmt.Errorf("malformed backend %q, repository %q or artifact %q", backend, repository, artifact)
	}
	v.URI = fmt.Sprintf("pkg:generic/%s@%s?backend=%s&repository=%s", artifact, digest, backend, repository)
	if location != "" {
		v.URI += "&download_url=" + qualifierEscaper.Replace(location)
	}
	return v, nil
}

// qualifierEscaper percent-encodes what would end or split a purl
// qualifier value.
var qualifierEscaper = strings.NewReplacer("%", "%25", "&", "%26", "#", "%23", "?", "%3F", " ", "%20")

func digestValue(digest string) (Value, error) {
	algo, hex, _ := strings.Cut(digest, ":")
	if n, ok := hexLen[algo]; !ok || len(hex) != n || strings.Trim(hex, "0123456789abcdef") != "" {
		return Value{}, fmt.Errorf("malformed digest %q: want sha256:<64 lowercase hex>", digest)
	}
	return Value{Digest: map[string]string{algo: hex}}, nil
}

// ValueOf returns the value of a record's artifact: NewValue for an OCI
// registry, NewProviderValue for a storage provider.
func ValueOf(r *v1alpha1.ArtifactRecord) (Value, error) {
	if r.Spec.StoreBackend() != v1alpha1.BackendOCI {
		return NewProviderValue(r.Spec.StoreBackend(), r.Spec.Repository, r.Spec.Artifact, r.Status.Digest, r.Status.Location)
	}
	return NewValue(r.Spec.Repository, r.Status.Digest)
}

// Desired returns the artifacts records show: an Output record that is
// Pushed is an output, an Input record that is Consumed an input; other
// records are left out. Records are grouped by artifact name, their values
// deduplicated by URI and sorted, and an artifact is a build output when
// any of its records says so. A record whose value cannot be built is left
// out and reported in the error, which joins one error per such record;
// the Artifacts returned hold all the others.
func Desired(records []v1alpha1.ArtifactRecord) (Artifacts, error) {
	in, out := map[string]*Artifact{}, map[string]*Artifact{}
	var errs []error
	for _, r := range records {
		var m map[string]*Artifact
		switch {
		case r.Spec.Direction == v1alpha1.Output && r.Status.Phase == v1alpha1.Pushed:
			m = out
		case r.Spec.Direction == v1alpha1.Input && r.Status.Phase == v1alpha1.Consumed:
			m = in
		default:
			continue
		}
		v, err := ValueOf(&r)
		if err != nil {
			errs = append(errs, fmt.Errorf("ArtifactRecord %s/%s: %w", r.Namespace, r.Name, err))
			continue
		}
		a := m[r.Spec.Artifact]
		if a == nil {
			a = &Artifact{Name: r.Spec.Artifact}
			m[r.Spec.Artifact] = a
		}
		a.BuildOutput = a.BuildOutput || r.Spec.BuildOutput
		if !slices.ContainsFunc(a.Values, func(x Value) bool { return x.URI == v.URI }) {
			a.Values = append(a.Values, v)
		}
	}
	return Artifacts{Inputs: sorted(in), Outputs: sorted(out)}, errors.Join(errs...)
}

func sorted(m map[string]*Artifact) []Artifact {
	var as []Artifact
	for _, name := range slices.Sorted(maps.Keys(m)) {
		a := m[name]
		slices.SortFunc(a.Values, func(x, y Value) int { return cmp.Compare(x.URI, y.URI) })
		as = append(as, *a)
	}
	return as
}

// Merge merges ours into have, a status.artifacts.inputs or .outputs list
// in its unstructured form ([]any of map[string]any), and returns the
// result and whether it differs from have, which it does not modify. Every
// entry and value of have is kept; a value of ours is added to the first
// entry of the same name unless one with its URI is there; buildOutput is
// set when ours says so, never cleared; entries for new names are appended
// sorted by name. Merging the result again changes nothing.
func Merge(have []any, ours []Artifact) ([]any, bool) {
	merged, _ := runtime.DeepCopyJSONValue(have).([]any)
	entries := map[string]map[string]any{}
	for _, e := range merged {
		if m, ok := e.(map[string]any); ok {
			if name, ok := m["name"].(string); ok && entries[name] == nil {
				entries[name] = m
			}
		}
	}
	changed := false
	for _, a := range slices.SortedStableFunc(slices.Values(ours), func(x, y Artifact) int { return cmp.Compare(x.Name, y.Name) }) {
		e := entries[a.Name]
		if e == nil {
			e = map[string]any{"name": a.Name, "values": []any{}}
			merged, entries[a.Name], changed = append(merged, e), e, true
		}
		if a.BuildOutput && e["buildOutput"] != true {
			e["buildOutput"], changed = true, true
		}
		values, _ := e["values"].([]any)
		for _, v := range a.Values {
			if slices.ContainsFunc(values, func(x any) bool { m, _ := x.(map[string]any); return m != nil && m["uri"] == v.URI }) {
				continue
			}
			digest := map[string]any{}
			for algo, hex := range v.Digest {
				digest[algo] = hex
			}
			values, changed = append(values, map[string]any{"uri": v.URI, "digest": digest}), true
			e["values"] = values
		}
	}
	return merged, changed
}
