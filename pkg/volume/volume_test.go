package volume_test

import (
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// kubelet returns a volume context as kubelet sends it for an ephemeral
// volume with podInfoOnMount, plus attrs.
func kubelet(attrs map[string]string) map[string]string {
	ctx := map[string]string{
		"csi.storage.k8s.io/pod.name":            "build-pod",
		"csi.storage.k8s.io/pod.namespace":       "team-a",
		"csi.storage.k8s.io/pod.uid":             "0d4b7c9e-1111-2222-3333-444455556666",
		"csi.storage.k8s.io/serviceAccount.name": "default",
		"csi.storage.k8s.io/ephemeral":           "true",
	}
	maps.Copy(ctx, attrs)
	return ctx
}

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		ctx   map[string]string
		want  func(*testing.T, *volume.Spec)
		error string // substring of the error; "" means success
	}{
		{name: "input by digest", ctx: kubelet(map[string]string{"direction": "input", "artifact": "source", "ref": "reg.io/team/src@" + digest}),
			want: func(t *testing.T, s *volume.Spec) {
				if s.Direction != volume.Input || s.Ref != "reg.io/team/src@"+digest || s.From != nil {
					t.Errorf("spec = %+v", s)
				}
				if s.Pod != (volume.Pod{Name: "build-pod", Namespace: "team-a", UID: "0d4b7c9e-1111-2222-3333-444455556666", ServiceAccount: "default"}) {
					t.Errorf("pod = %+v", s.Pod)
				}
			}},
		{name: "input from a Konflux blob", ctx: kubelet(map[string]string{"direction": "input", "artifact": "source", "ref": "oci:reg.io/team/ta@" + digest}),
			want: func(t *testing.T, s *volume.Spec) {
				if s.Ref != "oci:reg.io/team/ta@"+digest {
					t.Errorf("ref = %q", s.Ref)
				}
			}},
		{name: "input from a producer", ctx: kubelet(map[string]string{"direction": "input", "artifact": "source", "from": "tasks.clone.outputs.source"}),
			want: func(t *testing.T, s *volume.Spec) {
				if s.From == nil || *s.From != (volume.From{PipelineTask: "clone", Artifact: "source"}) || s.From.String() != "tasks.clone.outputs.source" {
					t.Errorf("from = %+v", s.From)
				}
			}},
		{name: "input from a named Task", ctx: kubelet(map[string]string{"direction": "input", "artifact": "source", "ref": "reg.io/team/src@" + digest, "producerTask": "git-clone.v2"}),
			want: func(t *testing.T, s *volume.Spec) {
				if s.ProducerTask != "git-clone.v2" {
					t.Errorf("producerTask = %q", s.ProducerTask)
				}
			}},
		{name: "output", ctx: kubelet(map[string]string{"direction": "output", "artifact": "sbom", "buildOutput": "true", "mediaType": "application/spdx+json"}),
			want: func(t *testing.T, s *volume.Spec) {
				if s.Direction != volume.Output || !s.BuildOutput || s.MediaType != "application/spdx+json" {
					t.Errorf("spec = %+v", s)
				}
			}},
		{name: "newer kubelet keys are ignored", ctx: kubelet(map[string]string{"direction": "output", "artifact": "x", "csi.storage.k8s.io/something.new": "1"})},
		{name: "unknown attribute", ctx: kubelet(map[string]string{"direction": "output", "artifact": "x", "compression": "zstd"}), error: `unknown volume attribute(s) ["compression"]`},
		{name: "persistent volume", ctx: func() map[string]string {
			c := kubelet(map[string]string{"direction": "output", "artifact": "x"})
			delete(c, "csi.storage.k8s.io/ephemeral")
			return c
		}(), error: "only CSI ephemeral inline volumes"},
		{name: "no pod info", ctx: map[string]string{"csi.storage.k8s.io/ephemeral": "true", "direction": "output", "artifact": "x"}, error: "podInfoOnMount"},
		{name: "bad direction", ctx: kubelet(map[string]string{"direction": "both", "artifact": "x"}), error: `direction must be "input" or "output"`},
		{name: "missing artifact", ctx: kubelet(map[string]string{"direction": "output"}), error: "artifact must be a DNS-1123 label"},
		{name: "artifact not a label", ctx: kubelet(map[string]string{"direction": "output", "artifact": "My_Report"}), error: "DNS-1123"},
		{name: "input without source", ctx: kubelet(map[string]string{"direction": "input", "artifact": "x"}), error: "exactly one of ref and from"},
		{name: "input with both", ctx: kubelet(map[string]string{"direction": "input", "artifact": "x", "ref": "reg.io/a@" + digest, "from": "tasks.a.outputs.b"}), error: "exactly one of ref and from"},
		{name: "input by tag", ctx: kubelet(map[string]string{"direction": "input", "artifact": "x", "ref": "reg.io/a:latest"}), error: "pinned by digest"},
		{name: "input with bad ref", ctx: kubelet(map[string]string{"direction": "input", "artifact": "x", "ref": "reg.io/a@md5:abc"}), error: "ref:"},
		{name: "bad from", ctx: kubelet(map[string]string{"direction": "input", "artifact": "x", "from": "tasks.a.results.b"}), error: "tasks.<pipelineTask>.outputs.<artifact>"},
		{name: "input with buildOutput", ctx: kubelet(map[string]string{"direction": "input", "artifact": "x", "from": "tasks.a.outputs.b", "buildOutput": "true"}), error: "buildOutput applies to outputs only"},
		{name: "producerTask on an output", ctx: kubelet(map[string]string{"direction": "output", "artifact": "x", "producerTask": "build"}), error: "inputs only"},
		{name: "bad producerTask", ctx: kubelet(map[string]string{"direction": "input", "artifact": "x", "from": "tasks.a.outputs.b", "producerTask": "Build Task"}), error: "producerTask must be the name of a Task"},
		{name: "output with ref", ctx: kubelet(map[string]string{"direction": "output", "artifact": "x", "ref": "reg.io/a@" + digest}), error: "inputs only"},
		{name: "bad buildOutput", ctx: kubelet(map[string]string{"direction": "output", "artifact": "x", "buildOutput": "yes please"}), error: "buildOutput must be"},
		{name: "bad mediaType", ctx: kubelet(map[string]string{"direction": "output", "artifact": "x", "mediaType": "json"}), error: "mediaType must be a media type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := volume.Parse(tc.ctx)
			if tc.error != "" {
				if !errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), tc.error) {
					t.Fatalf("err = %v, want ErrInvalid containing %q", err, tc.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != nil {
				tc.want(t, s)
			}
		})
	}
}

func TestCheckTargetPath(t *testing.T) {
	const uid = "0d4b7c9e-1111-2222-3333-444455556666"
	good := "/var/lib/kubelet/pods/" + uid + "/volumes/kubernetes.io~csi/report/mount"
	tests := []struct {
		name, kubeletDir, target, error string
	}{
		{"kubelet layout", "/var/lib/kubelet", good, ""},
		{"custom kubelet dir", "/data/kubelet/", "/data/kubelet/pods/" + uid + "/volumes/kubernetes.io~csi/report/mount", ""},
		{"other pod", "/var/lib/kubelet", strings.Replace(good, uid, "someone-else", 1), "belongs to pod"},
		{"outside kubelet dir", "/var/lib/kubelet", "/tmp/x/mount", "layout"},
		{"climbing", "/var/lib/kubelet", "/var/lib/kubelet/pods/" + uid + "/volumes/kubernetes.io~csi/report/../../../../x/mount", "not under"},
		{"not a csi volume", "/var/lib/kubelet", "/var/lib/kubelet/pods/" + uid + "/volumes/kubernetes.io~empty-dir/report/mount", "layout"},
		{"no mount suffix", "/var/lib/kubelet", "/var/lib/kubelet/pods/" + uid + "/volumes/kubernetes.io~csi/report", "layout"},
		{"bad volume name", "/var/lib/kubelet", "/var/lib/kubelet/pods/" + uid + "/volumes/kubernetes.io~csi/Bad_Name/mount", "not a volume name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name, err := volume.CheckTargetPath(tc.kubeletDir, tc.target, uid)
			if tc.error != "" {
				if !errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), tc.error) {
					t.Fatalf("err = %v, want ErrInvalid containing %q", err, tc.error)
				}
				return
			}
			if err != nil || name != "report" {
				t.Fatalf("name = %q, err = %v", name, err)
			}
		})
	}
}
