package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tektoncd/artifacts-csi-driver/internal/testenv"
	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testsign"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/digestcache"
	"github.com/tektoncd/artifacts-csi-driver/pkg/mounter"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
	"github.com/tektoncd/artifacts-csi-driver/pkg/signing"
)

// The node plugin benchmarks run against the plugin process over its
// socket, like kubelet. test/bench/node.sh runs them with the ~230 MiB
// tree of test/bench/run.sh in $BENCH_TREE; without it, the large cases
// are skipped. Each reports the median (p50-ms) and p90 (p90-ms) of its
// iterations besides Go's mean.

// benchTrees returns the trees to measure: a small generated one and, when
// $BENCH_TREE is set, the large one.
func benchTrees(b *testing.B) map[string]string {
	small := filepath.Join(b.TempDir(), "small")
	testtree.Write(b, small, 42)
	trees := map[string]string{"small": small}
	if big := os.Getenv("BENCH_TREE"); big != "" {
		trees["large"] = big
	}
	return trees
}

// benchDir is where plugin state and copies go: $BENCH_DIR (on the same
// filesystem as the tree) or a test directory. It is marked `chattr +T`
// where supported, for the reason test/bench/run.sh gives.
func benchDir(b *testing.B) string {
	dir := b.TempDir()
	if base := os.Getenv("BENCH_DIR"); base != "" {
		var err error
		if dir, err = os.MkdirTemp(base, "node-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	exec.Command("chattr", "+T", dir).Run()
	return dir
}

// timings collects per-iteration durations.
type timings []time.Duration

// pct returns the p-th percentile in milliseconds (nearest rank below).
func (ts timings) pct(p float64) float64 {
	s := slices.Clone(ts)
	slices.Sort(s)
	return float64(s[int(p*float64(len(s)-1))].Microseconds()) / 1000
}

func (ts timings) p50() float64 { return ts.pct(0.5) }

// report adds the median and the 90th percentile to the benchmark's line.
func (ts timings) report(b *testing.B) {
	b.ReportMetric(ts.p50(), "p50-ms")
	b.ReportMetric(ts.pct(0.9), "p90-ms")
}

func benchPlugin(b *testing.B, config map[string]string, args ...string) *plugin {
	pl := newPluginIn(b, benchDir(b), config, args...)
	pl.start()
	return pl
}

// BenchmarkPublishCacheHit publishes an input already in the node cache
// into a new pod; the baseline is the read-only bind mount alone, the floor
// of the work.
func BenchmarkPublishCacheHit(b *testing.B) {
	host := testregistry.InMemory(b, true)
	pl := benchPlugin(b, registryConfig(host))
	for name, tree := range benchTrees(b) {
		ref := pushDir(b, host, tree, name, archive.Gzip)
		warm := newPod("warm-" + name)
		mustOK(b, "first publish", pl.publish(b.Context(), warm, "in", input("src", ref)))
		b.Run("tree="+name+"/publish", func(b *testing.B) { benchPublish(b, pl, ref, nil) })
		b.Run("tree="+name+"/baseline=bind-mount", func(b *testing.B) {
			m := mounter.New()
			src := pl.target(warm, "in")
			var ts timings
			for b.Loop() {
				target := b.TempDir()
				start := time.Now()
				if err := m.BindMount(src, target, true); err != nil {
					b.Fatal(err)
				}
				ts = append(ts, time.Since(start))
				b.StopTimer()
				m.Unmount(target)
				b.StartTimer()
			}
			ts.report(b)
		})
	}
}

// benchPublish times the publish of input ref into a new pod, each
// iteration after before (untimed, if any), and unpublishes it untimed.
func benchPublish(b *testing.B, pl *plugin, ref string, before func()) {
	var ts timings
	for b.Loop() {
		b.StopTimer()
		if before != nil {
			before()
		}
		p := newPod("hit")
		b.StartTimer()
		start := time.Now()
		mustOK(b, "publish", pl.publish(b.Context(), p, "in", input("src", ref)))
		ts = append(ts, time.Since(start))
		b.StopTimer()
		mustOK(b, "unpublish", pl.unpublish(b.Context(), p, "in"))
		b.StartTimer()
	}
	ts.report(b)
}

// BenchmarkUnpublishOutput unpublishes an output the pod filled with a
// tree. The registry is unreachable, so background uploads fail fast and
// do not compete for the CPU; what is timed is what kubelet waits for.
func BenchmarkUnpublishOutput(b *testing.B) {
	pl := benchPlugin(b, registryConfig("127.0.0.1:1"))
	for name, tree := range benchTrees(b) {
		b.Run("tree="+name, func(b *testing.B) {
			var ts timings
			for b.Loop() {
				b.StopTimer()
				p := newPod("producer")
				mustOK(b, "publish", pl.publish(b.Context(), p, "out", output("build")))
				copyTree(b, tree, pl.target(p, "out"))
				exec.Command("sync").Run()
				b.StartTimer()
				start := time.Now()
				mustOK(b, "unpublish", pl.unpublish(b.Context(), p, "out"))
				ts = append(ts, time.Since(start))
			}
			ts.report(b)
		})
	}
}

// BenchmarkPublishCold publishes an input the node has never fetched: from
// a registry process on the same filesystem, verified and extracted. Each
// iteration also runs the baseline, `cp -r` of the same tree on the same
// filesystem, alternating which goes first, so that both see the same
// conditions; it reports both medians and their ratio.
func BenchmarkPublishCold(b *testing.B) {
	dist := testregistry.StartDistribution(b)
	pl := benchPlugin(b, registryConfig(dist.Host), "--cache-size=1Ti")
	exec.Command("chattr", "+T", filepath.Join(pl.stateDir, "cache")).Run()
	copies := benchDir(b)
	for name, tree := range benchTrees(b) {
		for _, comp := range []archive.Compression{archive.Gzip, archive.Zstd} {
			b.Run("tree="+name+"/compression="+string(comp), func(b *testing.B) {
				benchCold(b, pl, dist.Host, tree, name, comp, copies)
			})
		}
	}
}

func benchCold(b *testing.B, pl *plugin, host, tree, name string, comp archive.Compression, copies string) {
	var publish, cp timings
	i := 0
	for b.Loop() {
		b.StopTimer()
		// A new manifest over the same layer: a cold cache key.
		ref := pushDir(b, host, tree, fmt.Sprintf("%s-%s-%d", name, comp, i), comp)
		steps := []func(){
			func() {
				p := newPod("cold")
				start := time.Now()
				mustOK(b, "publish", pl.publish(b.Context(), p, "in", input("src", ref)))
				publish = append(publish, time.Since(start))
			},
			func() {
				dest := filepath.Join(copies, fmt.Sprintf("%s-%s-%d", name, comp, i))
				start := time.Now()
				copyTree(b, tree, dest)
				cp = append(cp, time.Since(start))
			},
		}
		if i%2 == 1 {
			steps[0], steps[1] = steps[1], steps[0]
		}
		i++
		b.StartTimer()
		for _, step := range steps {
			exec.Command("sync").Run()
			step()
		}
	}
	publish.report(b)
	b.ReportMetric(cp.p50(), "cp-r-p50-ms")
	b.ReportMetric(publish.p50()/cp.p50(), "ratio")
}

func copyTree(b testing.TB, src, dest string) {
	if out, err := exec.Command("cp", "-r", src, dest).CombinedOutput(); err != nil {
		b.Fatalf("cp -r: %v: %s", err, out)
	}
}

var benchDigests = map[string]*digestcache.Cache{}

// pushDir pushes tree as artifact name (different names give different
// manifests over the same layer) and returns its digest reference. A
// digest cache makes pushing the same tree again cheap.
func pushDir(b testing.TB, host, tree, name string, comp archive.Compression) string {
	dc := benchDigests[host]
	if dc == nil {
		var err error
		if dc, err = digestcache.Open(b.TempDir()); err != nil {
			b.Fatal(err)
		}
		benchDigests[host] = dc
	}
	repo, _, _ := oci.ParseRepositoryTag(host+"/team-a/bench", oci.PlainHTTP)
	res, err := oci.New(oci.Options{DigestCache: dc}).Push(b.Context(), oci.PushRequest{Dir: tree, Repository: repo, Compression: comp, Metadata: artifact.Metadata{Name: name}})
	if err != nil {
		b.Fatal(err)
	}
	return res.Ref.Name()
}

// BenchmarkPublishOutputAPI publishes an output with and without an API
// client, alternating in each iteration: with one, the publish reads the
// pod from the informer cache, its TaskRun and PipelineRun from the API
// server (to confirm what the pod claims) and the namespace's ConfigMap
// from the cache, and writes the Pending record (four API calls);
// without one, it reads the mounted cluster ConfigMap only. It reports
// both medians; the difference is what the records cost a pod's start.
// The client's rate limit is lifted: a loop of back-to-back publishes is
// not what a node sees, and the limiter would be all it measured.
func BenchmarkPublishOutputAPI(b *testing.B) {
	env := testenv.Start(b)
	config := registryConfig("127.0.0.1:1") // uploads fail fast, off the CPU
	api := benchPlugin(b, config, "--kubeconfig="+nodeKubeconfig(b, env), "--kube-api-qps=1000", "--kube-api-burst=1000")
	local := benchPlugin(b, config)
	run := newPipelineRun(b, env, "team-a", "bench", nil)
	var withAPI, without timings
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		_, p := run.task(fmt.Sprintf("t%d", i))
		b.StartTimer()
		order := []*plugin{api, local}
		if i%2 == 1 {
			order = []*plugin{local, api}
		}
		for _, pl := range order {
			start := time.Now()
			mustOK(b, "publish", pl.publish(b.Context(), p, "out", output("build")))
			if pl == api {
				withAPI = append(withAPI, time.Since(start))
			} else {
				without = append(without, time.Since(start))
			}
			b.StopTimer()
			mustOK(b, "unpublish", pl.unpublish(b.Context(), p, "out"))
			b.StartTimer()
		}
	}
	b.ReportMetric(withAPI.p50(), "api-p50-ms")
	b.ReportMetric(without.p50(), "local-p50-ms")
	b.ReportMetric(withAPI.pct(0.9), "api-p90-ms")
}

// BenchmarkOutputFilesystem publishes and unpublishes an output volume
// on two plugins side by side, alternating which goes first: one giving
// each output an ext4 filesystem of its own (bounded while the pod
// writes; the default), one a plain directory (bounded only at push), the
// baseline. The pod's write between the two is not timed. Uploads fail
// fast (no registry), so the freeze and push run off the clock.
func BenchmarkOutputFilesystem(b *testing.B) {
	config := registryConfig("127.0.0.1:1")
	config["maxArtifactBytes"] = "1Gi"
	plugins := map[string]*plugin{
		"ext4":      benchPlugin(b, config, "--output-filesystem=ext4"),
		"directory": benchPlugin(b, config, "--output-filesystem=directory"),
	}
	tree := benchTrees(b)["small"]
	publish, unpublish := map[string]timings{}, map[string]timings{}
	for i := 0; b.Loop(); i++ {
		order := []string{"ext4", "directory"}
		if i%2 == 1 {
			order = []string{"directory", "ext4"}
		}
		for _, kind := range order {
			pl := plugins[kind]
			p := newPod("producer")
			start := time.Now()
			mustOK(b, "publish", pl.publish(b.Context(), p, "out", output("build")))
			publish[kind] = append(publish[kind], time.Since(start))
			b.StopTimer()
			copyTree(b, tree, pl.target(p, "out"))
			b.StartTimer()
			start = time.Now()
			mustOK(b, "unpublish", pl.unpublish(b.Context(), p, "out"))
			unpublish[kind] = append(unpublish[kind], time.Since(start))
		}
	}
	for _, kind := range []string{"ext4", "directory"} {
		b.ReportMetric(publish[kind].p50(), kind+"-publish-p50-ms")
		b.ReportMetric(unpublish[kind].p50(), kind+"-unpublish-p50-ms")
	}
	b.ReportMetric(publish["ext4"].pct(0.9), "ext4-publish-p90-ms")
}

// BenchmarkPublishVerified publishes a cached input into a new pod with
// provenance verification on (provenance.required) and off, side by side:
// on a verification cache hit (the digest verified before with the same
// keys), and on a miss (the trusted keys changed, so the referrers are
// listed, the bundle fetched and its signature checked again).
func BenchmarkPublishVerified(b *testing.B) {
	host := testregistry.InMemory(b, true)
	tree := filepath.Join(b.TempDir(), "small")
	testtree.Write(b, tree, 42)
	ref := pushDir(b, host, tree, "small", archive.Gzip)
	signer, pub, _ := testsign.Key(b)
	attachProvenance(b, host, ref, signer)
	keys := filepath.Join(b.TempDir(), "trusted.pub")
	mustOK(b, "write keys", os.WriteFile(keys, pub, 0o644))
	verified := registryConfig(host)
	verified["provenance.required"] = "true"
	plugins := map[string]*plugin{
		"off": benchPlugin(b, registryConfig(host)),
		"on":  benchPlugin(b, verified, "--trusted-keys="+keys),
	}
	for _, mode := range []string{"off", "on"} {
		mustOK(b, "first publish", plugins[mode].publish(b.Context(), newPod("warm-"+mode), "in", input("src", ref)))
	}
	b.Run("verify=off", func(b *testing.B) { benchPublish(b, plugins["off"], ref, nil) })
	b.Run("verify=on/hit", func(b *testing.B) { benchPublish(b, plugins["on"], ref, nil) })
	b.Run("verify=on/miss", func(b *testing.B) {
		benchPublish(b, plugins["on"], ref, func() {
			// Another key trusted besides: new keys, a new cache key.
			_, other, _ := testsign.Key(b)
			mustOK(b, "write keys", os.WriteFile(keys, append(slices.Clone(pub), other...), 0o644))
		})
	})
}

// attachProvenance attaches to ref (REPOSITORY@DIGEST) a provenance
// signed by s, as the controller does.
func attachProvenance(b testing.TB, host, ref string, s signing.Signer) {
	r, err := oci.ParseReference(ref, oci.PlainHTTP)
	mustOK(b, "parse "+ref, err)
	d, _ := r.Digest()
	bundle := testsign.Bundle(b, s, provenance.Facts{Repository: r.Repository().Name(), Digest: d.String(), Artifact: "small",
		Namespace: "team-a", Pod: provenance.Ref{Name: "producer", UID: "u"}})
	_, err = attest.Push(b.Context(), oci.New(oci.Options{}), r.Repository(), d, bundle, time.Now())
	mustOK(b, "attach", err)
}

// BenchmarkPublishOnProducerNode publishes an input on the node where its
// producer ran, as a consumer scheduled there does: on two plugins sharing
// one registry process, side by side, alternating which goes first. One
// keeps each pushed output as its cache entry (write-through, the
// default); the baseline, with --write-through=false, fetches and
// extracts what the same node pushed seconds before. Each iteration a
// producer pod fills an output on each with the tree (untimed, as are its
// push and adoption), then a consumer publishes it (timed). It reports
// both medians, their ratio, and the bytes the write-through plugin
// pulled over the whole run.
func BenchmarkPublishOnProducerNode(b *testing.B) {
	dist := testregistry.StartDistribution(b)
	config := registryConfig(dist.Host)
	config["maxArtifactBytes"] = "1Gi"
	addr := freeAddr(b)
	metrics := "http://" + addr + "/metrics"
	plugins := map[string]*plugin{
		"write-through": benchPlugin(b, config, "--cache-size=1Ti", "--http-address="+addr),
		"baseline":      benchPlugin(b, config, "--cache-size=1Ti", "--write-through=false"),
	}
	adopted := 0
	for name, tree := range benchTrees(b) {
		b.Run("tree="+name, func(b *testing.B) {
			ts := map[string]timings{}
			pulledBefore := metric(b, metrics, "artifacts_csi_pulled_bytes_total")
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				refs := map[string]string{}
				for kind, pl := range plugins {
					p := newPod(fmt.Sprintf("%s-%s-%d", kind, name, i))
					mustOK(b, "publish output", pl.publish(b.Context(), p, "out", output("build")))
					copyTree(b, tree, filepath.Join(pl.target(p, "out"), "tree"))
					// A new digest each time: nothing is in either cache before.
					mustOK(b, "write", os.WriteFile(filepath.Join(pl.target(p, "out"), "run"), []byte(p.Name), 0o644))
					mustOK(b, "unpublish output", pl.unpublish(b.Context(), p, "out"))
					refs[kind] = waitForTag(b, dist.Host+"/team-a/artifacts:team-a."+p.Name+".build", 5*time.Minute)
				}
				adopted++
				waitFor(b, "the adoption", func() bool {
					return metric(b, metrics, `artifacts_csi_write_through_total{result="adopted"}`) >= float64(adopted)
				})
				order := []string{"write-through", "baseline"}
				if i%2 == 1 {
					order = []string{"baseline", "write-through"}
				}
				consumers := map[string]pod{}
				b.StartTimer()
				for _, kind := range order {
					exec.Command("sync").Run()
					consumers[kind] = newPod(fmt.Sprintf("consumer-%s-%s-%d", kind, name, i))
					start := time.Now()
					mustOK(b, "publish input", plugins[kind].publish(b.Context(), consumers[kind], "in", input("src", refs[kind])))
					ts[kind] = append(ts[kind], time.Since(start))
				}
				b.StopTimer()
				for kind, c := range consumers {
					mustOK(b, "unpublish input", plugins[kind].unpublish(b.Context(), c, "in"))
				}
				b.StartTimer()
			}
			ts["write-through"].report(b)
			b.ReportMetric(ts["baseline"].p50(), "baseline-p50-ms")
			b.ReportMetric(ts["write-through"].p50()/ts["baseline"].p50(), "ratio")
			b.ReportMetric(metric(b, metrics, "artifacts_csi_pulled_bytes_total")-pulledBefore, "pulled-bytes")
		})
	}
}
