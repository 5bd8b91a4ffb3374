// Package command is what the long-running binaries share around their
// Options: flags (their own, klog's and component-base's --logging-format,
// --version), validation, a context cancelled by SIGINT or SIGTERM and
// carrying a named logger, and one exit path that flushes the log.
package command

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json
	"k8s.io/klog/v2"
)

// Options is a binary's options: its flags and their validation.
type Options interface {
	AddFlags(fs *pflag.FlagSet)
	Validate() error
}

// Main parses os.Args into o, validates it, runs run until it returns or a
// signal cancels its context, and exits: 0 after a clean run (or --help,
// --version), 2 for invalid flags or options, 1 when run fails. The
// context's logger is named logName.
func Main(name, logName, version string, o Options, run func(ctx context.Context) error) {
	logs := logsapi.NewLoggingConfiguration()
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	o.AddFlags(fs)
	logsapi.AddFlags(logs, fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "%s: %v (see --help)\n", name, err)
		os.Exit(2)
	}
	if *showVersion {
		fmt.Println(version)
		os.Exit(0)
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
	err := run(klog.NewContext(ctx, klog.Background().WithName(logName)))
	stop()
	if err != nil {
		klog.ErrorS(err, "Failed", "command", name)
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	klog.FlushAndExit(klog.ExitFlushTimeout, 0)
}
