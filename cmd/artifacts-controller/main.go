// Command artifacts-controller is the controller of the Tekton artifacts
// driver: it merges the ArtifactRecords the node plugin writes into their
// TaskRuns' status.artifacts (a Deployment; one leader at a time). See
// --help.
package main

import (
	"context"

	"github.com/tektoncd/artifacts-csi-driver/internal/command"
	"github.com/tektoncd/artifacts-csi-driver/pkg/controller"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	o := controller.NewOptions()
	command.Main("artifacts-controller", "controller", version, o, func(ctx context.Context) error {
		return controller.Run(ctx, o, version)
	})
}
