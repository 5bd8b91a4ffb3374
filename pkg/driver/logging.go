// Package driver implements the CSI services of the node plugin.
package driver

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/klog/v2"

	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// strippedValue replaces secrets in logged requests.
const strippedValue = "***stripped***"

// LogRPC is a unary server interceptor that logs every call with its
// method, gRPC code and duration, and puts a logger carrying the method,
// volume id and target path into the handler's context. Failures log at
// level 0, successes at level 4, and request bodies at level 5, with every
// `secrets` field and the service-account tokens stripped. Safe for
// concurrent use.
func LogRPC(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	logger := klog.FromContext(ctx).WithValues("method", info.FullMethod)
	if r, ok := req.(interface{ GetVolumeId() string }); ok && r.GetVolumeId() != "" {
		logger = logger.WithValues("volumeID", r.GetVolumeId())
	}
	if r, ok := req.(interface{ GetTargetPath() string }); ok && r.GetTargetPath() != "" {
		logger = logger.WithValues("targetPath", r.GetTargetPath())
	}
	if logger.V(5).Enabled() {
		if m, ok := req.(proto.Message); ok {
			logger.V(5).Info("RPC request", "request", Sanitize(m))
		}
	}
	resp, err := handler(klog.NewContext(ctx, logger), req)
	code := status.Code(err)
	if err != nil {
		logger.Error(err, "RPC failed", "code", code, "duration", time.Since(start))
	} else {
		logger.V(4).Info("RPC succeeded", "code", code, "duration", time.Since(start))
	}
	return resp, err
}

// Sanitize returns a copy of m with the values of every map field named
// `secrets` (how CSI names all its secret fields) and of the
// service-account tokens in a volume context replaced, at any depth.
func Sanitize(m proto.Message) proto.Message {
	c := proto.Clone(m)
	strip(c.ProtoReflect())
	return c
}

func strip(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			mp := v.Map()
			secrets := fd.Name() == "secrets"
			mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				switch {
				case secrets || k.String() == volume.KeyServiceAccountTok:
					mp.Set(k, protoreflect.ValueOfString(strippedValue))
				case fd.MapValue().Message() != nil:
					strip(mv.Message())
				}
				return true
			})
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				strip(l.Get(i).Message())
			}
		case fd.Message() != nil:
			strip(v.Message())
		}
		return true
	})
}
