package record

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"

	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

func TestEvents(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	client := fake.NewClientset()
	e := NewEvents(client, "artifacts-csi-node", "node-1", Log{})
	defer e.Shutdown()
	pod := volume.Pod{Name: "build-pod", Namespace: "team", UID: "uid-1"}
	records := []Record{
		{Direction: volume.Output, Artifact: "report", Pod: pod, Phase: Pending},
		{Direction: volume.Input, Artifact: "src", Pod: pod, Phase: Consumed},
		{Direction: volume.Output, Artifact: "report", Pod: pod, Phase: Pushed, Repository: "reg/x", Digest: "sha256:aa"},
		{Direction: volume.Output, Artifact: "junit", Pod: pod, Phase: Failed, Repository: "reg/x", Message: "deadline passed"},
	}
	for _, r := range records {
		if err := e.Record(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	var events []corev1.Event
	for deadline := time.Now().Add(10 * time.Second); len(events) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		list, err := client.CoreV1().Events("team").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		events = list.Items
	}
	if len(events) != 2 {
		t.Fatalf("got %d events, want 2 (pushed and failed only): %+v", len(events), events)
	}
	got := map[string]corev1.Event{}
	for _, ev := range events {
		got[ev.Reason] = ev
		if ev.InvolvedObject.Kind != "Pod" || ev.InvolvedObject.Name != "build-pod" || ev.InvolvedObject.UID != "uid-1" || ev.Source.Host != "node-1" {
			t.Errorf("event on the wrong object: %+v", ev)
		}
	}
	if ev := got[ReasonPushFailed]; ev.Type != corev1.EventTypeWarning || !strings.Contains(ev.Message, "deadline passed") || !strings.Contains(ev.Message, "junit") {
		t.Errorf("failure event = %+v", ev)
	}
	if ev := got[ReasonPushed]; ev.Type != corev1.EventTypeNormal || !strings.Contains(ev.Message, "reg/x@sha256:aa") {
		t.Errorf("pushed event = %+v", ev)
	}
}
