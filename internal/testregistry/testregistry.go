// Package testregistry starts OCI registries for tests: go-containerregistry's
// in-process registry (with or without the referrers API) and a real CNCF
// distribution registry process.
package testregistry

import (
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"golang.org/x/crypto/bcrypt"
)

// InMemory starts go-containerregistry's in-process registry and returns its
// host:port. referrers turns the OCI referrers API on.
func InMemory(t testing.TB, referrers bool) string {
	t.Helper()
	s := httptest.NewServer(registry.New(
		registry.WithReferrersSupport(referrers),
		registry.Logger(nopLogger()),
	))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// Handler wraps an in-process registry with middleware, for fault injection.
func Handler(t testing.TB, referrers bool, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	s := httptest.NewServer(wrap(registry.New(
		registry.WithReferrersSupport(referrers),
		registry.Logger(nopLogger()),
	)))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// Binary returns the path of the distribution registry binary: $REGISTRY_BIN,
// else `registry` in hack/tools.sh's cache directory or on PATH. When none is
// found the test is skipped, unless $CI is set, where it fails: CI installs
// it with hack/tools.sh.
func Binary(t testing.TB) string {
	t.Helper()
	candidates := []string{os.Getenv("REGISTRY_BIN")}
	if d := os.Getenv("TOOLS_DIR"); d != "" {
		candidates = append(candidates, filepath.Join(d, "registry"))
	}
	if home, err := os.UserCacheDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, "tekton-artifacts-tools", "registry"))
	}
	if p, err := exec.LookPath("registry"); err == nil {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
			return c
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("distribution registry binary not found; run hack/tools.sh or set REGISTRY_BIN")
	}
	t.Skip("distribution registry binary not found; run hack/tools.sh or set REGISTRY_BIN")
	return ""
}

// Distribution is a running CNCF distribution registry process.
type Distribution struct {
	Host string // 127.0.0.1:port
	cmd  *exec.Cmd
	conf string
	log  *os.File
}

// StartDistribution starts a registry process with filesystem storage in a
// test directory, waits until it answers, and stops it at cleanup. With
// users (name → password) it requires their basic authentication
// (htpasswd); any of them may read and write every repository. It allows
// deletion; see StartDistributionWith for more options.
func StartDistribution(t testing.TB, users ...map[string]string) *Distribution {
	t.Helper()
	o := DistributionOptions{Users: map[string]string{}}
	for _, m := range users {
		maps.Copy(o.Users, m)
	}
	return StartDistributionWith(t, o)
}

// DistributionOptions configures StartDistributionWith. The zero value is
// an anonymous registry that allows deletion.
type DistributionOptions struct {
	// Users (name → password) must authenticate (htpasswd); any of them
	// may read, write and delete in every repository. None: anonymous.
	Users map[string]string
	// NoDelete turns storage.delete.enabled off: the registry answers a
	// DELETE of a manifest or a tag with 405 UNSUPPORTED.
	NoDelete bool
}

// StartDistributionWith is StartDistribution configured by o.
func StartDistributionWith(t testing.TB, o DistributionOptions) *Distribution {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	d := &Distribution{Host: freeAddr(t), conf: filepath.Join(dir, "config.yml")}
	conf := fmt.Sprintf(`version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: %t
http:
  addr: %s
`, filepath.Join(dir, "data"), !o.NoDelete, d.Host)
	if len(o.Users) > 0 {
		htpasswd := filepath.Join(dir, "htpasswd")
		var b strings.Builder
		for name, pass := range o.Users {
			hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s:%s\n", name, hash)
		}
		if err := os.WriteFile(htpasswd, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		conf += fmt.Sprintf("auth:\n  htpasswd:\n    realm: test\n    path: %s\n", htpasswd)
	}
	if err := os.WriteFile(d.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	d.log = log
	d.cmd = exec.Command(bin, "serve", d.conf)
	d.cmd.Stdout, d.cmd.Stderr = log, log
	d.Start(t)
	t.Cleanup(func() { d.Stop(t) })
	return d
}

// Start (re)starts the process on the same address and storage.
func (d *Distribution) Start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(d.cmd.Path, d.cmd.Args[1:]...)
	cmd.Stdout, cmd.Stderr = d.log, d.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start registry: %v", err)
	}
	d.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + d.Host + "/v2/")
		if err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(d.log.Name())
	t.Fatalf("registry did not start on %s: %s", d.Host, b)
}

// Stop kills the process; Start brings it back with the same content.
func (d *Distribution) Stop(t testing.TB) {
	if d.cmd.Process == nil || d.cmd.ProcessState != nil {
		return
	}
	d.cmd.Process.Kill()
	d.cmd.Wait()
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
