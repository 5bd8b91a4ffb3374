package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/internal/testsign"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
	"github.com/tektoncd/artifacts-csi-driver/pkg/record"
	"github.com/tektoncd/artifacts-csi-driver/pkg/signing"
)

// relay reads input "tree" from params.from and writes it, with a line
// of its own, to output "relayed": a consumer that also produces.
const relay = `
apiVersion: tekton.dev/v1
kind: Task
metadata: {name: relay}
spec:
  params:
  - {name: from, type: string}
  steps:
  - name: copy
    image: ` + busybox + `
    script: |
      set -e
      cp -r /artifacts/inputs/tree/. /artifacts/outputs/relayed/
      echo relayed > /artifacts/outputs/relayed/relay
    volumeMounts:
    - {name: tree, mountPath: /artifacts/inputs/tree}
    - {name: relayed, mountPath: /artifacts/outputs/relayed}
  volumes:
  - name: tree
    csi:
      driver: artifacts.csi.tekton.dev
      readOnly: true
      volumeAttributes: {direction: input, artifact: tree, from: $(params.from)}
  - name: relayed
    csi:
      driver: artifacts.csi.tekton.dev
      volumeAttributes: {direction: output, artifact: relayed}
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: provenance}
spec:
  tasks:
  - name: build
    taskRef: {name: produce}
    params: [{name: megabytes, value: "1"}]
  - name: relay
    runAfter: [build]
    taskRef: {name: relay}
    params: [{name: from, value: tasks.build.outputs.out}]
`

// TestProvenance: in a namespace that requires verified inputs, a
// PipelineRun's build output gets a provenance the controller signs and
// attaches; the relay task's input is verified before it is mounted, and
// its own output's provenance lists that input as a resolved dependency.
// The real cosign CLI verifies both with the key the controller
// publishes. Then an artifact pushed without provenance (as artifacts
// push does), one whose provenance another key signed, and one whose
// signed statement was altered are each refused with an Event saying
// why; the signed one is mounted.
func TestProvenance(t *testing.T) {
	t.Parallel()
	cosign := os.Getenv("COSIGN")
	if cosign == "" {
		t.Skip("COSIGN is not set (make e2e sets it)")
	}
	ns := newNamespace(t)
	configMap(t, ns, map[string]string{config.KeyProvenanceRequired: "true", config.KeyProvenanceSameNamespace: "true"})
	create(t, ns, tasks+"---"+relay)
	pr := create(t, ns, pipelineRun("provenance", ""))[0]
	wantSucceeded(t, pr)

	signed := func(artifactName string) v1alpha1.ArtifactRecord {
		t.Helper()
		var rec v1alpha1.ArtifactRecord
		waitFor(t, "the provenance of output "+artifactName, 2*time.Minute, func() (bool, error) {
			rec = records(t, ns, artifactName, v1alpha1.Output, v1alpha1.Pushed, 1)[0]
			return rec.Status.Provenance.Signed(), nil
		})
		return rec
	}
	build, relayed := signed("out"), signed("relayed")

	keys := &corev1.ConfigMap{}
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: "artifacts-csi", Name: signing.KeysConfigMap}, keys); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "cosign.pub")
	if err := os.WriteFile(keyFile, []byte(keys.Data[signing.CurrentPublicKey]), 0o644); err != nil {
		t.Fatal(err)
	}
	// The real cosign verifies each with the published key, and hands back
	// the statement it verified.
	statement := func(rec v1alpha1.ArtifactRecord) string {
		t.Helper()
		ref := rec.Spec.Repository + "@" + rec.Status.Digest
		cmd := exec.CommandContext(t.Context(), cosign, "verify-attestation", "--key", keyFile, "--new-bundle-format",
			"--insecure-ignore-tlog=true", "--allow-http-registry", "--type", "slsaprovenance1", ref)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("cosign verify-attestation %s: %v\n%s", ref, err, stderr.String())
		}
		var env struct{ Payload string }
		if err := json.Unmarshal(bytes.Split(bytes.TrimSpace(stdout.Bytes()), []byte("\n"))[0], &env); err != nil {
			t.Fatalf("cosign's output: %v\n%s", err, stdout.String())
		}
		payload, err := base64.StdEncoding.DecodeString(env.Payload)
		if err != nil {
			t.Fatal(err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, payload); err != nil {
			t.Fatal(err)
		}
		t.Logf("cosign verified %s:\n%s\nstatement: %s", ref, stderr.String(), payload)
		return compact.String()
	}
	buildHex, relayedHex := strings.TrimPrefix(build.Status.Digest, "sha256:"), strings.TrimPrefix(relayed.Status.Digest, "sha256:")
	buildTR, relayTR := taskRun(t, pr, "build"), taskRun(t, pr, "relay")
	for st, wants := range map[string][]string{
		statement(build): {`"subject":[{"name":"` + build.Spec.Repository + `","digest":{"sha256":"` + buildHex + `"}}]`,
			`"taskRef":{"kind":"Task","name":"produce"}`, `"pipelineTask":"build"`, `"megabytes":"1"`,
			`"invocationId":"taskrun/` + string(buildTR.GetUID()) + `"`},
		statement(relayed): {`"digest":{"sha256":"` + relayedHex + `"}`, `"pipelineTask":"relay"`,
			`"resolvedDependencies":[{"digest":{"sha256":"` + buildHex + `"},"name":"tree","uri":"pkg:oci/artifacts@` + build.Status.Digest,
			`"invocationId":"taskrun/` + string(relayTR.GetUID()) + `"`},
	} {
		for _, want := range wants {
			if !strings.Contains(st, want) {
				t.Errorf("statement lacks %s:\n%s", want, st)
			}
		}
	}
	if t.Failed() {
		return
	}

	// The refusals, by ref: inputs of plain pods in the same namespace.
	reg := oci.New(oci.Options{})
	repo, err := name.NewRepository(registry+"/artifacts", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	push := func(seed uint64) v1.Hash {
		t.Helper()
		src := t.TempDir()
		testtree.Write(t, src, seed)
		res, err := reg.Push(t.Context(), oci.PushRequest{Dir: src, Repository: repo, Metadata: artifact.Metadata{Name: "pushed", Namespace: ns}})
		if err != nil {
			t.Fatal(err)
		}
		return res.Manifest.Digest
	}
	attach := func(subject v1.Hash, s signing.Signer, edit func([]byte) []byte) {
		t.Helper()
		b := testsign.Bundle(t, s, provenance.Facts{Repository: repo.Name(), Digest: subject.String(), Artifact: "pushed",
			Namespace: ns, Pod: provenance.Ref{Name: "laptop", UID: "laptop"}})
		if _, err := attest.Push(t.Context(), reg, repo, subject, edit(b), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	otherKey, _, _ := testsign.Key(t)
	// The cluster's own key (the administrator may read it) signs a
	// statement that is then altered.
	secret := &corev1.Secret{}
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: "artifacts-csi", Name: signing.KeySecret}, secret); err != nil {
		t.Fatal(err)
	}
	clusterKey, err := signing.NewECDSA(secret.Data[signing.KeySecretKey])
	if err != nil {
		t.Fatal(err)
	}
	unsigned, otherSigned, altered := push(101), push(102), push(103)
	attach(otherSigned, otherKey, func(b []byte) []byte { return b })
	attach(altered, clusterKey, func(b []byte) []byte { return testsign.Alter(t, b, ns, "someone-else") })

	for _, tc := range []struct {
		name   string
		digest string
		says   string
	}{
		{"unsigned", unsigned.String(), "no provenance"},
		{"other-key", otherSigned.String(), "must be signed by a key of ConfigMap artifacts-signing-keys"},
		{"altered", altered.String(), "must be signed by a key of ConfigMap artifacts-signing-keys"},
	} {
		pod := podSpec{ns: ns, name: "consume-" + tc.name, script: "ls /artifacts/inputs/in", volumes: []corev1.Volume{
			csiVolume("in", map[string]string{"direction": "input", "artifact": "in", "ref": repo.Name() + "@" + tc.digest}),
		}}.create(t)
		waitFor(t, "an Event refusing the "+tc.name+" input", 2*time.Minute, func() (bool, error) {
			for _, m := range events(t, pod, record.ReasonProvenanceRefused) {
				if strings.Contains(m, tc.says) {
					t.Logf("%s: %s", tc.name, m)
					return true, nil
				}
			}
			return false, nil
		})
		if err := c.Get(t.Context(), client.ObjectKeyFromObject(pod), pod); err != nil || pod.Status.Phase != corev1.PodPending {
			t.Errorf("the %s consumer is %s (%v), want Pending", tc.name, pod.Status.Phase, err)
		}
	}
	ok := podSpec{ns: ns, name: "consume-signed", script: "cat /artifacts/inputs/in/relay", volumes: []corev1.Volume{
		csiVolume("in", map[string]string{"direction": "input", "artifact": "in", "producerTask": "relay",
			"ref": relayed.Spec.Repository + "@" + relayed.Status.Digest}),
	}}.create(t)
	if log := waitSucceeded(t, ok); strings.TrimSpace(log) != "relayed" {
		t.Errorf("the signed input read %q", log)
	}
}
