package record

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// Kubernetes is a Recorder that keeps one ArtifactRecord per volume in the
// pod's namespace, owned by the TaskRun the record's Owner names (which
// Tekton's state confirmed) or else by the pod, then passes the record on
// to Next. Recording again updates the same object, so Record is
// idempotent. The client's scheme must know v1alpha1.
type Kubernetes struct {
	Client client.Client
	// Node is the node the plugin runs on, written in every record: the
	// admission policy of deploy/ lets a node plugin write only records of
	// its own node, and the controller merges a record only if its pod was
	// bound to that node. Required.
	Node string
	Next Recorder
	// Retained, when set, says whether the retention configuration of a
	// namespace removes outputs from the registry (config.Retention's
	// Enabled): a new record of an output to an OCI registry there is
	// created with v1alpha1.RetentionFinalizer, so that no deletion of
	// its run can pass unseen by the controller, even while the
	// controller is down. Default: never; the controller then adds the
	// finalizer when it first sees the record.
	Retained func(ctx context.Context, namespace string) bool
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
	k.spec(obj, r)
	if obj.Spec.Direction == v1alpha1.Output && obj.Spec.StoreBackend() == v1alpha1.BackendOCI && k.Retained != nil && k.Retained(ctx, obj.Namespace) {
		obj.Finalizers = []string{v1alpha1.RetentionFinalizer}
	}
	err := k.Client.Create(ctx, obj)
	if apierrors.IsAlreadyExists(err) {
		err = k.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj)
	}
	if err != nil {
		return fmt.Errorf("create ArtifactRecord %s/%s: %w", obj.Namespace, obj.Name, err)
	}
	obj.Status = v1alpha1.ArtifactRecordStatus{
		Provenance: obj.Status.Provenance, // the controller's, kept as it is (the admission policy insists)
		Phase:      r.Phase, Digest: r.Digest, LayerDigest: r.LayerDigest, Size: r.Size,
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

// spec fills a new record from r; the owner is the TaskRun when the pod
// has one, else the pod.
func (k *Kubernetes) spec(obj *v1alpha1.ArtifactRecord, r Record) {
	dir := v1alpha1.Output
	if r.Direction == volume.Input {
		dir = v1alpha1.Input
	}
	obj.Spec = v1alpha1.ArtifactRecordSpec{
		Direction: dir, Artifact: r.Artifact, Pod: v1alpha1.ObjectReference{Name: r.Pod.Name, UID: r.Pod.UID},
		NodeName: k.Node, BuildOutput: r.BuildOutput, Backend: r.Backend, Repository: r.Repository, Tag: r.Tag,
	}
	owner := metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: r.Pod.Name, UID: types.UID(r.Pod.UID)}
	if tr := r.Owner.TaskRun; tr != nil {
		obj.Spec.TaskRun = &v1alpha1.ObjectReference{Name: tr.Name, UID: tr.UID}
		owner = metav1.OwnerReference{APIVersion: "tekton.dev/v1", Kind: "TaskRun", Name: tr.Name, UID: types.UID(tr.UID)}
	}
	if pr := r.Owner.PipelineRun; pr != nil {
		obj.Spec.PipelineRun, obj.Spec.PipelineRunUID, obj.Spec.PipelineTask = pr.Name, pr.UID, r.Owner.PipelineTask
	}
	obj.OwnerReferences = []metav1.OwnerReference{owner}
}
