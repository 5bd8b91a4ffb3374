package outputs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/tektoncd/artifacts-csi-driver/internal/atomicfile"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/store"
)

// raiseMaxBytes says how to raise an output's bound.
const raiseMaxBytes = "raise it in the namespace's config-artifact-storage ConfigMap, under the cluster's ceiling"

// errUnpushable marks an output whose journal or credentials on disk
// cannot be used: no retry can fix it.
var errUnpushable = errdefs.New("cannot be pushed", errdefs.ErrInvalid)

// push uploads the sealed output in dir to its store, with the
// credentials its pod had at publish.
func (m *Manager) push(ctx context.Context, dir string, v Volume) (*Result, error) {
	data := filepath.Join(dir, dataDir)
	if _, err := archive.Measure(ctx, data, archive.Limits{MaxBytes: v.MaxBytes}); err != nil {
		if errors.Is(err, archive.ErrLimitExceeded) {
			err = errdefs.Limit("maxArtifactBytes", raiseMaxBytes, err)
		}
		return nil, err
	}
	var creds credentials.Snapshot
	if err := atomicfile.ReadJSON(filepath.Join(dir, credentialsFile), &creds); err != nil {
		return nil, fmt.Errorf("%w: read push credentials: %w", errUnpushable, err)
	}
	kc, err := creds.Keychain(ctx)
	if err != nil {
		return nil, err
	}
	st, err := m.o.Stores.Open(store.Identity{Backend: v.Backend, Keychain: kc, PlainHTTP: v.PlainHTTP, Namespace: v.Pod.Namespace})
	if err != nil {
		return nil, err
	}
	res, err := st.Push(ctx, store.PushRequest{
		Dir: data, Repository: v.Repository, Tag: v.Tag, Metadata: v.Metadata,
		Compression: v.Compression, Format: v.Format, MediaType: v.MediaType, Group: v.Group,
	})
	if err != nil {
		return nil, err
	}
	if res.Uploaded {
		m.o.Metrics.Pushed(res.Layer.Size)
	}
	return &Result{Ref: res.Ref.String(), Digest: res.Manifest.Digest.String(), LayerDigest: res.Layer.Digest.String(),
		Size: res.Layer.Size, MediaType: string(res.Layer.MediaType), Location: res.Location, Contents: res.Contents}, nil
}
