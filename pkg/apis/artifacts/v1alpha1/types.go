package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Direction says whether a pod consumed or produced an artifact.
// +kubebuilder:validation:Enum=Input;Output
type Direction string

// Directions.
const (
	Input  Direction = "Input"
	Output Direction = "Output"
)

// BackendOCI is the Backend of an artifact in an OCI registry (store.OCI).
const BackendOCI = "oci"

// RetentionFinalizer is on the ArtifactRecord of an output (in an OCI
// registry) of a namespace whose retention configuration removes
// outputs: the node plugin sets it at creation, the controller on records
// written before. It keeps the record until the controller has deleted
// the output from the registry, or given up; it is never put on Tekton's
// objects, whose deletion it therefore cannot block.
const RetentionFinalizer = "artifacts.tekton.dev/retention"

// StoreBackend returns s.Backend, or BackendOCI when it is empty: the
// field's default, which the API server applies, applied also for objects
// that bypassed it (records of earlier versions, fake clients).
func (s ArtifactRecordSpec) StoreBackend() string {
	if s.Backend == "" {
		return BackendOCI
	}
	return s.Backend
}

// Phase of an artifact record. An output is Pending from the publish of its
// volume until it is Pushed, or Failed when it could not be pushed (its
// data then stays on the node). An input is Consumed when its volume is
// published.
// +kubebuilder:validation:Enum=Pending;Pushed;Failed;Consumed
type Phase string

// Phases.
const (
	Pending  Phase = "Pending"
	Pushed   Phase = "Pushed"
	Failed   Phase = "Failed"
	Consumed Phase = "Consumed"
)

// ArtifactRecord is the full record of one artifact one pod consumed or
// produced through an artifacts.csi.tekton.dev volume. Its owner is the
// TaskRun when the pod has one, else the pod. A run's records are listed
// with a field selector: kubectl get artifactrecords --field-selector
// spec.pipelineRun=<name> (also spec.taskRun.name, spec.direction).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=artrec,categories=tekton
// +kubebuilder:printcolumn:name="Direction",type=string,JSONPath=`.spec.direction`
// +kubebuilder:printcolumn:name="Artifact",type=string,JSONPath=`.spec.artifact`
// +kubebuilder:printcolumn:name="Digest",type=string,JSONPath=`.status.digest`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:selectablefield:JSONPath=`.spec.direction`
// +kubebuilder:selectablefield:JSONPath=`.spec.pipelineRun`
// +kubebuilder:selectablefield:JSONPath=`.spec.taskRun.name`
type ArtifactRecord struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable"
	Spec   ArtifactRecordSpec   `json:"spec"`
	Status ArtifactRecordStatus `json:"status,omitempty"`
}

// ArtifactRecordSpec says which artifact of which pod the record is about.
// It cannot change once written (the API server refuses it).
type ArtifactRecordSpec struct {
	// Direction is Input or Output.
	Direction Direction `json:"direction"`
	// Artifact is the artifact's name (the volume's artifact attribute).
	// +kubebuilder:validation:MaxLength=63
	Artifact string `json:"artifact"`
	// Pod is the pod whose volume it was.
	Pod ObjectReference `json:"pod"`
	// NodeName is the node whose plugin wrote the record, where the pod
	// ran. The admission policy of deploy/ admits a node plugin's record
	// only for its own node.
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// TaskRun is the TaskRun that names the pod in status.podName; empty
	// for a plain pod. Labels never set it: the node plugin checks
	// Tekton's state.
	// +optional
	TaskRun *ObjectReference `json:"taskRun,omitempty"`
	// PipelineRun (name and UID) lists the TaskRun in
	// status.childReferences, as PipelineTask; empty for a plain pod or a
	// standalone TaskRun.
	// +optional
	PipelineRun string `json:"pipelineRun,omitempty"`
	// +optional
	PipelineRunUID string `json:"pipelineRunUID,omitempty"`
	// +optional
	PipelineTask string `json:"pipelineTask,omitempty"`
	// BuildOutput marks an output for Tekton Chains.
	// +optional
	BuildOutput bool `json:"buildOutput,omitempty"`
	// Backend stores the artifact: oci for an OCI registry, else the name
	// of the storage provider (the backend configuration key). Records
	// written before the field was always set read as oci.
	// +optional
	// +kubebuilder:default=oci
	Backend string `json:"backend,omitempty"`
	// Repository is where the artifact is: an OCI repository, e.g.
	// registry.example/team/artifacts, or a provider's repository, e.g.
	// team-a.
	Repository string `json:"repository"`
	// Tag is the tag an output was pushed with (a convenience: the digest is
	// the identity).
	// +optional
	Tag string `json:"tag,omitempty"`
}

// ObjectReference names an object in the record's namespace.
type ObjectReference struct {
	Name string `json:"name"`
	// +optional
	UID string `json:"uid,omitempty"`
}

// ArtifactRecordStatus is what is known of the artifact.
type ArtifactRecordStatus struct {
	// Phase is Pending, Pushed, Failed or Consumed.
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// Digest is the manifest digest (sha256:<hex>); for a Konflux blob
	// input, the blob's.
	// +optional
	Digest string `json:"digest,omitempty"`
	// LayerDigest, Size and MediaType describe the content layer.
	// +optional
	LayerDigest string `json:"layerDigest,omitempty"`
	// +optional
	Size int64 `json:"size,omitempty"`
	// +optional
	MediaType string `json:"mediaType,omitempty"`
	// Location is where a storage provider says the manifest is (e.g.
	// file:///...); empty for an OCI registry, where Repository and Digest
	// say it.
	// +optional
	Location string `json:"location,omitempty"`
	// Message explains a Failed phase.
	// +optional
	Message string `json:"message,omitempty"`
	// LastUpdateTime is when the node plugin last wrote the status.
	// +optional
	LastUpdateTime metav1.Time `json:"lastUpdateTime,omitempty"`
	// Provenance is the signed provenance of a Pushed output. The
	// controller alone writes it, after checking the record against
	// Tekton's state; the admission policy keeps node plugins from
	// changing it.
	// +optional
	Provenance *Provenance `json:"provenance,omitempty"`
}

// Provenance says where an output's signed provenance (an in-toto
// statement with a SLSA v1 predicate, in a Sigstore bundle) is, or why
// there is none.
type Provenance struct {
	// Digest is the manifest digest of the referrer holding the bundle,
	// attached to the artifact in its repository (OCI registries).
	// +optional
	Digest string `json:"digest,omitempty"`
	// Bundle is the Sigstore bundle itself (JSON), for a storage
	// provider, which holds no referrers and which the controller cannot
	// reach. Its signature, not this record, is what a verifier trusts.
	// +optional
	// +kubebuilder:validation:MaxLength=262144
	Bundle string `json:"bundle,omitempty"`
	// KeyID is the hint of the key that signed it (the bundle's
	// publicKey.hint: the SHA-256 of the public key, hex).
	// +optional
	KeyID string `json:"keyID,omitempty"`
	// SignedAt is when the controller signed it.
	// +optional
	SignedAt metav1.Time `json:"signedAt,omitempty"`
	// Message says why the output has no provenance yet; empty once
	// signed.
	// +optional
	Message string `json:"message,omitempty"`
}

// Signed reports whether p names a signed provenance.
func (p *Provenance) Signed() bool { return p != nil && (p.Digest != "" || p.Bundle != "") }

// ArtifactRecordList is a list of ArtifactRecords.
//
// +kubebuilder:object:root=true
type ArtifactRecordList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ArtifactRecord `json:"items"`
}
