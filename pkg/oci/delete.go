package oci

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
)

// ErrDeleteUnsupported is a registry's refusal to delete anything: 405
// Method Not Allowed or the UNSUPPORTED error code, as the OCI
// distribution spec has registries answer when deletion is turned off
// (CNCF distribution without storage.delete.enabled). Trying again will
// not help: its class is errdefs.ErrPrecondition.
var ErrDeleteUnsupported = errdefs.New("the registry does not allow deletion", errdefs.ErrPrecondition)

// Delete deletes ref from its registry (OCI distribution spec, "Content
// Management"): for a tag, the tag only (the manifest stays); for a
// digest, the manifest, which most registries (CNCF distribution among
// them) answer by removing every tag that points at it too. Blobs are the
// registry's garbage collector's.
//
// Errors: errdefs.ErrNotFound when the registry has no such tag or
// manifest, so a repeated Delete is recognisable as done;
// ErrDeleteUnsupported when the registry refuses deletion; ErrDenied and
// ErrUnavailable as for every request. The request asks for the delete
// scope, which registries with token authentication may require.
func (c *Client) Delete(ctx context.Context, ref name.Reference) error {
	err := remote.Delete(ref, c.remoteOptions(ctx)...)
	if err == nil {
		return nil
	}
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusMethodNotAllowed || hasCode(te, transport.UnsupportedErrorCode)) {
		return fmt.Errorf("delete %s: %w: %w", ref, ErrDeleteUnsupported, err)
	}
	return fmt.Errorf("delete %s: %w", ref, classify(err))
}

func hasCode(te *transport.Error, code transport.ErrorCode) bool {
	for _, d := range te.Errors {
		if d.Code == code {
			return true
		}
	}
	return false
}
