package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
)

// tasks are the Tasks the scenarios run, created in each test's namespace.
//
// produce writes a tree of params.megabytes MiB (four random files) plus
// 300 small files, a symlink and the name of its pod into output
// $(params.artifact), prints its listing, sleeps params.sleep seconds,
// then fails when params.fail says so: never, always, or on the first
// attempt only (a retry's pod is <taskrun>-pod-retry<N>; Tekton
// substitutes $(context.task.retry-count) once, so every attempt would
// read 0).
//
// consume reads input "tree" from params.from (the Pipeline's from:) and
// prints its listing, whether it is writable, and the pod that wrote it.
const tasks = `
apiVersion: tekton.dev/v1
kind: Task
metadata: {name: produce}
spec:
  params:
  - {name: artifact, type: string, default: out}
  - {name: megabytes, type: string, default: "4"}
  - {name: sleep, type: string, default: "0"}
  - {name: fail, type: string, default: never}
  steps:
  - name: write
    image: ` + busybox + `
    script: |
      set -e
      cd /artifacts/outputs/tree
      mkdir -p big small/nested
      for i in 1 2 3 4; do dd if=/dev/urandom of=big/part$i bs=256k count=$(params.megabytes) 2>/dev/null; done
      for i in $(seq 1 300); do echo "file $i" > small/nested/f$i; done
      ln -s ../big/part1 small/link
      echo "pod $(hostname)" > attempt
      echo --- listing
      find . -type f | sort | xargs sha256sum
      echo ---
      sleep $(params.sleep)
      case "$(params.fail)/$(hostname)" in always/* | first/*-pod) echo failing; exit 1 ;; esac
    volumeMounts: [{name: tree, mountPath: /artifacts/outputs/tree}]
  volumes:
  - name: tree
    csi:
      driver: artifacts.csi.tekton.dev
      volumeAttributes: {direction: output, artifact: $(params.artifact), buildOutput: "true"}
---
apiVersion: tekton.dev/v1
kind: Task
metadata: {name: consume}
spec:
  params:
  - {name: from, type: string}
  steps:
  - name: read
    image: ` + busybox + `
    script: |
      set -e
      echo --- listing
      cd /artifacts/inputs/tree && find . -type f | sort | xargs sha256sum
      echo --- write
      touch /artifacts/inputs/tree/new 2>/dev/null && echo writable || echo read-only
      echo --- attempt
      cat /artifacts/inputs/tree/attempt
      echo ---
    volumeMounts: [{name: tree, mountPath: /artifacts/inputs/tree}]
  volumes:
  - name: tree
    csi:
      driver: artifacts.csi.tekton.dev
      readOnly: true
      volumeAttributes: {direction: input, artifact: tree, from: $(params.from)}
`

// pipeline is a Pipeline named name of a produce task "build" (with the
// given extra YAML for it, indented as a task) and a consume task "test"
// reading its output "out".
func pipeline(name, build, test string) string {
	return fmt.Sprintf(`
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: %s}
spec:
  tasks:
  - name: build
    taskRef: {name: produce}
%s
  - name: test
    taskRef: {name: consume}
    params: [{name: from, value: tasks.build.outputs.out}]
%s
`, name, build, test)
}

// pipelineRun is a PipelineRun of pipeline with the given extra spec YAML.
func pipelineRun(pipeline, spec string) string {
	return fmt.Sprintf(`
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata: {generateName: %s-}
spec:
  pipelineRef: {name: %s}
%s
`, pipeline, pipeline, spec)
}

// wantHandover checks that the test TaskRun of pr read, read-only, what
// the build TaskRun's last attempt wrote, and returns the consumer's log.
func wantHandover(t *testing.T, pr *unstructured.Unstructured) string {
	t.Helper()
	want := section(stepLog(t, taskRun(t, pr, "build"), "write"), "listing")
	if want == "" {
		t.Fatal("the producer printed no listing")
	}
	log := stepLog(t, taskRun(t, pr, "test"), "read")
	if got := section(log, "listing"); got != want {
		t.Errorf("the consumer read\n%s\nwant\n%s", got, want)
	}
	if got := strings.TrimSpace(section(log, "write")); got != "read-only" {
		t.Errorf("the input was %s", got)
	}
	return log
}

// TestHandover: a PipelineRun hands a 104 MiB tree from one Task to the
// next (runAfter, from:, the artifact name and from: given as
// $(params.*) in volumeAttributes); the consumer reads it byte-identical
// and read-only, and both TaskRuns get status.artifacts.
func TestHandover(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	create(t, ns, tasks+"---"+pipeline("handover",
		`    params: [{name: megabytes, value: "104"}]`,
		`    runAfter: [build]`))
	pr := create(t, ns, pipelineRun("handover", ""))[0]
	wantSucceeded(t, pr)
	wantHandover(t, pr)

	rec := records(t, ns, "out", v1alpha1.Output, v1alpha1.Pushed, 1)[0]
	if rec.Status.Size < 100<<20 {
		t.Errorf("pushed %d bytes, want at least 100 MiB", rec.Status.Size)
	}
	uri := "pkg:oci/artifacts@" + rec.Status.Digest + "?repository_url=" + registry + "/artifacts"
	build, test := taskRun(t, pr, "build"), taskRun(t, pr, "test")
	outs := artifacts(t, build, "outputs", "out")
	if !strings.Contains(fmt.Sprint(outs), uri) || !strings.Contains(fmt.Sprint(outs), "buildOutput:true") {
		t.Errorf("build's status.artifacts.outputs = %v, want %s as a build output", outs, uri)
	}
	if ins := artifacts(t, test, "inputs", "tree"); !strings.Contains(fmt.Sprint(ins), uri) {
		t.Errorf("test's status.artifacts.inputs = %v, want %s", ins, uri)
	}
	b, _ := json.MarshalIndent(build.Object["status"].(map[string]any)["artifacts"], "", "  ")
	t.Logf("TaskRun %s/%s status.artifacts:\n%s", ns, build.GetName(), b)

	// The dev cluster has one node: the consumer ran where its producer
	// did, and read the producer's own filesystem, kept as the cache entry
	// of its digest before the record it waited for (write-through).
	var entry struct {
		Image bool `json:"image"`
	}
	meta := filepath.Join(nodeStateDir, "cache", "manifest-"+strings.Replace(rec.Status.Digest, ":", "-", 1)+".json")
	if b, err := os.ReadFile(meta); err != nil || json.Unmarshal(b, &entry) != nil || !entry.Image {
		t.Errorf("the cache entry of %s is not the producer's kept filesystem: %s, %v", rec.Status.Digest, b, err)
	}
}

// TestConsumerWithoutRunAfter: a consumer that Tekton starts at the same
// time as its producer waits for the producer's push, then reads
// identical bytes.
func TestConsumerWithoutRunAfter(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	create(t, ns, tasks+"---"+pipeline("concurrent", `    params: [{name: sleep, value: "15"}]`, ""))
	pr := create(t, ns, pipelineRun("concurrent", ""))[0]
	wantSucceeded(t, pr)
	wantHandover(t, pr)
	started, _, _ := unstructured.NestedString(taskRun(t, pr, "test").Object, "status", "startTime")
	finished, _, _ := unstructured.NestedString(taskRun(t, pr, "build").Object, "status", "completionTime")
	if started == "" || finished == "" || started >= finished {
		t.Errorf("the consumer started at %q, the producer finished at %q: they did not overlap", started, finished)
	}
}

// TestFinallyReadsFailedTask: a finally Task reads the output of a Task
// that failed, as a test report would be.
func TestFinallyReadsFailedTask(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	create(t, ns, tasks+`---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: report}
spec:
  tasks:
  - name: build
    taskRef: {name: produce}
    params: [{name: fail, value: always}]
  finally:
  - name: test
    taskRef: {name: consume}
    params: [{name: from, value: tasks.build.outputs.out}]
`)
	pr := create(t, ns, pipelineRun("report", ""))[0]
	if reason := waitDone(t, pr, 5*time.Minute); reason != "Failed" {
		t.Fatalf("PipelineRun finished with %s, want Failed", reason)
	}
	if status, reason := condition(taskRun(t, pr, "build")); status != "False" {
		t.Errorf("build finished with %s (%s), want a failure", status, reason)
	}
	wantSucceeded(t, taskRun(t, pr, "test"))
	wantHandover(t, pr)
}

// TestRetries: the producer fails its first attempt and succeeds on
// retry; both attempts' outputs are pushed, and the consumer gets the one
// of the attempt that succeeded.
func TestRetries(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	create(t, ns, tasks+"---"+pipeline("retried",
		`    retries: 1
    params: [{name: fail, value: first}]`,
		`    runAfter: [build]`))
	pr := create(t, ns, pipelineRun("retried", ""))[0]
	wantSucceeded(t, pr)
	log := wantHandover(t, pr)
	build := taskRun(t, pr, "build")
	if got := strings.TrimSpace(section(log, "attempt")); got != "pod "+podName(build) || !strings.HasSuffix(got, "-pod-retry1") {
		t.Errorf("the consumer read the output of %q, want that of the retry, %s", got, podName(build))
	}
	pushed := records(t, ns, "out", v1alpha1.Output, v1alpha1.Pushed, 2)
	if pushed[0].Spec.Pod.Name == pushed[1].Spec.Pod.Name || pushed[0].Status.Digest == pushed[1].Status.Digest {
		t.Errorf("the two attempts' records: %+v and %+v", pushed[0].Spec.Pod, pushed[1].Spec.Pod)
	}
	consumed := records(t, ns, "tree", v1alpha1.Input, v1alpha1.Consumed, 1)[0]
	for _, r := range pushed {
		if (r.Spec.Pod.Name == podName(build)) != (r.Status.Digest == consumed.Status.Digest) {
			t.Errorf("consumed %s; the output of pod %s (TaskRun's pod %s) is %s", consumed.Status.Digest, r.Spec.Pod.Name, podName(build), r.Status.Digest)
		}
	}
}

// TestCancelledAndTimedOut: Tekton deletes the pod of a cancelled or
// timed-out TaskRun; what the pod wrote until then is pushed and recorded
// on the TaskRun like any output (docs/design.md). A Job and a plain pod
// read them back by digest with ref:.
func TestCancelledAndTimedOut(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	create(t, ns, tasks)
	newTaskRun := func(name, spec string) *unstructured.Unstructured {
		return create(t, ns, fmt.Sprintf(`
apiVersion: tekton.dev/v1
kind: TaskRun
metadata: {name: %s}
spec:
  taskRef: {name: produce}
  params: [{name: artifact, value: %s}, {name: sleep, value: "600"}]
%s`, name, name, spec))[0]
	}
	cancelled := newTaskRun("cancelled", "")
	timedOut := newTaskRun("timed-out", "  timeout: 40s")
	// The pod is gone once Tekton stops it: read what it wrote before.
	written := func(tr *unstructured.Unstructured) string {
		var got string
		waitFor(t, "the listing of "+tr.GetName(), 2*time.Minute, func() (bool, error) {
			if podName(get(t, tr)) == "" {
				return false, nil
			}
			log := stepLog(t, tr, "write")
			got = section(log, "listing")
			return strings.Contains(log, "---\n") && got != "", nil
		})
		return got
	}
	want := map[string]string{"cancelled": written(cancelled), "timed-out": written(timedOut)}
	patch := client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"status":"TaskRunCancelled"}}`))
	if err := c.Patch(t.Context(), cancelled, patch); err != nil {
		t.Fatal(err)
	}
	for tr, reason := range map[*unstructured.Unstructured]string{cancelled: "TaskRunCancelled", timedOut: "TaskRunTimeout"} {
		if got := waitDone(t, tr, 3*time.Minute); got != reason {
			t.Errorf("TaskRun %s finished with %s, want %s", tr.GetName(), got, reason)
		}
		artifacts(t, tr, "outputs", tr.GetName())
	}

	read := "echo --- listing\n" + listing("/artifacts/inputs/in") + "\necho ---"
	ref := func(artifact string) corev1.Volume {
		rec := records(t, ns, artifact, v1alpha1.Output, v1alpha1.Pushed, 1)[0]
		if rec.Spec.TaskRun == nil || rec.Spec.TaskRun.Name != artifact || rec.OwnerReferences[0].Kind != "TaskRun" {
			t.Errorf("record of %s: taskRun %v, owners %v", artifact, rec.Spec.TaskRun, rec.OwnerReferences)
		}
		return csiVolume("in", map[string]string{"direction": "input", "artifact": "data", "ref": rec.Spec.Repository + "@" + rec.Status.Digest})
	}
	pod := podSpec{ns: ns, name: "plain", script: read, volumes: []corev1.Volume{ref("timed-out")}}.create(t)
	if got := section(waitSucceeded(t, pod), "listing"); got != want["timed-out"] {
		t.Errorf("the plain pod read\n%s\nwant\n%s", got, want["timed-out"])
	}
	job := podSpec{ns: ns, name: "job", script: read, volumes: []corev1.Volume{ref("cancelled")}}.job(t)
	if got := section(waitSucceeded(t, job), "listing"); got != want["cancelled"] {
		t.Errorf("the Job read\n%s\nwant\n%s", got, want["cancelled"])
	}
}

// TestConfigurationLevels: the namespace ConfigMap, a Pipeline's
// annotation and a PipelineRun's annotation each choose the repository,
// the nearest level winning.
func TestConfigurationLevels(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	repo := func(level string) string { return registry + "/" + level + "/" + ns }
	configMap(t, ns, map[string]string{config.KeyRepository: repo("namespace"), config.KeyCompression: "zstd"})
	create(t, ns, tasks+"---"+pipeline("plain", "", "")+"---"+
		strings.Replace(pipeline("annotated", "", ""), "metadata: {name: annotated}",
			"metadata: {name: annotated, annotations: {'"+config.AnnotationRepository+"': '"+repo("pipeline")+"'}}", 1))
	runs := map[string]*unstructured.Unstructured{
		repo("namespace"): create(t, ns, pipelineRun("plain", ""))[0],
		repo("pipeline"):  create(t, ns, pipelineRun("annotated", ""))[0],
		repo("run"): create(t, ns, strings.Replace(pipelineRun("annotated", ""), "metadata: {generateName: annotated-}",
			"metadata: {generateName: annotated-, annotations: {'"+config.AnnotationRepository+"': '"+repo("run")+"'}}", 1))[0],
	}
	for _, pr := range runs {
		wantSucceeded(t, pr)
	}
	got := map[string]string{}
	for _, r := range records(t, ns, "out", v1alpha1.Output, v1alpha1.Pushed, 3) {
		got[r.Spec.PipelineRun] = r.Spec.Repository
		if !strings.Contains(r.Status.MediaType, "zstd") {
			t.Errorf("%s pushed as %s, want the namespace's zstd", r.Spec.PipelineRun, r.Status.MediaType)
		}
	}
	for want, pr := range runs {
		if got[pr.GetName()] != want {
			t.Errorf("PipelineRun %s pushed to %q, want %s", pr.GetName(), got[pr.GetName()], want)
		}
	}
}

// TestUsers: producer and consumer steps run as different non-root uids,
// with and without an fsGroup: the consumer reads and runs files the
// producer made private to itself (0600, 0700 in a 0700 directory).
func TestUsers(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	create(t, ns, `
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: users}
spec:
  tasks:
  - name: build
    taskSpec:
      steps:
      - name: write
        image: `+busybox+`
        securityContext: {runAsUser: 1001, runAsGroup: 1001}
        script: |
          set -e
          umask 077
          cd /artifacts/outputs/out
          mkdir private
          echo secret > private/key
          printf '#!/bin/sh\necho ran as $(id -u)\n' > private/run.sh
          chmod 700 private/run.sh
          ls -ln private
        volumeMounts: [{name: out, mountPath: /artifacts/outputs/out}]
      volumes:
      - name: out
        csi: {driver: artifacts.csi.tekton.dev, volumeAttributes: {direction: output, artifact: out}}
  - name: test
    runAfter: [build]
    taskSpec:
      steps:
      - name: read
        image: `+busybox+`
        securityContext: {runAsUser: 2002, runAsGroup: 2002}
        script: |
          set -e
          cat /artifacts/inputs/in/private/key
          /artifacts/inputs/in/private/run.sh
        volumeMounts: [{name: in, mountPath: /artifacts/inputs/in}]
      volumes:
      - name: in
        csi: {driver: artifacts.csi.tekton.dev, readOnly: true, volumeAttributes: {direction: input, artifact: in, from: tasks.build.outputs.out}}
`)
	runs := []*unstructured.Unstructured{
		create(t, ns, pipelineRun("users", ""))[0],
		create(t, ns, pipelineRun("users", `  taskRunTemplate: {podTemplate: {securityContext: {fsGroup: 3000}}}`))[0],
	}
	for _, pr := range runs {
		wantSucceeded(t, pr)
		if log := stepLog(t, taskRun(t, pr, "test"), "read"); log != "secret\nran as 2002\n" {
			t.Errorf("PipelineRun %s: the consumer printed %q", pr.GetName(), log)
		}
	}
}

// TestProviderBackend: a namespace whose backend is the filesystem
// provider (its DaemonSet deployed next to the node plugin) has its
// outputs stored there; the consumer reads them back byte-identical with
// from:, and the TaskRun status carries the provider's reference.
func TestProviderBackend(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	configMap(t, ns, map[string]string{config.KeyBackend: "filesystem"})
	create(t, ns, tasks+"---"+pipeline("provider", "", "    runAfter: [build]"))
	pr := create(t, ns, pipelineRun("provider", ""))[0]
	wantSucceeded(t, pr)
	wantHandover(t, pr)
	rec := records(t, ns, "out", v1alpha1.Output, v1alpha1.Pushed, 1)[0]
	if rec.Spec.Backend != "filesystem" || rec.Spec.Repository != ns || !strings.HasPrefix(rec.Status.Location, "file:///var/lib/artifacts-provider-filesystem/"+ns+"/blobs/sha256/") {
		t.Errorf("record spec %+v, location %q", rec.Spec, rec.Status.Location)
	}
	uri := "pkg:generic/out@" + rec.Status.Digest + "?backend=filesystem&repository=" + ns
	if outs := artifacts(t, taskRun(t, pr, "build"), "outputs", "out"); !strings.Contains(fmt.Sprint(outs), uri) {
		t.Errorf("status.artifacts.outputs = %v, want %s", outs, uri)
	}
}

// configMap creates the namespace level of the configuration and gives
// the node plugin's informer a moment to see it.
func configMap(t *testing.T, ns string, data map[string]string) {
	t.Helper()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: config.ConfigMapName,
			Labels: map[string]string{config.LabelConfigType: config.ConfigTypeArtifactStorage}},
		Data: data,
	}
	if err := c.Create(t.Context(), cm); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
}
