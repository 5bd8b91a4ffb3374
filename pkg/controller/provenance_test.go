package controller_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/controller"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
	"github.com/tektoncd/artifacts-csi-driver/pkg/signing"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
)

// TestProvenance runs the controller against a real API server and an
// in-memory registry with the referrers API: a Pushed output whose TaskRun
// and PipelineRun confirm it gets a provenance signed by the key the
// controller made at first start and published, attached to the artifact,
// stating its task, parameters, run and the input its pod consumed; an
// output Tekton's state does not confirm gets none, and says why; a
// storage provider's output carries its bundle in the record; and a
// record whose status lost its provenance gets the attached one again,
// not a second.
func TestProvenance(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	const driverNS = "artifacts-csi"
	for _, n := range []string{ns, driverNS} {
		mustCreate(t, env, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	mustCreate(t, env, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: driverNS, Name: config.ConfigMapName},
		Data: map[string]string{config.KeyPlainHTTP: "true"}})
	host := testregistry.InMemory(t, true)
	repository := host + "/team-a/artifacts"
	reg := oci.New(oci.Options{})
	r, err := name.NewRepository(repository, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	push := func(seed uint64) string {
		src := t.TempDir()
		testtree.Write(t, src, seed)
		res, err := reg.Push(ctx, oci.PushRequest{Dir: src, Repository: r, Metadata: artifact.Metadata{Name: "a", Namespace: ns}})
		if err != nil {
			t.Fatal(err)
		}
		return res.Manifest.Digest.String()
	}
	binary, source, forged := push(1), push(2), push(3)

	pod := createPod(t, env, "build-pod", "node-1")
	stranger := createPod(t, env, "stranger", "node-1")
	pr := tekton.NewPipelineRun()
	pr.SetNamespace(ns)
	pr.SetName("ci-1")
	pr.Object["spec"] = map[string]any{"pipelineRef": map[string]any{"name": "ci"}, "params": []any{map[string]any{"name": "url", "value": "https://git.example/app"}}}
	mustCreate(t, env, pr)
	tr := tekton.NewTaskRun()
	tr.SetNamespace(ns)
	tr.SetName("ci-1-compile")
	tr.Object["spec"] = map[string]any{"taskRef": map[string]any{"name": "compile"}, "serviceAccountName": "builder",
		"params": []any{map[string]any{"name": "revision", "value": "abc123"}, map[string]any{"name": "flags", "value": []any{"-O2", "-g"}}}}
	mustCreate(t, env, tr)
	tr.Object["status"] = map[string]any{"podName": pod.Name, "startTime": "2026-12-03T10:00:00Z", "completionTime": "2026-12-03T10:05:00Z"}
	if err := env.Client.Status().Update(ctx, tr); err != nil {
		t.Fatal(err)
	}
	pr.Object["status"] = map[string]any{"childReferences": []any{map[string]any{"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": tr.GetName(), "pipelineTaskName": "compile"}}}
	if err := env.Client.Status().Update(ctx, pr); err != nil {
		t.Fatal(err)
	}

	record := func(recName string, dir v1alpha1.Direction, p *corev1.Pod, backend, digest string) {
		t.Helper()
		phase := v1alpha1.Pushed
		if dir == v1alpha1.Input {
			phase = v1alpha1.Consumed
		}
		rec := &v1alpha1.ArtifactRecord{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: recName},
			Spec: v1alpha1.ArtifactRecordSpec{Direction: dir, Artifact: recName, Pod: v1alpha1.ObjectReference{Name: p.Name, UID: string(p.UID)},
				NodeName: "node-1", TaskRun: &v1alpha1.ObjectReference{Name: tr.GetName(), UID: string(tr.GetUID())},
				PipelineRun: pr.GetName(), PipelineRunUID: string(pr.GetUID()), PipelineTask: "compile", Backend: backend, Repository: repository}}
		if backend != "" {
			rec.Spec.Repository = "team-a"
		}
		mustCreate(t, env, rec)
		rec.Status = v1alpha1.ArtifactRecordStatus{Phase: phase, Digest: digest, LastUpdateTime: metav1.Now()}
		if err := env.Client.Status().Update(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	record("source", v1alpha1.Input, pod, "", source)
	record("binary", v1alpha1.Output, pod, "", binary)
	record("forged", v1alpha1.Output, stranger, "", forged)
	record("report", v1alpha1.Output, pod, "filesystem", binary)
	startController(t, env, func(o *controller.Options) { o.SignProvenance, o.Namespace, o.Version = true, driverNS, "v0.test" })

	provenanceOf := func(recName string, signed bool) *v1alpha1.Provenance {
		t.Helper()
		rec := &v1alpha1.ArtifactRecord{}
		eventually(t, "the provenance of "+recName, func() error {
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: recName}, rec); err != nil {
				return err
			}
			if p := rec.Status.Provenance; p == nil || p.Signed() != signed {
				return fmt.Errorf("status.provenance is %+v", p)
			}
			return nil
		})
		return rec.Status.Provenance
	}
	keysCM := &corev1.ConfigMap{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: driverNS, Name: signing.KeysConfigMap}, keysCM); err != nil {
		t.Fatalf("the published keys: %v", err)
	}
	keys, err := signing.ParseKeys([]byte(keysCM.Data[signing.TrustedPublicKeys]))
	if err != nil {
		t.Fatal(err)
	}

	// The confirmed output: attached, signed, and saying what happened.
	p := provenanceOf("binary", true)
	v, err := attest.Verify(ctx, reg, r, v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(binary, "sha256:")}, keys)
	if err != nil {
		t.Fatalf("verify the attached provenance with the published key: %v", err)
	}
	if v.Bundle.String() != p.Digest || v.KeyHint != p.KeyID {
		t.Errorf("status.provenance %+v, attached %s by %s", p, v.Bundle, v.KeyHint)
	}
	raw, err := provenance.Marshal(v.Statement)
	if err != nil {
		t.Fatal(err)
	}
	var st bytes.Buffer // protojson spaces its output at random
	if err := json.Compact(&st, raw); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"digest":{"sha256":"` + strings.TrimPrefix(binary, "sha256:") + `"}`,
		`"buildType":"` + provenance.BuildTypeTaskRun + `"`,
		`"taskRef":{"name":"compile"}`, `"revision":"abc123"`, `"flags":["-O2","-g"]`,
		`"pipelineRun":"ci-1"`, `"pipelineTask":"compile"`, `"pipelineRef":{"name":"ci"}`, `"url":"https://git.example/app"`,
		`"serviceAccount":"builder"`, `"node":"node-1"`,
		`"name":"source","uri":"pkg:oci/artifacts@` + source, `"sha256":"` + strings.TrimPrefix(source, "sha256:") + `"`,
		`"invocationId":"taskrun/` + string(tr.GetUID()) + `"`, `"startedOn":"2026-12-03T10:00:00Z"`, `"finishedOn":"2026-12-03T10:05:00Z"`,
		`"artifacts-csi-driver":"v0.test"`,
	} {
		if !strings.Contains(st.String(), want) {
			t.Errorf("statement lacks %s:\n%s", want, st.String())
		}
	}

	// Tekton's state does not confirm the stranger's pod: no provenance.
	if p := provenanceOf("forged", false); !strings.Contains(p.Message, "does not name pod stranger") {
		t.Errorf("status.provenance of the unconfirmed output = %+v", p)
	}
	if _, err := attest.Verify(ctx, reg, r, v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(forged, "sha256:")}, keys); !errors.Is(err, attest.ErrNone) {
		t.Errorf("the unconfirmed output has a provenance attached: %v", err)
	}

	// A storage provider's output: the bundle is in the record.
	bundle := provenanceOf("report", true).Bundle
	if _, _, err := signing.Verify([]byte(bundle), keys, binary); err != nil {
		t.Errorf("the provider output's bundle: %v", err)
	}

	// The status lost (the controller died before writing it): the same
	// provenance again, and no second one attached.
	rec := &v1alpha1.ArtifactRecord{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "binary"}, rec); err != nil {
		t.Fatal(err)
	}
	rec.Status.Provenance = nil
	if err := env.Client.Status().Update(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if again := provenanceOf("binary", true); again.Digest != p.Digest {
		t.Errorf("signed again: %s, then %s", p.Digest, again.Digest)
	}
	refs, err := reg.Attached(ctx, r, v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(binary, "sha256:")}, signing.BundleMediaType)
	if err != nil || len(refs) != 1 {
		t.Errorf("attached provenances: %d, %v; want 1", len(refs), err)
	}
}

func mustCreate(t *testing.T, env *testenv.Env, obj client.Object) {
	t.Helper()
	if err := env.Client.Create(t.Context(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}
