// Package cluster is the node plugin's read-only view of the Kubernetes
// API: informer caches of the pods on its node, of the namespaces'
// labelled artifact-storage ConfigMaps and of ArtifactRecords, so that a
// NodePublishVolume reads memory rather than the API server. It watches
// nothing else: not every ConfigMap, not the pods of other nodes.
package cluster

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
)

// taskRunUIDIndex indexes ArtifactRecords by spec.taskRun.uid.
const taskRunUIDIndex = "spec.taskRun.uid"

// View reads pods, namespace configuration and records from informer
// caches, falling back to the API server for a pod the cache has not seen
// yet. Start it, and wait for Synced, before use. It is safe for
// concurrent use.
type View struct {
	cache ctrlcache.Cache
	live  client.Reader
}

var _ config.NamespaceLister = (*View)(nil)

// New returns a view through cfg for node: it caches the pods scheduled
// there, the ConfigMaps named config.ConfigMapName with the label
// config.LabelConfigType=config.ConfigTypeArtifactStorage in any
// namespace, and every ArtifactRecord. The scheme must know core/v1 and
// v1alpha1. live reads what the caches do not hold.
func New(cfg *rest.Config, scheme *runtime.Scheme, node string, live client.Reader) (*View, error) {
	c, err := ctrlcache.New(cfg, ctrlcache.Options{
		Scheme:           scheme,
		DefaultTransform: ctrlcache.TransformStripManagedFields(),
		ByObject: map[client.Object]ctrlcache.ByObject{
			&corev1.Pod{}: {Field: fields.OneTermEqualSelector("spec.nodeName", node)},
			&corev1.ConfigMap{}: {
				Label: labels.SelectorFromSet(labels.Set{config.LabelConfigType: config.ConfigTypeArtifactStorage}),
				Field: fields.OneTermEqualSelector("metadata.name", config.ConfigMapName),
			},
		},
		ReaderFailOnMissingInformer: true,
	})
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := c.IndexField(ctx, &v1alpha1.ArtifactRecord{}, taskRunUIDIndex, func(o client.Object) []string {
		if tr := o.(*v1alpha1.ArtifactRecord).Spec.TaskRun; tr != nil && tr.UID != "" {
			return []string{tr.UID}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for _, o := range []client.Object{&corev1.Pod{}, &corev1.ConfigMap{}} {
		if _, err := c.GetInformer(ctx, o); err != nil {
			return nil, err
		}
	}
	return &View{cache: c, live: live}, nil
}

// Start runs the informers until ctx is done.
func (v *View) Start(ctx context.Context) error { return v.cache.Start(ctx) }

// Synced waits until every cache holds the API server's state, and
// reports false if ctx ended first.
func (v *View) Synced(ctx context.Context) bool { return v.cache.WaitForCacheSync(ctx) }

// synced waits for the caches, which answer nothing before they are
// started and synced.
func (v *View) synced(ctx context.Context) error {
	if v.cache.WaitForCacheSync(ctx) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("cluster caches not synced: %w", err)
	}
	return errors.New("cluster caches stopped")
}

// Pod returns a pod from the cache, or from the API server when the cache
// has not seen it yet (kubelet may call before the watch delivers it).
func (v *View) Pod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	if err := v.synced(ctx); err != nil {
		return nil, err
	}
	pod := &corev1.Pod{}
	key := client.ObjectKey{Namespace: namespace, Name: name}
	err := v.cache.Get(ctx, key, pod)
	if apierrors.IsNotFound(err) {
		err = v.live.Get(ctx, key, pod)
	}
	if err != nil {
		return nil, err
	}
	return pod, nil
}

// NamespaceConfig implements config.NamespaceLister: the data of the
// namespace's labelled config-artifact-storage ConfigMap, nil without one.
func (v *View) NamespaceConfig(ctx context.Context, namespace string) (map[string]string, error) {
	if err := v.synced(ctx); err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{}
	err := v.cache.Get(ctx, client.ObjectKey{Namespace: namespace, Name: config.ConfigMapName}, cm)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return cm.Data, nil
}

// Outputs returns the Output records of a TaskRun, by UID, that name
// artifact.
func (v *View) Outputs(ctx context.Context, namespace, taskRunUID, artifact string) ([]v1alpha1.ArtifactRecord, error) {
	if err := v.synced(ctx); err != nil {
		return nil, err
	}
	list := &v1alpha1.ArtifactRecordList{}
	if err := v.cache.List(ctx, list, client.InNamespace(namespace), client.MatchingFields{taskRunUIDIndex: taskRunUID}); err != nil {
		return nil, err
	}
	var out []v1alpha1.ArtifactRecord
	for _, r := range list.Items {
		if r.Spec.Direction == v1alpha1.Output && r.Spec.Artifact == artifact {
			out = append(out, r)
		}
	}
	return out, nil
}
