package controller

import (
	"errors"
	"fmt"
	"net"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
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
}

// NewOptions returns Options with their defaults.
func NewOptions() *Options {
	return &Options{
		MetricsBindAddress:     ":9090",
		HealthProbeBindAddress: ":8081",
		LeaderElect:            true,
		LeaderElectionID:       "artifacts-controller.artifacts.tekton.dev",
		Concurrency:            2,
	}
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
}

// Validate reports every invalid option at once.
func (o *Options) Validate() error {
	var errs []error
	for flag, addr := range map[string]string{"--metrics-bind-address": o.MetricsBindAddress, "--health-probe-bind-address": o.HealthProbeBindAddress} {
		if _, _, err := net.SplitHostPort(addr); err != nil && addr != "0" {
			errs = append(errs, fmt.Errorf(`%s must be host:port or "0", got %q`, flag, addr))
		}
	}
	if o.LeaderElect && o.LeaderElectionID == "" {
		errs = append(errs, errors.New("--leader-election-id must not be empty with --leader-elect"))
	}
	if o.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("--concurrency must be at least 1, got %d", o.Concurrency))
	}
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
