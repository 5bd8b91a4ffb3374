package config

import (
	"context"
	"fmt"
)

// Names that select the configuration in the cluster.
const (
	// ConfigMapName is the name of the ConfigMap at the cluster level (in
	// the driver's namespace) and at the namespace level.
	ConfigMapName = "config-artifact-storage"
	// LabelConfigType, set to ConfigTypeArtifactStorage, marks a namespace's
	// ConfigMap: the node plugin watches only ConfigMaps with this label.
	LabelConfigType           = "tekton.dev/config-type"
	ConfigTypeArtifactStorage = "artifact-storage"
	// AnnotationRepository on a PipelineRun or a Pipeline (Tekton copies
	// both onto the pods, the run's winning) or on any pod sets
	// oci.repository for that pod's outputs.
	AnnotationRepository = "tekton.dev/artifact-storage-oci-repository"
)

// annotationKeys maps the annotations a pod may carry to the keys they
// set.
var annotationKeys = map[string]string{AnnotationRepository: KeyRepository}

// NamespaceLister returns the keys of a namespace's ConfigMap, or nil when
// it has none.
type NamespaceLister interface {
	NamespaceConfig(ctx context.Context, namespace string) (map[string]string, error)
}

// Source resolves a pod's configuration from the four levels: the cluster
// ConfigMap mounted at Cluster, the namespace's ConfigMap from Namespaces
// (none when nil), and the pod's annotations. Each level is read at every
// call, so that an edit applies to the next volume without a restart. It
// is safe for concurrent use if Namespaces is.
type Source struct {
	Cluster    Dir
	Namespaces NamespaceLister
}

// Config returns the configuration of a pod in namespace with annotations.
// Invalid values are reported as in Resolve, with the configuration
// resolved from the valid ones; an unreadable level is an error alone.
func (s Source) Config(ctx context.Context, namespace string, annotations map[string]string) (Config, error) {
	cluster, err := ReadDir(string(s.Cluster))
	if err != nil {
		return Config{}, fmt.Errorf("read the cluster configuration: %w", err)
	}
	layers := []Layer{{Level: LevelCluster, Data: cluster}}
	if s.Namespaces != nil {
		ns, err := s.Namespaces.NamespaceConfig(ctx, namespace)
		if err != nil {
			return Config{}, fmt.Errorf("read the configuration of namespace %s: %w", namespace, err)
		}
		layers = append(layers, Layer{Level: LevelNamespace, Data: ns})
	}
	pod := map[string]string{}
	for a, k := range annotationKeys {
		if v, ok := annotations[a]; ok {
			pod[k] = v
		}
	}
	layers = append(layers, Layer{Level: LevelAnnotation, Data: pod})
	return Resolve(layers...)
}
