// Command artifacts pushes, pulls and inspects Tekton artifacts in OCI
// registries. See `artifacts --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/tektoncd/artifacts-csi-driver/pkg/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
