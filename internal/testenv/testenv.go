// Package testenv starts a real kube-apiserver and etcd for tests, through
// controller-runtime's envtest, with this project's CRDs installed. The
// binaries are built from the Go module proxy by `hack/tools.sh --kube`.
package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	artifactsv1alpha1 "github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
)

// Env is a running API server.
type Env struct {
	// Config and Client are the administrator's.
	Config *rest.Config
	Client client.Client
	env    *envtest.Environment
}

// User returns a configuration authenticating as user name, who may do
// only what RBAC bindings grant.
func (e *Env) User(t testing.TB, name string) *rest.Config {
	t.Helper()
	u, err := e.env.AddUser(envtest.User{Name: name}, e.Config)
	if err != nil {
		t.Fatalf("add user %s: %v", name, err)
	}
	return u.Config()
}

// assets returns the directory holding etcd and kube-apiserver:
// $KUBEBUILDER_ASSETS, else hack/tools.sh's cache directory.
func assets(t testing.TB) string {
	dirs := []string{os.Getenv("KUBEBUILDER_ASSETS"), os.Getenv("TOOLS_DIR")}
	if home, err := os.UserCacheDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "tekton-artifacts-tools"))
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "kube-apiserver")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "etcd")); err == nil {
				return d
			}
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("etcd and kube-apiserver not found; run hack/tools.sh --kube or set KUBEBUILDER_ASSETS")
	}
	t.Skip("etcd and kube-apiserver not found; run hack/tools.sh --kube or set KUBEBUILDER_ASSETS")
	return ""
}

// Start starts etcd and kube-apiserver with the CRDs of deploy/crd and
// the minimal Tekton CRDs of test/fixtures/tekton installed, and stops them
// when the test ends.
func Start(t testing.TB) *Env {
	t.Helper()
	ctrllog.SetLogger(klog.Background())
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(here), "..", "..")
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets(t),
		CRDDirectoryPaths: []string{
			filepath.Join(root, "deploy", "crd"),
			filepath.Join(root, "test", "fixtures", "tekton"),
		},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver and etcd: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})
	s := scheme.Scheme
	if err := artifactsv1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return &Env{Config: cfg, Client: c, env: env}
}
