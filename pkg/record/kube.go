package record

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// Kubernetes is a Recorder that keeps one ArtifactRecord per volume in the
// pod's namespace, owned by the pod's TaskRun (from Tekton's labels) or else
// by the pod, then passes the record on to Next. Recording again updates
// the same object, so Record is idempotent. The client's scheme must know
// v1alpha1.
type Kubernetes struct {
	Client client.Client
	// Pods reads the pod of a new record (its labels name the TaskRun).
	// Default: Client.
	Pods PodGetter
	Next Recorder
}

// PodGetter reads a pod (cluster.View, from its informer cache).
type PodGetter interface {
	Pod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
}

var _ Recorder = (*Kubernetes)(nil)

// RecordName is the ArtifactRecord name for a volume: the pod name, the
// direction and the artifact, with a hash of the volume id so that names
// stay unique and within 253 characters.
func RecordName(r Record) string {
	sum := sha256.Sum256([]byte(r.VolumeID))
	base := fmt.Sprintf("%s.%s.%s", r.Pod.Name, strings.ToLower(string(r.Direction)), r.Artifact)
	if len(base) > 240 {
		base = base[:240]
	}
	return base + "-" + hex.EncodeToString(sum[:])[:10]
}

// Record implements Recorder. A new record costs two requests (create,
// then status), an update three.
func (k *Kubernetes) Record(ctx context.Context, r Record) error {
	obj := &v1alpha1.ArtifactRecord{ObjectMeta: metav1.ObjectMeta{Name: RecordName(r), Namespace: r.Pod.Namespace}}
	if err := k.spec(ctx, obj, r); err != nil {
		return err
	}
	err := k.Client.Create(ctx, obj)
	if apierrors.IsAlreadyExists(err) {
		err = k.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj)
	}
	if err != nil {
		return fmt.Errorf("create ArtifactRecord %s/%s: %w", obj.Namespace, obj.Name, err)
	}
	obj.Status = v1alpha1.ArtifactRecordStatus{
		Phase: r.Phase, Digest: r.Digest, LayerDigest: r.LayerDigest, Size: r.Size,
		MediaType: r.MediaType, Location: r.Location, Message: r.Message, LastUpdateTime: metav1.NewTime(r.Time),
	}
	if err := k.Client.Status().Update(ctx, obj); err != nil {
		return fmt.Errorf("update ArtifactRecord %s/%s status: %w", obj.Namespace, obj.Name, err)
	}
	if k.Next == nil {
		return nil
	}
	return k.Next.Record(ctx, r)
}

// spec fills a new record from r and the pod's labels; the owner is the
// TaskRun when the pod has one, else the pod.
func (k *Kubernetes) spec(ctx context.Context, obj *v1alpha1.ArtifactRecord, r Record) error {
	dir := v1alpha1.Output
	if r.Direction == volume.Input {
		dir = v1alpha1.Input
	}
	obj.Spec = v1alpha1.ArtifactRecordSpec{
		Direction: dir, Artifact: r.Artifact, Pod: v1alpha1.ObjectReference{Name: r.Pod.Name, UID: r.Pod.UID},
		BuildOutput: r.BuildOutput, Backend: r.Backend, Repository: r.Repository, Tag: r.Tag,
	}
	pod, err := k.pod(ctx, r.Pod)
	if err != nil {
		return fmt.Errorf("get pod %s/%s: %w", r.Pod.Namespace, r.Pod.Name, err)
	}
	owner := metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: r.Pod.Name, UID: types.UID(r.Pod.UID)}
	if tr, uid := pod.Labels[volume.LabelTaskRun], pod.Labels[volume.LabelTaskRunUID]; tr != "" && uid != "" {
		obj.Spec.TaskRun = &v1alpha1.ObjectReference{Name: tr, UID: uid}
		owner = metav1.OwnerReference{APIVersion: "tekton.dev/v1", Kind: "TaskRun", Name: tr, UID: types.UID(uid)}
	}
	obj.Spec.PipelineRun, obj.Spec.PipelineTask = pod.Labels[volume.LabelPipelineRun], pod.Labels[volume.LabelPipelineTask]
	obj.OwnerReferences = []metav1.OwnerReference{owner}
	return nil
}

// pod returns the pod of a record, empty when it is gone or replaced.
func (k *Kubernetes) pod(ctx context.Context, p volume.Pod) (*corev1.Pod, error) {
	var (
		pod = &corev1.Pod{}
		err error
	)
	if k.Pods != nil {
		pod, err = k.Pods.Pod(ctx, p.Namespace, p.Name)
	} else {
		err = k.Client.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: p.Name}, pod)
	}
	switch {
	case apierrors.IsNotFound(err):
		return &corev1.Pod{}, nil
	case err != nil:
		return nil, err
	case p.UID != "" && string(pod.UID) != p.UID:
		return &corev1.Pod{}, nil
	}
	return pod, nil
}
