package record

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	kevents "k8s.io/client-go/tools/record"

	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// Event reasons.
const (
	ReasonPushed     = "ArtifactPushed"
	ReasonPushFailed = "ArtifactPushFailed"
	// ReasonInvalidConfig: a level of the configuration sets an invalid
	// value; the message names the level, the key and the reason.
	ReasonInvalidConfig = "InvalidArtifactConfig"
	// ReasonInputFailed: a from: input cannot be resolved, and will not be
	// without a change.
	ReasonInputFailed = "ArtifactInputFailed"
	// ReasonIdentityRefused: the pod's labels or owner claim a TaskRun
	// (or its TaskRun a PipelineRun) that Tekton's state says it is not
	// part of; the pod's artifacts are recorded as a plain pod's.
	ReasonIdentityRefused = "ArtifactIdentityRefused"
	// ReasonLimitExceeded: a volume hit one of the driver's bounds; the
	// message names the bound and how to raise it.
	ReasonLimitExceeded = "ArtifactLimitExceeded"
	// ReasonProvenanceRefused: an input's provenance is missing, not
	// signed by a trusted key, or names another producer than the policy
	// requires; the input is not mounted.
	ReasonProvenanceRefused = "ArtifactProvenanceRefused"
)

// Events is a Recorder that reports outputs on their pod as Kubernetes
// Events — Normal when pushed, Warning when given up on — and passes every
// record on to Next. Events are sent in the background, aggregated and
// rate-limited by client-go's broadcaster: Record never blocks on the API
// server and its result is Next's.
type Events struct {
	recorder    kevents.EventRecorder
	broadcaster kevents.EventBroadcaster
	next        Recorder
}

// NewEvents returns an Events recorder sending through client as component
// on node. Call Shutdown when done.
func NewEvents(client kubernetes.Interface, component, node string, next Recorder) *Events {
	b := kevents.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	return &Events{
		recorder:    b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: component, Host: node}),
		broadcaster: b,
		next:        next,
	}
}

// Record implements Recorder.
func (e *Events) Record(ctx context.Context, r Record) error {
	if r.Direction == volume.Output && (r.Phase == Pushed || r.Phase == Failed) {
		if r.Phase == Pushed {
			e.recorder.Eventf(podRef(r.Pod), corev1.EventTypeNormal, ReasonPushed, "Output %q pushed to %s", r.Artifact, r.Ref())
		} else {
			e.Warn(r.Pod, ReasonPushFailed, fmt.Sprintf("Output %q could not be pushed to %s; its data stays on the node: %s", r.Artifact, r.Repository, r.Message))
		}
	}
	return e.next.Record(ctx, r)
}

// Warn reports a Warning Event on pod, in the background like Record.
func (e *Events) Warn(pod volume.Pod, reason, message string) {
	e.recorder.Event(podRef(pod), corev1.EventTypeWarning, reason, message)
}

func podRef(p volume.Pod) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: types.UID(p.UID)}
}

// Shutdown stops sending events.
func (e *Events) Shutdown() { e.broadcaster.Shutdown() }
