package retention

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2/ktesting"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
)

const (
	repository = "reg.example/team/artifacts"
	digestA    = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB    = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// fakeRegistry is a registry of tags and manifests that logs every
// request; refuse makes it answer every DELETE with
// oci.ErrDeleteUnsupported, fail with err.
type fakeRegistry struct {
	mu        sync.Mutex
	tags      map[string]string // tag → digest
	manifests map[string]bool
	refuse    bool
	fail      error
	deletes   []string
}

func (f *fakeRegistry) Resolve(_ context.Context, ref oci.Reference) (name.Digest, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return name.Digest{}, f.fail
	}
	d, ok := f.tags[ref.Ref.Identifier()]
	if !ok {
		return name.Digest{}, fmt.Errorf("tag %s: %w", ref, errdefs.ErrNotFound)
	}
	return ref.Repository().Digest(d), nil
}

func (f *fakeRegistry) Delete(_ context.Context, ref name.Reference) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes = append(f.deletes, ref.Identifier())
	switch {
	case f.fail != nil:
		return f.fail
	case f.refuse:
		return fmt.Errorf("delete %s: %w", ref, oci.ErrDeleteUnsupported)
	}
	id := ref.Identifier()
	if _, ok := f.tags[id]; ok {
		delete(f.tags, id)
		return nil
	}
	if f.manifests[id] {
		delete(f.manifests, id)
		for t, d := range f.tags {
			if d == id {
				delete(f.tags, t)
			}
		}
		return nil
	}
	return fmt.Errorf("%s: %w", ref, errdefs.ErrNotFound)
}

func (f *fakeRegistry) Open(context.Context, string, config.Config) (Registry, error) { return f, nil }

type configs map[string]config.Config

func (c configs) Config(_ context.Context, ns string) (config.Config, error) {
	if cfg, ok := c[ns]; ok {
		return cfg, nil
	}
	return config.Defaults(), nil
}

type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) Event(_ runtime.Object, eventtype, reason, message string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, eventtype+" "+reason+": "+message)
}

func (e *events) reasons() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, s := range e.list {
		out = append(out, strings.TrimSuffix(strings.Fields(s)[1], ":"))
	}
	return out
}

// groupDigest is the digest of the group manifest of PipelineRun
// release (uid pr-1) in team-a.
func groupDigest() string {
	return artifact.Descriptor("", artifact.Group{Namespace: "team-a", PipelineRun: "release", UID: "pr-1"}.Manifest()).Digest.String()
}

// TestReconcileCleanup: the output of a deleted record is removed as far
// as nothing live references it; what a live run references, what the
// registry refuses and what keeps failing stays, and the record is let
// go in every case but a retryable failure before the give-up time.
func TestReconcileCleanup(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	onDelete := config.Defaults()
	onDelete.Retention.Policy = config.RetainOnRunDeletion
	dayOld := config.Defaults()
	dayOld.Retention.MaxAge = 24 * time.Hour

	taskRun := func(ns, name, uid string) client.Object {
		tr := tekton.NewTaskRun()
		tr.SetNamespace(ns)
		tr.SetName(name)
		tr.SetUID(types.UID(uid))
		return tr
	}
	record := func(ns, name string, dir v1alpha1.Direction, tr, trUID, digest string, age time.Duration) *v1alpha1.ArtifactRecord {
		r := &v1alpha1.ArtifactRecord{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name), CreationTimestamp: metav1.Time{Time: now.Add(-age)}},
			Spec: v1alpha1.ArtifactRecordSpec{Direction: dir, Artifact: "bin", Backend: v1alpha1.BackendOCI, Repository: repository,
				Pod: v1alpha1.ObjectReference{Name: tr + "-pod", UID: "pod-" + trUID}, TaskRun: &v1alpha1.ObjectReference{Name: tr, UID: trUID}},
			Status: v1alpha1.ArtifactRecordStatus{Phase: v1alpha1.Consumed, Digest: digest},
		}
		if dir == v1alpha1.Output {
			r.Status.Phase = v1alpha1.Pushed
			r.Spec.PipelineRun, r.Spec.PipelineRunUID, r.Spec.Tag = "release", "pr-1", "team-a."+tr+".bin"
		}
		return r
	}
	// The record under test: build's output, held, its TaskRun deleted.
	subject := func(deletedAgo time.Duration) *v1alpha1.ArtifactRecord {
		r := record("team-a", "build-out", v1alpha1.Output, "build", "tr-build", digestA, 2*time.Hour)
		r.Finalizers = []string{v1alpha1.RetentionFinalizer}
		r.DeletionTimestamp = &metav1.Time{Time: now.Add(-deletedAgo)}
		return r
	}
	fullRegistry := func() *fakeRegistry {
		return &fakeRegistry{tags: map[string]string{"team-a.build.bin": digestA, "other": digestB},
			manifests: map[string]bool{digestA: true, digestB: true, groupDigest(): true}}
	}
	type want struct {
		tags, manifests []string // what stays
		deletes         int      // DELETE requests
		held            bool     // the finalizer stays
		err             bool
		events          []string
	}
	for _, tc := range []struct {
		name     string
		objects  []client.Object
		configs  configs
		registry func() *fakeRegistry
		subject  *v1alpha1.ArtifactRecord
		want     want
	}{
		{
			name:     "nothing else references it: tag, manifest and group deleted",
			registry: fullRegistry, subject: subject(0),
			want: want{tags: []string{"other"}, manifests: []string{digestB}, deletes: 4, events: []string{ReasonDeleted}},
		},
		{
			name: "a live run in another namespace consumed it: the tag goes, the manifest stays",
			objects: []client.Object{taskRun("team-b", "consumer", "tr-consumer"),
				record("team-b", "consumer-in", v1alpha1.Input, "consumer", "tr-consumer", digestA, time.Hour)},
			registry: fullRegistry, subject: subject(0),
			want: want{tags: []string{"other"}, manifests: []string{digestA, digestB}, deletes: 3, events: []string{ReasonDeleted, ReasonRetained}},
		},
		{
			name:     "the consumer's run is gone too: it protects nothing",
			objects:  []client.Object{record("team-b", "consumer-in", v1alpha1.Input, "consumer", "tr-consumer", digestA, time.Hour)},
			registry: fullRegistry, subject: subject(0),
			want: want{tags: []string{"other"}, manifests: []string{digestB}, deletes: 4, events: []string{ReasonDeleted}},
		},
		{
			name: "the consumer's record is older than its namespace's maxAge: it protects nothing",
			objects: []client.Object{taskRun("team-b", "consumer", "tr-consumer"),
				record("team-b", "consumer-in", v1alpha1.Input, "consumer", "tr-consumer", digestA, 48*time.Hour)},
			configs:  configs{"team-b": dayOld},
			registry: fullRegistry, subject: subject(0),
			want: want{tags: []string{"other"}, manifests: []string{digestB}, deletes: 4, events: []string{ReasonDeleted}},
		},
		{
			name: "a live output of the same run keeps the group",
			objects: []client.Object{taskRun("team-a", "test", "tr-test"),
				record("team-a", "test-out", v1alpha1.Output, "test", "tr-test", digestB, time.Hour)},
			registry: fullRegistry, subject: subject(0),
			want: want{tags: []string{"other"}, manifests: []string{digestB, groupDigest()}, deletes: 2, events: []string{ReasonDeleted}},
		},
		{
			name: "a re-created TaskRun of the same name pushed the same tag: the tag is its",
			objects: []client.Object{taskRun("team-a", "build", "tr-build-2"),
				record("team-a", "build-2-out", v1alpha1.Output, "build", "tr-build-2", digestB, time.Hour)},
			registry: func() *fakeRegistry {
				r := fullRegistry()
				r.tags["team-a.build.bin"] = digestB
				return r
			}, subject: subject(0),
			want: want{tags: []string{"other", "team-a.build.bin"}, manifests: []string{digestB, groupDigest()}, deletes: 1, events: []string{ReasonDeleted, ReasonRetained}},
		},
		{
			name: "the tag names another manifest now: left alone",
			registry: func() *fakeRegistry {
				r := fullRegistry()
				r.tags["team-a.build.bin"] = digestB
				return r
			}, subject: subject(0),
			want: want{tags: []string{"other", "team-a.build.bin"}, manifests: []string{digestB}, deletes: 3, events: []string{ReasonDeleted}},
		},
		{
			name: "the registry does not allow deletion: asked once, everything stays, the record goes",
			registry: func() *fakeRegistry {
				r := fullRegistry()
				r.refuse = true
				return r
			}, subject: subject(0),
			want: want{tags: []string{"other", "team-a.build.bin"}, manifests: []string{digestA, digestB, groupDigest()}, deletes: 1, events: []string{ReasonRetained}},
		},
		{
			name: "the registry is down: retried, the record held",
			registry: func() *fakeRegistry {
				r := fullRegistry()
				r.fail = errdefs.Classify(errors.New("503"), errdefs.ErrUnavailable)
				return r
			}, subject: subject(time.Minute),
			want: want{tags: []string{"other", "team-a.build.bin"}, manifests: []string{digestA, digestB, groupDigest()}, held: true, err: true},
		},
		{
			name: "the registry is down past the give-up time: let go with a warning",
			registry: func() *fakeRegistry {
				r := fullRegistry()
				r.fail = errdefs.Classify(errors.New("503"), errdefs.ErrUnavailable)
				return r
			}, subject: subject(2 * time.Hour),
			want: want{tags: []string{"other", "team-a.build.bin"}, manifests: []string{digestA, digestB, groupDigest()}, events: []string{ReasonDeleteFailed}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			scheme := runtime.NewScheme()
			if err := errors.Join(clientgoscheme.AddToScheme(scheme), v1alpha1.AddToScheme(scheme)); err != nil {
				t.Fatal(err)
			}
			b := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&v1alpha1.ArtifactRecord{}).
				WithObjects(append(tc.objects, tc.subject,
					&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}},
					&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-b"}})...)
			for field, extract := range indexes {
				b = b.WithIndex(&v1alpha1.ArtifactRecord{}, field, extract)
			}
			c := b.Build()
			cfgs := configs{"team-a": onDelete}
			for ns, cfg := range tc.configs {
				cfgs[ns] = cfg
			}
			reg, ev := tc.registry(), &events{}
			r := &Reconciler{
				Options: Options{GiveUpAfter: time.Hour, Resync: 10 * time.Minute, Now: func() time.Time { return now }},
				Client:  c, Reader: c, Config: cfgs, Registries: reg, Events: ev,
			}
			_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(tc.subject)})
			if (err != nil) != tc.want.err {
				t.Fatalf("Reconcile: %v", err)
			}
			got := &v1alpha1.ArtifactRecord{}
			held := c.Get(ctx, client.ObjectKeyFromObject(tc.subject), got) == nil && slices.Contains(got.Finalizers, v1alpha1.RetentionFinalizer)
			if held != tc.want.held {
				t.Errorf("held: %t", held)
			}
			var tags, manifests []string
			for tag := range reg.tags {
				tags = append(tags, tag)
			}
			for m := range reg.manifests {
				manifests = append(manifests, m)
			}
			slices.Sort(tags)
			slices.Sort(manifests)
			slices.Sort(tc.want.manifests)
			if !slices.Equal(tags, tc.want.tags) || !slices.Equal(manifests, tc.want.manifests) {
				t.Errorf("registry holds tags %v, manifests %v; want %v, %v", tags, manifests, tc.want.tags, tc.want.manifests)
			}
			if len(reg.deletes) != tc.want.deletes && !tc.want.err {
				t.Errorf("DELETE requests: %v, want %d", reg.deletes, tc.want.deletes)
			}
			if !slices.Equal(ev.reasons(), tc.want.events) {
				t.Errorf("events: %q, want reasons %v", ev.list, tc.want.events)
			}
		})
	}
}
