package integration

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/controller"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/retention"
)

// startRetention runs the controller in-process, for its clock, as the
// user bound only to its generated roles, without the broker, with
// retention looking at every record every 200 ms. It stops when the test
// ends.
func startRetention(t *testing.T, env *testenv.Env, now func() time.Time) {
	t.Helper()
	namespace(t, env, driverNamespace)
	cfg, err := clientcmd.BuildConfigFromFlags("", roleKubeconfig(t, env, "controller"))
	if err != nil {
		t.Fatal(err)
	}
	o := controller.NewOptions()
	o.MetricsBindAddress, o.HealthProbeBindAddress, o.BrokerAddress, o.LeaderElect, o.Namespace = "0", "0", "0", false, driverNamespace
	o.Retention.Resync, o.Retention.Now = 200*time.Millisecond, now
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	skip := true
	mgr, err := controller.NewManager(ctx, cfg, o, func(mo *manager.Options) { mo.Controller.SkipNameValidation = &skip })
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	})
}

// registryHas reports whether ref (REPO:TAG or REPO@DIGEST) is in its
// registry.
func registryHas(t *testing.T, ref string) bool {
	t.Helper()
	r, err := oci.ParseReference(ref, oci.PlainHTTP)
	if err != nil {
		t.Fatal(err)
	}
	err = oci.New(oci.Options{}).Check(t.Context(), r)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("check %s: %v", ref, err)
	}
	return err == nil
}

// deleteRun deletes a TaskRun or PipelineRun as Tekton's users do, and
// checks that it is gone at once: nothing holds Tekton's objects.
func deleteRun(t *testing.T, env *testenv.Env, run *unstructured.Unstructured) {
	t.Helper()
	if err := env.Client.Delete(t.Context(), run); err != nil {
		t.Fatal(err)
	}
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(run.GroupVersionKind())
	if err := env.Client.Get(t.Context(), client.ObjectKeyFromObject(run), got); !apierrors.IsNotFound(err) {
		t.Fatalf("%s %s right after its deletion: %v (finalizers %v), want it gone", run.GetKind(), run.GetName(), err, got.GetFinalizers())
	}
}

// recordGone waits until rec is deleted.
func recordGone(t *testing.T, env *testenv.Env, rec *v1alpha1.ArtifactRecord) {
	t.Helper()
	waitFor(t, "record "+rec.Name+" deleted", func() bool {
		return apierrors.IsNotFound(env.Client.Get(t.Context(), client.ObjectKeyFromObject(rec), &v1alpha1.ArtifactRecord{}))
	})
}

// waitForRecordEvent waits for an Event with reason on a record of
// namespace whose message holds every text.
func waitForRecordEvent(t *testing.T, env *testenv.Env, ns, reason string, texts ...string) {
	t.Helper()
	waitFor(t, reason+" event in "+ns, func() bool {
		events := &corev1.EventList{}
		if err := env.Client.List(t.Context(), events, client.InNamespace(ns)); err != nil {
			return false
		}
		for _, e := range events.Items {
			if e.Reason == reason && e.InvolvedObject.Kind == "ArtifactRecord" && !slices.ContainsFunc(texts, func(s string) bool { return !strings.Contains(e.Message, s) }) {
				return true
			}
		}
		return false
	})
}

// held reports whether rec, read again, carries the retention finalizer.
func held(t *testing.T, env *testenv.Env, rec *v1alpha1.ArtifactRecord) bool {
	t.Helper()
	got := &v1alpha1.ArtifactRecord{}
	if err := env.Client.Get(t.Context(), client.ObjectKeyFromObject(rec), got); err != nil {
		t.Fatal(err)
	}
	return slices.Contains(got.Finalizers, v1alpha1.RetentionFinalizer)
}

// TestRetention runs the node plugin (a process) and the controller
// (in-process, for its clock) against a real API server and real
// distribution registries, one namespace per retention configuration:
//   - OnRunDeletion: deleting a TaskRun (gone at once: no finalizer on
//     it) removes its output's tag, manifest and PipelineRun group; an
//     output another namespace's live run consumed loses its tag only;
//   - Keep (no configuration): deleting the TaskRun removes nothing;
//   - maxAge: an output older than it is removed while its run lives;
//   - OnRunDeletion with a registry that refuses deletion: one DELETE,
//     tag and manifest stay, an ArtifactRetained Event, the record goes.
//
// Records of the namespaces with retention are held from their creation
// by the node plugin, before the controller runs.
func TestRetention(t *testing.T) {
	env := testenv.Start(t)
	dist := testregistry.StartDistribution(t)
	refusing := newProxy(t, testregistry.StartDistributionWith(t, testregistry.DistributionOptions{NoDelete: true}).Host)
	labelled := map[string]string{config.LabelConfigType: config.ConfigTypeArtifactStorage}
	configMap(t, env, "ret-delete", labelled, map[string]string{config.KeyRetentionPolicy: "OnRunDeletion"})
	configMap(t, env, "ret-age", labelled, map[string]string{config.KeyRetentionMaxAge: "1h"})
	configMap(t, env, "ret-refused", labelled, map[string]string{config.KeyRetentionPolicy: "OnRunDeletion",
		config.KeyRepository: refusing.Host + "/ret-refused/artifacts"})
	namespace(t, env, "ret-keep")
	pl := newPlugin(t, registryConfig(dist.Host), "--kubeconfig="+nodeKubeconfig(t, env))
	pl.start()
	repo := dist.Host + "/team-a/artifacts"

	// Outputs, before the controller runs.
	solo := newPipelineRun(t, env, "ret-delete", "solo", nil)
	soloBuild, soloPod := solo.task("build")
	soloRec := produceIn(t, env, pl, soloPod, "binary", 1)
	shared := newPipelineRun(t, env, "ret-delete", "shared", nil)
	sharedBuild, sharedPod := shared.task("build")
	sharedRec := produceIn(t, env, pl, sharedPod, "binary", 2)
	kept := newPipelineRun(t, env, "ret-keep", "kept", nil)
	keptBuild, keptPod := kept.task("build")
	keptRec := produceIn(t, env, pl, keptPod, "binary", 3)
	nightly, nightlyPod := standaloneTaskRun(t, env, "ret-age", "nightly", nil)
	nightlyRec := produceIn(t, env, pl, nightlyPod, "binary", 4)
	refused, refusedPod := standaloneTaskRun(t, env, "ret-refused", "build", nil)
	refusedRec := produceIn(t, env, pl, refusedPod, "binary", 5)
	// Another namespace's live run consumes shared's output by digest.
	_, consumerPod := standaloneTaskRun(t, env, "ret-other", "consumer", nil)
	mustOK(t, "publish the consumer's input", pl.publish(t.Context(), consumerPod, "in", input("bin", repo+"@"+sharedRec.Status.Digest)))
	waitForRecord(t, env, consumerPod, v1alpha1.Consumed)

	for _, rec := range []*v1alpha1.ArtifactRecord{soloRec, sharedRec, nightlyRec, refusedRec} {
		if !held(t, env, rec) {
			t.Errorf("record %s/%s was created without the retention finalizer", rec.Namespace, rec.Name)
		}
	}
	if held(t, env, keptRec) {
		t.Errorf("record %s/%s of a namespace that keeps its outputs is held", keptRec.Namespace, keptRec.Name)
	}
	ref := func(rec *v1alpha1.ArtifactRecord) (tag, manifest string) {
		return rec.Spec.Repository + ":" + rec.Spec.Tag, rec.Spec.Repository + "@" + rec.Status.Digest
	}
	for _, rec := range []*v1alpha1.ArtifactRecord{soloRec, sharedRec, keptRec, nightlyRec, refusedRec} {
		tag, manifest := ref(rec)
		if !registryHas(t, tag) || !registryHas(t, manifest) {
			t.Fatalf("%s or %s is not in the registry", tag, manifest)
		}
	}
	g := artifact.Group{Namespace: "ret-delete", PipelineRun: "solo", UID: string(solo.obj.GetUID())}
	soloGroup := repo + "@" + artifact.Descriptor("", g.Manifest()).Digest.String()
	if !registryHas(t, soloGroup) {
		t.Fatalf("group manifest %s is not in the registry", soloGroup)
	}

	var offset atomic.Int64 // the controller's clock runs this far ahead
	startRetention(t, env, func() time.Time { return time.Now().Add(time.Duration(offset.Load())) })

	t.Run("OnRunDeletion removes tag, manifest and group", func(t *testing.T) {
		deleteRun(t, env, soloBuild)
		deleteRun(t, env, solo.obj)
		recordGone(t, env, soloRec)
		tag, manifest := ref(soloRec)
		for _, r := range []string{tag, manifest, soloGroup} {
			if registryHas(t, r) {
				t.Errorf("%s is still in the registry", r)
			}
		}
		waitForRecordEvent(t, env, "ret-delete", retention.ReasonDeleted, soloRec.Status.Digest, "its run was deleted")
	})

	t.Run("a digest a live run references stays", func(t *testing.T) {
		deleteRun(t, env, sharedBuild)
		recordGone(t, env, sharedRec)
		tag, manifest := ref(sharedRec)
		if registryHas(t, tag) {
			t.Errorf("%s is still in the registry", tag)
		}
		if !registryHas(t, manifest) {
			t.Errorf("%s, which ret-other/consumer consumed, was deleted", manifest)
		}
		waitForRecordEvent(t, env, "ret-delete", retention.ReasonRetained, sharedRec.Status.Digest, "ret-other/")
	})

	t.Run("Keep removes nothing", func(t *testing.T) {
		deleteRun(t, env, keptBuild)
		// A record the controller let go of is deleted at once (envtest
		// has no garbage collector: the controller deletes records of runs
		// that are gone only where retention is on). So wait for a run
		// that retention handles, deleted after this one.
		deleteRun(t, env, refused)
		recordGone(t, env, refusedRec)
		tag, manifest := ref(keptRec)
		if !registryHas(t, tag) || !registryHas(t, manifest) {
			t.Errorf("%s or %s was deleted under Keep", tag, manifest)
		}
		if held(t, env, keptRec) {
			t.Errorf("record %s is held under Keep", keptRec.Name)
		}
	})

	t.Run("a registry that refuses deletion is asked once", func(t *testing.T) {
		// refused's TaskRun was deleted above, and its record is gone.
		tag, manifest := ref(refusedRec)
		if !registryHas(t, tag) || !registryHas(t, manifest) {
			t.Errorf("%s or %s is gone from a registry that refuses deletion", tag, manifest)
		}
		waitForRecordEvent(t, env, "ret-refused", retention.ReasonRetained, "does not allow deletion")
		if n := refusing.deletes.Load(); n != 1 {
			t.Errorf("%d DELETE requests, want 1: the first refusal says the rest would be refused too", n)
		}
	})

	t.Run("maxAge removes outputs of live runs", func(t *testing.T) {
		tag, manifest := ref(nightlyRec)
		if !registryHas(t, tag) || !registryHas(t, manifest) {
			t.Fatalf("%s or %s removed before maxAge", tag, manifest)
		}
		offset.Store(int64(2 * time.Hour))
		recordGone(t, env, nightlyRec)
		if registryHas(t, tag) || registryHas(t, manifest) {
			t.Errorf("%s or %s is still in the registry, 2h after its push with maxAge 1h", tag, manifest)
		}
		waitForRecordEvent(t, env, "ret-age", retention.ReasonDeleted, nightlyRec.Status.Digest, "older than retention.maxAge 1h")
		if err := env.Client.Get(t.Context(), client.ObjectKeyFromObject(nightly), nightly); err != nil {
			t.Errorf("TaskRun nightly: %v, want it left alone", err)
		}
	})
}
