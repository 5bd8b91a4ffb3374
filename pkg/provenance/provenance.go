// Package provenance builds what the driver attests about an output it
// pushed: an in-toto Statement v1 whose subject is the artifact's manifest
// and whose predicate is a SLSA Provenance v1, from what Tekton's own
// objects and the driver's records say (never from what a pod claims).
// It has no I/O: the controller gathers the facts, this package shapes and
// validates them, pkg/signing signs them.
package provenance

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Identifiers of what this package writes.
const (
	// PredicateType is SLSA Provenance v1's.
	PredicateType = "https://slsa.dev/provenance/v1"
	// PayloadType is the DSSE payload type of an in-toto statement.
	PayloadType = "application/vnd.in-toto+json"
	// BuildTypeTaskRun describes a Tekton TaskRun's pod writing a CSI
	// output volume; BuildTypePod, a plain pod's. Their parameters are
	// documented in docs/provenance.md.
	BuildTypeTaskRun = "https://tekton.dev/artifacts/buildtypes/taskrun/v1"
	BuildTypePod     = "https://tekton.dev/artifacts/buildtypes/pod/v1"
	// BuilderID names the driver as the builder: it archived the bytes
	// itself.
	BuilderID = "https://github.com/tektoncd/artifacts-csi-driver"
)

// Ref names a Kubernetes object of the run: its name and UID.
type Ref struct {
	Name, UID string
}

// Dependency is an input the producing pod consumed.
type Dependency struct {
	// Artifact is the input volume's artifact name.
	Artifact string
	// URI locates it: oci://REPOSITORY@sha256:HEX for a registry, or a
	// storage provider's location.
	URI string
	// Digest is its manifest's, sha256:HEX.
	Digest string
}

// Facts are what a provenance states. The zero values of optional fields
// are left out of the statement.
type Facts struct {
	// Subject: the artifact's repository (or location) and manifest
	// digest, sha256:HEX. Required.
	Repository, Digest string
	// Artifact is the output's name. Required.
	Artifact string
	// Namespace and Pod of the producer. Required.
	Namespace string
	Pod       Ref
	// TaskRun and PipelineRun, when the pod ran for them (as Tekton's
	// state confirmed), with the task's reference, the pipeline's and the
	// PipelineTask's name.
	TaskRun, PipelineRun   *Ref
	TaskRef, PipelineRef   map[string]any
	PipelineTask           string
	Params, PipelineParams map[string]any
	Node                   string
	Inputs                 []Dependency
	StartedOn, FinishedOn  time.Time
	BuilderVersion         string
	BuildOutput            bool
	ServiceAccount         string
}

// Statement returns the in-toto statement of f, validated against the
// in-toto and SLSA v1 rules (required fields, digest encodings).
func Statement(f Facts) (*intoto.Statement, error) {
	if f.Repository == "" || f.Artifact == "" || f.Namespace == "" || f.Pod.Name == "" {
		return nil, errors.New("provenance: repository, artifact, namespace and pod are required")
	}
	subjectDigest, err := digestMap(f.Digest)
	if err != nil {
		return nil, fmt.Errorf("provenance: subject: %w", err)
	}
	buildType := BuildTypePod
	external := map[string]any{"namespace": f.Namespace, "pod": f.Pod.Name, "artifact": f.Artifact}
	if f.TaskRun != nil {
		buildType = BuildTypeTaskRun
		external["taskRun"] = f.TaskRun.Name
		setIf(external, "taskRef", f.TaskRef)
		setIf(external, "params", f.Params)
		if f.PipelineRun != nil {
			external["pipelineRun"] = f.PipelineRun.Name
			setIf(external, "pipelineTask", f.PipelineTask)
			setIf(external, "pipelineRef", f.PipelineRef)
			setIf(external, "pipelineParams", f.PipelineParams)
		}
	}
	if f.BuildOutput {
		external["buildOutput"] = true
	}
	internal := map[string]any{}
	setIf(internal, "node", f.Node)
	setIf(internal, "serviceAccount", f.ServiceAccount)
	setIf(internal, "podUID", f.Pod.UID)
	if f.TaskRun != nil {
		setIf(internal, "taskRunUID", f.TaskRun.UID)
	}
	if f.PipelineRun != nil {
		setIf(internal, "pipelineRunUID", f.PipelineRun.UID)
	}
	ext, err := structpb.NewStruct(external)
	if err != nil {
		return nil, fmt.Errorf("provenance: external parameters: %w", err)
	}
	in, err := structpb.NewStruct(internal)
	if err != nil {
		return nil, fmt.Errorf("provenance: internal parameters: %w", err)
	}
	def := &slsa.BuildDefinition{BuildType: buildType, ExternalParameters: ext, InternalParameters: in}
	for _, d := range f.Inputs {
		dm, err := digestMap(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("provenance: input %q: %w", d.Artifact, err)
		}
		def.ResolvedDependencies = append(def.ResolvedDependencies, &intoto.ResourceDescriptor{Name: d.Artifact, Uri: d.URI, Digest: dm})
	}
	invocation := "pod/" + f.Pod.UID
	switch {
	case f.TaskRun != nil && f.TaskRun.UID != "":
		invocation = "taskrun/" + f.TaskRun.UID
	case f.Pod.UID == "":
		invocation = ""
	}
	meta := &slsa.BuildMetadata{InvocationId: invocation}
	if !f.StartedOn.IsZero() {
		meta.StartedOn = timestamppb.New(f.StartedOn)
	}
	if !f.FinishedOn.IsZero() {
		meta.FinishedOn = timestamppb.New(f.FinishedOn)
	}
	builder := &slsa.Builder{Id: BuilderID}
	if f.BuilderVersion != "" {
		builder.Version = map[string]string{"artifacts-csi-driver": f.BuilderVersion}
	}
	pred := &slsa.Provenance{BuildDefinition: def, RunDetails: &slsa.RunDetails{Builder: builder, Metadata: meta}}
	if err := pred.Validate(); err != nil {
		return nil, fmt.Errorf("provenance: %w", err)
	}
	predStruct, err := toStruct(pred)
	if err != nil {
		return nil, err
	}
	st := &intoto.Statement{
		Type:          intoto.StatementTypeUri,
		Subject:       []*intoto.ResourceDescriptor{{Name: f.Repository, Digest: subjectDigest}},
		PredicateType: PredicateType,
		Predicate:     predStruct,
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("provenance: %w", err)
	}
	return st, nil
}

// Marshal encodes a statement as in-toto JSON (camelCase field names, as
// the in-toto and SLSA specifications write them).
func Marshal(st *intoto.Statement) ([]byte, error) {
	return protojson.Marshal(st)
}

// Parse decodes and validates a statement, as a verifier reads one.
func Parse(b []byte) (*intoto.Statement, error) {
	st := &intoto.Statement{}
	if err := protojson.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("provenance: decode statement: %w", err)
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("provenance: %w", err)
	}
	return st, nil
}

// Predicate returns a statement's SLSA provenance.
func Predicate(st *intoto.Statement) (*slsa.Provenance, error) {
	if st.GetPredicateType() != PredicateType {
		return nil, fmt.Errorf("provenance: predicate type %q, want %q", st.GetPredicateType(), PredicateType)
	}
	b, err := protojson.Marshal(st.GetPredicate())
	if err != nil {
		return nil, err
	}
	p := &slsa.Provenance{}
	if err := protojson.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("provenance: decode predicate: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("provenance: %w", err)
	}
	return p, nil
}

// digestMap turns sha256:HEX into an in-toto digest set.
func digestMap(d string) (map[string]string, error) {
	hexPart, ok := strings.CutPrefix(d, "sha256:")
	if b, err := hex.DecodeString(hexPart); !ok || err != nil || len(b) != 32 || hexPart != strings.ToLower(hexPart) {
		return nil, fmt.Errorf("digest %q is not sha256:<64 lower-case hex>", d)
	}
	return map[string]string{"sha256": hexPart}, nil
}

// setIf sets m[k] to v unless v is empty: "", or a map without keys.
func setIf(m map[string]any, k string, v any) {
	switch v := v.(type) {
	case string:
		if v == "" {
			return
		}
	case map[string]any:
		if len(v) == 0 {
			return
		}
	}
	m[k] = v
}

func toStruct(p *slsa.Provenance) (*structpb.Struct, error) {
	b, err := protojson.Marshal(p)
	if err != nil {
		return nil, err
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(b, s); err != nil {
		return nil, err
	}
	return s, nil
}
