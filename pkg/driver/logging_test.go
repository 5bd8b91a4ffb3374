package driver

import (
	"bytes"
	"context"
	"flag"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"
)

func publishRequest() *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{
		VolumeId:   "csi-0123",
		TargetPath: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount",
		Secrets:    map[string]string{"password": "hunter2"},
		VolumeContext: map[string]string{
			"artifact": "src",
			"csi.storage.k8s.io/serviceAccount.tokens": `{"aud":{"token":"eyJhbGciOi"}}`,
		},
	}
}

func TestSanitize(t *testing.T) {
	req := publishRequest()
	out := prototext.Format(Sanitize(req))
	for _, secret := range []string{"hunter2", "eyJhbGciOi"} {
		if strings.Contains(out, secret) {
			t.Errorf("sanitized request leaks %q:\n%s", secret, out)
		}
	}
	for _, kept := range []string{"csi-0123", "src", "password", strippedValue} {
		if !strings.Contains(out, kept) {
			t.Errorf("sanitized request lost %q:\n%s", kept, out)
		}
	}
	if req.Secrets["password"] != "hunter2" {
		t.Error("Sanitize modified its argument")
	}
}

func TestLogRPC(t *testing.T) {
	var buf bytes.Buffer
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	cfg := textlogger.NewConfig(textlogger.Verbosity(5), textlogger.Output(&buf))
	cfg.AddFlags(fs)
	ctx := klog.NewContext(context.Background(), textlogger.NewLogger(cfg))
	info := &grpc.UnaryServerInfo{FullMethod: "/csi.v1.Node/NodePublishVolume"}

	var handlerLogger bool
	_, err := LogRPC(ctx, publishRequest(), info, func(ctx context.Context, req any) (any, error) {
		klog.FromContext(ctx).Info("inside")
		handlerLogger = true
		return nil, status.Error(codes.Aborted, "busy")
	})
	if status.Code(err) != codes.Aborted || !handlerLogger {
		t.Fatalf("err = %v", err)
	}
	logs := buf.String()
	for _, want := range []string{`"RPC failed"`, `code="Aborted"`, `method="/csi.v1.Node/NodePublishVolume"`, `volumeID="csi-0123"`, `"inside"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	for _, secret := range []string{"hunter2", "eyJhbGciOi"} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs leak %q:\n%s", secret, logs)
		}
	}
}
