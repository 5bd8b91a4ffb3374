// Package controller is the artifacts controller: it merges the
// ArtifactRecords the node plugin writes into their TaskRuns'
// status.artifacts (TEP-0147), so that Tekton, Chains and users see what
// each TaskRun consumed and produced. It only adds to that status, never
// removes, and re-adds its entries when another writer drops them. The
// same manager runs retention (pkg/retention), which removes outputs from
// registries where the namespace's configuration asks for it, and the
// credentials broker (pkg/broker).
package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/google/go-containerregistry/pkg/authn"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tektoncd/artifacts-csi-driver/internal/serve"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/broker"
	artifactconfig "github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/metrics"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/retention"
	"github.com/tektoncd/artifacts-csi-driver/pkg/signing"
	"github.com/tektoncd/artifacts-csi-driver/pkg/status"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
)

// taskRunNameField indexes ArtifactRecords by spec.taskRun.name.
const taskRunNameField = "spec.taskRun.name"

// The controller's API permissions (make generate writes them to
// deploy/rbac/controller): TaskRuns read and their status patched, records
// read, the pods of records read (to check their node), and the leader
// election Lease and its Events. The credentials broker reviews tokens,
// reads (GET only, never lists) the pods, ServiceAccounts, Secrets and
// configuration ConfigMaps of the pods it answers for, and keeps its
// certificate in the driver's namespace. Retention (pkg/retention)
// patches records (its finalizer) and deletes those whose output is due,
// reads namespaces (is one being deleted?), and the same ConfigMaps and
// Secrets (oci.credentialsSecret) with a GET, and posts Events on records.
// The attestor (provenance.go) reads PipelineRuns, patches the status of
// records, and keeps the signing key in a Secret of the driver's
// namespace and its public keys in a ConfigMap there.
//
// +kubebuilder:rbac:groups=tekton.dev,resources=taskruns,verbs=get;list;watch
// +kubebuilder:rbac:groups=tekton.dev,resources=taskruns/status,verbs=patch
// +kubebuilder:rbac:groups=artifacts.tekton.dev,resources=artifactrecords,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups=artifacts.tekton.dev,resources=artifactrecords/status,verbs=patch
// +kubebuilder:rbac:groups=tekton.dev,resources=pipelineruns,verbs=get
// +kubebuilder:rbac:groups="",resources=pods;serviceaccounts;secrets;configmaps;namespaces,verbs=get
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups="",namespace=artifacts-csi,resources=secrets,verbs=create
// +kubebuilder:rbac:groups="",namespace=artifacts-csi,resources=configmaps,verbs=create;update
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Reconciler merges the artifacts of a TaskRun's ArtifactRecords into its
// status.artifacts. Reconcile is idempotent (it patches only when
// something is missing) and safe for concurrent use on different TaskRuns;
// the controller never reconciles one TaskRun in two workers at once.
type Reconciler struct {
	// Client is the manager's: it lists ArtifactRecords from its cache, by
	// the field index SetupWithManager adds, and reads TaskRuns, which are
	// unstructured, from the API server, so that patches rarely conflict.
	Client client.Client
	// Pods reads the pods of records, to check the node they ran on; the
	// manager's API reader, so that no pod informer is started. Default
	// Client.
	Pods client.Reader
}

// SetupWithManager indexes ArtifactRecords by TaskRun name in mgr's cache
// and registers r as the controller of TaskRuns, triggered by every change
// of a TaskRun (only their metadata is cached) or of an ArtifactRecord
// naming one. Call it once per manager.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.ArtifactRecord{}, taskRunNameField, func(o client.Object) []string {
		if name := taskRunName(o); name != "" {
			return []string{name}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("index ArtifactRecords by %s: %w", taskRunNameField, err)
	}
	const name = "taskrun-artifacts"
	return ctrl.NewControllerManagedBy(mgr).Named(name).
		For(tekton.NewTaskRun(), builder.OnlyMetadata).
		Watches(&v1alpha1.ArtifactRecord{}, handler.EnqueueRequestsFromMapFunc(taskRunOf)).
		WithLogConstructor(logConstructor(mgr, name, "taskRun")).
		Complete(r)
}

// logConstructor gives a controller's reconciles the manager's logger
// with the controller's name and, under key, the object reconciled.
func logConstructor(mgr ctrl.Manager, name, key string) func(*reconcile.Request) klog.Logger {
	return func(req *reconcile.Request) klog.Logger {
		log := mgr.GetLogger().WithValues("controller", name)
		if req != nil {
			log = log.WithValues(key, klog.KRef(req.Namespace, req.Name))
		}
		return log
	}
}

// taskRunName is the name of the TaskRun an ArtifactRecord names, if any.
func taskRunName(o client.Object) string {
	if rec, ok := o.(*v1alpha1.ArtifactRecord); ok && rec.Spec.TaskRun != nil {
		return rec.Spec.TaskRun.Name
	}
	return ""
}

// taskRunOf maps an ArtifactRecord to the TaskRun it names, if any.
func taskRunOf(_ context.Context, o client.Object) []reconcile.Request {
	if name := taskRunName(o); name != "" {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
	}
	return nil
}

// Reconcile merges the artifacts of the records naming the TaskRun req, by
// name and UID, into its status.artifacts, and patches its status when
// that adds anything; a TaskRun without records is not even read. The
// patch carries the resourceVersion read, so a concurrent writer's change
// is never overwritten: a conflict is returned and the request retried.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := klog.FromContext(ctx)
	var list v1alpha1.ArtifactRecordList
	if err := r.Client.List(ctx, &list, client.InNamespace(req.Namespace), client.MatchingFields{taskRunNameField: req.Name}); err != nil {
		return ctrl.Result{}, fmt.Errorf("list ArtifactRecords of TaskRun %s: %w", req.NamespacedName, err)
	}
	if len(list.Items) == 0 {
		return ctrl.Result{}, nil
	}
	tr := tekton.NewTaskRun()
	if err := r.Client.Get(ctx, req.NamespacedName, tr); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get TaskRun %s: %w", req.NamespacedName, err)
	}
	var records []v1alpha1.ArtifactRecord
	pods := podLookup(ctx, r.podReader(), req.Namespace) // the records of a TaskRun share a pod or two
	for _, rec := range list.Items {
		ok, why, err := belongs(&rec, tr, pods)
		if err != nil {
			return ctrl.Result{}, err
		}
		if !ok {
			log.Info("Not merging an ArtifactRecord into the TaskRun", "record", rec.Name, "reason", why)
			continue
		}
		records = append(records, rec)
	}
	if len(records) == 0 {
		return ctrl.Result{}, nil
	}
	want, err := status.Desired(records)
	if err != nil {
		log.Error(err, "Leaving out invalid ArtifactRecords")
	}
	orig, changed := tr.DeepCopy(), false
	for field, ours := range map[string][]status.Artifact{"inputs": want.Inputs, "outputs": want.Outputs} {
		have, _, err := unstructured.NestedSlice(tr.Object, "status", "artifacts", field)
		merged, ch := status.Merge(have, ours)
		if err == nil && ch {
			err, changed = unstructured.SetNestedSlice(tr.Object, merged, "status", "artifacts", field), true
		}
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("TaskRun %s status.artifacts.%s: %w", req.NamespacedName, field, err)
		}
	}
	if !changed {
		log.V(4).Info("TaskRun artifacts up to date", "records", len(records))
		return ctrl.Result{}, nil
	}
	if err := r.Client.Status().Patch(ctx, tr, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return ctrl.Result{}, fmt.Errorf("patch status of TaskRun %s: %w", req.NamespacedName, err)
	}
	log.V(2).Info("Added artifacts to TaskRun status", "records", len(records), "inputs", len(want.Inputs), "outputs", len(want.Outputs))
	return ctrl.Result{}, nil
}

// belongs reports whether rec is an artifact of TaskRun tr, as Tekton
// and the API server say: it names tr by UID, its pod is one tr names as
// its own (status.podName, or a retry's), and that pod, by UID, is bound
// to the node whose plugin wrote the record (the admission policy let it
// write records of its own node only), unless the pod is gone: Tekton
// deletes the pods of cancelled and timed-out TaskRuns before their
// outputs are pushed, and the record's node must then do. pod reads a
// pod of the namespace, nil when it is gone.
func belongs(rec *v1alpha1.ArtifactRecord, tr *unstructured.Unstructured, pod func(name string) (*corev1.Pod, error)) (bool, string, error) {
	switch {
	case rec.Spec.TaskRun == nil || rec.Spec.TaskRun.UID != string(tr.GetUID()):
		return false, "it names another TaskRun of that name", nil
	case !slices.Contains(tekton.Pods(tr), rec.Spec.Pod.Name):
		return false, fmt.Sprintf("the TaskRun does not name pod %s as its own", rec.Spec.Pod.Name), nil
	case rec.Spec.NodeName == "":
		return false, "it names no node", nil
	}
	p, err := pod(rec.Spec.Pod.Name)
	switch {
	case err != nil:
		return false, "", err
	case p == nil:
		// Tekton deletes the pod of a cancelled or timed-out TaskRun, and
		// its outputs are pushed after that: the record's node, which
		// admission checked against its writer, is all there is left.
		return true, "", nil
	case string(p.UID) != rec.Spec.Pod.UID:
		return false, fmt.Sprintf("pod %s is another pod now (uid %s)", rec.Spec.Pod.Name, p.UID), nil
	case p.Spec.NodeName != rec.Spec.NodeName:
		return false, fmt.Sprintf("pod %s runs on node %q, not on %q, whose plugin wrote the record", rec.Spec.Pod.Name, p.Spec.NodeName, rec.Spec.NodeName), nil
	}
	return true, "", nil
}

// podReader is Pods, else Client.
func (r *Reconciler) podReader() client.Reader {
	if r.Pods != nil {
		return r.Pods
	}
	return r.Client
}

// podLookup returns a reader of namespace's pods, through reader, that
// reads each one once (a GET; nil when the pod is gone).
func podLookup(ctx context.Context, reader client.Reader, namespace string) func(string) (*corev1.Pod, error) {
	seen := map[string]*corev1.Pod{}
	return func(name string) (*corev1.Pod, error) {
		if p, ok := seen[name]; ok {
			return p, nil
		}
		p := &corev1.Pod{}
		err := reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, p)
		switch {
		case apierrors.IsNotFound(err):
			p = nil
		case err != nil:
			return nil, fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
		}
		seen[name] = p
		return p, nil
	}
}

// NewManager returns a manager for cfg configured by o (which Validate
// accepted), with health checks and the Reconciler set up; start it with
// its Start method. ctx gives the logger. adjust, if any, changes the
// manager options last, e.g. shorter leases in tests.
func NewManager(ctx context.Context, cfg *rest.Config, o *Options, adjust ...func(*manager.Options)) (manager.Manager, error) {
	scheme := runtime.NewScheme()
	if err := errors.Join(clientgoscheme.AddToScheme(scheme), v1alpha1.AddToScheme(scheme)); err != nil {
		return nil, err
	}
	mo := manager.Options{
		Scheme:                        scheme,
		Logger:                        klog.FromContext(ctx),
		Metrics:                       metricsserver.Options{BindAddress: o.MetricsBindAddress},
		HealthProbeBindAddress:        o.HealthProbeBindAddress,
		LeaderElection:                o.LeaderElect,
		LeaderElectionNamespace:       o.LeaderElectionNamespace,
		LeaderElectionID:              o.LeaderElectionID,
		LeaderElectionReleaseOnCancel: true, // Run returns, and the process exits, once Start does.
		Controller:                    config.Controller{MaxConcurrentReconciles: o.Concurrency},
	}
	for _, f := range adjust {
		f(&mo)
	}
	mgr, err := ctrl.NewManager(cfg, mo)
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	if err := errors.Join(mgr.AddHealthzCheck("ping", healthz.Ping), mgr.AddReadyzCheck("ping", healthz.Ping)); err != nil {
		return nil, err
	}
	if err := (&Reconciler{Client: mgr.GetClient(), Pods: mgr.GetAPIReader()}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up controller: %w", err)
	}
	retentionMetrics, err := metrics.NewRetention(ctrlmetrics.Registry)
	if err != nil {
		return nil, err
	}
	cfgSource := &retention.APIConfig{Reader: mgr.GetAPIReader(), Cluster: client.ObjectKey{Namespace: o.Namespace, Name: artifactconfig.ConfigMapName}}
	// No credentials of the controller's own: only a namespace's.
	registries := &retention.SecretRegistries{Reader: mgr.GetAPIReader(), Client: oci.New(oci.Options{Keychain: authn.NewMultiKeychain(), UserAgent: cfg.UserAgent})}
	ret := &retention.Reconciler{
		Options: o.Retention, Client: mgr.GetClient(), Reader: mgr.GetAPIReader(),
		Config: cfgSource, Registries: registries,
		Events:  mgr.GetEventRecorderFor("artifacts-controller"), //nolint:staticcheck // core/v1 Events, which the role grants
		Metrics: retentionMetrics,
	}
	if err := ret.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up retention: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if o.SignProvenance {
		signer, trusted, err := signing.EnsureKey(ctx, kube, o.Namespace)
		if err != nil {
			return nil, err
		}
		att := &Attestor{
			Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Config: cfgSource, Registries: registries,
			Signer: signer, Keys: trusted, Version: o.Version,
			Events: mgr.GetEventRecorderFor("artifacts-controller"), //nolint:staticcheck // core/v1 Events, which the role grants
		}
		if err := att.SetupWithManager(mgr, o.Concurrency); err != nil {
			return nil, fmt.Errorf("set up provenance: %w", err)
		}
	}
	if o.BrokerAddress != "0" {
		cert, err := broker.EnsureCertificate(ctx, kube, o.Namespace, o.brokerHosts())
		if err != nil {
			return nil, err
		}
		srv := &broker.Server{
			Tokens: kube.AuthenticationV1().TokenReviews(), Reader: mgr.GetAPIReader(),
			NodeUser:      "system:serviceaccount:" + o.Namespace + ":" + o.NodeServiceAccount,
			ClusterConfig: client.ObjectKey{Namespace: o.Namespace, Name: artifactconfig.ConfigMapName},
		}
		// Listening now, not when the manager starts: once the controller
		// answers its probes, the broker accepts connections.
		lis, err := net.Listen("tcp", o.BrokerAddress)
		if err != nil {
			return nil, fmt.Errorf("broker: listen on %s: %w", o.BrokerAddress, err)
		}
		lis = tls.NewListener(lis, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
		if err := mgr.Add(everyReplica(func(ctx context.Context) error { return serve.Listener(ctx, lis, srv) })); err != nil {
			lis.Close()
			return nil, err
		}
	}
	return mgr, nil
}

// everyReplica is a runnable that runs on every replica, leader or not.
type everyReplica func(ctx context.Context) error

func (f everyReplica) Start(ctx context.Context) error { return f(ctx) }
func (everyReplica) NeedLeaderElection() bool          { return false }

// Run runs the controller configured by o (which Validate accepted) until
// ctx is done, logging with ctx's logger; version goes in the user agent
// and the log. With leader election, only the leader reconciles and it
// releases its Lease on the way out.
func Run(ctx context.Context, o *Options, version string) error {
	log := klog.FromContext(ctx)
	ctrl.SetLogger(log)
	cfg, err := o.restConfig(version)
	if err != nil {
		return err
	}
	o.Version = version
	mgr, err := NewManager(ctx, cfg, o)
	if err != nil {
		return err
	}
	log.Info("Starting controller", "version", version, "leaderElect", o.LeaderElect, "concurrency", o.Concurrency)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run controller: %w", err)
	}
	return nil
}
