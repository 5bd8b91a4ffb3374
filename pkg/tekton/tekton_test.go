package tekton

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
)

var now = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

// fakeReader serves unstructured objects by kind and key.
type fakeReader struct {
	objects map[string]*unstructured.Unstructured
	err     error
}

func (f *fakeReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	if f.err != nil {
		return f.err
	}
	u := obj.(*unstructured.Unstructured)
	o, ok := f.objects[u.GetKind()+"/"+key.String()]
	if !ok {
		return apierrors.NewNotFound(schema.GroupResource{Group: "tekton.dev", Resource: u.GetKind()}, key.Name)
	}
	o.DeepCopyInto(u)
	return nil
}

func (f *fakeReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("not used")
}

func (f *fakeReader) add(objs ...*unstructured.Unstructured) {
	for _, o := range objs {
		f.objects[o.GetKind()+"/"+o.GetNamespace()+"/"+o.GetName()] = o
	}
}

func controllerRef(kind, name, uid string) metav1.OwnerReference {
	yes := true
	return metav1.OwnerReference{APIVersion: "tekton.dev/v1", Kind: kind, Name: name, UID: types.UID(uid), Controller: &yes}
}

// run returns a TaskRun or PipelineRun as Tekton writes it, created age ago.
func run(gvk schema.GroupVersionKind, name, uid string, age time.Duration, status map[string]any, owner ...metav1.OwnerReference) *unstructured.Unstructured {
	u := newObject(gvk)
	u.SetNamespace("team")
	u.SetName(name)
	u.SetUID(types.UID(uid))
	u.SetCreationTimestamp(metav1.NewTime(now.Add(-age)))
	u.SetAnnotations(map[string]string{"from": name})
	u.SetOwnerReferences(owner)
	if status != nil {
		u.Object["status"] = status
	}
	return u
}

func succeeded() []any {
	return []any{map[string]any{"type": "Succeeded", "status": "True", "lastTransitionTime": now.Add(-time.Hour).Format(time.RFC3339)}}
}

// pod returns a pod created age ago that claims TaskRun tr (by owner
// reference with uid, else by label).
func pod(name, tr, uid string, age time.Duration) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name, UID: "pod-uid",
		CreationTimestamp: metav1.NewTime(now.Add(-age)), Annotations: map[string]string{"from": "pod"}}}
	switch {
	case uid != "":
		p.OwnerReferences = []metav1.OwnerReference{controllerRef("TaskRun", tr, uid)}
	case tr != "":
		p.Labels = map[string]string{LabelTaskRun: tr}
	}
	return p
}

func TestIdentify(t *testing.T) {
	children := []any{map[string]any{"kind": "TaskRun", "name": "release-build", "pipelineTaskName": "build"},
		map[string]any{"kind": "CustomRun", "name": "release-approve", "pipelineTaskName": "approve"}}
	pr := run(PipelineRunGVK, "release", "pr-uid", time.Minute, map[string]any{"childReferences": children})
	inPR := controllerRef("PipelineRun", "release", "pr-uid")
	// Tekton adopts a TaskRun labelled and owned as the run's: two for a
	// task without a matrix.
	adopted := run(PipelineRunGVK, "adopted", "ad-uid", time.Minute, map[string]any{
		"childReferences": []any{map[string]any{"kind": "TaskRun", "name": "adopted-build", "pipelineTaskName": "build"},
			map[string]any{"kind": "TaskRun", "name": "adopted-intruder", "pipelineTaskName": "build"}},
		"pipelineSpec": map[string]any{"tasks": []any{map[string]any{"name": "build"}}}})
	inAdopted := controllerRef("PipelineRun", "adopted", "ad-uid")
	objects := []*unstructured.Unstructured{pr, adopted,
		run(TaskRunGVK, "adopted-build", "ab-uid", time.Minute, map[string]any{"podName": "adopted-build-pod"}, inAdopted),
		run(TaskRunGVK, "release-build", "tr-uid", time.Minute, map[string]any{"podName": "release-build-pod-retry1",
			"retriesStatus": []any{map[string]any{"podName": "release-build-pod"}}}, inPR),
		run(TaskRunGVK, "standalone", "st-uid", time.Minute, map[string]any{"podName": "standalone-pod"}),
		// Claims the PipelineRun, which does not list it: created by
		// someone other than Tekton's PipelineRun reconciler.
		run(TaskRunGVK, "intruder", "in-uid", time.Hour, map[string]any{"podName": "intruder-pod"}, inPR),
		run(TaskRunGVK, "young-child", "yc-uid", time.Second, map[string]any{"podName": "young-child-pod"}, inPR),
		run(TaskRunGVK, "done", "done-uid", time.Hour, map[string]any{"podName": "done-pod", "conditions": succeeded()}),
		run(TaskRunGVK, "starting", "starting-uid", time.Second, nil),
	}
	var (
		plain    = Identity{}
		build    = Identity{TaskRun: &Ref{"release-build", "tr-uid"}, PipelineRun: &Ref{"release", "pr-uid"}, PipelineTask: "build"}
		alone    = Identity{TaskRun: &Ref{"standalone", "st-uid"}}
		intruder = Identity{TaskRun: &Ref{"intruder", "in-uid"}}
	)
	for _, tc := range []struct {
		name        string
		pod         *corev1.Pod
		want        Identity
		annotations string // whose annotations configure the pod
		refused     bool
		err         error
	}{
		{"plain pod", pod("p", "", "", 0), plain, "pod", false, nil},
		{"Tekton's pod", pod("release-build-pod-retry1", "release-build", "tr-uid", 0), build, "release", false, nil},
		{"a retry's earlier pod", pod("release-build-pod", "release-build", "tr-uid", time.Hour), build, "release", false, nil},
		{"claim by label only, confirmed", pod("release-build-pod-retry1", "release-build", "", 0), build, "release", false, nil},
		{"standalone TaskRun", pod("standalone-pod", "standalone", "st-uid", 0), alone, "standalone", false, nil},
		{"forged labels: the TaskRun names another pod", pod("forged", "release-build", "", 0), plain, "pod", true, nil},
		{"forged owner: the TaskRun names another pod", pod("forged", "release-build", "tr-uid", time.Hour), plain, "pod", true, nil},
		{"forged owner with a stale UID", pod("release-build-pod-retry1", "release-build", "old-uid", 0), plain, "pod", true, nil},
		{"claims a TaskRun that does not exist", pod("ghost-pod", "ghost", "", 0), plain, "pod", true, nil},
		{"claims a finished TaskRun", pod("late-pod", "done", "done-uid", 0), plain, "pod", true, nil},
		{"TaskRun has not named its pod yet", pod("starting-pod", "starting", "starting-uid", time.Second), Identity{}, "", false, ErrNotRecorded},
		{"TaskRun never named it", pod("starting-pod", "starting", "starting-uid", DefaultWait+time.Second), plain, "pod", true, nil},
		{"TaskRun claims a PipelineRun that does not list it", pod("intruder-pod", "intruder", "in-uid", 0), intruder, "intruder", true, nil},
		{"PipelineRun has not listed its TaskRun yet", pod("young-child-pod", "young-child", "yc-uid", 0), Identity{}, "", false, ErrNotRecorded},
		{"PipelineRun adopted a second TaskRun for the task", pod("adopted-build-pod", "adopted-build", "ab-uid", 0),
			Identity{TaskRun: &Ref{"adopted-build", "ab-uid"}}, "adopted-build", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeReader{objects: map[string]*unstructured.Unstructured{}}
			f.add(objects...)
			r := &Resolver{Reader: f, Now: func() time.Time { return now }}
			got, err := r.Identify(t.Context(), tc.pod)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Identify: %v, want %v", err, tc.err)
			}
			if err != nil {
				if errdefs.ClassOf(err) != errdefs.ErrUnavailable {
					t.Errorf("class of %v: %v, want unavailable", err, errdefs.ClassOf(err))
				}
				return
			}
			if !reflect.DeepEqual(got.Identity, tc.want) {
				t.Errorf("identity = %v %v %q, want %v %v %q", got.TaskRun, got.PipelineRun, got.PipelineTask, tc.want.TaskRun, tc.want.PipelineRun, tc.want.PipelineTask)
			}
			if got.Annotations["from"] != tc.annotations {
				t.Errorf("configured by the annotations of %q, want %q", got.Annotations["from"], tc.annotations)
			}
			if (got.Refused != "") != tc.refused {
				t.Errorf("refused = %q, want refused: %v", got.Refused, tc.refused)
			}
		})
	}
	t.Run("API server unreachable", func(t *testing.T) {
		r := &Resolver{Reader: &fakeReader{err: errors.New("connection refused")}}
		_, err := r.Identify(t.Context(), pod("release-build-pod", "release-build", "tr-uid", 0))
		if errdefs.ClassOf(err) != errdefs.ErrUnavailable {
			t.Errorf("Identify: %v, want unavailable", err)
		}
	})
}

func TestProducer(t *testing.T) {
	children := []any{
		map[string]any{"kind": "TaskRun", "name": "release-build-0", "pipelineTaskName": "build"},
		map[string]any{"kind": "TaskRun", "name": "release-build-1", "pipelineTaskName": "build"},
		map[string]any{"kind": "TaskRun", "name": "release-test", "pipelineTaskName": "test"},
		map[string]any{"kind": "TaskRun", "name": "reused-name", "pipelineTaskName": "build"},
	}
	inPR := controllerRef("PipelineRun", "release", "pr-uid")
	f := &fakeReader{objects: map[string]*unstructured.Unstructured{}}
	spec := map[string]any{"tasks": []any{
		map[string]any{"name": "build", "matrix": map[string]any{"params": []any{}}},
		map[string]any{"name": "test"},
	}}
	adopted := []any{
		map[string]any{"kind": "TaskRun", "name": "adopted-test", "pipelineTaskName": "test"},
		map[string]any{"kind": "TaskRun", "name": "intruder", "pipelineTaskName": "test"},
	}
	f.add(run(PipelineRunGVK, "release", "pr-uid", time.Hour, map[string]any{"childReferences": children, "pipelineSpec": spec}),
		run(PipelineRunGVK, "adopted", "ad-uid", time.Hour, map[string]any{"childReferences": adopted, "pipelineSpec": spec}),
		run(TaskRunGVK, "release-build-0", "b0", time.Hour, map[string]any{"podName": "b0-pod", "conditions": succeeded()}, inPR),
		run(TaskRunGVK, "release-build-1", "b1", time.Hour, map[string]any{"podName": "b1-pod"}, inPR),
		run(TaskRunGVK, "release-test", "t", time.Hour, nil, inPR),
		// Deleted and created again by someone else: not the run's.
		run(TaskRunGVK, "reused-name", "r", time.Hour, map[string]any{"podName": "r-pod"}))
	r := &Resolver{Reader: f}

	p, err := r.Producer(t.Context(), "team", Ref{"release", "pr-uid"}, "build")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, run := range p.Runs {
		got = append(got, fmt.Sprintf("%s:%s:%v", run.TaskRun.UID, run.Pod, run.Done))
	}
	if want := []string{"b0:b0-pod:true", "b1:b1-pod:false"}; !slices.Equal(got, want) {
		t.Errorf("runs = %v, want %v", got, want)
	}
	if done, _ := p.Done(); done || p.PipelineRunDone {
		t.Errorf("done = %v, %v; want a task still running", done, p.PipelineRunDone)
	}
	if p, err := r.Producer(t.Context(), "team", Ref{"release", "pr-uid"}, "deploy"); err != nil || len(p.Runs) != 0 {
		t.Errorf("a task not started: %+v, %v", p, err)
	}
	if _, err := r.Producer(t.Context(), "team", Ref{"release", "other-uid"}, "build"); !errors.Is(err, ErrRunReplaced) {
		t.Errorf("a replaced PipelineRun: %v, want ErrRunReplaced", err)
	}
	// Tekton adopted a TaskRun someone else created, labelled and owned as
	// the run's: two TaskRuns for a task without a matrix.
	if _, err := r.Producer(t.Context(), "team", Ref{"adopted", "ad-uid"}, "test"); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("an adopted intruder: %v, want ErrAmbiguous", err)
	}
}

func TestDone(t *testing.T) {
	at := "2026-11-28T10:00:00Z"
	want, _ := time.Parse(time.RFC3339, at)
	cond := func(status string) map[string]any {
		return map[string]any{"type": "Succeeded", "status": status, "lastTransitionTime": at}
	}
	for _, tc := range []struct {
		name     string
		status   map[string]any
		wantDone bool
	}{
		{"no status", nil, false},
		{"running", map[string]any{"conditions": []any{cond("Unknown")}}, false},
		{"succeeded", map[string]any{"conditions": []any{cond("True")}, "completionTime": at}, true},
		{"failed, transition time only", map[string]any{"conditions": []any{cond("False")}}, true},
		{"other condition", map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": "True"}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := NewTaskRun()
			if tc.status != nil {
				obj.Object["status"] = tc.status
			}
			done, when := Done(obj)
			if done != tc.wantDone || done && !when.Equal(want) {
				t.Errorf("Done = %v, %v", done, when)
			}
		})
	}
}
