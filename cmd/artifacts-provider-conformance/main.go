// Command artifacts-provider-conformance checks that a storage provider
// serving a unix socket follows the provider API, as csi-sanity does for
// CSI drivers:
//
//	artifacts-provider-conformance --endpoint /var/run/artifacts-csi/providers/mine.sock
//
// It prints a line per case and a summary, and exits 1 when a case
// failed, 2 for invalid flags. It stores blobs only in its own repository
// and deletes them after each case.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/tektoncd/artifacts-csi-driver/pkg/provider"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider/conformance"
)

func main() { os.Exit(run()) }

func run() int {
	var (
		cfg conformance.Config
		pat string
	)
	fs := pflag.NewFlagSet("artifacts-provider-conformance", pflag.ContinueOnError)
	fs.StringVar(&cfg.Endpoint, "endpoint", "", "provider socket, a path or unix:///path (required)")
	fs.StringVar(&cfg.Namespace, "namespace", "conformance", "namespace of the requests")
	fs.StringVar(&cfg.Repository, "repository", "", `repository to store blobs in (default "conformance/run-<random>")`)
	fs.Int64Var(&cfg.LargeSize, "large-size", 64<<20, "bytes of the large stream case")
	fs.StringVar(&pat, "run", "", "run only the cases whose names match this regular expression")
	fs.DurationVar(&cfg.Timeout, "timeout", 2*time.Minute, "time limit of each case")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return usage(err)
	}
	switch {
	case cfg.Endpoint == "":
		return usage(errors.New("--endpoint is required"))
	case fs.NArg() > 0:
		return usage(fmt.Errorf("unexpected arguments %q", fs.Args()))
	case cfg.LargeSize <= 0 || cfg.Timeout <= 0:
		return usage(errors.New("--large-size and --timeout must be positive"))
	}
	if cfg.Repository != "" || cfg.Namespace != "conformance" {
		repo := cfg.Repository
		if repo == "" {
			repo = "conformance"
		}
		if err := provider.CheckScope(cfg.Namespace, repo); err != nil {
			return usage(fmt.Errorf("--namespace, --repository: %w", err))
		}
	}
	var filter *regexp.Regexp
	if pat != "" {
		var err error
		if filter, err = regexp.Compile(pat); err != nil {
			return usage(fmt.Errorf("--run: %w", err))
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	passed, skipped := 0, 0
	failed, err := conformance.Run(ctx, cfg, filter, func(name string, err error, d time.Duration) {
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
		fmt.Fprintf(os.Stderr, "artifacts-provider-conformance: %v\n", err)
		return 1
	}
	fmt.Printf("%d passed, %d failed, %d skipped in %s\n", passed, failed, skipped, time.Since(start).Round(time.Millisecond))
	if failed > 0 {
		return 1
	}
	return 0
}

// usage reports invalid flags.
func usage(err error) int {
	fmt.Fprintf(os.Stderr, "artifacts-provider-conformance: %v (see --help)\n", err)
	return 2
}
