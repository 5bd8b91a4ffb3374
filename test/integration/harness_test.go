// Package integration runs the node plugin binary as kubelet would: real
// unix sockets, real bind mounts (as root) and a real registry process.
package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tektoncd/artifacts-csi-driver/internal/testkit"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

// pluginBin, controllerBin and providerBin are the node plugin, the
// controller and the filesystem storage provider, built once by TestMain,
// with the race detector when the tests have it (not for benchmarks).
var pluginBin, controllerBin, providerBin string

var raceEnabled bool

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			fmt.Println("skipping integration tests: bind mounts need root")
			if os.Getenv("CI") != "" {
				return 1
			}
			return 0
		}
		dir, err := os.MkdirTemp("", "artifacts-csi-bin-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		args := []string{"build", "-o", dir + "/"}
		if raceEnabled {
			args = append(args, "-race")
		}
		const cmd = "github.com/tektoncd/artifacts-csi-driver/cmd/"
		build := exec.Command("go", append(args, cmd+"artifacts-csi-node", cmd+"artifacts-controller", cmd+"artifacts-provider-filesystem")...)
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Println("build the node plugin, the controller and the provider:", err)
			return 1
		}
		pluginBin, controllerBin = filepath.Join(dir, "artifacts-csi-node"), filepath.Join(dir, "artifacts-controller")
		providerBin = filepath.Join(dir, "artifacts-provider-filesystem")
		return m.Run()
	}()
	os.Exit(code)
}

// plugin is a node plugin process with its directories, which outlive a
// restart.
type plugin struct {
	t                               testing.TB
	kubeletDir, stateDir, configDir string
	socket                          string
	cmd                             *exec.Cmd
	log                             *os.File
	conn                            *grpc.ClientConn
	node                            csi.NodeClient
	extraArgs                       []string
	bin                             string // default pluginBin
}

// newPlugin prepares directories and a config with the given keys; start
// runs it.
func newPlugin(t *testing.T, config map[string]string, args ...string) *plugin {
	t.Helper()
	return newPluginIn(t, t.TempDir(), config, args...)
}

// newPluginIn is newPlugin with its directories under root.
func newPluginIn(t testing.TB, root string, config map[string]string, args ...string) *plugin {
	t.Helper()
	p := &plugin{t: t, kubeletDir: filepath.Join(root, "kubelet"), stateDir: filepath.Join(root, "state"),
		configDir: filepath.Join(root, "config"), socket: filepath.Join(root, "csi.sock"), extraArgs: args}
	for _, d := range []string{p.kubeletDir, p.configDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range config {
		if err := os.WriteFile(filepath.Join(p.configDir, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	log, err := os.Create(filepath.Join(root, "plugin.log"))
	if err != nil {
		t.Fatal(err)
	}
	p.log = log
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("plugin log:\n%s", tail(string(b), 60))
		}
		unmountAll(p.kubeletDir)
		unmountAll(p.stateDir) // ext4 output filesystems
	})
	return p
}

func (p *plugin) start() {
	p.t.Helper()
	args := append([]string{"--node-id=node-1", "--endpoint=unix://" + p.socket, "--kubelet-dir=" + p.kubeletDir,
		"--state-dir=" + p.stateDir, "--config-dir=" + p.configDir, "--http-address=", "--plugin-registration=false", "-v=4"},
		p.extraArgs...)
	bin := p.bin
	if bin == "" {
		bin = pluginBin
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	conn, err := grpc.NewClient("unix://"+p.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		p.t.Fatal(err)
	}
	p.conn, p.node = conn, csi.NewNodeClient(conn)
	id := csi.NewIdentityClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(p.t.Context(), time.Second)
		r, err := id.Probe(ctx, &csi.ProbeRequest{})
		cancel()
		if err == nil && r.GetReady().GetValue() {
			return
		}
		if time.Now().After(deadline) || p.cmd.ProcessState != nil {
			b, _ := os.ReadFile(p.log.Name())
			p.t.Fatalf("plugin not ready: %v\n%s", err, tail(string(b), 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startProcess runs bin with args until the test ends (then SIGTERM),
// logging to a file whose tail is shown when the test failed.
func startProcess(t *testing.T, name, bin string, args ...string) {
	t.Helper()
	log, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("%s log:\n%s", name, tail(string(b), 60))
		}
	})
}

// kill stops the plugin with SIGKILL, as a crash or an OOM kill would.
func (p *plugin) kill() { p.signal(syscall.SIGKILL) }

// stop stops the plugin with SIGTERM, as kubelet does.
func (p *plugin) stop() { p.signal(syscall.SIGTERM) }

func (p *plugin) signal(sig syscall.Signal) {
	if p.cmd == nil || p.cmd.Process == nil || p.cmd.ProcessState != nil {
		return
	}
	p.conn.Close()
	p.cmd.Process.Signal(sig)
	p.cmd.Wait()
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// unmountAll lazily unmounts whatever a failed test left mounted under dir.
func unmountAll(dir string) {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			syscall.Unmount(f[4], syscall.MNT_DETACH)
		}
	}
}

// pod is what kubelet knows of a pod.
type pod = testkit.Pod

func newPod(name string) pod { return testkit.NewPod(name, "team-a") }

func (pl *plugin) target(p pod, volume string) string { return p.TargetPath(pl.kubeletDir, volume) }

// publish calls NodePublishVolume the way kubelet does for a csi: volume
// with podInfoOnMount.
func (pl *plugin) publish(ctx context.Context, p pod, volume string, attrs map[string]string) error {
	return pl.publishWith(ctx, p, volume, attrs, testkit.Publish{})
}

func (pl *plugin) publishWith(ctx context.Context, p pod, volume string, attrs map[string]string, o testkit.Publish) error {
	req := p.PublishRequest(pl.kubeletDir, volume, attrs, o)
	if err := os.MkdirAll(filepath.Dir(req.GetTargetPath()), 0o750); err != nil {
		return err
	}
	_, err := pl.node.NodePublishVolume(ctx, req)
	return err
}

func (pl *plugin) unpublish(ctx context.Context, p pod, volume string) error {
	_, err := pl.node.NodeUnpublishVolume(ctx, testkit.UnpublishRequest(p.PublishRequest(pl.kubeletDir, volume, nil, testkit.Publish{})))
	return err
}

func mustOK(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// waitForTag polls the registry until repo:tag exists and returns its
// manifest digest reference.
func waitForTag(t testing.TB, repoTag string, timeout time.Duration) string {
	t.Helper()
	ref, err := oci.ParseReference(repoTag, oci.PlainHTTP)
	if err != nil {
		t.Fatal(err)
	}
	c := oci.New(oci.Options{})
	deadline := time.Now().Add(timeout)
	for {
		d, err := c.Resolve(t.Context(), ref)
		if err == nil {
			return d.Name()
		}
		if !errors.Is(err, errdefs.ErrNotFound) && time.Now().After(deadline) || time.Now().After(deadline) {
			t.Fatalf("%s never appeared: %v", repoTag, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proxy sits between the plugin and a registry to count and disturb
// traffic.
type proxy struct {
	Host       string
	blobGets   atomic.Int32
	deletes    atomic.Int32 // DELETE requests of tags and manifests
	mu         sync.Mutex
	stallPush  chan struct{} // when set, blob uploads wait for it to close
	corruptGet atomic.Bool   // flip a byte in every blob body served
}

func newProxy(t *testing.T, upstream string) *proxy {
	u, _ := url.Parse("http://" + upstream)
	rp := httputil.NewSingleHostReverseProxy(u)
	p := &proxy{}
	rp.ModifyResponse = func(r *http.Response) error {
		if p.corruptGet.Load() && r.Request.Method == http.MethodGet && strings.Contains(r.Request.URL.Path, "/blobs/sha256:") && r.StatusCode == http.StatusOK {
			r.Body = &flipFirst{r: r.Body}
		}
		return nil
	}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			p.blobGets.Add(1)
		}
		if r.Method == http.MethodDelete {
			p.deletes.Add(1)
		}
		if strings.Contains(r.URL.Path, "/blobs/uploads/") && r.Method != http.MethodPost {
			p.mu.Lock()
			gate := p.stallPush
			p.mu.Unlock()
			if gate != nil {
				select {
				case <-gate:
				case <-r.Context().Done():
					return
				}
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	p.Host = strings.TrimPrefix(s.URL, "http://")
	return p
}

func (p *proxy) stall() (release func()) {
	gate := make(chan struct{})
	p.mu.Lock()
	p.stallPush = gate
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		p.stallPush = nil
		p.mu.Unlock()
		close(gate)
	}
}

type flipFirst struct {
	r    io.ReadCloser
	done bool
}

func (f *flipFirst) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	if n > 0 && !f.done {
		b[0] ^= 0xff
		f.done = true
	}
	return n, err
}

func (f *flipFirst) Close() error { return f.r.Close() }
