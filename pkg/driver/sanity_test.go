package driver_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2/ktesting"

	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/pkg/driver"
)

// sanitySkips are the csi-sanity specs that create a volume with the
// Controller service first; a node-only driver of ephemeral volumes has none
// to create.
var sanitySkips = []string{
	`NodeUnpublishVolume should remove target path$`,
	`ValidateVolumeCapabilities should return appropriate values \(no optional values added\)$`,
	`ValidateVolumeCapabilities should fail when no volume capabilities are provided$`,
}

// plugin is the driver under test, shared by csi-sanity and our specs.
var plugin struct {
	kubeletDir string
	conn       *grpc.ClientConn
	node       csi.NodeClient
	release    func() // lets requests held by the registry through
}

// TestSanity runs csi-sanity and the ephemeral-volume specs below against
// the plugin, in-process, over a real unix socket.
func TestSanity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("publishing volumes needs root (bind mounts)")
	}
	root, err := os.MkdirTemp("", "sanity-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)

	// A registry whose requests can be held, to keep a publish in flight.
	gate := make(chan struct{})
	held := make(chan struct{}, 16)
	host := testregistry.Handler(t, true, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/held/") {
				held <- struct{}{}
				<-gate
			}
			h.ServeHTTP(w, r)
		})
	})
	plugin.release = sync.OnceFunc(func() { close(gate) })
	heldSignal = held
	registryHost = host

	o := driver.NewOptions()
	o.NodeID = "node-1"
	o.Endpoint = "unix://" + filepath.Join(root, "csi.sock")
	o.KubeletDir = filepath.Join(root, "kubelet")
	o.StateDir = filepath.Join(root, "state")
	o.ConfigDir = filepath.Join(root, "config")
	o.HTTPAddress = ""
	o.Registration = false
	if err := os.MkdirAll(o.ConfigDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"oci.repository": host + "/team/artifacts", "oci.plainHTTP": "true"} {
		if err := os.WriteFile(filepath.Join(o.ConfigDir, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- driver.Run(ctx, o, "test") }()
	defer func() {
		plugin.release()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	conn, err := grpc.NewClient(o.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	plugin.kubeletDir, plugin.conn, plugin.node = o.KubeletDir, conn, csi.NewNodeClient(conn)
	waitReady(t, conn)

	cfg := sanity.NewTestConfig()
	cfg.Address = o.Endpoint
	cfg.TargetPath = filepath.Join(root, "target") // fresh: sanity creates them
	cfg.StagingPath = filepath.Join(root, "staging")
	sanity.GinkgoTest(&cfg)

	RegisterFailHandler(Fail)
	suite, reporter := GinkgoConfiguration()
	suite.SkipStrings = sanitySkips
	RunSpecs(t, "CSI sanity and ephemeral volumes", suite, reporter)
}

var (
	heldSignal   chan struct{}
	registryHost string
)

func waitReady(t *testing.T, conn *grpc.ClientConn) {
	id := csi.NewIdentityClient(conn)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r, err := id.Probe(t.Context(), &csi.ProbeRequest{})
		if err == nil && r.GetReady().GetValue() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin not ready: %v", err)
		}
	}
}

// pod is the pod a request is for.
type pod struct{ name, uid string }

var podCount int

func newPod() pod {
	podCount++
	return pod{name: fmt.Sprintf("pod-%d", podCount), uid: fmt.Sprintf("%08d-1111-2222-3333-444444444444", podCount)}
}

func (p pod) target(volume string) string {
	return filepath.Join(plugin.kubeletDir, "pods", p.uid, "volumes", "kubernetes.io~csi", volume, "mount")
}

// request builds the NodePublishVolume kubelet sends for an ephemeral
// inline volume of p.
func (p pod) request(volume string, attrs map[string]string) *csi.NodePublishVolumeRequest {
	vc := map[string]string{
		"csi.storage.k8s.io/pod.name":      p.name,
		"csi.storage.k8s.io/pod.namespace": "team",
		"csi.storage.k8s.io/pod.uid":       p.uid,
		"csi.storage.k8s.io/ephemeral":     "true",
	}
	for k, v := range attrs {
		vc[k] = v
	}
	return &csi.NodePublishVolumeRequest{
		VolumeId:   "csi-" + p.uid + "-" + volume,
		TargetPath: p.target(volume),
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		VolumeContext: vc,
	}
}

func unpublishReq(r *csi.NodePublishVolumeRequest) *csi.NodeUnpublishVolumeRequest {
	return &csi.NodeUnpublishVolumeRequest{VolumeId: r.VolumeId, TargetPath: r.TargetPath}
}

func expectCode(err error, code codes.Code, contains ...string) {
	GinkgoHelper()
	Expect(status.Code(err)).To(Equal(code), "error: %v", err)
	for _, c := range contains {
		Expect(err.Error()).To(ContainSubstring(c))
	}
}

var output = map[string]string{"direction": "output", "artifact": "report"}

var _ = Describe("Ephemeral volumes", func() {
	ctx := context.Background()

	It("refuses a persistent-volume use", func() {
		r := newPod().request("v", output)
		delete(r.VolumeContext, "csi.storage.k8s.io/ephemeral")
		_, err := plugin.node.NodePublishVolume(ctx, r)
		expectCode(err, codes.InvalidArgument, "ephemeral")
	})

	It("refuses unknown attributes, naming them", func() {
		r := newPod().request("v", map[string]string{"direction": "output", "artifact": "report", "colour": "blue"})
		_, err := plugin.node.NodePublishVolume(ctx, r)
		expectCode(err, codes.InvalidArgument, "colour")
	})

	It("refuses target paths outside kubelet's layout or of another pod", func() {
		p := newPod()
		r := p.request("v", output)
		r.TargetPath = filepath.Join(plugin.kubeletDir, "pods", p.uid, "volumes", "v", "mount")
		_, err := plugin.node.NodePublishVolume(ctx, r)
		expectCode(err, codes.InvalidArgument, "layout")
		r.TargetPath = newPod().target("v")
		_, err = plugin.node.NodePublishVolume(ctx, r)
		expectCode(err, codes.InvalidArgument, "belongs to pod")
	})

	It("refuses block volumes and read-only outputs", func() {
		r := newPod().request("v", output)
		r.VolumeCapability.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		_, err := plugin.node.NodePublishVolume(ctx, r)
		expectCode(err, codes.InvalidArgument, "block")
		r = newPod().request("v", output)
		r.Readonly = true
		_, err = plugin.node.NodePublishVolume(ctx, r)
		expectCode(err, codes.InvalidArgument, "readOnly")
	})

	It("publishes an output idempotently and unpublishes it", func() {
		r := newPod().request("out", output)
		_, err := plugin.node.NodePublishVolume(ctx, r)
		Expect(err).NotTo(HaveOccurred())
		entries, err := os.ReadDir(r.TargetPath)
		Expect(err).NotTo(HaveOccurred())
		Expect(entries).To(BeEmpty())
		Expect(os.WriteFile(filepath.Join(r.TargetPath, "result"), []byte("ok"), 0o644)).To(Succeed())

		_, err = plugin.node.NodePublishVolume(ctx, r)
		Expect(err).NotTo(HaveOccurred(), "the same request again")
		other := proto.Clone(r).(*csi.NodePublishVolumeRequest)
		other.VolumeContext["artifact"] = "other"
		_, err = plugin.node.NodePublishVolume(ctx, other)
		expectCode(err, codes.AlreadyExists)

		_, err = plugin.node.NodeUnpublishVolume(ctx, unpublishReq(r))
		Expect(err).NotTo(HaveOccurred())
		Expect(r.TargetPath).NotTo(BeAnExistingFile())
		_, err = os.Stat(r.TargetPath)
		Expect(os.IsNotExist(err)).To(BeTrue(), "target after unpublish: %v", err)
		_, err = plugin.node.NodeUnpublishVolume(ctx, unpublishReq(r))
		Expect(err).NotTo(HaveOccurred(), "unpublish again")
	})

	It("unpublishes unknown volumes and missing targets with OK, never NotFound", func() {
		p := newPod()
		_, err := plugin.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "csi-unknown", TargetPath: p.target("ghost")})
		Expect(err).NotTo(HaveOccurred())
	})

	It("aborts a second call on a volume while one is in flight", func() {
		r := newPod().request("in", map[string]string{"direction": "input", "artifact": "src",
			"ref": registryHost + "/held/artifacts@sha256:" + strings.Repeat("ab", 32)})
		first := make(chan error, 1)
		go func() {
			_, err := plugin.node.NodePublishVolume(ctx, r)
			first <- err
		}()
		Eventually(heldSignal).WithTimeout(10*time.Second).Should(Receive(), "the first publish reached the registry")
		_, err := plugin.node.NodePublishVolume(ctx, r)
		expectCode(err, codes.Aborted)
		_, err = plugin.node.NodeUnpublishVolume(ctx, unpublishReq(r))
		expectCode(err, codes.Aborted)
		plugin.release()
		var firstErr error
		Eventually(first).WithTimeout(10 * time.Second).Should(Receive(&firstErr))
		expectCode(firstErr, codes.NotFound)
	})

	It("gives output directories to the pod's fsGroup (VOLUME_MOUNT_GROUP)", func() {
		caps, err := plugin.node.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
		Expect(err).NotTo(HaveOccurred())
		var types []csi.NodeServiceCapability_RPC_Type
		for _, c := range caps.GetCapabilities() {
			types = append(types, c.GetRpc().GetType())
		}
		Expect(types).To(ContainElement(csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP))

		r := newPod().request("out", output)
		r.VolumeCapability.GetMount().VolumeMountGroup = "4321"
		_, err = plugin.node.NodePublishVolume(ctx, r)
		Expect(err).NotTo(HaveOccurred())
		st, err := os.Stat(r.TargetPath)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.Sys().(*syscall.Stat_t).Gid).To(BeEquivalentTo(4321))
		Expect(st.Mode() & os.ModeSetgid).NotTo(BeZero())
		_, err = plugin.node.NodeUnpublishVolume(ctx, unpublishReq(r))
		Expect(err).NotTo(HaveOccurred())
	})
})
