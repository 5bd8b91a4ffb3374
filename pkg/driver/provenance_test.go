package driver

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tektoncd/artifacts-csi-driver/internal/testkit"
	"github.com/tektoncd/artifacts-csi-driver/internal/testsign"
	v1alpha1 "github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/signing"
	"github.com/tektoncd/artifacts-csi-driver/pkg/trust"
)

// bundle is a provenance of digest made by TaskRun uid of Task task in
// namespace, signed by s.
func bundle(t *testing.T, s signing.Signer, digest, namespace, task, uid string) []byte {
	return testsign.Bundle(t, s, provenance.Facts{Repository: repo, Digest: digest, Artifact: "bin", Namespace: namespace,
		Pod: provenance.Ref{Name: "producer", UID: "pod-uid"}, TaskRun: &provenance.Ref{Name: "run-1-build", UID: uid},
		TaskRef: map[string]any{"name": task}})
}

// TestPublishInputProvenance: with verification asked for (by the
// configuration or the volume), an input is mounted only when a
// provenance signed by a trusted key exists for its digest and names the
// producer the policy requires; every refusal is a failed precondition,
// an Event on the pod, and nothing fetched or mounted. A second pod's
// publish reuses the verification.
func TestPublishInputProvenance(t *testing.T) {
	ours, ourPub, _ := testsign.Key(t)
	theirs, _, _ := testsign.Key(t)
	providerRecord := func(b []byte) v1alpha1.ArtifactRecord {
		r := v1alpha1.ArtifactRecord{ObjectMeta: metav1.ObjectMeta{Name: "producer-rec"}}
		r.Spec.Pod.Name, r.Spec.Backend, r.Spec.Repository = "producer", "filesystem", "team"
		r.Spec.TaskRun = &v1alpha1.ObjectReference{Name: "run-1-build", UID: "producer-uid"}
		r.Status.Phase, r.Status.Digest, r.Status.LastUpdateTime = v1alpha1.Pushed, digestB, metav1.Now()
		r.Status.Provenance = &v1alpha1.Provenance{Bundle: string(b)}
		if b == nil {
			r.Status.Provenance = &v1alpha1.Provenance{Message: "not signed: the TaskRun does not name pod producer as its own"}
		}
		return r
	}
	ociRecord := func() v1alpha1.ArtifactRecord {
		r := providerRecord(nil)
		r.Spec.Backend, r.Spec.Repository, r.Status.Digest = "", repo, digestA
		r.Status.Provenance = &v1alpha1.Provenance{Digest: "sha256:" + strings.Repeat("9", 64)}
		return r
	}
	required := func(n *node) { n.config.cfg.Provenance.Required = true }
	for _, tc := range []struct {
		name  string
		setup func(n *node)
		attrs map[string]string
		code  codes.Code
		says  string
	}{
		{"not asked for", nil, testkit.Input("source", repo+"@"+digestA), codes.OK, ""},
		{"required, signed by the trusted key", func(n *node) {
			required(n)
			n.stores.bundles[digestA] = [][]byte{bundle(t, ours, digestA, "team", "build", "u")}
		}, testkit.Input("source", repo+"@"+digestA), codes.OK, ""},
		{"required, none attached", required, testkit.Input("source", repo+"@"+digestA), codes.FailedPrecondition,
			"no provenance: only outputs of this driver's output volumes get a provenance"},
		{"required, signed by another key", func(n *node) {
			required(n)
			n.stores.bundles[digestA] = [][]byte{bundle(t, theirs, digestA, "team", "build", "u")}
		}, testkit.Input("source", repo+"@"+digestA), codes.FailedPrecondition, "must be signed by a key of ConfigMap artifacts-signing-keys"},
		{"required, no trusted keys", func(n *node) {
			required(n)
			n.d.deps.Trust = &trust.Verifier{Keys: &trust.KeyFile{Path: filepath.Join(t.TempDir(), "none")}}
		}, testkit.Input("source", repo+"@"+digestA), codes.FailedPrecondition, "ConfigMap artifacts-signing-keys (--trusted-keys)"},
		{"same namespace required, produced in another", func(n *node) {
			n.config.cfg.Provenance.SameNamespace = true
			n.stores.bundles[digestA] = [][]byte{bundle(t, ours, digestA, "other-team", "build", "u")}
		}, testkit.Input("source", repo+"@"+digestA), codes.FailedPrecondition, `provenance.sameNamespace requires "team"`},
		{"producerTask asks for it alone", func(n *node) {
			n.stores.bundles[digestA] = [][]byte{bundle(t, ours, digestA, "team", "lint", "u")}
		}, with(testkit.Input("source", repo+"@"+digestA), "producerTask", "build"), codes.FailedPrecondition, `producerTask requires "build"`},
		{"producerTask met", func(n *node) {
			n.stores.bundles[digestA] = [][]byte{bundle(t, ours, digestA, "team", "build", "u")}
		}, with(testkit.Input("source", repo+"@"+digestA), "producerTask", "build"), codes.OK, ""},
		{"from: signed for the producer's TaskRun", func(n *node) {
			required(n)
			n.cluster.records = []v1alpha1.ArtifactRecord{ociRecord()}
			n.stores.bundles[digestA] = [][]byte{bundle(t, ours, digestA, "team", "build", "producer-uid")}
		}, testkit.InputFrom("source", "tasks.build.outputs.bin"), codes.OK, ""},
		{"from: signed for another TaskRun", func(n *node) {
			required(n)
			n.cluster.records = []v1alpha1.ArtifactRecord{ociRecord()}
			n.stores.bundles[digestA] = [][]byte{bundle(t, ours, digestA, "team", "build", "another-uid")}
		}, testkit.InputFrom("source", "tasks.build.outputs.bin"), codes.FailedPrecondition, `from: resolved to "taskrun/producer-uid"`},
		{"from: a provider's, its record's bundle", func(n *node) {
			required(n)
			n.cluster.records = []v1alpha1.ArtifactRecord{providerRecord(bundle(t, ours, digestB, "team", "build", "producer-uid"))}
		}, testkit.InputFrom("source", "tasks.build.outputs.bin"), codes.OK, ""},
		{"from: not signed yet", func(n *node) {
			required(n)
			r := ociRecord()
			r.Status.Provenance = nil
			n.cluster.records = []v1alpha1.ArtifactRecord{r}
		}, testkit.InputFrom("source", "tasks.build.outputs.bin"), codes.Unavailable, "waiting for the controller to sign the provenance"},
		{"from: a provider's, its record has none", func(n *node) {
			required(n)
			n.cluster.records = []v1alpha1.ArtifactRecord{providerRecord(nil)}
		}, testkit.InputFrom("source", "tasks.build.outputs.bin"), codes.FailedPrecondition,
			"no provenance: the controller has not signed it (ArtifactRecord producer-rec): not signed: the TaskRun does not name pod producer"},
		{"ref: a provider's", func(n *node) {
			required(n)
			n.config.cfg.Backend = "filesystem"
		}, testkit.Input("source", "team@"+digestB), codes.FailedPrecondition, "name the input with from:, not ref:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			keys := filepath.Join(t.TempDir(), "trusted.pub")
			if err := os.WriteFile(keys, ourPub, 0o644); err != nil {
				t.Fatal(err)
			}
			n.stores.bundles = map[string][][]byte{}
			n.d.deps.Trust = &trust.Verifier{Keys: &trust.KeyFile{Path: keys}}
			if tc.setup != nil {
				tc.setup(n)
			}
			req := n.request("src", tc.attrs)
			wantCode(t, tc.name, n.publish(req), tc.code, tc.says)
			refused := slices.Contains(n.events.reasons, record.ReasonProvenanceRefused)
			if refused != (tc.code == codes.FailedPrecondition) {
				t.Errorf("events %v; want %s: %v", n.events.reasons, record.ReasonProvenanceRefused, tc.code == codes.FailedPrecondition)
			}
			if tc.code != codes.OK {
				if len(n.stores.pulls) != 0 || len(n.mounts.Mounts()) != 0 {
					t.Errorf("refused, yet pulled %v and mounted %v", n.stores.pulls, n.mounts.Mounts())
				}
				return
			}
			n.mounted(req)
			// Another pod of the namespace: the verification is reused.
			listed := n.stores.listed
			n.pod = testkit.NewPod("other-pod", "team")
			n.cluster.pods["team/other-pod"] = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "other-pod", Namespace: "team", UID: types.UID(n.pod.UID)}}
			if err := n.publish(n.request("src", tc.attrs)); err != nil {
				t.Fatalf("second pod: %v", err)
			}
			if n.stores.listed != listed {
				t.Errorf("the second pod's publish listed the bundles again (%d, then %d)", listed, n.stores.listed)
			}
		})
	}
}

// with returns attrs with k set to v.
func with(attrs map[string]string, k, v string) map[string]string {
	attrs[k] = v
	return attrs
}
