package v1alpha1_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	. "github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
)

// TestCRD installs the generated CRD in a real API server and checks that
// it stores a record, status through its subresource, rejects what its
// schema forbids, and gives kubectl useful columns.
func TestCRD(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	rec := &ArtifactRecord{
		ObjectMeta: metav1.ObjectMeta{Name: "build-pod.report", Namespace: "default"},
		Spec: ArtifactRecordSpec{Direction: Output, Artifact: "report", Pod: ObjectReference{Name: "build-pod", UID: "uid-1"},
			Repository: "registry.example/team/artifacts", Tag: "default.build.report"},
	}
	if err := env.Client.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	rec.Status = ArtifactRecordStatus{Phase: Pushed, Digest: "sha256:aa", Size: 10}
	if err := env.Client.Status().Update(ctx, rec); err != nil {
		t.Fatal(err)
	}
	got := &ArtifactRecord{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(rec), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != Pushed || got.Spec.Artifact != "report" || got.Spec.Pod.UID != "uid-1" {
		t.Errorf("stored record = %+v", got)
	}

	bad := rec.DeepCopy()
	bad.ObjectMeta = metav1.ObjectMeta{Name: "bad", Namespace: "default"}
	bad.Spec.Direction = "Sideways"
	if err := env.Client.Create(ctx, bad); err == nil {
		t.Error("a record with direction Sideways was accepted")
	}

	// A run's records by field selector, served by the API server.
	other := rec.DeepCopy()
	other.ObjectMeta = metav1.ObjectMeta{Name: "other", Namespace: "default"}
	other.Spec.PipelineRun = "nightly"
	if err := env.Client.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	list := &ArtifactRecordList{}
	if err := env.Client.List(ctx, list, client.InNamespace("default"), client.MatchingFields{"spec.pipelineRun": "nightly"}); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != "other" {
		t.Errorf("spec.pipelineRun=nightly selected %d records", len(list.Items))
	}
	if err := env.Client.Delete(ctx, other); err != nil {
		t.Fatal(err)
	}

	// kubectl get artifactrecords: the API server's table, as kubectl asks
	// for it.
	rc, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.JoinPath(env.Config.Host, "/apis/artifacts.tekton.dev/v1alpha1/namespaces/default/artifactrecords")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := rc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	table := &metav1.Table{}
	if err := json.Unmarshal(body, table); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	var columns []string
	for _, c := range table.ColumnDefinitions {
		columns = append(columns, c.Name)
	}
	if want := []string{"Name", "Direction", "Artifact", "Digest", "Phase", "Age"}; !slices.Equal(columns, want) {
		t.Errorf("columns = %v, want %v", columns, want)
	}
	if len(table.Rows) != 1 || fmt.Sprint(table.Rows[0].Cells[1:5]) != "[Output report sha256:aa Pushed]" {
		t.Errorf("rows = %v", table.Rows)
	}
}
