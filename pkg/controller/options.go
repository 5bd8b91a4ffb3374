package controller

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tektoncd/artifacts-csi-driver/pkg/retention"
)

// Options configures the controller. Zero values are not defaults: use
// NewOptions, then AddFlags, then Validate.
type Options struct {
	// Kubeconfig is the API client configuration file. Default: the
	// in-cluster configuration.
	Kubeconfig string
	// MetricsBindAddress serves Prometheus /metrics. Default :9090; "0"
	// turns it off.
	MetricsBindAddress string
	// HealthProbeBindAddress serves /healthz and /readyz. Default :8081;
	// "0" turns it off.
	HealthProbeBindAddress string
	// LeaderElect makes only one replica reconcile at a time, the holder of
	// a Lease. Default true.
	LeaderElect bool
	// LeaderElectionNamespace holds the Lease. Default: the namespace of
	// the pod the controller runs in (required outside a cluster).
	LeaderElectionNamespace string
	// LeaderElectionID names the Lease. Default
	// artifacts-controller.artifacts.tekton.dev.
	LeaderElectionID string
	// Concurrency bounds the TaskRuns reconciled at once; one TaskRun is
	// never reconciled by two workers at once. Default 2, at least 1.
	Concurrency int
	// Namespace is the driver's: where the cluster configuration, the
	// broker's certificate and the node plugin's ServiceAccount are.
	// Default: $POD_NAMESPACE, else artifacts-csi.
	Namespace string
	// BrokerAddress serves the credentials broker (HTTPS) on every
	// replica, leader or not. Default :9443; "0" turns it off.
	BrokerAddress string
	// BrokerHosts are the names and addresses the broker's certificate is
	// made for. Default: the Service artifacts-controller in Namespace,
	// 127.0.0.1 and localhost.
	BrokerHosts []string
	// NodeServiceAccount is the node plugin's ServiceAccount, in
	// Namespace: the only user the broker answers. Default
	// artifacts-csi-node.
	NodeServiceAccount string
	// SignProvenance makes the controller sign the provenance of every
	// pushed output (see Attestor), with the key it keeps in Secret
	// artifacts-signing-key in Namespace (made at first start). Default
	// true.
	SignProvenance bool
	// Version is the driver's version, which provenance names as the
	// builder's; Run sets it. Not a flag.
	Version string
	// Retention configures the removal of outputs from registries (the
	// retention.* configuration keys say which); see retention.Options.
	Retention retention.Options
}

// NewOptions returns Options with their defaults.
func NewOptions() *Options {
	return &Options{
		MetricsBindAddress:     ":9090",
		HealthProbeBindAddress: ":8081",
		LeaderElect:            true,
		LeaderElectionID:       "artifacts-controller.artifacts.tekton.dev",
		Concurrency:            2,
		Namespace:              namespaceDefault(),
		BrokerAddress:          ":9443",
		NodeServiceAccount:     "artifacts-csi-node",
		SignProvenance:         true,
		Retention:              *retention.NewOptions(),
	}
}

// namespaceDefault is $POD_NAMESPACE, else artifacts-csi.
func namespaceDefault() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return "artifacts-csi"
}

// brokerHosts returns BrokerHosts, or the default for Namespace.
func (o *Options) brokerHosts() []string {
	if len(o.BrokerHosts) > 0 {
		return o.BrokerHosts
	}
	svc := "artifacts-controller"
	return []string{svc, svc + "." + o.Namespace, svc + "." + o.Namespace + ".svc", svc + "." + o.Namespace + ".svc.cluster.local", "127.0.0.1", "localhost"}
}

// AddFlags registers a flag for every option.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "kubeconfig file (default: in-cluster configuration)")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", o.MetricsBindAddress, `address for /metrics ("0": off)`)
	fs.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", o.HealthProbeBindAddress, `address for /healthz and /readyz ("0": off)`)
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "elect a leader so that only one replica reconciles")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", o.LeaderElectionNamespace, "namespace of the leader election Lease (default: the pod's)")
	fs.StringVar(&o.LeaderElectionID, "leader-election-id", o.LeaderElectionID, "name of the leader election Lease")
	fs.IntVar(&o.Concurrency, "concurrency", o.Concurrency, "TaskRuns reconciled at once")
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "the driver's namespace (default: $POD_NAMESPACE, else artifacts-csi)")
	fs.StringVar(&o.BrokerAddress, "broker-address", o.BrokerAddress, `address of the credentials broker, HTTPS ("0": off)`)
	fs.StringSliceVar(&o.BrokerHosts, "broker-hosts", o.BrokerHosts, "names and addresses of the broker's certificate (default: the Service artifacts-controller, 127.0.0.1, localhost)")
	fs.StringVar(&o.NodeServiceAccount, "node-service-account", o.NodeServiceAccount, "the node plugin's ServiceAccount in --namespace, whom the broker answers")
	fs.BoolVar(&o.SignProvenance, "sign-provenance", o.SignProvenance, "sign the provenance of every pushed output with the key of Secret artifacts-signing-key in --namespace (made at first start)")
	o.Retention.AddFlags(fs)
}

// Validate reports every invalid option at once.
func (o *Options) Validate() error {
	var errs []error
	for flag, addr := range map[string]string{"--metrics-bind-address": o.MetricsBindAddress, "--health-probe-bind-address": o.HealthProbeBindAddress,
		"--broker-address": o.BrokerAddress} {
		if _, _, err := net.SplitHostPort(addr); err != nil && addr != "0" {
			errs = append(errs, fmt.Errorf(`%s must be host:port or "0", got %q`, flag, addr))
		}
	}
	if o.LeaderElect && o.LeaderElectionID == "" {
		errs = append(errs, errors.New("--leader-election-id must not be empty with --leader-elect"))
	}
	if o.Namespace == "" || o.NodeServiceAccount == "" {
		errs = append(errs, errors.New("--namespace and --node-service-account must not be empty"))
	}
	if o.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("--concurrency must be at least 1, got %d", o.Concurrency))
	}
	errs = append(errs, o.Retention.Validate())
	return errors.Join(errs...)
}

// restConfig returns the API client configuration of Kubeconfig, else the
// in-cluster one.
func (o *Options) restConfig(version string) (*rest.Config, error) {
	cfg, err := rest.InClusterConfig()
	if o.Kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("API client configuration: %w", err)
	}
	cfg.UserAgent = "artifacts-controller/" + version
	return cfg, nil
}
