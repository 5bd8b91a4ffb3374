package driver

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestOptions(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(*testing.T, *Options)
		error string
	}{
		{name: "defaults need a node id", error: "--node-id is required"},
		{name: "defaults", args: []string{"--node-id=n1"}, check: func(t *testing.T, o *Options) {
			if o.CacheBytes != 10<<30 || o.UploadDeadline != 24*time.Hour || !o.Registration || o.KubeletDir != "/var/lib/kubelet" || o.FillWorkers != 4 || o.CacheGrantTTL != 10*time.Minute {
				t.Errorf("options = %+v", o)
			}
			if p, _ := o.SocketPath(); p != "/var/lib/kubelet/plugins/artifacts.csi.tekton.dev/csi.sock" {
				t.Errorf("socket = %q", p)
			}
		}},
		{name: "sizes", args: []string{"--node-id=n1", "--cache-size=512Mi"}, check: func(t *testing.T, o *Options) {
			if o.CacheBytes != 512<<20 {
				t.Errorf("cache = %d", o.CacheBytes)
			}
		}},
		{name: "bad endpoint", args: []string{"--node-id=n1", "--endpoint=tcp://0.0.0.0:10000"}, error: "--endpoint must be unix://"},
		{name: "relative state dir", args: []string{"--node-id=n1", "--state-dir=state"}, error: "--state-dir must be an absolute path"},
		{name: "zero deadline", args: []string{"--node-id=n1", "--upload-deadline=0s"}, error: "--upload-deadline must be positive"},
		{name: "several errors at once", args: []string{"--kubelet-dir=k", "--cache-size=0"}, error: "--node-id is required\n"},
		{name: "bad size", args: []string{"--node-id=n1", "--cache-size=10GB"}, error: "want a size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOptions()
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			o.AddFlags(fs)
			err := fs.Parse(tc.args)
			if err == nil {
				err = o.Validate()
			}
			if tc.error != "" {
				if err == nil || !strings.Contains(err.Error(), tc.error) {
					t.Fatalf("err = %v, want %q", err, tc.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, o)
		})
	}
}
