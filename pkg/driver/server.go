package driver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/tektoncd/artifacts-csi-driver/internal/serve"
	"github.com/tektoncd/artifacts-csi-driver/internal/unixsock"
	artifactsv1alpha1 "github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/cache"
	"github.com/tektoncd/artifacts-csi-driver/pkg/cluster"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/digestcache"
	"github.com/tektoncd/artifacts-csi-driver/pkg/metrics"
	"github.com/tektoncd/artifacts-csi-driver/pkg/mounter"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/registration"
)

// shutdownGrace bounds how long in-flight calls may run after a stop.
const shutdownGrace = 10 * time.Second

// The node plugin's API permissions (make generate writes them to
// deploy/rbac/node): its pods, labelled ConfigMaps and records through
// informers; Secrets and ServiceAccounts of the pods' namespaces for
// credentials; TaskRuns to tell a finished producer; records and Events
// written.
//
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=secrets;serviceaccounts,verbs=get
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch;update
// +kubebuilder:rbac:groups=artifacts.tekton.dev,resources=artifactrecords,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=artifacts.tekton.dev,resources=artifactrecords/status,verbs=update
// +kubebuilder:rbac:groups=tekton.dev,resources=taskruns,verbs=list

// Run assembles the node plugin from validated options and serves until
// ctx is cancelled: it resumes every journal, then serves CSI on the
// endpoint, uploads outputs, serves /healthz and /metrics, and registers
// with kubelet. It returns nil after a clean stop.
func Run(ctx context.Context, o *Options, version string) error {
	logger := klog.FromContext(ctx)
	c, err := cache.Open(ctx, filepath.Join(o.StateDir, "cache"), o.CacheBytes)
	if err != nil {
		return fmt.Errorf("open input cache: %w", err)
	}
	dc, err := digestcache.Open(filepath.Join(o.StateDir, "digests"))
	if err != nil {
		return fmt.Errorf("open digest cache: %w", err)
	}
	// Pods' own credentials only: never the node's. Inputs are readable by
	// every uid of every pod that mounts them (docs/design.md, "Inputs").
	reg := oci.New(oci.Options{Keychain: authn.NewMultiKeychain(), UserAgent: "artifacts-csi/" + version, DigestCache: dc,
		Modes: archive.ReadOnlyModes})
	var (
		rec    record.Recorder = record.Log{}
		kube   kubernetes.Interface
		view   *cluster.View
		events *record.Events
		source = config.Source{Cluster: config.Dir(o.ConfigDir)}
	)
	restCfg, err := o.restConfig()
	if err != nil {
		return err
	}
	if restCfg != nil {
		ctrllog.SetLogger(logger) // the informers of the cluster view log through it
		var live client.Client
		if kube, live, view, err = apiClients(restCfg, o.NodeID); err != nil {
			return err
		}
		events = record.NewEvents(kube, "artifacts-csi-node", o.NodeID, rec)
		defer events.Shutdown()
		rec = &record.Kubernetes{Client: live, Pods: view, Next: events}
		source.Namespaces = view
	}
	providers := provider.NewClient(provider.Options{Dir: o.ProvidersDir, Modes: archive.ReadOnlyModes})
	defer providers.Close()
	var outs *outputs.Manager
	m := metrics.New(c.Stats, func() metrics.QueueStats { return outs.Stats() })
	outs, err = outputs.Open(ctx, outputs.Options{
		Dir: o.StateDir, Pusher: outputs.OCIPusher{Client: reg}, Providers: providers, Recorder: rec,
		Deadline: o.UploadDeadline, Workers: o.UploadWorkers, Metrics: m,
	})
	if err != nil {
		return fmt.Errorf("open output journal: %w", err)
	}
	deps := Deps{
		Mounter: mounter.New(), Registry: OCIRegistry{Client: reg}, Cache: c, Outputs: outs,
		Providers: providers, Config: source, Recorder: rec, Metrics: m,
	}
	if view != nil {
		deps.Kube, deps.Cluster, deps.Events = kube, view, events
	}
	d, err := New(ctx, o, version, deps)
	if err != nil {
		return err
	}

	socket, _ := o.SocketPath()
	// kubelet (root) is the only client.
	lis, err := unixsock.Listen(socket, 0o600)
	if err != nil {
		return fmt.Errorf("CSI endpoint: %w", err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(LogRPC))
	d.Register(srv)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serve.GRPC(gctx, srv, lis, shutdownGrace) })
	g.Go(func() error {
		<-gctx.Done()
		d.SetReady(false)
		return nil
	})
	g.Go(func() error { outs.Run(gctx); return nil })
	if view != nil {
		g.Go(func() error { return view.Start(gctx) })
		g.Go(func() error {
			if view.Synced(gctx) {
				logger.V(2).Info("Cluster view synced")
			}
			return nil
		})
	}
	if o.HTTPAddress != "" {
		g.Go(func() error { return serve.HTTP(gctx, o.HTTPAddress, d.httpHandler(m)) })
	}
	d.SetReady(true)
	if o.Registration {
		endpoint := o.RegistrationPath
		if endpoint == "" {
			endpoint = socket
		}
		g.Go(func() error {
			return registration.Serve(gctx, registration.Options{
				DriverName: DriverName, Endpoint: endpoint, Dir: filepath.Join(o.KubeletDir, "plugins_registry"),
			})
		})
	}
	logger.Info("Serving", "endpoint", o.Endpoint, "nodeID", o.NodeID, "version", version)
	err = g.Wait()
	c.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		logger.Info("Stopped")
		return nil
	}
	return err
}

// apiClients returns, for cfg, a clientset (Events, Secrets), a client
// that also knows ArtifactRecords, and the cluster view of node.
func apiClients(cfg *rest.Config, node string) (kubernetes.Interface, client.Client, *cluster.View, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, nil, nil, err
	}
	if err := artifactsv1alpha1.AddToScheme(s); err != nil {
		return nil, nil, nil, err
	}
	live, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		return nil, nil, nil, err
	}
	view, err := cluster.New(cfg, s, node, live)
	return kube, live, view, err
}

// httpHandler serves /healthz (200 once ready) and /metrics.
func (d *Driver) httpHandler(m *metrics.Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !d.ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", m.Handler())
	return mux
}

// OCIRegistry serves Registry with an oci.Client, using each call's
// keychain.
type OCIRegistry struct{ Client *oci.Client }

var _ Registry = OCIRegistry{}

// Check implements Registry.
func (r OCIRegistry) Check(ctx context.Context, kc authn.Keychain, ref oci.Reference) error {
	return r.Client.With(kc).Check(ctx, ref)
}

// Pull implements Registry.
func (r OCIRegistry) Pull(ctx context.Context, kc authn.Keychain, ref oci.Reference, dest string, maxBytes int64) (*oci.PullResult, error) {
	return r.Client.With(kc).WithLimits(archive.Limits{MaxBytes: maxBytes}).Pull(ctx, ref, dest)
}
