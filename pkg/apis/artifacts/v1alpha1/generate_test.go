package v1alpha1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// TestGeneratedFilesAreCurrent runs `make generate`'s controller-gen into a
// scratch directory and compares: a change to types.go or to an RBAC
// marker without `make generate` fails here.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("runs controller-gen through the Go module proxy")
	}
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(here), "..", "..", "..", "..")
	out := t.TempDir()
	for _, args := range [][]string{
		{"object:headerFile=/dev/null", "paths=./pkg/apis/...", "crd:crdVersions=v1",
			"output:object:dir=" + filepath.Join(out, "object"), "output:crd:artifacts:config=" + filepath.Join(out, "crd")},
		{"rbac:roleName=artifacts-csi-node", "paths=./pkg/driver/...", "output:rbac:artifacts:config=" + filepath.Join(out, "node")},
		{"rbac:roleName=artifacts-controller", "paths=./pkg/controller/...", "output:rbac:artifacts:config=" + filepath.Join(out, "controller")},
	} {
		cmd := exec.Command("go", append([]string{"run", "sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0"}, args...)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("controller-gen: %v\n%s", err, b)
		}
	}
	for generated, committed := range map[string]string{
		filepath.Join(out, "object", "zz_generated.deepcopy.go"):               filepath.Join(root, "pkg/apis/artifacts/v1alpha1/zz_generated.deepcopy.go"),
		filepath.Join(out, "crd", "artifacts.tekton.dev_artifactrecords.yaml"): filepath.Join(root, "deploy/crd/artifacts.tekton.dev_artifactrecords.yaml"),
		filepath.Join(out, "node", "role.yaml"):                                filepath.Join(root, "deploy/rbac/node/role.yaml"),
		filepath.Join(out, "controller", "role.yaml"):                          filepath.Join(root, "deploy/rbac/controller/role.yaml"),
	} {
		want, err := os.ReadFile(generated)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(committed)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run make generate", committed)
		}
	}
}
