// Command artifacts-provider-filesystem is the reference storage provider
// of the Tekton artifacts CSI driver: it serves the provider API on a unix
// socket and keeps blobs as files under a directory, a hostPath or a
// ReadWriteMany volume. See --help.
package main

import (
	"context"

	"github.com/tektoncd/artifacts-csi-driver/internal/command"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider/filesystem"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	o := filesystem.NewServerOptions()
	command.Main("artifacts-provider-filesystem", "provider", version, o, func(ctx context.Context) error {
		return filesystem.Run(ctx, o, version)
	})
}
