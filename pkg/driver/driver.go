// Package driver implements the CSI services of the node plugin: Identity,
// Node (ephemeral input and output volumes) and an empty Controller.
//
// A NodePublishVolume of an input resolves the artifact in the node's input
// cache and bind-mounts it read-only; one of an output creates a private
// directory and bind-mounts it read-write. NodeUnpublishVolume unmounts
// and, for an output, hands the directory to the uploader. Calls on one
// volume are serialised: a second call while one is in flight gets
// ABORTED, as the CSI spec recommends, and kubelet retries it.
package driver

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"

	artifactsv1alpha1 "github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/cache"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/metrics"
	"github.com/tektoncd/artifacts-csi-driver/pkg/mounter"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/store"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
	"github.com/tektoncd/artifacts-csi-driver/pkg/trust"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// DriverName is the CSI driver name in CSIDriver objects and pod specs.
const DriverName = "artifacts.csi.tekton.dev"

// ConfigSource resolves the configuration of a pod's volumes from its
// namespace and annotations (config.Source).
type ConfigSource interface {
	Config(ctx context.Context, namespace string, annotations map[string]string) (config.Config, error)
}

// Cluster is what the driver reads from the API server (cluster.View).
type Cluster interface {
	// Pod returns a pod, or a NotFound error.
	Pod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	// Outputs returns the Output records of a TaskRun (by UID) that name
	// artifact.
	Outputs(ctx context.Context, namespace, taskRunUID, artifact string) ([]artifactsv1alpha1.ArtifactRecord, error)
}

// Tekton says what a pod runs for, from what Tekton's controller wrote
// (tekton.Resolver).
type Tekton interface {
	// Identify says which TaskRun and PipelineRun pod runs for.
	Identify(ctx context.Context, pod *corev1.Pod) (tekton.Result, error)
	// Producer reports the TaskRuns run lists for a pipeline task: their
	// current pods, whether they finished, and when.
	Producer(ctx context.Context, namespace string, run tekton.Ref, task string) (tekton.Producer, error)
}

// EventSink reports Warnings on pods (record.Events).
type EventSink interface {
	Warn(pod volume.Pod, reason, message string)
}

// InputCache is the node's cache of extracted inputs (cache.Cache).
type InputCache interface {
	// Has reports whether key is cached.
	Has(key string) bool
	// AcquireUsage returns the path of key's entry, filling it with fill
	// on a miss (fill reports the disk usage of what it wrote), and pins
	// it until Release.
	AcquireUsage(ctx context.Context, key string, fill cache.FillUsageFunc) (path string, hit bool, err error)
	// Pin pins key's entry if it is cached, and reports whether it is.
	Pin(key string) bool
	// Release unpins key's entry.
	Release(key string)
	// Path returns where key's entry is.
	Path(key string) string
}

// OutputManager keeps the node's output volumes (outputs.Manager).
type OutputManager interface {
	// Lookup finds a published output volume (see outputs.Manager.Lookup).
	Lookup(ctx context.Context, id, fingerprint string) (dir string, found bool, err error)
	// Publish creates an output volume and returns its directory.
	Publish(ctx context.Context, v outputs.Volume, creds credentials.Snapshot, gid int) (string, error)
	// Has reports whether id is an output volume in any state.
	Has(id string) bool
	// Seal hands an unmounted output to the uploader.
	Seal(ctx context.Context, id string) (found bool, err error)
}

// CredentialSource gives the registry credentials of a pod bound to this
// node: oci.credentialsSecret and its ServiceAccount's imagePullSecrets
// (broker.Client).
type CredentialSource interface {
	Credentials(ctx context.Context, pod volume.Pod) (credentials.Snapshot, error)
}

// Deps are the driver's collaborators. Mounter, Stores, Cache, Outputs
// and Config are required. Without Credentials, credentials come from
// nodePublishSecretRef only; without Cluster and Tekton (a plugin with no
// API client) every pod is a plain pod and from: inputs fail.
type Deps struct {
	Mounter mounter.Interface
	// Stores opens the store of an input with the pod's identity.
	Stores  store.Opener
	Cache   InputCache
	Outputs OutputManager
	Config  ConfigSource
	// Recorder defaults to record.Log.
	Recorder record.Recorder
	// Metrics defaults to none.
	Metrics *metrics.Metrics
	// Credentials adds to a volume's nodePublishSecretRef the credentials
	// the cluster gives its pod.
	Credentials CredentialSource
	// Cluster gives pods and the records of from: producers.
	Cluster Cluster
	// Tekton identifies pods and from: producers. Default: every pod is
	// plain.
	Tekton Tekton
	// Events reports invalid configuration and failed from: inputs on the
	// pod. Default none (kubelet still reports the gRPC error).
	Events EventSink
	// Trust verifies the provenance of inputs, where the configuration or
	// the volume asks for it. Default: a trust.Verifier with the keys of
	// Options.TrustedKeys.
	Trust *trust.Verifier
}

// Driver serves the CSI Identity, Node and Controller services. It is safe
// for concurrent use.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer
	csi.UnimplementedControllerServer

	o       *Options
	version string
	deps    Deps
	ready   atomic.Bool

	inflight sync.Map // volume id → struct{}: a call is in progress
	grants   *grants
	fills    chan struct{} // a slot per cache fill running
	chunks   *localChunks  // the chunks of chunked artifacts in the cache

	mu     sync.Mutex
	inputs map[string]*inputVolume
}

// New returns a driver for validated options o. It loads the input volume
// records from o.StateDir and pins their cache entries, so it must run
// after deps.Cache and deps.Outputs were opened and before serving.
func New(ctx context.Context, o *Options, version string, deps Deps) (*Driver, error) {
	if deps.Mounter == nil || deps.Stores == nil || deps.Cache == nil || deps.Outputs == nil || deps.Config == nil {
		return nil, errors.New("driver: Mounter, Stores, Cache, Outputs and Config are required")
	}
	if deps.Recorder == nil {
		deps.Recorder = record.Log{}
	}
	if deps.Trust == nil {
		deps.Trust = &trust.Verifier{Keys: &trust.KeyFile{Path: o.TrustedKeys}}
	}
	d := &Driver{o: o, version: version, deps: deps, inputs: map[string]*inputVolume{}, grants: newGrants(o.CacheGrantTTL),
		fills: make(chan struct{}, max(o.FillWorkers, 1)), chunks: newLocalChunks(deps.Cache)}
	if err := d.loadInputs(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// SetReady makes Probe report the plugin ready.
func (d *Driver) SetReady(ready bool) { d.ready.Store(ready) }

// Register adds the driver's services to a gRPC server.
func (d *Driver) Register(s grpc.ServiceRegistrar) {
	csi.RegisterIdentityServer(s, d)
	csi.RegisterNodeServer(s, d)
	csi.RegisterControllerServer(s, d)
}

// lock marks a call on volume id in flight; it returns false when one is
// already.
func (d *Driver) lock(id string) (unlock func(), ok bool) {
	if _, busy := d.inflight.LoadOrStore(id, struct{}{}); busy {
		return nil, false
	}
	return func() { d.inflight.Delete(id) }, true
}
