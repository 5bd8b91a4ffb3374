// Command artifacts-csi-node is the CSI node plugin of the Tekton artifacts
// driver: it runs on every node (a DaemonSet), serves ephemeral input and
// output volumes to pods and uploads outputs. See --help.
//
// `artifacts-csi-node outputs list|retry` talks to the plugin running on
// the node, through its admin socket.
package main

import (
	"context"
	"os"

	"github.com/tektoncd/artifacts-csi-driver/internal/command"
	"github.com/tektoncd/artifacts-csi-driver/pkg/driver"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "outputs" {
		os.Exit(driver.OutputsCommand(os.Args[2:], os.Stdout, os.Stderr))
	}
	o := driver.NewOptions()
	command.Main("artifacts-csi-node", "node", version, o, func(ctx context.Context) error {
		return driver.Run(ctx, o, version)
	})
}
