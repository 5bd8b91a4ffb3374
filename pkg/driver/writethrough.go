package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/cache"
	"github.com/tektoncd/artifacts-csi-driver/pkg/metrics"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputfs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/store"
)

// writeThrough makes each pushed output the input cache entry of its
// digest, so that a consumer on the producer's node gets a cache hit: no
// byte downloaded, no file extracted. It is the outputs.Keeper of a node
// whose outputs are ext4 filesystems (outputfs.Ext4): the output's image,
// which the pod wrote through the kernel and the plugin froze (read-only,
// with no writer left) before pushing it, moves into the cache with a
// rename, and its tree gets exactly the metadata extracting the pushed
// archive would give under the input permission model (archive.Normalize
// with archive.ReadOnlyModes: owned by root, 0444/0555, no setuid, no
// extended attributes), then is mounted read-only from a read-only loop
// device. A hit on it is authorised as any hit is: by the registry, for
// each tenant (cache.verifyAccess and the grants), and its provenance
// checked before it is mounted.
//
// Not eligible: a single-file output (mediaType), whose input is the file
// alone; an output whose digest is cached already (it stays, the output
// goes). Outputs in plain directories (outputfs.Dir) never are: nothing
// there stops a process that kept a file or directory open from changing
// the tree after the push, so it could not be trusted as a cache entry.
// Safe for concurrent use.
type writeThrough struct {
	cache   *cache.Cache
	metrics *metrics.Metrics
	// chunks, when set, learns where the chunks of a kept chunked
	// output are, for pulls of its next versions.
	chunks *localChunks
}

var _ outputs.Keeper = (*writeThrough)(nil)

// Keep implements outputs.Keeper.
func (w *writeThrough) Keep(ctx context.Context, v outputs.Volume, dir string) {
	logger := klog.FromContext(ctx)
	if v.Result == nil || v.MediaType != "" {
		w.metrics.WriteThrough(metrics.WriteThroughSkipped)
		return
	}
	image := filepath.Join(dir, outputfs.ImageFile)
	if _, err := os.Lstat(image); errors.Is(err, os.ErrNotExist) {
		return // kept already, before a crash or a failed record
	}
	key := store.Ref{Backend: v.Backend, Repository: v.Repository, Digest: v.Result.Digest}.CacheKey()
	start := time.Now()
	adopted, err := w.cache.AdoptImage(ctx, key, image, func(ctx context.Context, dest string) (archive.Usage, error) {
		return archive.Normalize(ctx, dest, archive.ReadOnlyModes, archive.Limits{MaxBytes: v.MaxBytes})
	})
	switch {
	case err != nil:
		w.metrics.WriteThrough(metrics.WriteThroughFailed)
		logger.Error(err, "Could not keep a pushed output as its input cache entry; a consumer on this node will fetch it", "ref", v.Result.Ref)
	case adopted:
		if w.chunks != nil {
			w.chunks.add(key, v.Result.Contents)
		}
		w.metrics.WriteThrough(metrics.WriteThroughAdopted)
		logger.V(2).Info("Kept a pushed output as its input cache entry", "ref", v.Result.Ref, "cacheKey", key, "duration", time.Since(start))
	default:
		w.metrics.WriteThrough(metrics.WriteThroughSkipped)
	}
}
