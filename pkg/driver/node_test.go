package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2/ktesting"

	"github.com/tektoncd/artifacts-csi-driver/internal/testkit"
	v1alpha1 "github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/cache"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/mounter"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/store"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// The node service's unit tests: the real input cache and output manager
// on a temporary state directory, a fake mounter and fake stores, the
// cluster and the configuration faked. They need no root and no process.

var (
	digestA = "sha256:" + strings.Repeat("a", 64)
	digestB = "sha256:" + strings.Repeat("b", 64)
	repo    = "registry.example/team/artifacts"
)

// fakeStores serves artifacts from memory, parsing references as the real
// stores do. Errors set for a digest fail the calls on it.
type fakeStores struct {
	mu        sync.Mutex
	artifacts map[string]map[string]string // digest → file → content
	checkErr  map[string]error
	pullErr   map[string]error
	bundles   map[string][][]byte // digest → provenance bundles attached
	listed    int                 // Bundles calls
	checks    []store.Ref
	pulls     []store.Ref
	ids       []store.Identity
	// pullGate, when set, holds every Pull until it is closed; pulling
	// and mostPulling count Pulls running.
	pullGate             chan struct{}
	pulling, mostPulling atomic.Int32
}

func (s *fakeStores) Open(id store.Identity) (store.Store, error) {
	real, err := store.Stores{Registry: oci.New(oci.Options{}), Providers: provider.NewClient(provider.Options{})}.Open(id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids = append(s.ids, id)
	return &fakeStore{s: s, parser: real}, nil
}

type fakeStore struct {
	s      *fakeStores
	parser store.Store // only Parse is used
}

func (f *fakeStore) Parse(ref string) (store.Ref, error) { return f.parser.Parse(ref) }

func (f *fakeStore) Check(_ context.Context, ref store.Ref) (string, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	f.s.checks = append(f.s.checks, ref)
	if err := f.s.checkErr[ref.Digest]; err != nil {
		return "", err
	}
	if ref.Backend != store.OCI {
		return "file:///store/" + ref.Digest, nil
	}
	return "", nil
}

func (f *fakeStore) Pull(_ context.Context, ref store.Ref, dest string, _ store.PullOptions) (*store.Pulled, error) {
	running := f.s.pulling.Add(1)
	defer f.s.pulling.Add(-1)
	for m := f.s.mostPulling.Load(); running > m && !f.s.mostPulling.CompareAndSwap(m, running); m = f.s.mostPulling.Load() {
	}
	if f.s.pullGate != nil {
		<-f.s.pullGate
	}
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	f.s.pulls = append(f.s.pulls, ref)
	if err := f.s.pullErr[ref.Digest]; err != nil {
		return nil, err
	}
	files, ok := f.s.artifacts[ref.Digest]
	if !ok {
		return nil, fmt.Errorf("%w: %s", errdefs.ErrNotFound, ref)
	}
	if err := os.Mkdir(dest, 0o755); err != nil {
		return nil, err
	}
	var n int64
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dest, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
		n += int64(len(content))
	}
	return &store.Pulled{Stats: archive.Stats{Bytes: n}}, nil
}

func (f *fakeStore) Bundles(_ context.Context, ref store.Ref) ([]attest.Bundle, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	f.s.listed++
	if ref.Backend != store.OCI {
		return nil, nil
	}
	var out []attest.Bundle
	for i, b := range f.s.bundles[ref.Digest] {
		out = append(out, attest.Bundle{Digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%064x", i)}, Content: b})
	}
	return out, nil
}

func (f *fakeStore) Push(context.Context, store.PushRequest) (*store.Pushed, error) {
	return nil, errors.New("not used by the node service")
}

// fakeCluster is the API server's view.
type fakeCluster struct {
	mu         sync.Mutex
	pods       map[string]*corev1.Pod
	podErr     error
	records    []v1alpha1.ArtifactRecord
	recordsErr error
}

func (c *fakeCluster) Pod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.podErr != nil {
		return nil, c.podErr
	}
	if p := c.pods[namespace+"/"+name]; p != nil {
		return p.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, name)
}

func (c *fakeCluster) Outputs(_ context.Context, _, taskRunUID, _ string) ([]v1alpha1.ArtifactRecord, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []v1alpha1.ArtifactRecord
	for _, r := range c.records {
		if r.Spec.TaskRun != nil && r.Spec.TaskRun.UID == taskRunUID {
			out = append(out, r)
		}
	}
	return out, c.recordsErr
}

// fakeTekton answers every pod with who, and every producer with producer.
type fakeTekton struct {
	who         tekton.Result
	identifyErr error
	producer    tekton.Producer
	producerErr error
}

func (f *fakeTekton) Identify(context.Context, *corev1.Pod) (tekton.Result, error) {
	return f.who, f.identifyErr
}

func (f *fakeTekton) Producer(context.Context, string, tekton.Ref, string) (tekton.Producer, error) {
	return f.producer, f.producerErr
}

// fakeConfig answers every namespace with cfg, or err.
type fakeConfig struct {
	cfg config.Config
	err error
}

func (c *fakeConfig) Config(context.Context, string, map[string]string) (config.Config, error) {
	return c.cfg, c.err
}

// fakeRecorder keeps records; fakeEvents keeps warnings.
type fakeRecorder struct {
	mu      sync.Mutex
	records []record.Record
}

func (r *fakeRecorder) Record(_ context.Context, rec record.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	return nil
}

type fakeEvents struct {
	mu      sync.Mutex
	reasons []string
}

func (e *fakeEvents) Warn(_ volume.Pod, reason, _ string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reasons = append(e.reasons, reason)
}

// node is a driver on a temporary state directory with fakes around it.
type node struct {
	t       *testing.T
	ctx     context.Context
	o       *Options
	d       *Driver
	mounts  *mounter.Fake
	stores  *fakeStores
	cluster *fakeCluster
	tekton  *fakeTekton
	config  *fakeConfig
	rec     *fakeRecorder
	events  *fakeEvents
	cache   *cache.Cache
	outputs *outputs.Manager
	pod     testkit.Pod
}

func newNode(t *testing.T) *node {
	_, ctx := ktesting.NewTestContext(t)
	root := t.TempDir()
	o := NewOptions()
	o.NodeID, o.StateDir, o.KubeletDir = "node-1", filepath.Join(root, "state"), filepath.Join(root, "kubelet")
	cfg := config.Defaults()
	cfg.Repository = repo
	n := &node{
		t: t, ctx: ctx, o: o, mounts: &mounter.Fake{},
		stores: &fakeStores{
			artifacts: map[string]map[string]string{digestA: {"a.txt": "alpha"}, digestB: {"b.txt": "beta"}},
			checkErr:  map[string]error{}, pullErr: map[string]error{},
		},
		cluster: &fakeCluster{pods: map[string]*corev1.Pod{}},
		tekton: &fakeTekton{
			who: tekton.Result{Identity: tekton.Identity{TaskRun: &tekton.Ref{Name: "build", UID: "build-uid"},
				PipelineRun: &tekton.Ref{Name: "run-1", UID: "run-uid"}, PipelineTask: "consume"}},
			producer: tekton.Producer{Runs: []tekton.ProducerRun{{TaskRun: tekton.Ref{Name: "run-1-build", UID: "producer-uid"}, Pod: "producer"}}},
		},
		config: &fakeConfig{cfg: cfg},
		rec:    &fakeRecorder{}, events: &fakeEvents{},
		pod: testkit.NewPod("build-pod", "team"),
	}
	n.cluster.pods["team/build-pod"] = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: "build-pod", Namespace: "team", UID: types.UID(n.pod.UID),
	}}
	n.restart()
	return n
}

// restart opens the state again and makes a new driver on it, as a
// restarted plugin does; mounts, like the kernel's, stay.
func (n *node) restart() {
	n.t.Helper()
	var err error
	if n.cache, err = cache.Open(n.ctx, filepath.Join(n.o.StateDir, "cache"), 1<<30); err != nil {
		n.t.Fatal(err)
	}
	if n.outputs, err = outputs.Open(n.ctx, outputs.Options{Dir: n.o.StateDir, Stores: n.stores, Recorder: n.rec}); err != nil {
		n.t.Fatal(err)
	}
	n.d, err = New(n.ctx, n.o, "test", Deps{
		Mounter: n.mounts, Stores: n.stores, Cache: n.cache, Outputs: n.outputs, Config: n.config,
		Recorder: n.rec, Cluster: n.cluster, Tekton: n.tekton, Events: n.events,
	})
	if err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) request(volumeName string, attrs map[string]string) *csi.NodePublishVolumeRequest {
	return n.pod.PublishRequest(n.o.KubeletDir, volumeName, attrs, testkit.Publish{})
}

func (n *node) publish(req *csi.NodePublishVolumeRequest) error {
	_, err := n.d.NodePublishVolume(n.ctx, req)
	return err
}

func (n *node) unpublish(req *csi.NodePublishVolumeRequest) error {
	_, err := n.d.NodeUnpublishVolume(n.ctx, testkit.UnpublishRequest(req))
	return err
}

// mounted returns what is mounted on req's target, failing unless exactly
// one mount is.
func (n *node) mounted(req *csi.NodePublishVolumeRequest) mounter.FakeMount {
	n.t.Helper()
	m := n.mounts.Mounts()[req.GetTargetPath()]
	if len(m) != 1 {
		n.t.Fatalf("mounts on %s: %+v, want one", req.GetTargetPath(), m)
	}
	return m[0]
}

func (n *node) records(dir volume.Direction) []record.Record {
	n.rec.mu.Lock()
	defer n.rec.mu.Unlock()
	var out []record.Record
	for _, r := range n.rec.records {
		if r.Direction == dir {
			out = append(out, r)
		}
	}
	return out
}

func wantCode(t *testing.T, what string, err error, code codes.Code, mentions ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: %v, want %s", what, err, code)
	}
	for _, m := range mentions {
		if !strings.Contains(status.Convert(err).Message(), m) {
			t.Errorf("%s: message %q does not mention %q", what, status.Convert(err).Message(), m)
		}
	}
}

// TestPublishInput: an input is checked, fetched once into the cache,
// mounted read-only and recorded; a repeat mounts again without a fetch.
func TestPublishInput(t *testing.T) {
	n := newNode(t)
	req := n.request("src", testkit.Input("source", repo+"@"+digestA))
	if err := n.publish(req); err != nil {
		t.Fatal(err)
	}
	m := n.mounted(req)
	if !m.ReadOnly || m.Source != n.cache.Path(store.Ref{Backend: store.OCI, Digest: digestA}.CacheKey()) {
		t.Errorf("mount = %+v", m)
	}
	if b, err := os.ReadFile(filepath.Join(m.Source, "a.txt")); err != nil || string(b) != "alpha" {
		t.Errorf("cached content: %q, %v", b, err)
	}
	recs := n.records(volume.Input)
	if len(recs) != 1 || recs[0].Phase != record.Consumed || recs[0].Digest != digestA || recs[0].Repository != repo || recs[0].Backend != store.OCI {
		t.Errorf("records = %+v", recs)
	}

	// kubelet repeats the call (it lost the answer), after a crash
	// unmounted the target too.
	n.mounts.Unmount(req.GetTargetPath())
	if err := n.publish(req); err != nil {
		t.Fatal(err)
	}
	n.mounted(req)
	if len(n.stores.pulls) != 1 || len(n.stores.checks) != 1 {
		t.Errorf("a repeat fetched or checked again: pulls %v, checks %v", n.stores.pulls, n.stores.checks)
	}

	// The same volume with other arguments.
	other := n.request("src", testkit.Input("source", repo+"@"+digestB))
	wantCode(t, "other arguments", n.publish(other), codes.AlreadyExists)

	// Another pod's volume of the same artifact: a cache hit, still checked.
	second := testkit.NewPod("test-pod", "team")
	req2 := second.PublishRequest(n.o.KubeletDir, "src", testkit.Input("source", repo+"@"+digestA), testkit.Publish{})
	if err := n.publish(req2); err != nil {
		t.Fatal(err)
	}
	if len(n.stores.pulls) != 1 || len(n.stores.checks) != 2 {
		t.Errorf("cache hit: pulls %v, checks %v", n.stores.pulls, n.stores.checks)
	}

	if err := n.unpublish(req); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(req.GetTargetPath()); !errors.Is(err, os.ErrNotExist) || n.d.hasInput(req.GetVolumeId()) {
		t.Errorf("after unpublish: target %v, still known %v", err, n.d.hasInput(req.GetVolumeId()))
	}
	if err := n.unpublish(req); err != nil {
		t.Errorf("second unpublish: %v", err)
	}
}

// TestVerifyAccessOff: with verifyAccess off, a cache hit skips the live
// access check only for a pod of a namespace whose credentials for that
// repository the registry accepted within the grant TTL; anyone else is
// checked. A provider is always asked (it gives the location).
func TestVerifyAccessOff(t *testing.T) {
	alice := map[string]string{".dockerconfigjson": `{"auths":{"registry.example":{"auth":"YWxpY2U6YQ=="}}}`}
	bob := map[string]string{".dockerconfigjson": `{"auths":{"registry.example":{"auth":"Ym9iOmI="}}}`}
	type pub struct {
		namespace string
		secrets   map[string]string
		after     time.Duration // since the first publish
	}
	for _, tc := range []struct {
		name       string
		verify     bool
		second     pub
		wantChecks int
	}{
		{"same namespace and credentials", false, pub{"team", alice, 0}, 1},
		{"verifyAccess on", true, pub{"team", alice, 0}, 2},
		{"grant expired", false, pub{"team", alice, 11 * time.Minute}, 2},
		{"other credentials", false, pub{"team", bob, 0}, 2},
		{"no credentials", false, pub{"team", nil, 0}, 2},
		{"other namespace, same credentials", false, pub{"team-b", alice, 0}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			n.config.cfg.VerifyAccess = tc.verify
			now := time.Now()
			n.d.grants.now = func() time.Time { return now }
			first := n.pod.PublishRequest(n.o.KubeletDir, "a", testkit.Input("source", repo+"@"+digestA), testkit.Publish{Secrets: alice})
			if err := n.publish(first); err != nil {
				t.Fatal(err)
			}
			now = now.Add(tc.second.after)
			p := testkit.NewPod("second", tc.second.namespace)
			if err := n.publish(p.PublishRequest(n.o.KubeletDir, "b", testkit.Input("source", repo+"@"+digestA), testkit.Publish{Secrets: tc.second.secrets})); err != nil {
				t.Fatal(err)
			}
			if len(n.stores.checks) != tc.wantChecks {
				t.Errorf("checks = %d, want %d", len(n.stores.checks), tc.wantChecks)
			}
		})
	}
	t.Run("provider", func(t *testing.T) {
		n := newNode(t)
		n.config.cfg.VerifyAccess = false
		n.config.cfg.Backend = "filesystem"
		for _, name := range []string{"c", "d"} {
			if err := n.publish(n.request(name, testkit.Input("source", "team@"+digestA))); err != nil {
				t.Fatal(err)
			}
		}
		if len(n.stores.checks) != 2 {
			t.Errorf("checks = %v, want both provider publishes checked", n.stores.checks)
		}
		recs := n.records(volume.Input)
		if last := recs[len(recs)-1]; last.Backend != "filesystem" || last.Location != "file:///store/"+digestA || last.Repository != "team" {
			t.Errorf("provider input record = %+v", last)
		}
	})
}

// TestPublishInputErrors: every class of failure gets its code, and
// leaves nothing mounted, recorded or pinned.
func TestPublishInputErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		attrs    map[string]string
		setup    func(*node)
		code     codes.Code
		mentions string
	}{
		{"not in the store", testkit.Input("source", repo+"@"+digestA),
			func(n *node) { n.stores.checkErr[digestA] = fmt.Errorf("%w: manifest", errdefs.ErrNotFound) }, codes.NotFound, "source"},
		{"denied", testkit.Input("source", repo+"@"+digestA),
			func(n *node) { n.stores.checkErr[digestA] = fmt.Errorf("%w: 403", errdefs.ErrDenied) }, codes.PermissionDenied, "403"},
		{"store unavailable", testkit.Input("source", repo+"@"+digestA),
			func(n *node) {
				n.stores.checkErr[digestA] = errdefs.Classify(errors.New("502"), errdefs.ErrUnavailable)
			}, codes.Unavailable, "502"},
		{"corrupt", testkit.Input("source", repo+"@"+digestA),
			func(n *node) { n.stores.pullErr[digestA] = archive.ErrDigestMismatch }, codes.DataLoss, "digest mismatch"},
		{"too large", testkit.Input("source", repo+"@"+digestA),
			func(n *node) { n.stores.pullErr[digestA] = archive.ErrLimitExceeded }, codes.ResourceExhausted, "limit"},
		{"a bound of the driver", testkit.Input("source", repo+"@"+digestA),
			func(n *node) {
				n.stores.pullErr[digestA] = errdefs.Limit("maxArtifactBytes", "raise it", archive.ErrLimitExceeded)
			}, codes.ResourceExhausted, "bound maxArtifactBytes: raise it"},
		{"unsafe", testkit.Input("source", repo+"@"+digestA),
			func(n *node) { n.stores.pullErr[digestA] = archive.ErrUnsafeEntry }, codes.InvalidArgument, "unsafe"},
		{"disk full", testkit.Input("source", repo+"@"+digestA),
			func(n *node) { n.stores.pullErr[digestA] = &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC} }, codes.ResourceExhausted, "no space"},
		{"a tag", testkit.Input("source", repo+":v1"), nil, codes.InvalidArgument, "pinned by digest"},
		{"a registry ref for a provider", testkit.Input("source", "localhost:5000/team@"+digestA),
			func(n *node) { n.config.cfg.Backend = "filesystem" }, codes.InvalidArgument, "REPOSITORY@sha256"},
		{"invalid configuration", testkit.Input("source", repo+"@"+digestA),
			func(n *node) { n.config.err = &config.KeyError{Key: "compression", Value: "rar", Reason: "unknown"} }, codes.FailedPrecondition, "compression"},
		{"configuration not readable yet", testkit.Input("source", repo+"@"+digestA),
			func(n *node) { n.config.err = errors.New("cache not synced") }, codes.Unavailable, "synced"},
		{"pod not readable", testkit.Input("source", repo+"@"+digestA),
			func(n *node) { n.cluster.podErr = errors.New("connection refused") }, codes.Unavailable, "read pod"},
		{"mount fails", testkit.Input("source", repo+"@"+digestA),
			func(n *node) {
				n.mounts.Fail = func(op, _ string) error {
					if op == "bind" {
						return errors.New("mount: permission denied")
					}
					return nil
				}
			}, codes.Internal, "mount"},
		{"bad credentials", testkit.Input("source", repo+"@"+digestA), nil, codes.InvalidArgument, "credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			if tc.setup != nil {
				tc.setup(n)
			}
			req := n.request("src", tc.attrs)
			if tc.name == "bad credentials" {
				req.Secrets = map[string]string{".dockerconfigjson": "{not json"}
			}
			err := n.publish(req)
			wantCode(t, tc.name, err, tc.code, tc.mentions)
			if m := n.mounts.Mounts()[req.GetTargetPath()]; len(m) > 0 || n.d.hasInput(req.GetVolumeId()) || len(n.records(volume.Input)) > 0 {
				t.Errorf("left: mounts %v, input known %v, records %v", m, n.d.hasInput(req.GetVolumeId()), n.records(volume.Input))
			}
			if entries, _ := os.ReadDir(n.d.inputsDir()); len(entries) > 0 {
				t.Errorf("input records left on disk: %v", entries)
			}
			if tc.name == "invalid configuration" && len(n.events.reasons) != 1 {
				t.Errorf("events = %v, want the invalid configuration reported", n.events.reasons)
			}
			if (tc.name == "a bound of the driver" || tc.name == "too large") && !slices.Equal(n.events.reasons, []string{record.ReasonLimitExceeded}) {
				t.Errorf("events = %v, want the bound reported", n.events.reasons)
			}
		})
	}
}

// TestInFlight: a second call on a volume while one runs is Aborted, for
// publish and unpublish alike.
func TestInFlight(t *testing.T) {
	n := newNode(t)
	req := n.request("out", testkit.Output("report"))
	unlock, ok := n.d.lock(req.GetVolumeId())
	if !ok {
		t.Fatal("lock")
	}
	wantCode(t, "publish", n.publish(req), codes.Aborted)
	wantCode(t, "unpublish", n.unpublish(req), codes.Aborted)
	unlock()
	if err := n.publish(req); err != nil {
		t.Fatal(err)
	}
}

// TestRestartKeepsInputs: a restarted plugin knows its published inputs:
// a repeated publish mounts the cached entry without a fetch, an
// unpublish releases it; a record whose entry is gone is fetched again.
func TestRestartKeepsInputs(t *testing.T) {
	n := newNode(t)
	kept := n.request("kept", testkit.Input("source", repo+"@"+digestA))
	lost := n.request("lost", testkit.Input("build", repo+"@"+digestB))
	for _, r := range []*csi.NodePublishVolumeRequest{kept, lost} {
		if err := n.publish(r); err != nil {
			t.Fatal(err)
		}
	}
	// A half-written record, as a crash leaves it.
	if err := os.WriteFile(filepath.Join(n.d.inputsDir(), ".x.json.tmp-1"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.mounts.Unmount(kept.GetTargetPath())
	n.mounts.Unmount(lost.GetTargetPath())
	// The node rebooted between: lost's cache entry is gone.
	os.RemoveAll(n.cache.Path(store.Ref{Backend: store.OCI, Digest: digestB}.CacheKey()))
	os.Remove(n.cache.Path(store.Ref{Backend: store.OCI, Digest: digestB}.CacheKey()) + ".json")
	n.restart()
	if entries, _ := os.ReadDir(n.d.inputsDir()); len(entries) != 2 {
		t.Errorf("input records after restart: %v", entries)
	}
	pulls := len(n.stores.pulls)
	for _, r := range []*csi.NodePublishVolumeRequest{kept, lost} {
		if err := n.publish(r); err != nil {
			t.Fatal(err)
		}
		n.mounted(r)
	}
	if got := len(n.stores.pulls) - pulls; got != 1 {
		t.Errorf("%d fetches after the restart, want 1 (the lost entry)", got)
	}
	for _, r := range []*csi.NodePublishVolumeRequest{kept, lost} {
		if err := n.unpublish(r); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPublishOutput: an output gets a private directory, mounted
// read-write, and a Pending record naming its repository and tag; a
// repeat mounts it again; the unpublish seals it for upload, after which
// it cannot be published again.
func TestPublishOutput(t *testing.T) {
	n := newNode(t)
	req := n.request("out", testkit.Output("report"))
	if err := n.publish(req); err != nil {
		t.Fatal(err)
	}
	m := n.mounted(req)
	if m.ReadOnly {
		t.Errorf("output mounted read-only")
	}
	if err := os.WriteFile(filepath.Join(m.Source, "report.txt"), []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	recs := n.records(volume.Output)
	if len(recs) != 1 || recs[0].Phase != record.Pending || recs[0].Repository != repo || recs[0].Tag != "team.build.report" || recs[0].Backend != store.OCI {
		t.Errorf("records = %+v", recs)
	}
	if recs[0].Owner.TaskRun == nil || recs[0].Owner.TaskRun.UID != "build-uid" || recs[0].Owner.PipelineTask != "consume" {
		t.Errorf("record owner = %+v, want the identity Tekton confirmed", recs[0].Owner)
	}
	v, _ := n.outputs.Get(req.GetVolumeId())
	if v.Group == nil || v.Group.PipelineRun != "run-1" || v.Group.UID != "run-uid" || v.Metadata.TaskRun != "build" || v.Owner.TaskRun == nil {
		t.Errorf("journal = %+v", v)
	}

	n.mounts.Unmount(req.GetTargetPath())
	if err := n.publish(req); err != nil {
		t.Fatal(err)
	}
	if n.mounted(req).Source != m.Source {
		t.Error("a repeat mounted another directory")
	}
	wantCode(t, "other arguments", n.publish(n.request("out", testkit.Output("other"))), codes.AlreadyExists)

	if err := n.unpublish(req); err != nil {
		t.Fatal(err)
	}
	if v, _ := n.outputs.Get(req.GetVolumeId()); v.State != outputs.Sealed {
		t.Errorf("state after unpublish: %s", v.State)
	}
	if err := n.unpublish(req); err != nil {
		t.Errorf("second unpublish: %v", err)
	}
	wantCode(t, "publish after unpublish", n.publish(req), codes.FailedPrecondition, "unpublished")
}

// TestRefusedIdentity: a pod whose claim Tekton's state refutes gets its
// volumes as a plain pod, with a Warning saying why: its records name no
// TaskRun, its tags and manifests no run, and it has no group.
func TestRefusedIdentity(t *testing.T) {
	n := newNode(t)
	n.config.cfg.TagPattern = "{{namespace}}.{{taskrun}}.{{pod}}.{{artifact}}" // {{taskrun}} is the pod for a plain pod
	n.tekton.who = tekton.Result{Refused: "TaskRun build does not name pod build-pod as its own"}
	req := n.request("out", testkit.Output("report"))
	if err := n.publish(req); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(n.events.reasons, record.ReasonIdentityRefused) {
		t.Errorf("events = %v, want %s", n.events.reasons, record.ReasonIdentityRefused)
	}
	v, _ := n.outputs.Get(req.GetVolumeId())
	if v.Owner.TaskRun != nil || v.Group != nil || v.Metadata.TaskRun != "" || v.Tag != "team.build-pod.build-pod.report" {
		t.Errorf("journal = %+v (tag %s), want a plain pod's", v, v.Tag)
	}
	if recs := n.records(volume.Output); len(recs) != 1 || recs[0].Owner.TaskRun != nil {
		t.Errorf("records = %+v, want a plain pod's", recs)
	}
}

// TestPublishOutputProvider: a provider's output has no tag and no group.
func TestPublishOutputProvider(t *testing.T) {
	n := newNode(t)
	n.config.cfg.Backend, n.config.cfg.ProviderRepository = "filesystem", "team/artifacts"
	req := n.request("out", testkit.Output("report"))
	if err := n.publish(req); err != nil {
		t.Fatal(err)
	}
	v, _ := n.outputs.Get(req.GetVolumeId())
	if v.Backend != "filesystem" || v.Repository != "team/artifacts" || v.Tag != "" || v.Group != nil {
		t.Errorf("journal = %+v", v)
	}
}

// TestPublishOutputErrors: what a publish of an output refuses, and that
// a refusal leaves nothing behind.
func TestPublishOutputErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		setup    func(*node, *csi.NodePublishVolumeRequest)
		code     codes.Code
		mentions string
	}{
		{"read-only", func(_ *node, r *csi.NodePublishVolumeRequest) { r.Readonly = true }, codes.InvalidArgument, "readOnly"},
		{"no repository", func(n *node, _ *csi.NodePublishVolumeRequest) { n.config.cfg.Repository = "" }, codes.FailedPrecondition, config.KeyRepository},
		{"mount group not a number", func(_ *node, r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.GetMount().VolumeMountGroup = "wheel"
		}, codes.InvalidArgument, "group"},
		{"bad tag pattern", func(n *node, _ *csi.NodePublishVolumeRequest) { n.config.cfg.TagPattern = "{{nope}}" }, codes.FailedPrecondition, config.KeyTagPattern},
		{"volume id", func(_ *node, r *csi.NodePublishVolumeRequest) { r.VolumeId = "../x" }, codes.InvalidArgument, "volume id"},
		{"block", func(_ *node, r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		}, codes.InvalidArgument, "block"},
		{"target of another pod", func(n *node, r *csi.NodePublishVolumeRequest) {
			r.TargetPath = testkit.NewPod("x", "team").TargetPath(n.o.KubeletDir, "out")
		}, codes.InvalidArgument, "belongs to pod"},
		{"Tekton has not named the pod yet", func(n *node, _ *csi.NodePublishVolumeRequest) {
			n.tekton.identifyErr = fmt.Errorf("%w: TaskRun build does not name it", tekton.ErrNotRecorded)
		}, codes.Unavailable, "TaskRun build"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			req := n.request("out", testkit.Output("report"))
			tc.setup(n, req)
			wantCode(t, tc.name, n.publish(req), tc.code, tc.mentions)
			if len(n.mounts.Mounts()[req.GetTargetPath()]) > 0 || len(n.records(volume.Output)) > 0 {
				t.Errorf("left a mount or a record")
			}
		})
	}
}

// TestOutputMountFails: an output whose mount failed stays published, so
// that kubelet's retry mounts the same directory.
func TestOutputMountFails(t *testing.T) {
	n := newNode(t)
	n.mounts.Fail = func(op, _ string) error {
		if op == "check" {
			return errors.New("stat: input/output error")
		}
		return nil
	}
	req := n.request("out", testkit.Output("report"))
	wantCode(t, "publish", n.publish(req), codes.Internal, "input/output")
	n.mounts.Fail = nil
	if err := n.publish(req); err != nil {
		t.Fatal(err)
	}
	n.mounted(req)
	if recs := n.records(volume.Output); len(recs) != 1 {
		t.Errorf("records = %+v, want the first publish's Pending only", recs)
	}
}

// TestUnpublishErrors: unpublish refuses requests outside kubelet's pods
// directory and reports a failed unmount; an unknown volume is fine.
func TestUnpublishErrors(t *testing.T) {
	n := newNode(t)
	for _, tc := range []struct {
		name string
		req  *csi.NodeUnpublishVolumeRequest
		code codes.Code
	}{
		{"no volume id", &csi.NodeUnpublishVolumeRequest{TargetPath: n.request("x", nil).GetTargetPath()}, codes.InvalidArgument},
		{"no target", &csi.NodeUnpublishVolumeRequest{VolumeId: "v"}, codes.InvalidArgument},
		{"outside kubelet", &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: "/etc/passwd"}, codes.InvalidArgument},
		{"unknown volume", testkit.UnpublishRequest(n.request("ghost", nil)), codes.OK},
	} {
		_, err := n.d.NodeUnpublishVolume(n.ctx, tc.req)
		wantCode(t, tc.name, err, tc.code)
	}
	req := n.request("out", testkit.Output("report"))
	if err := n.publish(req); err != nil {
		t.Fatal(err)
	}
	n.mounts.Fail = func(op, _ string) error {
		if op == "unmount" {
			return errors.New("device busy")
		}
		return nil
	}
	wantCode(t, "unmount fails", n.unpublish(req), codes.Internal, "busy")
	if v, _ := n.outputs.Get(req.GetVolumeId()); v.State != outputs.Published {
		t.Errorf("sealed although still mounted: %s", v.State)
	}
}

// TestPublishFrom: a from: input resolves through the producer's records
// (decideFrom) to the store the record names.
func TestPublishFrom(t *testing.T) {
	pushed := func(pod, backend, repository, digest string) v1alpha1.ArtifactRecord {
		r := v1alpha1.ArtifactRecord{ObjectMeta: metav1.ObjectMeta{Name: pod + "-rec"}}
		r.Spec.Pod.Name, r.Spec.Backend, r.Spec.Repository = pod, backend, repository
		r.Spec.TaskRun = &v1alpha1.ObjectReference{Name: "run-1-build", UID: "producer-uid"}
		r.Status.Phase, r.Status.Digest, r.Status.LastUpdateTime = v1alpha1.Pushed, digest, metav1.Now()
		return r
	}
	for _, tc := range []struct {
		name      string
		setup     func(*node)
		code      codes.Code
		wantRef   string
		wantEvent bool
	}{
		{"pushed to a registry", func(n *node) {
			n.cluster.records = []v1alpha1.ArtifactRecord{pushed("producer", "", repo, digestA)}
		}, codes.OK, repo + "@" + digestA, false},
		{"pushed to a provider", func(n *node) {
			n.cluster.records = []v1alpha1.ArtifactRecord{pushed("producer", "filesystem", "team", digestB)}
		}, codes.OK, "filesystem:team@" + digestB, false},
		{"waiting", nil, codes.Unavailable, "", false},
		{"failed", func(n *node) {
			r := pushed("producer", "", repo, "")
			r.Status.Phase, r.Status.Message = v1alpha1.Failed, "registry gone"
			n.cluster.records = []v1alpha1.ArtifactRecord{r}
		}, codes.FailedPrecondition, "", true},
		{"never", func(n *node) {
			n.tekton.producer.Runs[0].Done, n.tekton.producer.Runs[0].FinishedAt = true, time.Now().Add(-time.Hour)
		}, codes.FailedPrecondition, "", true},
		{"a record of another pod of the producer's TaskRun is not its output", func(n *node) {
			n.cluster.records = []v1alpha1.ArtifactRecord{pushed("forged", "", repo, digestA)}
		}, codes.Unavailable, "", false},
		{"a record of a TaskRun the PipelineRun does not list is not its output", func(n *node) {
			r := pushed("producer", "", repo, digestA)
			r.Spec.TaskRun.UID = "standalone-uid"
			n.cluster.records = []v1alpha1.ArtifactRecord{r}
		}, codes.Unavailable, "", false},
		{"records unreadable", func(n *node) { n.cluster.recordsErr = errors.New("timeout") }, codes.Unavailable, "", false},
		{"producer unreadable", func(n *node) {
			n.tekton.producerErr = errdefs.Classify(errors.New("timeout"), errdefs.ErrUnavailable)
		}, codes.Unavailable, "", false},
		{"PipelineRun replaced", func(n *node) {
			n.tekton.producerErr = tekton.ErrRunReplaced
		}, codes.FailedPrecondition, "", true},
		{"a TaskRun not created by Tekton joined the PipelineRun", func(n *node) {
			n.tekton.producerErr = tekton.ErrAmbiguous
		}, codes.FailedPrecondition, "", true},
		{"not in a PipelineRun", func(n *node) { n.tekton.who.PipelineRun = nil }, codes.InvalidArgument, "", false},
		{"record with a bad repository", func(n *node) {
			n.cluster.records = []v1alpha1.ArtifactRecord{pushed("producer", "filesystem", "../x", digestA)}
		}, codes.FailedPrecondition, "", false},
		{"no API client", func(n *node) { n.d.deps.Cluster = nil }, codes.FailedPrecondition, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			if tc.setup != nil {
				tc.setup(n)
			}
			req := n.request("src", testkit.InputFrom("source", "tasks.build.outputs.bin"))
			wantCode(t, tc.name, n.publish(req), tc.code)
			if got := len(n.events.reasons) > 0; got != tc.wantEvent {
				t.Errorf("events %v, want an event: %v", n.events.reasons, tc.wantEvent)
			}
			if tc.code != codes.OK {
				return
			}
			if recs := n.records(volume.Input); len(recs) != 1 || recs[0].Ref() != tc.wantRef {
				t.Errorf("records = %+v, want %s", recs, tc.wantRef)
			}
		})
	}
}

// TestNodeInfo: the node id, and VOLUME_MOUNT_GROUP.
func TestNodeInfo(t *testing.T) {
	n := newNode(t)
	info, err := n.d.NodeGetInfo(n.ctx, &csi.NodeGetInfoRequest{})
	if err != nil || info.GetNodeId() != "node-1" {
		t.Errorf("NodeGetInfo = %v, %v", info, err)
	}
	caps, err := n.d.NodeGetCapabilities(n.ctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil || len(caps.GetCapabilities()) != 1 || caps.GetCapabilities()[0].GetRpc().GetType() != csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP {
		t.Errorf("NodeGetCapabilities = %v, %v", caps, err)
	}
}

// TestOutputManagerErrors: the output manager's failures reach kubelet
// with their class's code.
func TestOutputManagerErrors(t *testing.T) {
	n := newNode(t)
	n.d.deps.Outputs = failingOutputs{n.outputs, &os.PathError{Op: "mkdir", Path: "x", Err: syscall.ENOSPC}}
	req := n.request("out", testkit.Output("report"))
	wantCode(t, "publish", n.publish(req), codes.ResourceExhausted)
}

type failingOutputs struct {
	OutputManager
	err error
}

func (f failingOutputs) Publish(context.Context, outputs.Volume, credentials.Snapshot, int) (string, error) {
	return "", f.err
}

// fakeCredentials answers every pod with snap, or err, and counts calls.
type fakeCredentials struct {
	snap  credentials.Snapshot
	err   error
	calls int
}

func (f *fakeCredentials) Credentials(context.Context, volume.Pod) (credentials.Snapshot, error) {
	f.calls++
	return f.snap, f.err
}

// TestBrokeredCredentials: the broker's credentials come after the
// volume's own; its failures keep their class; a provider never asks.
func TestBrokeredCredentials(t *testing.T) {
	own := map[string]string{".dockerconfigjson": `{"auths":{"registry.example":{"auth":"b3duOm8="}}}`}
	brokered := credentials.Snapshot{Secrets: []credentials.Secret{{Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.example":{"auth":"YnJva2VyOmI="}}}`)}}}}
	for _, tc := range []struct {
		name      string
		backend   string
		err       error
		code      codes.Code
		wantCalls int
		wantUser  string
	}{
		{"the volume's own secret wins", "oci", nil, codes.OK, 1, "own"},
		{"broker unreachable", "oci", errdefs.New("credentials broker: connection refused", errdefs.ErrUnavailable), codes.Unavailable, 1, ""},
		{"configured secret missing", "oci", errdefs.New("credentials broker: 404: registry-creds not found", errdefs.ErrPrecondition), codes.FailedPrecondition, 1, ""},
		{"provider", "filesystem", nil, codes.OK, 0, "own"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			n.config.cfg.Backend = tc.backend
			f := &fakeCredentials{snap: brokered, err: tc.err}
			n.d.deps.Credentials = f
			req := n.pod.PublishRequest(n.o.KubeletDir, "out", testkit.Output("report"), testkit.Publish{Secrets: own})
			wantCode(t, tc.name, n.publish(req), tc.code)
			if f.calls != tc.wantCalls {
				t.Errorf("broker asked %d times, want %d", f.calls, tc.wantCalls)
			}
			if tc.code != codes.OK || tc.backend != "oci" {
				return
			}
			b, err := os.ReadFile(filepath.Join(n.o.StateDir, "outputs", req.GetVolumeId(), "credentials.json"))
			if err != nil {
				t.Fatal(err)
			}
			var snap credentials.Snapshot
			if err := json.Unmarshal(b, &snap); err != nil {
				t.Fatal(err)
			}
			kc, _ := snap.Keychain(n.ctx)
			r, _ := name.NewRepository(repo)
			auth, _ := kc.Resolve(r)
			cfg, _ := auth.Authorization()
			if cfg.Username != tc.wantUser || len(snap.Secrets) != 1 {
				t.Errorf("push credentials: user %q in %d secrets, want %q in one", cfg.Username, len(snap.Secrets), tc.wantUser)
			}
		})
	}
}

// TestFillWorkers: cache fills of different artifacts wait for one of the
// FillWorkers slots.
func TestFillWorkers(t *testing.T) {
	n := newNode(t)
	n.o.FillWorkers = 1
	n.restart()
	n.stores.pullGate = make(chan struct{})
	var wg sync.WaitGroup
	for i, digest := range []string{digestA, digestB} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.publish(n.request(fmt.Sprint("in-", i), testkit.Input("source", repo+"@"+digest))); err != nil {
				t.Error(err)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // both publishes reach their fill
	close(n.stores.pullGate)
	wg.Wait()
	if most := n.stores.mostPulling.Load(); most != 1 {
		t.Errorf("%d fills ran at once, want 1", most)
	}
	if len(n.stores.pulls) != 2 {
		t.Errorf("pulls = %v, want both artifacts", n.stores.pulls)
	}
}
