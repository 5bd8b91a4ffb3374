package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/cli"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

var digestRef = regexp.MustCompile(`^[^\s@]+@sha256:[0-9a-f]{64}$`)

// run executes the command in-process and returns stdout, stderr and the
// error.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout bytes.Buffer
	stderr, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd := cli.NewCommand("test", &stdout, stderr)
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(context.Background())
	errOut, _ := os.ReadFile(stderr.Name())
	return stdout.String(), string(errOut), err
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestPushPullInspect(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	host := testregistry.InMemory(t, true)
	src := t.TempDir()
	testtree.Write(t, src, 7)

	out, _, err := run(t, "push", "--name", "build", "--compression", "zstd", src, host+"/team/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	ref := lastLine(out)
	if !digestRef.MatchString(ref) || !strings.HasPrefix(ref, host+"/team/app@") {
		t.Fatalf("push printed %q, want REPO@sha256:<hex>", out)
	}

	dest := filepath.Join(t.TempDir(), "in")
	out, _, err = run(t, "pull", host+"/team/app:v1", dest)
	if err != nil {
		t.Fatal(err)
	}
	if lastLine(out) != ref {
		t.Errorf("pull by tag printed %q, want %q", out, ref)
	}
	testtree.Equal(t, src, dest)

	out, _, err = run(t, "inspect", "-o", "json", ref)
	if err != nil {
		t.Fatal(err)
	}
	var d oci.Description
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("inspect -o json: %v\n%s", err, out)
	}
	if d.Reference != ref || d.Artifact == nil || d.Artifact.Name != "build" || len(d.Layers) != 1 {
		t.Errorf("inspect = %+v", d)
	}
	out, _, err = run(t, "inspect", ref)
	if err != nil || !strings.Contains(out, "Name:") || !strings.Contains(out, "tar+zstd") {
		t.Errorf("inspect text = %q, %v", out, err)
	}
}

func TestErrors(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	host := testregistry.InMemory(t, true)
	src := t.TempDir()
	testtree.Write(t, src, 8)
	out, _, err := run(t, "push", src, host+"/team/app")
	if err != nil {
		t.Fatal(err)
	}
	ref := lastLine(out)
	nonEmpty := t.TempDir()
	os.WriteFile(filepath.Join(nonEmpty, "keep"), []byte("x"), 0o644)

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"pull into non-empty dir", []string{"pull", ref, nonEmpty}, "not empty"},
		{"unknown compression", []string{"push", "--compression", "lz4", src, host + "/x"}, "unknown compression"},
		{"push a file", []string{"push", filepath.Join(src, "README.md"), host + "/x"}, "not a directory"},
		{"push with digest", []string{"push", src, ref}, "must not have a digest"},
		{"pull without tag", []string{"pull", host + "/team/app", t.TempDir()}, "needs a :TAG"},
		{"pull missing tag", []string{"pull", host + "/team/app:nope", filepath.Join(t.TempDir(), "d")}, "not found"},
		{"inspect bad output", []string{"inspect", "-o", "yaml", ref}, "unknown output format"},
		{"pull over the entry limit", []string{"pull", "--max-entries", "3", ref, filepath.Join(t.TempDir(), "d")}, "more than 3 entries"},
		{"pull over the byte limit", []string{"pull", "--max-bytes", "1000", ref, filepath.Join(t.TempDir(), "d")}, "an artifact of at most 1000 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if b, _ := os.ReadFile(filepath.Join(nonEmpty, "keep")); string(b) != "x" {
		t.Error("failed pull changed the destination")
	}
}

// TestBinaryContract runs the built binary against a real distribution
// registry: stdout's last line, exit codes, and one-line errors.
func TestBinaryContract(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	reg := testregistry.StartDistribution(t)
	bin := filepath.Join(t.TempDir(), "artifacts")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/artifacts").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	env := append(os.Environ(), "XDG_CACHE_HOME="+t.TempDir())
	exe := func(args ...string) (string, string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return stdout.String(), stderr.String(), code
	}
	src := t.TempDir()
	testtree.Write(t, src, 9)
	out, errOut, code := exe("push", "--plain-http", src, reg.Host+"/contract/app:v1")
	ref := lastLine(out)
	if code != 0 || !digestRef.MatchString(ref) {
		t.Fatalf("push: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	dest := filepath.Join(t.TempDir(), "in")
	if out, errOut, code := exe("pull", "--plain-http", ref, dest); code != 0 || lastLine(out) != ref {
		t.Fatalf("pull: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	testtree.Equal(t, src, dest)

	_, errOut, code = exe("pull", "--plain-http", reg.Host+"/contract/app:missing", filepath.Join(t.TempDir(), "x"))
	if code == 0 || strings.Count(strings.TrimRight(errOut, "\n"), "\n") != 0 || !strings.HasPrefix(errOut, "artifacts: ") {
		t.Errorf("failed pull: code %d, stderr %q; want non-zero and one line", code, errOut)
	}
	reg.Stop(t)
	_, errOut, code = exe("push", "--plain-http", src, reg.Host+"/contract/app:v2")
	if code == 0 || strings.Count(strings.TrimRight(errOut, "\n"), "\n") != 0 || !strings.Contains(errOut, "connection refused") {
		t.Errorf("push to a stopped registry: code %d, stderr %q; want non-zero, one line naming the cause", code, errOut)
	}
}

// TestPushPullChunked: push --format chunked, then pull and inspect it.
func TestPushPullChunked(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	host := testregistry.InMemory(t, true)
	src := t.TempDir()
	testtree.Write(t, src, 9)
	out, _, err := run(t, "push", "--format", "chunked", src, host+"/team/cache:v1")
	if err != nil {
		t.Fatal(err)
	}
	ref := lastLine(out)
	dest := filepath.Join(t.TempDir(), "in")
	if _, _, err := run(t, "pull", ref, dest); err != nil {
		t.Fatal(err)
	}
	testtree.Equal(t, src, dest)
	out, _, err = run(t, "inspect", ref)
	if err != nil || !strings.Contains(out, "chunked.index.v1") {
		t.Errorf("inspect = %q, %v", out, err)
	}
	if _, _, err := run(t, "push", "--format", "zip", src, host+"/team/cache:v2"); err == nil || !strings.Contains(err.Error(), `unknown format "zip"`) {
		t.Errorf("push --format zip: %v", err)
	}
}
