package driver

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/tektoncd/artifacts-csi-driver/internal/serve"
	"github.com/tektoncd/artifacts-csi-driver/internal/unixsock"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

type fakeAdmin struct {
	vs      []outputs.Volume
	retried map[string]credentials.Snapshot
}

func (f *fakeAdmin) List() []outputs.Volume { return f.vs }

func (f *fakeAdmin) Retry(_ context.Context, id string, creds credentials.Snapshot) error {
	for _, v := range f.vs {
		if v.ID == id {
			if v.State != outputs.Failed {
				return fmt.Errorf("output %s is %s: %w", id, v.State, outputs.ErrNotFailed)
			}
			f.retried[id] = creds
			return nil
		}
	}
	return fmt.Errorf("output %s: %w", id, fs.ErrNotExist)
}

func TestOutputsCommand(t *testing.T) {
	dir := t.TempDir()
	admin := &fakeAdmin{retried: map[string]credentials.Snapshot{}, vs: []outputs.Volume{
		{ID: "csi-1", State: outputs.Failed, LastError: "denied", Pod: volume.Pod{Namespace: "team", Name: "build-pod"}, Metadata: artifact.Metadata{Name: "report"}},
		{ID: "csi-2", State: outputs.Sealed},
	}}
	lis, err := unixsock.Listen(filepath.Join(dir, adminSocket), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- serve.Listener(ctx, lis, adminHandler(admin)) }()
	defer func() { cancel(); <-done }()
	dockerConfig := filepath.Join(dir, "config.json")
	os.WriteFile(dockerConfig, []byte(`{"auths":{"registry.example":{"auth":"dTpw"}}}`), 0o600)

	tests := []struct {
		args       []string
		code       int
		out, errs  string
		wantRetry  string
		wantSecret bool
	}{
		{args: []string{"list"}, out: "csi-1   Failed  report    team/build-pod"},
		{args: []string{"list", "-o", "json"}, out: `"volumeID": "csi-2"`},
		{args: []string{"retry", "csi-1", "--docker-config", dockerConfig}, out: "sealed again", wantRetry: "csi-1", wantSecret: true},
		{args: []string{"retry", "csi-2"}, code: 1, errs: "409 Conflict: output csi-2 is Sealed: not failed"},
		{args: []string{"retry", "csi-9"}, code: 1, errs: "404 Not Found"},
		{args: []string{"frobnicate"}, code: 2, errs: "usage:"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errs bytes.Buffer
			code := OutputsCommand(append(tt.args, "--state-dir", dir), &out, &errs)
			if code != tt.code || !strings.Contains(out.String(), tt.out) || !strings.Contains(errs.String(), tt.errs) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, out.String(), errs.String(), tt.code, tt.out, tt.errs)
			}
			if tt.wantRetry == "" {
				return
			}
			creds, ok := admin.retried[tt.wantRetry]
			if !ok || (len(creds.Secrets) == 1) != tt.wantSecret {
				t.Fatalf("retried with %v (%v)", creds, ok)
			}
			if s := creds.Secrets[0]; s.Type != corev1.SecretTypeDockerConfigJson || !strings.Contains(string(s.Data[corev1.DockerConfigJsonKey]), "registry.example") {
				t.Errorf("credentials: %+v", s.Type)
			}
		})
	}
}
