// Package record defines how the node plugin reports what a volume consumed
// or produced. The node plugin calls a Recorder; the Kubernetes
// implementation (ArtifactRecord resources and Events) plugs in behind the
// same interface, and Log serves clusters without it.
package record

import (
	"context"
	"time"

	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/store"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// Phase of an artifact record: the ArtifactRecord API's, so that every
// recorder speaks the same phases.
type Phase = v1alpha1.Phase

// Phases. An output is Pending from its publish until it is Pushed, or Failed
// when it could not be pushed (its data then stays on the node). An input
// is recorded Consumed when its volume is published.
const (
	Pending  = v1alpha1.Pending
	Pushed   = v1alpha1.Pushed
	Failed   = v1alpha1.Failed
	Consumed = v1alpha1.Consumed
)

// Record is what is known about one artifact of one volume.
type Record struct {
	// VolumeID is kubelet's volume id; with Direction it identifies the
	// record, so recording it again updates it.
	VolumeID  string
	Direction volume.Direction
	Artifact  string
	Pod       volume.Pod
	// Owner is what the pod runs for, as Tekton's state confirmed it when
	// the volume was published; zero for a plain pod.
	Owner tekton.Identity
	// Backend is store.OCI or the storage provider's name.
	Backend string
	// Repository, Tag and Digest (the manifest digest) locate the artifact;
	// for a Konflux blob input, Digest is the blob digest.
	Repository, Tag, Digest string
	// Location is where a storage provider says the artifact is.
	Location string
	// LayerDigest, Size and MediaType describe its content.
	LayerDigest string
	Size        int64
	MediaType   string
	BuildOutput bool
	Phase       Phase
	// Message explains a Failed phase.
	Message string
	Time    time.Time
}

// Ref names the artifact for people, as store.Ref does.
func (r Record) Ref() string {
	return store.Ref{Backend: r.Backend, Repository: r.Repository, Digest: r.Digest}.String()
}

// Recorder stores records. Record must be idempotent (the same record may
// be reported again after a crash) and safe for concurrent use; an error
// makes the caller retry later.
type Recorder interface {
	Record(ctx context.Context, r Record) error
}

// Log is a Recorder that writes each record to the log: Failed at level 0
// as an error, the others at level 2.
type Log struct{}

var _ Recorder = Log{}

// Record implements Recorder.
func (Log) Record(ctx context.Context, r Record) error {
	logger := klog.FromContext(ctx)
	kv := []any{"volumeID", r.VolumeID, "direction", r.Direction, "artifact", r.Artifact,
		"pod", klog.KRef(r.Pod.Namespace, r.Pod.Name), "phase", r.Phase}
	if r.Digest != "" {
		kv = append(kv, "ref", r.Ref())
	}
	if r.Location != "" {
		kv = append(kv, "location", r.Location)
	}
	if r.Size > 0 {
		kv = append(kv, "size", r.Size)
	}
	if r.Phase == Failed {
		logger.Error(nil, "Artifact record", append(kv, "message", r.Message)...)
		return nil
	}
	logger.V(2).Info("Artifact record", kv...)
	return nil
}
