// Package v1alpha1 is the artifacts.tekton.dev/v1alpha1 API: the
// ArtifactRecord resource, the full record of one artifact a pod consumed or
// produced. The node plugin writes them; the controller merges them into
// TaskRun status.
//
// +kubebuilder:object:generate=true
// +groupName=artifacts.tekton.dev
package v1alpha1
