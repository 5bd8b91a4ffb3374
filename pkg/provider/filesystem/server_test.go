package filesystem

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestServerOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		// want is what o must then be; wantErr the flags Validate must
		// name, separated by spaces.
		want    func(o *ServerOptions) bool
		wantErr string
	}{
		{"defaults", nil, func(o *ServerOptions) bool {
			p, _ := o.SocketPath()
			return p == "/var/run/artifacts-csi/providers/filesystem.sock" && o.Root == "/var/lib/artifacts-provider-filesystem" &&
				o.NamespaceScoped && o.MaxBlobSize == 0 && o.HTTPAddress == ":9810"
		}, ""},
		{"every flag", []string{"--endpoint=unix:///run/p.sock", "--root=/data", "--namespace-scoped=false", "--max-blob-size=10Gi", "--http-address="}, func(o *ServerOptions) bool {
			p, _ := o.SocketPath()
			return p == "/run/p.sock" && o.Root == "/data" && !o.NamespaceScoped && o.MaxBlobSize == 10<<30 && o.HTTPAddress == ""
		}, ""},
		{"plain size", []string{"--max-blob-size=1048576"}, func(o *ServerOptions) bool { return o.MaxBlobSize == 1<<20 }, ""},
		{"relative endpoint", []string{"--endpoint=p.sock"}, nil, "--endpoint"},
		{"relative root", []string{"--root=data"}, nil, "--root"},
		{"bad address", []string{"--http-address=9810"}, nil, "--http-address"},
		{"every error at once", []string{"--endpoint=unix://p.sock", "--root=data", "--http-address=x"}, nil, "--endpoint --root --http-address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewServerOptions()
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := o.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("Validate succeeded, want an error about %s", tc.wantErr)
			case tc.wantErr != "":
				for _, flag := range strings.Fields(tc.wantErr) {
					if !strings.Contains(err.Error(), flag) {
						t.Errorf("Validate: %v, want an error about %s", err, flag)
					}
				}
			case tc.want != nil && !tc.want(o):
				t.Errorf("options %+v", o)
			}
		})
	}
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	NewServerOptions().AddFlags(fs)
	for _, bad := range []string{"-1", "lots", "1.5.5Gi"} {
		if err := fs.Parse([]string{"--max-blob-size=" + bad}); err == nil {
			t.Errorf("--max-blob-size=%s accepted", bad)
		}
	}
}

func TestHealthz(t *testing.T) {
	root := t.TempDir()
	p, err := New(testContext(t), Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	h := healthHandler(p)
	check := func(want int) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		if rec.Code != want {
			t.Errorf("/healthz: %d %s, want %d", rec.Code, rec.Body, want)
		}
	}
	check(http.StatusOK)
	// The volume went away under the provider.
	if err := os.RemoveAll(filepath.Join(root, stagingDir)); err != nil {
		t.Fatal(err)
	}
	check(http.StatusServiceUnavailable)
}
