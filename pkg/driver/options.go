package driver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tektoncd/artifacts-csi-driver/internal/command"
	"github.com/tektoncd/artifacts-csi-driver/internal/unixsock"
	"github.com/tektoncd/artifacts-csi-driver/pkg/cache"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputfs"
)

// Options configures the node plugin. Zero values are not defaults: use
// NewOptions, then AddFlags, then Validate.
type Options struct {
	// Endpoint is the CSI socket, unix:///path. Default
	// unix:///var/lib/kubelet/plugins/artifacts.csi.tekton.dev/csi.sock.
	Endpoint string
	// RegistrationPath is the CSI socket's path as kubelet sees it, which
	// plugin registration reports. Default: the Endpoint's path, right when
	// the DaemonSet mounts the kubelet directory at the same path.
	RegistrationPath string
	// NodeID is this node's name, reported by NodeGetInfo. Required.
	NodeID string
	// KubeletDir is kubelet's root directory; target paths must lie under
	// its pods/ directory. Default /var/lib/kubelet.
	KubeletDir string
	// StateDir holds the input cache, output spool and journal; it must
	// survive plugin restarts (a hostPath). Default /var/lib/artifacts-csi.
	StateDir string
	// CacheBytes bounds the disk footprint of the input cache (file content
	// in 4 KiB blocks, 4 KiB per directory: archive.Usage); entries no
	// mount uses are evicted, least recently used first. Default 10Gi.
	CacheBytes int64
	// CacheInodes bounds the inodes of the input cache, evicting as
	// CacheBytes does. Default 1,000,000: the per-artifact entry cap, so
	// that, as with CacheBytes, any artifact the default limits admit fits
	// an empty cache; it is about a sixth of the inodes of a 100Gi ext4
	// filesystem (one per 16 KiB), where 10Gi is a tenth of its bytes.
	CacheInodes int64
	// CacheGrantTTL is how long a registry's yes to a pod's access check
	// lets pods of the same namespace, presenting the same credentials for
	// the same repository, skip the check on a cache hit, where
	// cache.verifyAccess is false. Default 10m.
	CacheGrantTTL time.Duration
	// UploadDeadline is how long an output may wait for the registry before
	// it is marked failed (its data stays on disk). Default 24h.
	UploadDeadline time.Duration
	// Registration makes the plugin serve kubelet's plugin registration
	// socket itself, so no node-driver-registrar sidecar is needed. Default
	// true.
	Registration bool
	// HTTPAddress serves /healthz and /metrics. Default :9809.
	HTTPAddress string
	// ConfigDir is the cluster config-artifact-storage ConfigMap mounted as
	// a directory, read at each publish. Default /etc/artifacts-csi/config;
	// a missing directory means every default.
	ConfigDir string
	// TrustedKeys is the file of PEM public keys an input's provenance
	// must be signed by, when the configuration asks for verification:
	// trusted.pub of ConfigMap artifacts-signing-keys, which the
	// controller publishes, mounted; read at each verification. Default
	// /etc/artifacts-csi/signing-keys/trusted.pub.
	TrustedKeys string
	// ProvidersDir holds the sockets of the storage providers,
	// <dir>/<name>.sock, for namespaces whose backend is not oci. Default
	// /var/run/artifacts-csi/providers.
	ProvidersDir string
	// OutputFilesystem is how each output volume's size is bounded while
	// its pod writes: outputfs.KindExt4, a loop-mounted ext4 filesystem of
	// the output's maxArtifactBytes (needs mke2fs and loop devices), or
	// outputfs.KindDir, a plain directory checked only at push. Default
	// ext4.
	OutputFilesystem outputfs.Kind
	// Mke2fs is the mke2fs program ext4 output filesystems are formatted
	// with. Default "mke2fs", looked up in PATH.
	Mke2fs string
	// WriteThrough makes each pushed output the input cache entry of its
	// digest, with nothing copied, so that a consumer on the same node
	// gets a cache hit (ext4 outputs only; see writeThrough). Default
	// true.
	WriteThrough bool
	// FailedOutputTTL is how long a failed output's data stays on the node
	// for an administrator to inspect or retry. Default 168h (7 days).
	FailedOutputTTL time.Duration
	// UploadWorkers bounds concurrent output uploads; one destination (a
	// registry host, a storage provider) gets at most all but one of them,
	// so that a destination that stalls leaves one to the others.
	// Default 4.
	UploadWorkers int
	// RegistryIdleTimeout aborts a request to a registry, or a stream to a
	// storage provider, that has waited that long on it without a byte
	// moving (the wait for an answer included); the upload or fill is then
	// retried as any unavailable store's. It keeps a registry that trickles
	// bytes from holding an upload worker or a fill for the whole attempt.
	// Default 60s (oci.DefaultIdleTimeout).
	RegistryIdleTimeout time.Duration
	// FillWorkers bounds the input cache fills (fetch, verify, extract) that
	// run at once, whatever the artifacts; publishes of the same artifact
	// share one fill. Default 4.
	FillWorkers int
	// BrokerURL is the controller's credentials broker, which answers the
	// registry credentials of this node's pods (oci.credentialsSecret, the
	// ServiceAccount's imagePullSecrets); the plugin reads no Secret
	// itself. Default none: credentials come from nodePublishSecretRef
	// only.
	BrokerURL string
	// BrokerTokenFile holds the plugin's ServiceAccount token of audience
	// broker.Audience, bound to its pod (a projected volume). Default
	// /var/run/secrets/artifacts.tekton.dev/broker/token.
	BrokerTokenFile string
	// BrokerCAFile holds the broker's certificate (the ConfigMap
	// artifacts-broker-ca, mounted). Default
	// /etc/artifacts-csi/broker/ca.crt.
	BrokerCAFile string
	// Kubeconfig, when set, is the API client configuration (records,
	// Events, namespace configuration, Tekton's runs, from:).
	// Default: the in-cluster configuration when running in a pod, else no
	// API client (records go to the log only).
	Kubeconfig string
	// KubeAPIQPS and KubeAPIBurst bound the API client's request rate.
	// Default 20 and 40: a publish costs about three requests (the rest
	// comes from informer caches), so a node starting 10 pods with 2
	// volumes each stays within the burst.
	KubeAPIQPS   float32
	KubeAPIBurst int
}

// NewOptions returns Options with their defaults.
func NewOptions() *Options {
	return &Options{
		Endpoint:            "unix:///var/lib/kubelet/plugins/" + DriverName + "/csi.sock",
		KubeletDir:          "/var/lib/kubelet",
		StateDir:            "/var/lib/artifacts-csi",
		CacheBytes:          10 << 30,
		CacheInodes:         cache.DefaultMaxInodes,
		CacheGrantTTL:       10 * time.Minute,
		BrokerTokenFile:     "/var/run/secrets/artifacts.tekton.dev/broker/token",
		BrokerCAFile:        "/etc/artifacts-csi/broker/ca.crt",
		UploadDeadline:      24 * time.Hour,
		Registration:        true,
		HTTPAddress:         ":9809",
		ConfigDir:           "/etc/artifacts-csi/config",
		TrustedKeys:         "/etc/artifacts-csi/signing-keys/trusted.pub",
		UploadWorkers:       4,
		OutputFilesystem:    outputfs.KindExt4,
		Mke2fs:              "mke2fs",
		WriteThrough:        true,
		FailedOutputTTL:     7 * 24 * time.Hour,
		FillWorkers:         4,
		ProvidersDir:        "/var/run/artifacts-csi/providers",
		KubeAPIQPS:          20,
		KubeAPIBurst:        40,
		RegistryIdleTimeout: oci.DefaultIdleTimeout,
	}
}

// AddFlags registers a flag for every option.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Endpoint, "endpoint", o.Endpoint, "CSI endpoint, unix:///path")
	fs.StringVar(&o.NodeID, "node-id", o.NodeID, "name of this node (required; usually from the downward API)")
	fs.StringVar(&o.KubeletDir, "kubelet-dir", o.KubeletDir, "kubelet root directory")
	fs.StringVar(&o.StateDir, "state-dir", o.StateDir, "directory for the input cache, output spool and journal; must survive restarts")
	fs.Var((*command.ByteSize)(&o.CacheBytes), "cache-size", "bound of the input cache's disk footprint, e.g. 512Mi or 10Gi")
	fs.Int64Var(&o.CacheInodes, "cache-max-inodes", o.CacheInodes, "bound of the inodes (files, directories, symlinks) of the input cache")
	fs.DurationVar(&o.CacheGrantTTL, "cache-grant-ttl", o.CacheGrantTTL, "how long a registry's yes to an access check spares the same namespace and credentials the check on cache hits (with cache.verifyAccess=false)")
	fs.DurationVar(&o.UploadDeadline, "upload-deadline", o.UploadDeadline, "how long an output may wait for the registry before it is marked failed")
	fs.BoolVar(&o.Registration, "plugin-registration", o.Registration, "serve kubelet plugin registration (turn off when running node-driver-registrar)")
	fs.StringVar(&o.HTTPAddress, "http-address", o.HTTPAddress, "address for /healthz and /metrics (empty: off)")
	fs.StringVar(&o.RegistrationPath, "kubelet-registration-path", o.RegistrationPath, "CSI socket path as kubelet sees it (default: the --endpoint path)")
	fs.StringVar(&o.ConfigDir, "config-dir", o.ConfigDir, "cluster config-artifact-storage ConfigMap mounted as a directory")
	fs.StringVar(&o.TrustedKeys, "trusted-keys", o.TrustedKeys, "PEM public keys that sign the provenance of inputs (trusted.pub of ConfigMap artifacts-signing-keys), read at each verification")
	fs.StringVar(&o.ProvidersDir, "providers-dir", o.ProvidersDir, "directory of the storage providers' sockets, <name>.sock")
	fs.Var(&o.OutputFilesystem, "output-filesystem", "how an output's size is bounded while its pod writes: ext4 (a loop-mounted filesystem of maxArtifactBytes) or directory (checked at push only)")
	fs.StringVar(&o.Mke2fs, "mke2fs", o.Mke2fs, "the mke2fs program of ext4 output filesystems")
	fs.BoolVar(&o.WriteThrough, "write-through", o.WriteThrough, "keep each pushed output as the input cache entry of its digest, so that a consumer on this node downloads nothing (ext4 outputs only)")
	fs.DurationVar(&o.FailedOutputTTL, "failed-output-ttl", o.FailedOutputTTL, "how long a failed output's data stays on the node")
	fs.IntVar(&o.UploadWorkers, "upload-workers", o.UploadWorkers, "concurrent output uploads; one destination gets at most all but one")
	fs.DurationVar(&o.RegistryIdleTimeout, "registry-idle-timeout", o.RegistryIdleTimeout, "abort a registry request or storage provider stream that makes no progress (no byte moves, no answer) for this long; it is retried")
	fs.IntVar(&o.FillWorkers, "fill-workers", o.FillWorkers, "concurrent input cache fills")
	fs.StringVar(&o.BrokerURL, "broker-url", o.BrokerURL, "the controller's credentials broker, https://host:port (empty: nodePublishSecretRef credentials only)")
	fs.StringVar(&o.BrokerTokenFile, "broker-token-file", o.BrokerTokenFile, "the plugin's pod-bound token for the broker's audience")
	fs.StringVar(&o.BrokerCAFile, "broker-ca-file", o.BrokerCAFile, "the broker's certificate, PEM")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig of the API client (default: in-cluster when in a pod, else none)")
	fs.Float32Var(&o.KubeAPIQPS, "kube-api-qps", o.KubeAPIQPS, "API client requests per second")
	fs.IntVar(&o.KubeAPIBurst, "kube-api-burst", o.KubeAPIBurst, "API client request burst")
}

// Validate reports every invalid option at once.
func (o *Options) Validate() error {
	var errs []error
	if _, err := o.SocketPath(); err != nil {
		errs = append(errs, err)
	}
	if o.NodeID == "" {
		errs = append(errs, errors.New("--node-id is required"))
	}
	for flag, dir := range map[string]string{"--kubelet-dir": o.KubeletDir, "--state-dir": o.StateDir, "--config-dir": o.ConfigDir, "--providers-dir": o.ProvidersDir} {
		if !filepath.IsAbs(dir) {
			errs = append(errs, fmt.Errorf("%s must be an absolute path, got %q", flag, dir))
		}
	}
	if o.CacheBytes <= 0 {
		errs = append(errs, fmt.Errorf("--cache-size must be positive, got %d", o.CacheBytes))
	}
	if o.CacheInodes <= 0 {
		errs = append(errs, fmt.Errorf("--cache-max-inodes must be positive, got %d", o.CacheInodes))
	}
	if o.CacheGrantTTL < 0 {
		errs = append(errs, fmt.Errorf("--cache-grant-ttl must not be negative, got %s", o.CacheGrantTTL))
	}
	if o.UploadDeadline <= 0 {
		errs = append(errs, fmt.Errorf("--upload-deadline must be positive, got %s", o.UploadDeadline))
	}
	if o.RegistryIdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--registry-idle-timeout must be positive, got %s", o.RegistryIdleTimeout))
	}
	if o.RegistrationPath != "" && !filepath.IsAbs(o.RegistrationPath) {
		errs = append(errs, fmt.Errorf("--kubelet-registration-path must be an absolute path, got %q", o.RegistrationPath))
	}
	if o.BrokerURL != "" && !strings.HasPrefix(o.BrokerURL, "https://") {
		errs = append(errs, fmt.Errorf("--broker-url must be an https:// URL, got %q", o.BrokerURL))
	}
	if o.FailedOutputTTL <= 0 {
		errs = append(errs, fmt.Errorf("--failed-output-ttl must be positive, got %s", o.FailedOutputTTL))
	}
	if o.UploadWorkers <= 0 {
		errs = append(errs, fmt.Errorf("--upload-workers must be positive, got %d", o.UploadWorkers))
	}
	if o.FillWorkers <= 0 {
		errs = append(errs, fmt.Errorf("--fill-workers must be positive, got %d", o.FillWorkers))
	}
	if o.KubeAPIQPS <= 0 || o.KubeAPIBurst <= 0 {
		errs = append(errs, fmt.Errorf("--kube-api-qps and --kube-api-burst must be positive, got %g and %d", o.KubeAPIQPS, o.KubeAPIBurst))
	}
	return errors.Join(errs...)
}

// restConfig returns the API client configuration Kubeconfig or the
// in-cluster environment gives, or nil when there is none.
func (o *Options) restConfig() (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	switch {
	case o.Kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		cfg, err = rest.InClusterConfig()
	default:
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("API client configuration: %w", err)
	}
	cfg.UserAgent = "artifacts-csi-node"
	cfg.QPS, cfg.Burst = o.KubeAPIQPS, o.KubeAPIBurst
	return cfg, nil
}

// SocketPath returns the filesystem path of Endpoint (unix:///path or
// /path).
func (o *Options) SocketPath() (string, error) {
	p, err := unixsock.Path(o.Endpoint)
	if err != nil {
		return "", fmt.Errorf("--endpoint must be unix:///absolute/path: %w", err)
	}
	return p, nil
}
