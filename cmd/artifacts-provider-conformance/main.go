// Command artifacts-provider-conformance checks that a storage provider
// serving a unix socket follows the provider API, as csi-sanity does for
// CSI drivers:
//
//	artifacts-provider-conformance --endpoint /var/run/artifacts-csi/providers/mine.sock
//
// It prints a line per case and a summary, and exits 1 when a case
// failed, 2 for invalid flags (internal/command, as the other binaries). It stores blobs only in its own repository
// and deletes them after each case.
package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/spf13/pflag"

	"github.com/tektoncd/artifacts-csi-driver/internal/command"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider/conformance"
	pb "github.com/tektoncd/artifacts-csi-driver/proto/provider/v1alpha1"
)

var version = "dev"

func main() {
	o := &options{}
	command.Main("artifacts-provider-conformance", "conformance", version, o, func(ctx context.Context) error {
		return run(ctx, o)
	})
}

// options are the command's flags: the suite's Config and a case filter.
type options struct {
	cfg    conformance.Config
	run    string
	filter *regexp.Regexp
}

// AddFlags registers the flags, with the suite's defaults.
func (o *options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.cfg.Endpoint, "endpoint", "", "provider socket, a path or unix:///path (required)")
	fs.StringVar(&o.cfg.Namespace, "namespace", "conformance", "namespace of the requests")
	fs.StringVar(&o.cfg.Repository, "repository", "", `repository to store blobs in (default "conformance/run-<random>")`)
	fs.Int64Var(&o.cfg.LargeSize, "large-size", 64<<20, "bytes of the large stream case")
	fs.StringVar(&o.run, "run", "", "run only the cases whose names match this regular expression")
	fs.DurationVar(&o.cfg.Timeout, "timeout", 2*time.Minute, "time limit of each case")
}

// Validate checks the flags and compiles --run.
func (o *options) Validate() error {
	switch {
	case o.cfg.Endpoint == "":
		return errors.New("--endpoint is required")
	case o.cfg.LargeSize <= 0 || o.cfg.Timeout <= 0:
		return errors.New("--large-size and --timeout must be positive")
	}
	if o.cfg.Repository != "" || o.cfg.Namespace != "conformance" {
		repo := o.cfg.Repository
		if repo == "" {
			repo = "conformance"
		}
		if err := pb.CheckScope(o.cfg.Namespace, repo); err != nil {
			return fmt.Errorf("--namespace, --repository: %w", err)
		}
	}
	if o.run != "" {
		var err error
		if o.filter, err = regexp.Compile(o.run); err != nil {
			return fmt.Errorf("--run: %w", err)
		}
	}
	return nil
}

// run runs the suite, printing a line per case and a summary; it fails
// when a case failed.
func run(ctx context.Context, o *options) error {
	start := time.Now()
	passed, skipped := 0, 0
	failed, err := conformance.Run(ctx, o.cfg, o.filter, func(name string, err error, d time.Duration) {
		switch {
		case err == nil:
			passed++
			fmt.Printf("PASS %s (%s)\n", name, d.Round(time.Millisecond))
		case errors.Is(err, conformance.ErrSkipped):
			skipped++
			fmt.Printf("SKIP %s: %v\n", name, err)
		default:
			fmt.Printf("FAIL %s: %v (%s)\n", name, err, d.Round(time.Millisecond))
		}
	})
	if err != nil {
		return err
	}
	fmt.Printf("%d passed, %d failed, %d skipped in %s\n", passed, failed, skipped, time.Since(start).Round(time.Millisecond))
	if failed > 0 {
		return fmt.Errorf("%d case(s) failed", failed)
	}
	return nil
}
