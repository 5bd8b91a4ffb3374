package driver

import (
	"context"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The Controller service exists for conformance tools; kubelet never calls
// it for ephemeral volumes. It advertises no capability, and every volume
// id is unknown to it.

// ControllerGetCapabilities returns an empty list.
func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{}, nil
}

// ValidateVolumeCapabilities checks its arguments, then answers NotFound:
// this driver has no persistent volumes.
func (d *Driver) ValidateVolumeCapabilities(_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are required")
	}
	return nil, status.Errorf(codes.NotFound, "volume %q does not exist: %s serves ephemeral inline volumes only", req.GetVolumeId(), DriverName)
}
