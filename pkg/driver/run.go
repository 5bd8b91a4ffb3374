package driver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
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
	"github.com/tektoncd/artifacts-csi-driver/pkg/broker"
	"github.com/tektoncd/artifacts-csi-driver/pkg/cache"
	"github.com/tektoncd/artifacts-csi-driver/pkg/cluster"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/digestcache"
	"github.com/tektoncd/artifacts-csi-driver/pkg/metrics"
	"github.com/tektoncd/artifacts-csi-driver/pkg/mounter"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputfs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/registration"
	"github.com/tektoncd/artifacts-csi-driver/pkg/store"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
)

// shutdownGrace bounds how long in-flight calls may run after a stop.
const shutdownGrace = 10 * time.Second

// The node plugin's API permissions (make generate writes them to
// deploy/rbac/node): its pods, labelled ConfigMaps and records through
// informers; TaskRuns and PipelineRuns to identify pods and from:
// producers; records and Events written. No Secret and no ServiceAccount:
// the controller's broker answers the credentials of this node's pods.
//
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch;update
// +kubebuilder:rbac:groups=artifacts.tekton.dev,resources=artifactrecords,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=artifacts.tekton.dev,resources=artifactrecords/status,verbs=update
// +kubebuilder:rbac:groups=tekton.dev,resources=taskruns;pipelineruns,verbs=get

// Run assembles the node plugin from validated options (plugin) and
// serves until ctx is cancelled (serve). It returns nil after a clean
// stop.
func Run(ctx context.Context, o *Options, version string) error {
	p, err := newPlugin(ctx, o, version)
	if err != nil {
		return err
	}
	defer p.close()
	return p.serve(ctx)
}

// plugin is the assembled node plugin: the driver and what runs beside it.
type plugin struct {
	o         *Options
	version   string
	driver    *Driver
	cache     *cache.Cache
	outputs   *outputs.Manager
	view      *cluster.View // nil without an API client
	tekton    *tekton.Resolver
	metrics   *metrics.Metrics
	providers *provider.Client
	events    *record.Events // nil without an API client
	lock      *os.File       // of the state directory
}

// newPlugin opens the state (input cache, digest cache, output journals)
// and builds the driver's dependencies.
func newPlugin(ctx context.Context, o *Options, version string) (_ *plugin, err error) {
	p := &plugin{o: o, version: version}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	// Before anything in the state directory is touched: a second plugin
	// would otherwise remove the first one's staging directories.
	if p.lock, err = lockDir(o.StateDir); err != nil {
		return nil, err
	}
	var fsys outputfs.Filesystem = outputfs.Dir{}
	cacheOpts := []cache.Option{cache.WithMaxInodes(o.CacheInodes)}
	if o.OutputFilesystem == outputfs.KindExt4 {
		e, err := outputfs.NewExt4(outputfs.Ext4Options{Templates: filepath.Join(o.StateDir, "templates"), Mke2fs: o.Mke2fs})
		if err != nil {
			return nil, fmt.Errorf("%w (or run with --output-filesystem=%s, which bounds outputs only at push)", err, outputfs.KindDir)
		}
		fsys = e
		cacheOpts = append(cacheOpts, cache.WithImages(e))
	}
	if p.cache, err = cache.Open(ctx, filepath.Join(o.StateDir, "cache"), o.CacheBytes, cacheOpts...); err != nil {
		return nil, fmt.Errorf("open input cache: %w", err)
	}
	dc, err := digestcache.Open(filepath.Join(o.StateDir, "digests"))
	if err != nil {
		return nil, fmt.Errorf("open digest cache: %w", err)
	}
	// Pods' own credentials only: never the node's. Inputs are readable by
	// every uid of every pod that mounts them (docs/design.md, "Inputs").
	reg := oci.New(oci.Options{Keychain: authn.NewMultiKeychain(), UserAgent: "artifacts-csi/" + version, DigestCache: dc,
		Modes: archive.ReadOnlyModes, IdleTimeout: o.RegistryIdleTimeout})
	p.providers = provider.NewClient(provider.Options{Dir: o.ProvidersDir, Modes: archive.ReadOnlyModes,
		IdleTimeout: o.RegistryIdleTimeout})
	stores := store.Stores{Registry: reg, Providers: p.providers}

	var (
		rec    record.Recorder = record.Log{}
		kube   kubernetes.Interface
		source = config.Source{Cluster: config.Dir(o.ConfigDir)}
		creds  CredentialSource
	)
	if o.BrokerURL != "" {
		if creds, err = broker.NewClient(broker.ClientOptions{URL: o.BrokerURL, TokenFile: o.BrokerTokenFile, CAFile: o.BrokerCAFile}); err != nil {
			return nil, err
		}
	}
	restCfg, err := o.restConfig()
	if err != nil {
		return nil, err
	}
	if restCfg != nil {
		ctrllog.SetLogger(klog.FromContext(ctx)) // the informers of the cluster view log through it
		var live client.Client
		if kube, live, p.view, err = apiClients(restCfg, o.NodeID); err != nil {
			return nil, err
		}
		p.events = record.NewEvents(kube, "artifacts-csi-node", o.NodeID, rec)
		rec = &record.Kubernetes{Client: live, Node: o.NodeID, Next: p.events, Retained: func(ctx context.Context, namespace string) bool {
			// Annotations cannot set retention; invalid values are
			// reported on the pod when its volume is published.
			c, _ := source.Config(ctx, namespace, nil)
			return c.Retention.Enabled()
		}}
		source.Namespaces = p.view
		p.tekton = &tekton.Resolver{Reader: live}
	}
	p.metrics = metrics.New(func() metrics.CacheStats {
		s := p.cache.Stats()
		return metrics.CacheStats{Bytes: s.Bytes, Inodes: s.Inodes, Entries: s.Entries}
	}, func() metrics.QueueStats { return p.outputs.Stats() })
	var keeper outputs.Keeper // never a nil *writeThrough
	wt := p.writeThrough(fsys)
	if wt != nil {
		keeper = wt
	}
	p.outputs, err = outputs.Open(ctx, outputs.Options{
		Dir: o.StateDir, Stores: stores, Recorder: rec,
		Deadline: o.UploadDeadline, Workers: o.UploadWorkers, Metrics: p.metrics,
		Filesystem: fsys, FailedTTL: o.FailedOutputTTL, Events: p.warner(), Keeper: keeper,
	})
	if err != nil {
		return nil, fmt.Errorf("open output journal: %w", err)
	}
	deps := Deps{
		Mounter: mounter.New(), Stores: stores, Cache: p.cache, Outputs: p.outputs,
		Config: source, Recorder: rec, Metrics: p.metrics, Credentials: creds,
	}
	if p.view != nil {
		deps.Cluster, deps.Tekton, deps.Events = p.view, p.tekton, p.events
	}
	if p.driver, err = New(ctx, o, version, deps); err != nil {
		return nil, err
	}
	if wt != nil { // before the uploader runs
		wt.chunks = p.driver.chunks
	}
	return p, nil
}

// serve serves CSI on the endpoint, uploads outputs, runs the cluster
// view, serves /healthz and /metrics and registers with kubelet, until ctx
// is cancelled or one of them fails.
func (p *plugin) serve(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	o := p.o
	socket, _ := o.SocketPath()
	// kubelet (root) is the only client.
	lis, err := unixsock.Listen(socket, 0o600)
	if err != nil {
		return fmt.Errorf("CSI endpoint: %w", err)
	}
	// Root only, like the state directory it lives in.
	admin, err := unixsock.Listen(filepath.Join(o.StateDir, adminSocket), 0o600)
	if err != nil {
		lis.Close()
		return fmt.Errorf("admin socket: %w", err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(LogRPC))
	p.driver.Register(srv)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serve.GRPC(gctx, srv, lis, shutdownGrace) })
	g.Go(func() error {
		<-gctx.Done()
		p.driver.SetReady(false)
		return nil
	})
	g.Go(func() error { p.outputs.Run(gctx); return nil })
	g.Go(func() error { return serve.Listener(gctx, admin, adminHandler(p.outputs)) })
	if p.view != nil {
		g.Go(func() error { return p.view.Start(gctx) })
		g.Go(func() error {
			if p.view.Synced(gctx) {
				logger.V(2).Info("Cluster view synced")
			}
			return nil
		})
	}
	if o.HTTPAddress != "" {
		g.Go(func() error { return serve.HTTP(gctx, o.HTTPAddress, p.driver.httpHandler(p.metrics)) })
	}
	p.driver.SetReady(true)
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
	logger.Info("Serving", "endpoint", o.Endpoint, "nodeID", o.NodeID, "version", p.version)
	err = g.Wait()
	p.cache.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		logger.Info("Stopped")
		return nil
	}
	return err
}

// close releases what newPlugin made.
func (p *plugin) close() {
	if p.events != nil {
		p.events.Shutdown()
	}
	if p.providers != nil {
		p.providers.Close()
	}
	if p.cache != nil {
		if err := p.cache.Close(context.Background()); err != nil {
			klog.Background().Error(err, "Could not unmount input cache entries")
		}
	}
	if p.lock != nil {
		p.lock.Close() // releases the lock
	}
}

// writeThrough returns what keeps pushed outputs as input cache entries,
// or nil when outputs are not on filesystems of their own or
// --write-through is off.
func (p *plugin) writeThrough(fsys outputfs.Filesystem) *writeThrough {
	if _, ok := fsys.(*outputfs.Ext4); !ok || !p.o.WriteThrough {
		return nil
	}
	return &writeThrough{cache: p.cache, metrics: p.metrics}
}

// warner returns the plugin's Events as an outputs.Warner, or nil without
// an API client.
func (p *plugin) warner() outputs.Warner {
	if p.events == nil {
		return nil
	}
	return p.events
}

// lockDir takes an exclusive lock on dir (created if need be), held until
// the returned file is closed or the process ends, however it ends.
func lockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("state directory %s is in use by another node plugin (it holds %s); two must never share it", dir, f.Name())
		}
		return nil, fmt.Errorf("lock state directory %s: %w", dir, err)
	}
	return f, nil
}

// apiClients returns, for cfg, a clientset (Events), a client
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
