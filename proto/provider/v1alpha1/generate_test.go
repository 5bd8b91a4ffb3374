package providerv1alpha1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"testing"
)

// withoutProtocVersion drops the header line naming protoc's version, which
// differs between Debian releases without changing the code.
func withoutProtocVersion(b []byte) []byte {
	return regexp.MustCompile(`(?m)^// .*protoc +v[0-9.]+\n`).ReplaceAll(b, nil)
}

// TestGeneratedCodeIsCurrent runs `make proto`'s generators into a scratch
// directory and compares: a change to provider.proto without `make proto`
// fails here.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the protoc plugins through the Go module proxy")
	}
	if _, err := exec.LookPath("protoc"); err != nil && os.Getenv("CI") == "" {
		t.Skip("protoc is not installed (Debian package protobuf-compiler); CI installs it")
	}
	_, here, _, _ := runtime.Caller(0)
	dir := filepath.Dir(here)
	root := filepath.Join(dir, "..", "..", "..")
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(root, "hack", "proto.sh"), out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/proto.sh: %v\n%s", err, b)
	}
	for _, name := range []string{"provider.pb.go", "provider_grpc.pb.go"} {
		want, err := os.ReadFile(filepath.Join(out, "proto", "provider", "v1alpha1", name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(withoutProtocVersion(got), withoutProtocVersion(want)) {
			t.Errorf("proto/provider/v1alpha1/%s is stale: run make proto", name)
		}
	}
}
