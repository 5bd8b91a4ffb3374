package store

import (
	"errors"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider"
	pb "github.com/tektoncd/artifacts-csi-driver/proto/provider/v1alpha1"
)

// Stores opens the stores of a node: OCI registries through Registry, any
// other backend through Providers. It is safe for concurrent use.
type Stores struct {
	// Registry is the OCI client; each store derives one with the
	// identity's keychain. Required for the OCI backend.
	Registry *oci.Client
	// Providers reaches the node's storage providers. Default none: Open
	// then fails for any backend but OCI (ErrInvalid).
	Providers *provider.Client
}

var _ Opener = Stores{}

// Open implements Opener.
func (s Stores) Open(id Identity) (Store, error) {
	switch {
	case id.Backend == OCI:
		if s.Registry == nil {
			return nil, errors.New("store: no OCI registry client")
		}
		kc := id.Keychain
		if kc == nil {
			kc = authn.NewMultiKeychain() // anonymous
		}
		return registry{client: s.Registry.With(kc), scheme: oci.SchemeOf(id.PlainHTTP)}, nil
	case !pb.ValidName(id.Backend):
		return nil, fmt.Errorf("%w: backend %q is neither %q nor a provider name", errdefs.ErrInvalid, id.Backend, OCI)
	case s.Providers == nil:
		return nil, fmt.Errorf("%w: backend %q: this node plugin has no storage provider client", errdefs.ErrInvalid, id.Backend)
	}
	return providerStore{client: s.Providers, name: id.Backend, namespace: id.Namespace}, nil
}
