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

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, version, os.Args[1:])
	stop()
	os.Exit(code)
}
