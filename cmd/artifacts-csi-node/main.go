// Command artifacts-csi-node is the CSI node plugin of the Tekton artifacts
// driver: it runs on every node (a DaemonSet), serves ephemeral input and
// output volumes to pods and uploads outputs. See --help.
package main

import (
	"context"

	"github.com/tektoncd/artifacts-csi-driver/internal/command"
	"github.com/tektoncd/artifacts-csi-driver/pkg/driver"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	o := driver.NewOptions()
	command.Main("artifacts-csi-node", "node", version, o, func(ctx context.Context) error {
		return driver.Run(ctx, o, version)
	})
}
