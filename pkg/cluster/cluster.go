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
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// pipelineRunIndex indexes ArtifactRecords by spec.pipelineRun.
const pipelineRunIndex = "spec.pipelineRun"

// TaskRunList is the kind the view lists producers' TaskRuns as; Tekton's
// Go types are not needed.
var TaskRunList = schema.GroupVersionKind{Group: "tekton.dev", Version: "v1", Kind: "TaskRunList"}

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
	if err := c.IndexField(ctx, &v1alpha1.ArtifactRecord{}, pipelineRunIndex, func(o client.Object) []string {
		if run := o.(*v1alpha1.ArtifactRecord).Spec.PipelineRun; run != "" {
			return []string{run}
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

// Outputs returns the Output records of a PipelineRun's pipeline task that
// name artifact.
func (v *View) Outputs(ctx context.Context, namespace, pipelineRun, pipelineTask, artifact string) ([]v1alpha1.ArtifactRecord, error) {
	if err := v.synced(ctx); err != nil {
		return nil, err
	}
	list := &v1alpha1.ArtifactRecordList{}
	if err := v.cache.List(ctx, list, client.InNamespace(namespace), client.MatchingFields{pipelineRunIndex: pipelineRun}); err != nil {
		return nil, err
	}
	var out []v1alpha1.ArtifactRecord
	for _, r := range list.Items {
		if r.Spec.Direction == v1alpha1.Output && r.Spec.PipelineTask == pipelineTask && r.Spec.Artifact == artifact {
			out = append(out, r)
		}
	}
	return out, nil
}

// Producer is what Tekton says of the TaskRuns of a PipelineRun's
// pipeline task.
type Producer struct {
	// TaskRuns is how many there are: none when the pods were labelled by
	// something other than Tekton, or Tekton's CRDs are not installed.
	TaskRuns int
	// Pods are the pods the TaskRuns name in status.podName: each one's
	// current attempt. A retried TaskRun's earlier pods are not here.
	Pods []string
	// Done: every TaskRun has finished (Succeeded is True or False).
	Done bool
	// FinishedAt is when the last of them finished, when Done.
	FinishedAt time.Time
}

// Producer reads the TaskRuns of a PipelineRun's pipeline task from the
// API server (not a cache: a retry's new pod must not be missed). It
// answers a zero Producer when Tekton's CRDs are not installed.
func (v *View) Producer(ctx context.Context, namespace, pipelineRun, pipelineTask string) (Producer, error) {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(TaskRunList)
	err := v.live.List(ctx, list, client.InNamespace(namespace), client.MatchingLabels{
		volume.LabelPipelineRun: pipelineRun, volume.LabelPipelineTask: pipelineTask})
	if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
		return Producer{}, nil
	}
	if err != nil {
		return Producer{}, fmt.Errorf("list TaskRuns of %s: %w", pipelineRun, err)
	}
	p := Producer{TaskRuns: len(list.Items), Done: len(list.Items) > 0}
	for _, tr := range list.Items {
		if pod, _, _ := unstructured.NestedString(tr.Object, "status", "podName"); pod != "" {
			p.Pods = append(p.Pods, pod)
		}
		done, at := taskRunDone(tr.Object)
		p.Done = p.Done && done
		if at.After(p.FinishedAt) {
			p.FinishedAt = at
		}
	}
	if !p.Done {
		p.FinishedAt = time.Time{}
	}
	return p, nil
}

// taskRunDone reads the Succeeded condition of a tekton.dev/v1 TaskRun:
// done once it is True or False, at its completionTime (else the
// condition's transition time).
func taskRunDone(obj map[string]any) (bool, time.Time) {
	conditions, _, _ := unstructured.NestedSlice(obj, "status", "conditions")
	for _, c := range conditions {
		m, _ := c.(map[string]any)
		if m["type"] != "Succeeded" || (m["status"] != "True" && m["status"] != "False") {
			continue
		}
		stamp, _, _ := unstructured.NestedString(obj, "status", "completionTime")
		if stamp == "" {
			stamp, _ = m["lastTransitionTime"].(string)
		}
		var t metav1.Time
		if err := t.UnmarshalQueryParameter(stamp); err != nil {
			return true, time.Time{}
		}
		return true, t.Time
	}
	return false, time.Time{}
}
