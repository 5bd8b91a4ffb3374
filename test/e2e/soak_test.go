package e2e

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

// stallingRegistry is where the soak's stalled tenant pushes: the dev
// overlay's oci.allowedRepositories lists it beside the dev registry.
const stallingRegistry = "127.0.0.1:5001"

// soakTask reads input "src" (a ref by digest) and writes output "out".
const soakTask = `
apiVersion: tekton.dev/v1
kind: Task
metadata: {name: soak}
spec:
  params:
  - {name: ref, type: string}
  steps:
  - name: copy
    image: ` + busybox + `
    script: |
      set -e
      cp -r /artifacts/inputs/src/. /artifacts/outputs/out/
      echo "$(hostname)" > /artifacts/outputs/out/pod
    volumeMounts:
    - {name: src, mountPath: /artifacts/inputs/src}
    - {name: out, mountPath: /artifacts/outputs/out}
  volumes:
  - name: src
    csi:
      driver: artifacts.csi.tekton.dev
      readOnly: true
      volumeAttributes: {direction: input, artifact: src, ref: $(params.ref)}
  - name: out
    csi:
      driver: artifacts.csi.tekton.dev
      volumeAttributes: {direction: output, artifact: out}
`

// TestSoak runs 54 TaskRuns, each with an input and an output, in four
// namespaces, while a fifth tenant's repository points at a registry that
// accepts connections and never answers. Every other tenant's output is
// pushed within the time it takes without the stall, and the node
// plugin's peak RSS stays under its stated bound.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("a soak")
	}
	lis, err := net.Listen("tcp", stallingRegistry)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	var conns sync.WaitGroup
	defer conns.Wait()
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			conns.Go(func() { io.Copy(io.Discard, conn); conn.Close() }) // reads, never answers
		}
	}()
	defer func() { lis.Close() }()

	ref := soakInput(t)
	stalled := newNamespace(t)
	configMap(t, stalled, map[string]string{"oci.repository": stallingRegistry + "/stalled", "oci.plainHTTP": "true"})
	create(t, stalled, soakTask)
	var healthy []string
	for range 4 {
		ns := newNamespace(t)
		create(t, ns, soakTask)
		healthy = append(healthy, ns)
	}
	run := func(ns string) *unstructured.Unstructured {
		return create(t, ns, fmt.Sprintf(`
apiVersion: tekton.dev/v1
kind: TaskRun
metadata: {generateName: soak-}
spec:
  taskRef: {name: soak}
  params: [{name: ref, value: %q}]
`, ref))[0]
	}

	// The stalled tenant first: its outputs take every worker they may.
	var stalledRuns []*unstructured.Unstructured
	for range 6 {
		stalledRuns = append(stalledRuns, run(stalled))
	}
	for _, tr := range stalledRuns {
		wantSucceeded(t, tr)
	}
	var runs []*unstructured.Unstructured
	for i := range 48 {
		runs = append(runs, run(healthy[i%len(healthy)]))
		if i%12 == 11 {
			time.Sleep(5 * time.Second) // in waves, as pipelines come
		}
	}
	var lags []time.Duration
	for _, tr := range runs {
		wantSucceeded(t, tr)
		done := completion(t, get(t, tr))
		pushed := soakRecord(t, tr)
		lags = append(lags, pushed.Sub(done))
	}
	slices.Sort(lags)
	t.Logf("%d outputs pushed, from the TaskRun's completion: p50 %s, max %s", len(lags), lags[len(lags)/2], lags[len(lags)-1])
	// The idle timeout (60s) would be the wait of an output queued behind
	// the stalled ones; an upload of a small output takes well under it.
	if max := lags[len(lags)-1]; max > 30*time.Second {
		t.Errorf("an output waited %s after its TaskRun completed", max)
	}
	for _, ns := range []string{stalled} {
		if got := recordsIn(t, ns, v1alpha1.Pushed); got != 0 {
			t.Errorf("%d outputs of the stalled tenant pushed to a registry that never answers", got)
		}
	}
	peak := pluginPeakRSS(t)
	t.Logf("peak RSS of the node plugin: %d MiB", peak>>20)
	if peak > 512<<20 {
		t.Errorf("node plugin peak RSS %d MiB, over its stated bound of 512 MiB", peak>>20)
	}
}

// soakInput pushes the soak's input artifact: 50 files, 2 MiB.
func soakInput(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for i := range 50 {
		b := strings.Repeat(fmt.Sprintf("line %d of the soak input\n", i), 1600)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d", i)), []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	repo, err := name.NewRepository(registry+"/soak/input", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	res, err := oci.New(oci.Options{}).Push(t.Context(), oci.PushRequest{Dir: dir, Repository: repo, Tag: "v1",
		Compression: archive.Gzip, Metadata: artifact.Metadata{Name: "src", Namespace: "soak"}})
	if err != nil {
		t.Fatal(err)
	}
	return registry + "/soak/input@" + res.Manifest.Digest.String()
}

func completion(t *testing.T, tr *unstructured.Unstructured) time.Time {
	t.Helper()
	s, _, _ := unstructured.NestedString(tr.Object, "status", "completionTime")
	at, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("TaskRun %s completionTime %q: %v", tr.GetName(), s, err)
	}
	return at
}

// soakRecord waits for the Pushed record of tr's output and returns when
// the node plugin wrote it.
func soakRecord(t *testing.T, tr *unstructured.Unstructured) time.Time {
	t.Helper()
	var at time.Time
	waitFor(t, "the output of "+tr.GetName()+" pushed", 3*time.Minute, func() (bool, error) {
		var list v1alpha1.ArtifactRecordList
		if err := c.List(t.Context(), &list); err != nil {
			return false, err
		}
		for _, r := range list.Items {
			if r.Namespace == tr.GetNamespace() && r.Spec.TaskRun != nil && r.Spec.TaskRun.Name == tr.GetName() && r.Spec.Direction == v1alpha1.Output && r.Status.Phase == v1alpha1.Pushed {
				at = r.Status.LastUpdateTime.Time
				return true, nil
			}
		}
		return false, nil
	})
	return at
}

func recordsIn(t *testing.T, ns string, phase v1alpha1.Phase) int {
	t.Helper()
	var list v1alpha1.ArtifactRecordList
	if err := c.List(t.Context(), &list); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range list.Items {
		if r.Namespace == ns && r.Spec.Direction == v1alpha1.Output && r.Status.Phase == phase {
			n++
		}
	}
	return n
}

// pluginPeakRSS returns the peak resident memory of the node plugin's
// process, which runs in a container on this machine.
func pluginPeakRSS(t *testing.T) int64 {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmd, err := os.ReadFile(p)
		if err != nil || !strings.HasSuffix(strings.SplitN(string(cmd), "\x00", 2)[0], "/artifacts-csi-node") {
			continue
		}
		status, err := os.ReadFile(filepath.Join(filepath.Dir(p), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return kb << 10
			}
		}
	}
	t.Fatal("no artifacts-csi-node process on this machine")
	return 0
}
