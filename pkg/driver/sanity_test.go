package driver_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2/ktesting"

	"github.com/tektoncd/artifacts-csi-driver/internal/testkit"
	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/driver"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// suiteName is the Ginkgo suite description, which skip patterns are
// matched against together with each spec's full text.
const suiteName = "CSI sanity and ephemeral volumes"

// sanitySkips are the csi-sanity specs that create a volume with the
// Controller service first: a node plugin of ephemeral inline volumes has
// none to create. Each is matched in full, so no other spec is skipped.
var sanitySkips = []string{
	"Node Service NodeUnpublishVolume should remove target path",
	"Controller Service [Controller Server] ValidateVolumeCapabilities should return appropriate values (no optional values added)",
	"Controller Service [Controller Server] ValidateVolumeCapabilities should fail when no volume capabilities are provided",
}

func skipPatterns() []string {
	out := make([]string, len(sanitySkips))
	for i, s := range sanitySkips {
		out[i] = "^" + regexp.QuoteMeta(suiteName+" "+s) + "$"
	}
	return out
}

// plugin is the driver under test, shared by csi-sanity and the specs of
// this file. TestSanity sets it before the specs run.
var plugin struct {
	kubeletDir string
	registry   string // host:port of the registry the plugin is configured with
	node       csi.NodeClient
	gate       *gate
}

// TestSanity starts the plugin in-process on a real unix socket and runs
// csi-sanity and the ephemeral-volume specs below against it.
func TestSanity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("publishing volumes bind-mounts: run as root")
	}
	// Not t.TempDir: a unix socket path must stay under 108 bytes.
	root, err := os.MkdirTemp("", "sanity")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)

	plugin.gate = newGate("sha256:" + heldDigest)
	plugin.registry = testregistry.Handler(t, true, plugin.gate.wrap)

	o := driver.NewOptions()
	o.NodeID = "node-1"
	o.Endpoint = "unix://" + filepath.Join(root, "csi.sock")
	o.KubeletDir = filepath.Join(root, "kubelet")
	o.StateDir = filepath.Join(root, "state")
	o.ConfigDir = filepath.Join(root, "config")
	o.HTTPAddress = ""
	o.Registration = false
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, o.ConfigDir, map[string]string{
		config.KeyRepository: plugin.registry + "/team/artifacts",
		config.KeyPlainHTTP:  "true",
	})

	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- driver.Run(ctx, o, "test") }()
	// Deferred after os.RemoveAll, so it runs first.
	defer func() {
		plugin.gate.release()
		cancel()
		if err := <-stopped; err != nil {
			t.Errorf("Run: %v", err)
		}
		mounts, err := mountsUnder(root)
		if err != nil {
			t.Error(err)
		}
		for _, m := range mounts {
			t.Errorf("mount left behind: %s", m)
			syscall.Unmount(m, syscall.MNT_DETACH)
		}
	}()

	conn, err := grpc.NewClient(o.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitReady(t, csi.NewIdentityClient(conn))
	plugin.kubeletDir, plugin.node = o.KubeletDir, csi.NewNodeClient(conn)

	cfg := sanity.NewTestConfig()
	cfg.Address = o.Endpoint
	// Fresh paths: sanity creates and removes them around every spec.
	cfg.TargetPath = filepath.Join(root, "sanity-target")
	cfg.StagingPath = filepath.Join(root, "sanity-staging")
	sc := sanity.GinkgoTest(&cfg)
	defer sc.Finalize()

	gomega.RegisterFailHandler(ginkgo.Fail)
	suiteConfig, reporterConfig := ginkgo.GinkgoConfiguration()
	suiteConfig.SkipStrings = append(suiteConfig.SkipStrings, skipPatterns()...)
	ginkgo.RunSpecs(t, suiteName, suiteConfig, reporterConfig)
}

// Every skip pattern must name exactly one spec: a typo would let a spec
// that cannot pass run, and a loose pattern would hide one that should.
var _ = ginkgo.ReportAfterSuite("the sanity skips", func(r ginkgo.Report) {
	for i, p := range skipPatterns() {
		re := regexp.MustCompile(p)
		var matched []string
		for _, s := range r.SpecReports {
			if s.LeafNodeType.Is(types.NodeTypeIt) && re.MatchString(r.SuiteDescription+" "+s.FullText()) {
				matched = append(matched, s.FullText())
			}
		}
		gomega.Expect(matched).To(gomega.Equal([]string{sanitySkips[i]}), "specs skipped by %q", p)
	}
})

func writeConfig(t *testing.T, dir string, keys map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range keys {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func waitReady(t *testing.T, id csi.IdentityClient) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := id.Probe(t.Context(), &csi.ProbeRequest{})
		if err == nil && r.GetReady().GetValue() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin not ready after 30s: ready=%v, err=%v", r.GetReady().GetValue(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mountsUnder lists the mount points at or below dir, from
// /proc/self/mountinfo (independently of the driver's mounter).
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	return out, sc.Err()
}

// heldDigest names a manifest the registry never has; requests for it are
// held by the gate until released.
var heldDigest = strings.Repeat("ab", 32)

// gate is registry middleware that holds every request whose path contains
// match until release is called, to keep a publish in flight.
type gate struct {
	match   string
	arrived chan struct{} // one value per held request
	open    chan struct{}
	release func() // idempotent
}

func newGate(match string) *gate {
	g := &gate{match: match, arrived: make(chan struct{}, 64), open: make(chan struct{})}
	g.release = sync.OnceFunc(func() { close(g.open) })
	return g
}

func (g *gate) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, g.match) {
			select {
			case g.arrived <- struct{}{}:
			default:
			}
			select {
			case <-g.open:
			case <-r.Context().Done():
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// pod is a pod ephemeral volumes are published for.
type pod struct{ testkit.Pod }

var pods atomic.Int64

func newPod() pod {
	return pod{testkit.NewPod(fmt.Sprintf("task-%d-pod", pods.Add(1)), "team")}
}

// target is kubelet's mount point for the pod's volume.
func (p pod) target(volume string) string { return p.TargetPath(plugin.kubeletDir, volume) }

// publish is the NodePublishVolume kubelet sends for the pod's ephemeral
// inline volume with the given attributes.
func (p pod) publish(vol string, attrs map[string]string) *csi.NodePublishVolumeRequest {
	return p.PublishRequest(plugin.kubeletDir, vol, attrs, testkit.Publish{})
}

func output() map[string]string { return testkit.Output("report") }

var unpublish = testkit.UnpublishRequest

// unpublishAtEnd unpublishes r when the spec ends, passed or failed, so no
// mount outlives it.
func unpublishAtEnd(r *csi.NodePublishVolumeRequest) {
	ginkgo.DeferCleanup(func(ctx context.Context) {
		_, err := plugin.node.NodeUnpublishVolume(ctx, unpublish(r))
		gomega.Expect(err).NotTo(gomega.HaveOccurred(), "unpublish %s", r.GetVolumeId())
	})
}

// expectCode asserts err's exact gRPC code and that its message mentions
// each of mentions.
func expectCode(err error, code codes.Code, mentions ...string) {
	ginkgo.GinkgoHelper()
	gomega.Expect(status.Code(err)).To(gomega.Equal(code), "error: %v", err)
	for _, m := range mentions {
		gomega.Expect(status.Convert(err).Message()).To(gomega.ContainSubstring(m))
	}
}

var _ = ginkgo.Describe("Ephemeral volumes", func() {
	ginkgo.DescribeTable("refuse a request that can never succeed with InvalidArgument",
		func(ctx ginkgo.SpecContext, attrs map[string]string, change func(p pod, r *csi.NodePublishVolumeRequest), mentions string) {
			p := newPod()
			r := p.publish("vol", attrs)
			change(p, r)
			_, err := plugin.node.NodePublishVolume(ctx, r)
			expectCode(err, codes.InvalidArgument, mentions)
			gomega.Expect(r.GetTargetPath()).NotTo(gomega.BeAnExistingFile(), "a refused publish creates nothing")
		},
		ginkgo.Entry("a persistent volume (no ephemeral key)", output(), func(_ pod, r *csi.NodePublishVolumeRequest) {
			delete(r.VolumeContext, volume.KeyEphemeral)
		}, "ephemeral"),
		ginkgo.Entry("an unknown volume attribute", output(), func(_ pod, r *csi.NodePublishVolumeRequest) {
			r.VolumeContext["colour"] = "blue"
		}, `"colour"`),
		ginkgo.Entry("a target path outside kubelet's layout", output(), func(p pod, r *csi.NodePublishVolumeRequest) {
			r.TargetPath = filepath.Join(plugin.kubeletDir, "pods", p.UID, "volumes", "vol", "mount")
		}, "layout"),
		ginkgo.Entry("a target path outside the kubelet directory", output(), func(_ pod, r *csi.NodePublishVolumeRequest) {
			r.TargetPath = filepath.Join(filepath.Dir(plugin.kubeletDir), "elsewhere", "mount")
		}, "kubelet"),
		ginkgo.Entry("a target path of another pod", output(), func(_ pod, r *csi.NodePublishVolumeRequest) {
			r.TargetPath = newPod().target("vol")
		}, "belongs to pod"),
		ginkgo.Entry("a block access type", output(), func(_ pod, r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		}, "block"),
		ginkgo.Entry("a read-only output", output(), func(_ pod, r *csi.NodePublishVolumeRequest) {
			r.Readonly = true
		}, "readOnly"),
	)

	ginkgo.It("publish an output idempotently and unpublish it", func(ctx ginkgo.SpecContext) {
		r := newPod().publish("out", output())
		_, err := plugin.node.NodePublishVolume(ctx, r)
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
		unpublishAtEnd(r)
		gomega.Expect(mountsUnder(r.GetTargetPath())).To(gomega.Equal([]string{r.GetTargetPath()}))
		gomega.Expect(os.ReadDir(r.GetTargetPath())).To(gomega.BeEmpty())
		result := filepath.Join(r.GetTargetPath(), "result.json")
		gomega.Expect(os.WriteFile(result, []byte(`{"ok":true}`), 0o644)).To(gomega.Succeed())

		ginkgo.By("publishing the same volume again")
		_, err = plugin.node.NodePublishVolume(ctx, r)
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
		gomega.Expect(result).To(gomega.BeARegularFile(), "the repeat mounts the same directory")
		gomega.Expect(mountsUnder(r.GetTargetPath())).To(gomega.HaveLen(1), "the repeat mounts nothing more")

		ginkgo.By("publishing the same volume with other attributes")
		other := proto.Clone(r).(*csi.NodePublishVolumeRequest)
		other.VolumeContext[volume.AttrArtifact] = "other-report"
		_, err = plugin.node.NodePublishVolume(ctx, other)
		expectCode(err, codes.AlreadyExists)

		ginkgo.By("unpublishing")
		_, err = plugin.node.NodeUnpublishVolume(ctx, unpublish(r))
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
		gomega.Expect(mountsUnder(r.GetTargetPath())).To(gomega.BeEmpty())
		gomega.Expect(r.GetTargetPath()).NotTo(gomega.BeAnExistingFile())

		ginkgo.By("unpublishing again")
		_, err = plugin.node.NodeUnpublishVolume(ctx, unpublish(r))
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
	})

	ginkgo.It("unpublish an unknown volume with a missing target with OK, never NotFound", func(ctx ginkgo.SpecContext) {
		target := newPod().target("ghost")
		_, err := plugin.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "csi-never-published", TargetPath: target})
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
		gomega.Expect(target).NotTo(gomega.BeAnExistingFile())
	})

	ginkgo.It("abort a second call on a volume while one is in flight", func(ctx ginkgo.SpecContext) {
		ginkgo.DeferCleanup(plugin.gate.release) // never leave the registry holding a request
		r := newPod().publish("src", map[string]string{
			volume.AttrDirection: "input",
			volume.AttrArtifact:  "src",
			volume.AttrRef:       plugin.registry + "/team/artifacts@sha256:" + heldDigest,
		})
		first := make(chan error, 1)
		go func() {
			_, err := plugin.node.NodePublishVolume(ctx, r)
			first <- err
		}()
		gomega.Eventually(plugin.gate.arrived).WithTimeout(10*time.Second).Should(gomega.Receive(), "the first publish reaches the registry")

		// A driver that does not serialise calls would hold these too.
		quick, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := plugin.node.NodePublishVolume(quick, r)
		expectCode(err, codes.Aborted, r.GetVolumeId())
		_, err = plugin.node.NodeUnpublishVolume(quick, unpublish(r))
		expectCode(err, codes.Aborted, r.GetVolumeId())

		ginkgo.By("releasing the first publish")
		plugin.gate.release()
		var firstErr error
		gomega.Eventually(first).WithTimeout(10*time.Second).Should(gomega.Receive(&firstErr), "the first publish finishes")
		expectCode(firstErr, codes.NotFound)

		ginkgo.By("publishing again once nothing is in flight")
		_, err = plugin.node.NodePublishVolume(ctx, r)
		expectCode(err, codes.NotFound)
		gomega.Expect(mountsUnder(r.GetTargetPath())).To(gomega.BeEmpty())
	}, ginkgo.NodeTimeout(time.Minute))

	ginkgo.It("give an output to the pod's fsGroup (VOLUME_MOUNT_GROUP)", func(ctx ginkgo.SpecContext) {
		caps, err := plugin.node.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
		var types []csi.NodeServiceCapability_RPC_Type
		for _, c := range caps.GetCapabilities() {
			types = append(types, c.GetRpc().GetType())
		}
		gomega.Expect(types).To(gomega.ContainElement(csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP))

		r := newPod().publish("out", output())
		r.VolumeCapability.GetMount().VolumeMountGroup = "4321"
		_, err = plugin.node.NodePublishVolume(ctx, r)
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
		unpublishAtEnd(r)
		st, err := os.Stat(r.GetTargetPath())
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
		gomega.Expect(st.IsDir()).To(gomega.BeTrue())
		gomega.Expect(st.Sys().(*syscall.Stat_t).Gid).To(gomega.BeEquivalentTo(4321))
		gomega.Expect(st.Mode()&os.ModeSetgid).NotTo(gomega.BeZero(), "mode %v: files the pod creates inherit the group", st.Mode())
	})
})
