// Package testkit is what the test suites share: requests shaped as
// kubelet sends them (built from pkg/volume's constants), one polling
// helper, and waiters for ArtifactRecords. The sanity suite and the
// driver's unit tests, the integration tests and the end-to-end tests use
// it, so a change in what kubelet sends is made once.
package testkit

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// Pod is what kubelet knows of a pod whose volumes it publishes.
type Pod struct {
	Name, Namespace, UID string
	// ServiceAccount defaults to "default".
	ServiceAccount string
}

// NewPod returns a pod with a random UID, as the API server gives one.
func NewPod(name, namespace string) Pod {
	u := rand.Text() // 26 base32 characters, 130 random bits
	h := sha256.Sum256([]byte(u))
	x := hex.EncodeToString(h[:16])
	return Pod{Name: name, Namespace: namespace, UID: x[:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]}
}

// VolumeID is how kubelet names the pod's ephemeral inline volume:
// csi-<sha256 of pod UID and volume name>.
func (p Pod) VolumeID(volumeName string) string {
	h := sha256.Sum256([]byte(p.UID + "/" + volumeName))
	return "csi-" + hex.EncodeToString(h[:])
}

// TargetPath is kubelet's mount point for the pod's volume.
func (p Pod) TargetPath(kubeletDir, volumeName string) string {
	return filepath.Join(kubeletDir, "pods", p.UID, "volumes", "kubernetes.io~csi", volumeName, "mount")
}

// Publish says what kubelet adds to a NodePublishVolume beyond the pod
// and the volume attributes.
type Publish struct {
	// Secrets are the data of a nodePublishSecretRef Secret.
	Secrets map[string]string
	// MountGroup is the pod's fsGroup.
	MountGroup string
	// ReadOnly is the volume's readOnly; default: set for inputs.
	ReadOnly *bool
}

// PublishRequest is the NodePublishVolume kubelet sends for the pod's csi:
// volume volumeName with attributes attrs, with podInfoOnMount.
func (p Pod) PublishRequest(kubeletDir, volumeName string, attrs map[string]string, o Publish) *csi.NodePublishVolumeRequest {
	sa := p.ServiceAccount
	if sa == "" {
		sa = "default"
	}
	vc := map[string]string{
		volume.KeyPodName:        p.Name,
		volume.KeyPodNamespace:   p.Namespace,
		volume.KeyPodUID:         p.UID,
		volume.KeyServiceAccount: sa,
		volume.KeyEphemeral:      "true",
	}
	for k, v := range attrs {
		vc[k] = v
	}
	readOnly := attrs[volume.AttrDirection] == string(volume.Input)
	if o.ReadOnly != nil {
		readOnly = *o.ReadOnly
	}
	return &csi.NodePublishVolumeRequest{
		VolumeId:   p.VolumeID(volumeName),
		TargetPath: p.TargetPath(kubeletDir, volumeName),
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{VolumeMountGroup: o.MountGroup}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		Readonly:      readOnly,
		VolumeContext: vc,
		Secrets:       o.Secrets,
	}
}

// UnpublishRequest is the NodeUnpublishVolume that undoes req.
func UnpublishRequest(req *csi.NodePublishVolumeRequest) *csi.NodeUnpublishVolumeRequest {
	return &csi.NodeUnpublishVolumeRequest{VolumeId: req.GetVolumeId(), TargetPath: req.GetTargetPath()}
}

// Input returns the attributes of an input volume of artifact named by
// ref (REPOSITORY@sha256:<hex>).
func Input(artifact, ref string) map[string]string {
	return map[string]string{volume.AttrDirection: string(volume.Input), volume.AttrArtifact: artifact, volume.AttrRef: ref}
}

// InputFrom returns the attributes of an input volume of artifact named
// by from (tasks.<pipelineTask>.outputs.<artifact>).
func InputFrom(artifact, from string) map[string]string {
	return map[string]string{volume.AttrDirection: string(volume.Input), volume.AttrArtifact: artifact, volume.AttrFrom: from}
}

// Output returns the attributes of an output volume of artifact.
func Output(artifact string) map[string]string {
	return map[string]string{volume.AttrDirection: string(volume.Output), volume.AttrArtifact: artifact}
}

// Eventually polls cond until it reports true, first every 10 ms, then
// less often, up to every 500 ms; after timeout it fails t with what and
// cond's last error.
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		ok, err := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, err)
		}
		time.Sleep(wait)
	}
}

// WaitForRecords waits until c lists at least count ArtifactRecords in
// namespace that match, and returns those it listed last.
func WaitForRecords(t testing.TB, c client.Reader, namespace string, count int, timeout time.Duration, match func(*v1alpha1.ArtifactRecord) bool) []v1alpha1.ArtifactRecord {
	t.Helper()
	var out []v1alpha1.ArtifactRecord
	Eventually(t, fmt.Sprintf("%d matching ArtifactRecord(s) in %s", count, namespace), timeout, func() (bool, error) {
		list := &v1alpha1.ArtifactRecordList{}
		if err := c.List(t.Context(), list, client.InNamespace(namespace)); err != nil {
			return false, err
		}
		out = out[:0]
		for i := range list.Items {
			if match(&list.Items[i]) {
				out = append(out, list.Items[i])
			}
		}
		return len(out) >= count, nil
	})
	return out
}
