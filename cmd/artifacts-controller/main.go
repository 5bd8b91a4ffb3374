// Command artifacts-controller is the controller of the Tekton artifacts
// driver: it merges the ArtifactRecords the node plugin writes into their
// TaskRuns' status.artifacts (a Deployment; one leader at a time). See
// --help.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json
	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/pkg/controller"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	o := controller.NewOptions()
	logs := logsapi.NewLoggingConfiguration()
	fs := pflag.NewFlagSet("artifacts-controller", pflag.ContinueOnError)
	o.AddFlags(fs)
	logsapi.AddFlags(logs, fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == pflag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if *showVersion {
		fmt.Println(version)
		return
	}
	if err := logsapi.ValidateAndApply(logs, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := o.Validate(); err != nil {
		klog.ErrorS(err, "Invalid options")
		klog.FlushAndExit(klog.ExitFlushTimeout, 2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx = klog.NewContext(ctx, klog.Background().WithName("controller"))
	err := controller.Run(ctx, o, version)
	stop()
	if err != nil {
		klog.ErrorS(err, "Controller failed")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	klog.FlushAndExit(klog.ExitFlushTimeout, 0)
}
