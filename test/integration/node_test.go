package integration

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tektoncd/artifacts-csi-driver/internal/testkit"
	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

func registryConfig(host string) map[string]string {
	return map[string]string{"oci.repository": host + "/team-a/artifacts", "oci.plainHTTP": "true"}
}

func output(name string) map[string]string {
	return map[string]string{"direction": "output", "artifact": name}
}

func input(name, ref string) map[string]string {
	return map[string]string{"direction": "input", "artifact": name, "ref": ref}
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: code %s (%v), want %s", what, got, err, want)
	}
}

// produce publishes an output for a new pod, writes a tree with seed into
// it and unpublishes it; it returns the pod.
func produce(t *testing.T, pl *plugin, name string, seed uint64) pod {
	t.Helper()
	ctx := t.Context()
	p := newPod(name)
	mustOK(t, "publish output", pl.publish(ctx, p, "out", output("build")))
	testtree.Write(t, pl.target(p, "out"), seed)
	mustOK(t, "unpublish output", pl.unpublish(ctx, p, "out"))
	return p
}

// TestKubeletLifecycle follows a producer and a consumer pod through the
// calls kubelet makes, against a real registry process. Without
// write-through, the consumer fetches what the producer pushed
// (TestWriteThrough covers the other way).
func TestKubeletLifecycle(t *testing.T) {
	ctx := t.Context()
	dist := testregistry.StartDistribution(t)
	httpAddr := freeAddr(t)
	pl := newPlugin(t, registryConfig(dist.Host), "--http-address="+httpAddr, "--write-through=false")
	pl.start()

	// Producer: an empty writable directory, pushed after unpublish.
	producer := newPod("producer")
	mustOK(t, "publish output", pl.publish(ctx, producer, "out", output("build")))
	mustOK(t, "repeat publish", pl.publish(ctx, producer, "out", output("build")))
	wantCode(t, "same volume, other arguments", pl.publish(ctx, producer, "out", output("other")), codes.AlreadyExists)
	target := pl.target(producer, "out")
	if entries, err := os.ReadDir(target); err != nil || len(entries) != 0 {
		t.Fatalf("output target: %v, %v; want an empty directory", entries, err)
	}
	testtree.Write(t, target, 7)
	want := t.TempDir()
	testtree.Write(t, want, 7)
	mustOK(t, "unpublish output", pl.unpublish(ctx, producer, "out"))
	mustOK(t, "repeat unpublish", pl.unpublish(ctx, producer, "out"))
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("target still exists after unpublish: %v", err)
	}
	ref := waitForTag(t, dist.Host+"/team-a/artifacts:team-a.producer.build", 30*time.Second)

	// Consumer: the same bytes, read-only.
	consumer := newPod("consumer")
	mustOK(t, "publish input", pl.publish(ctx, consumer, "in", input("source", ref)))
	in := pl.target(consumer, "in")
	testtree.EqualMounted(t, want, in)
	if err := os.WriteFile(filepath.Join(in, "new"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write into an input: %v, want EROFS", err)
	}
	mustOK(t, "repeat publish input", pl.publish(ctx, consumer, "in", input("source", ref)))
	wantCode(t, "input with another ref", pl.publish(ctx, consumer, "in", input("source", ref[:len(ref)-1]+"0")), codes.AlreadyExists)
	mustOK(t, "unpublish input", pl.unpublish(ctx, consumer, "in"))
	if _, err := os.Stat(in); !os.IsNotExist(err) {
		t.Errorf("input target still exists after unpublish: %v", err)
	}

	// What the metrics say so far (the upload is counted just after the tag
	// appears, once recorded and deleted).
	var metrics string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if metrics = scrape(t, "http://"+httpAddr+"/metrics"); strings.Contains(metrics, `artifacts_csi_uploads_total{result="pushed"} 1`) {
			break
		}
	}
	for _, want := range []string{
		`artifacts_csi_operation_duration_seconds_count{code="OK",direction="output",operation="publish"} 2`,
		`artifacts_csi_operation_duration_seconds_count{code="AlreadyExists",direction="output",operation="publish"} 1`,
		`artifacts_csi_operation_duration_seconds_count{code="OK",direction="input",operation="unpublish"} 1`,
		`artifacts_csi_cache_lookups_total{result="miss"} 1`,
		`artifacts_csi_uploads_total{result="pushed"} 1`,
		`artifacts_csi_upload_queue_depth 0`,
		`artifacts_csi_cache_entries 1`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, line := range strings.Split(metrics, "\n") {
		if strings.Contains(line, "pulled_bytes_total ") && strings.HasSuffix(line, " 0") {
			t.Errorf("no bytes pulled: %s", line)
		}
	}
	if health := scrape(t, "http://"+httpAddr+"/healthz"); health != "ok\n" {
		t.Errorf("/healthz = %q", health)
	}

	// A restarted plugin still serves the cached input.
	pl.stop()
	pl.start()
	second := newPod("consumer-2")
	mustOK(t, "publish input after restart", pl.publish(ctx, second, "in", input("source", ref)))
	testtree.EqualMounted(t, want, pl.target(second, "in"))
	mustOK(t, "unpublish", pl.unpublish(ctx, second, "in"))

	// What kubelet may also send.
	mustOK(t, "unpublish of an unknown volume", pl.unpublish(ctx, newPod("ghost"), "x"))
	wantCode(t, "from: without an API client", pl.publish(ctx, newPod("c3"), "in",
		map[string]string{"direction": "input", "artifact": "src", "from": "tasks.build.outputs.src"}), codes.FailedPrecondition)
	wantCode(t, "tag reference", pl.publish(ctx, newPod("c4"), "in", input("src", dist.Host+"/team-a/artifacts:latest")), codes.InvalidArgument)
	wantCode(t, "unknown attribute", pl.publish(ctx, newPod("c5"), "in",
		map[string]string{"direction": "input", "artifact": "src", "ref": ref, "color": "blue"}), codes.InvalidArgument)
	wantCode(t, "missing artifact", pl.publish(ctx, newPod("c6"), "in",
		input("src", dist.Host+"/team-a/artifacts@sha256:"+strings.Repeat("0", 64))), codes.NotFound)
}

// TestNonRootPods writes outputs and reads inputs as users other than
// root: without an fsGroup, and with one (VOLUME_MOUNT_GROUP).
func TestNonRootPods(t *testing.T) {
	dist := testregistry.StartDistribution(t)
	pl := newPlugin(t, registryConfig(dist.Host))
	pl.start()
	ctx := t.Context()

	plain, grouped := newPod("plain"), newPod("grouped")
	mustOK(t, "publish output", pl.publish(ctx, plain, "out", output("build")))
	mustOK(t, "publish output with fsGroup", pl.publishWith(ctx, grouped, "out", output("build"), testkit.Publish{MountGroup: "4321"}))
	asUser(t, pl.target(plain, "out"), 65534, 65534, nil, "echo plain > result && mkdir sub")
	asUser(t, pl.target(grouped, "out"), 1000, 1000, []uint32{4321}, "echo grouped > result")
	st, err := os.Stat(pl.target(grouped, "out") + "/result")
	if err != nil || st.Sys().(*syscall.Stat_t).Gid != 4321 {
		t.Errorf("a file written under the fsGroup directory: %v, want group 4321 (setgid)", err)
	}
	mustOK(t, "unpublish", pl.unpublish(ctx, plain, "out"))
	mustOK(t, "unpublish", pl.unpublish(ctx, grouped, "out"))

	ref := waitForTag(t, dist.Host+"/team-a/artifacts:team-a.plain.build", 30*time.Second)
	reader := newPod("reader")
	mustOK(t, "publish input", pl.publish(ctx, reader, "in", input("src", ref)))
	if out := asUser(t, pl.target(reader, "in"), 65534, 65534, nil, "cat result && ls sub"); out != "plain\n" {
		t.Errorf("non-root read of the input = %q", out)
	}
	mustOK(t, "unpublish", pl.unpublish(ctx, reader, "in"))
	waitForTag(t, dist.Host+"/team-a/artifacts:team-a.grouped.build", 30*time.Second)
}

// asUser runs a shell command as uid:gid with supplementary groups in dir
// and returns its output. Like a container, which sees the volume at its
// own mount path, it does not traverse dir's parents (test directories are
// 0700): it enters dir through an inherited descriptor.
func asUser(t *testing.T, dir string, uid, gid uint32, groups []uint32, script string) string {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	cmd := exec.Command("sh", "-c", "cd /proc/self/fd/3 && "+script)
	cmd.ExtraFiles = []*os.File{d}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as %d:%d: %s: %v: %s", uid, gid, script, err, out)
	}
	return string(out)
}

// TestCrashDuringUpload kills the plugin after unpublish returned, while
// the upload is in flight, and restarts it: the output still arrives.
func TestCrashDuringUpload(t *testing.T) {
	dist := testregistry.StartDistribution(t)
	px := newProxy(t, dist.Host)
	pl := newPlugin(t, registryConfig(px.Host))
	pl.start()
	release := px.stall()
	produce(t, pl, "crash", 11)
	time.Sleep(500 * time.Millisecond) // the upload is now waiting in the proxy
	pl.kill()
	release()
	if _, err := oci.New(oci.Options{}).Resolve(t.Context(), mustRef(t, dist.Host+"/team-a/artifacts:team-a.crash.build")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the output was pushed before the crash (%v): the test proves nothing", err)
	}
	pl.start()
	ref := waitForTag(t, dist.Host+"/team-a/artifacts:team-a.crash.build", 30*time.Second)
	got := t.TempDir() + "/pulled"
	if _, err := oci.New(oci.Options{}).Pull(t.Context(), mustRef(t, ref), got); err != nil {
		t.Fatal(err)
	}
	want := t.TempDir()
	testtree.Write(t, want, 11)
	testtree.Equal(t, want, got)
}

// TestRegistryOutage unpublishes while the registry is down: unpublish
// still succeeds at once, and the output arrives once it is back.
func TestRegistryOutage(t *testing.T) {
	dist := testregistry.StartDistribution(t)
	pl := newPlugin(t, registryConfig(dist.Host))
	pl.start()
	dist.Stop(t)
	start := time.Now()
	produce(t, pl, "outage", 12)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("publish, write and unpublish took %s with the registry down", d)
	}
	time.Sleep(2 * time.Second)
	dist.Start(t)
	waitForTag(t, dist.Host+"/team-a/artifacts:team-a.outage.build", 60*time.Second)
}

// TestCorruptedBlob serves a corrupted layer: publish fails with DataLoss,
// the target stays empty and nothing is cached; once the registry serves
// the right bytes, the same publish succeeds.
func TestCorruptedBlob(t *testing.T) {
	dist := testregistry.StartDistribution(t)
	px := newProxy(t, dist.Host)
	ref := pushTree(t, px.Host, 13)
	pl := newPlugin(t, registryConfig(px.Host))
	pl.start()
	px.corruptGet.Store(true)
	p := newPod("victim")
	err := pl.publish(t.Context(), p, "in", input("src", ref))
	wantCode(t, "corrupted layer", err, codes.DataLoss)
	if !strings.Contains(err.Error(), "digest") {
		t.Errorf("message does not say what is wrong: %v", err)
	}
	if entries, _ := os.ReadDir(pl.target(p, "in")); len(entries) != 0 {
		t.Errorf("target holds %d entries after a failed publish", len(entries))
	}
	if entries, _ := os.ReadDir(filepath.Join(pl.stateDir, "cache")); len(entries) != 1 {
		t.Errorf("cache holds %v after a failed fetch, want only boot_id", entries)
	}
	px.corruptGet.Store(false)
	mustOK(t, "publish once the registry is healthy", pl.publish(t.Context(), p, "in", input("src", ref)))
	mustOK(t, "unpublish", pl.unpublish(t.Context(), p, "in"))
}

// TestConcurrentPublishesFetchOnce publishes one digest into 20 pods at
// once: the registry serves the layer once.
func TestConcurrentPublishesFetchOnce(t *testing.T) {
	dist := testregistry.StartDistribution(t)
	px := newProxy(t, dist.Host)
	ref := pushTree(t, px.Host, 14)
	pl := newPlugin(t, registryConfig(px.Host))
	pl.start()
	px.blobGets.Store(0)
	var wg sync.WaitGroup
	errs := make([]error, 20)
	pods := make([]pod, 20)
	for i := range pods {
		pods[i] = newPod(fmt.Sprintf("reader-%d", i))
		wg.Go(func() { errs[i] = pl.publish(t.Context(), pods[i], "in", input("src", ref)) })
	}
	wg.Wait()
	want := t.TempDir()
	testtree.Write(t, want, 14)
	for i, err := range errs {
		mustOK(t, fmt.Sprintf("publish %d", i), err)
		testtree.EqualMounted(t, want, pl.target(pods[i], "in"))
	}
	if n := px.blobGets.Load(); n != 1 {
		t.Errorf("registry served %d blob GETs, want 1", n)
	}
	for _, p := range pods {
		mustOK(t, "unpublish", pl.unpublish(t.Context(), p, "in"))
	}
}

// TestCacheHitNeedsAccess: a pod whose credentials cannot read an artifact
// never gets it from the cache another pod filled, against a registry with
// authentication (distribution with htpasswd). With cache.verifyAccess off,
// only a pod of the same namespace presenting the same credentials skips
// the check; a pod of another namespace is checked with its own.
func TestCacheHitNeedsAccess(t *testing.T) {
	users := map[string]string{"team-a": "a-s3cret", "team-b": "b-s3cret"}
	dist := testregistry.StartDistribution(t, users)
	repo := dist.Host + "/team-a/private"
	c := oci.New(oci.Options{Keychain: staticKeychain{&authn.Basic{Username: "team-a", Password: users["team-a"]}}})
	r, _, _ := oci.ParseRepositoryTag(repo, oci.PlainHTTP)
	dir := t.TempDir()
	testtree.Write(t, dir, 15)
	res, err := c.Push(t.Context(), oci.PushRequest{Dir: dir, Repository: r, Metadata: artifact.Metadata{Name: "src"}})
	if err != nil {
		t.Fatal(err)
	}
	ref := res.Ref.Name()
	secret := func(user, pass string) testkit.Publish {
		return testkit.Publish{Secrets: map[string]string{".dockerconfigjson": fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, dist.Host,
			base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))}}
	}
	teamA, teamB, wrong := secret("team-a", users["team-a"]), secret("team-b", users["team-b"]), secret("team-b", "guess")

	pl := newPlugin(t, map[string]string{"oci.repository": repo, "oci.plainHTTP": "true"})
	pl.start()
	mustOK(t, "publish with credentials", pl.publishWith(t.Context(), newPod("allowed"), "in", input("src", ref), teamA))
	denied := testkit.NewPod("denied", "team-b")
	wantCode(t, "cache hit without credentials", pl.publish(t.Context(), denied, "in", input("src", ref)), codes.PermissionDenied)
	if entries, _ := os.ReadDir(pl.target(denied, "in")); len(entries) != 0 {
		t.Errorf("denied pod's target holds %d entries", len(entries))
	}

	// An administrator who opts out (read at the next publish) spares the
	// check to the tenant the registry just authorised, and to no one else.
	if err := os.WriteFile(filepath.Join(pl.configDir, "cache.verifyAccess"), []byte("false"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustOK(t, "same namespace and credentials", pl.publishWith(t.Context(), newPod("allowed-2"), "in", input("src", ref), teamA))
	wantCode(t, "another namespace without credentials", pl.publish(t.Context(), denied, "in", input("src", ref)), codes.PermissionDenied)
	wantCode(t, "another namespace with wrong credentials", pl.publishWith(t.Context(), testkit.NewPod("guesser", "team-b"), "in", input("src", ref), wrong), codes.PermissionDenied)
	mustOK(t, "another namespace with its own valid credentials", pl.publishWith(t.Context(), testkit.NewPod("reader", "team-b"), "in", input("src", ref), teamB))
	wantCode(t, "a miss is still authorised by the fetch", pl.publish(t.Context(), newPod("denied-2"), "in",
		input("src", repo+"@sha256:"+strings.Repeat("1", 64))), codes.PermissionDenied)
}

// TestDiskFullWhileSealing: with the state directory full, unpublish of an
// output still succeeds at once (sealing allocates nothing), and the output
// is pushed intact.
func TestDiskFullWhileSealing(t *testing.T) {
	dist := testregistry.StartDistribution(t)
	pl := newPlugin(t, registryConfig(dist.Host))
	if err := os.MkdirAll(pl.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", pl.stateDir, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(pl.stateDir, unix.MNT_DETACH) })
	pl.start()
	p := newPod("full")
	mustOK(t, "publish", pl.publish(t.Context(), p, "out", output("build")))
	if err := os.WriteFile(filepath.Join(pl.target(p, "out"), "result.txt"), []byte("all good\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Create(filepath.Join(pl.stateDir, "filler"))
	for _, err := f.Write(make([]byte, 1<<20)); err == nil; _, err = f.Write(make([]byte, 4<<10)) {
	}
	f.Close()
	if err := os.WriteFile(filepath.Join(pl.stateDir, "probe"), []byte("x"), 0o644); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("the state directory is not full: %v", err)
	}
	mustOK(t, "unpublish on a full disk", pl.unpublish(t.Context(), p, "out"))
	ref := waitForTag(t, dist.Host+"/team-a/artifacts:team-a.full.build", 30*time.Second)
	got := filepath.Join(t.TempDir(), "pulled")
	if _, err := oci.New(oci.Options{}).Pull(t.Context(), mustRef(t, ref), got); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(got, "result.txt")); err != nil || string(b) != "all good\n" {
		t.Errorf("pushed output: %q, %v", b, err)
	}
	waitFor(t, "the spool to empty", func() bool { entries, _ := os.ReadDir(filepath.Join(pl.stateDir, "spool")); return len(entries) == 0 })
}

// basicAuthRegistry starts an in-memory registry that answers only to
// user and pass, and returns its host.
func basicAuthRegistry(t *testing.T, user, pass string) string {
	return testregistry.Handler(t, true, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
}

// waitFor polls cond for up to 20 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, what, 20*time.Second, func() (bool, error) { return cond(), nil })
}

func scrape(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	return string(b)
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type staticKeychain struct{ a authn.Authenticator }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.a, nil }

func mustRef(t *testing.T, s string) oci.Reference {
	t.Helper()
	r, err := oci.ParseReference(s, oci.PlainHTTP)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pushTree pushes a test tree with seed to host and returns its digest
// reference.
func pushTree(t *testing.T, host string, seed uint64) string {
	t.Helper()
	dir := t.TempDir()
	testtree.Write(t, dir, seed)
	r, _, _ := oci.ParseRepositoryTag(host+"/team-a/artifacts", oci.PlainHTTP)
	res, err := oci.New(oci.Options{}).Push(t.Context(), oci.PushRequest{Dir: dir, Repository: r, Metadata: artifact.Metadata{Name: "src"}})
	if err != nil {
		t.Fatal(err)
	}
	return res.Ref.Name()
}
