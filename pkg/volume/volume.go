// Package volume parses and validates what kubelet passes for an ephemeral
// inline volume of this driver: the volume attributes a Task author wrote,
// the pod information kubelet adds with podInfoOnMount, and the target path.
// It has no I/O. It also holds the sentinels of volume-level outcomes,
// each of an errdefs class the CSI node service maps to a gRPC code.
package volume

import (
	"fmt"
	"mime"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

// Volume-level errors.
var (
	// ErrInvalid marks a volume request that can never succeed as given
	// [errdefs.ErrInvalid].
	ErrInvalid = errdefs.New("invalid volume", errdefs.ErrInvalid)
	// ErrConflict: the volume is published already with other arguments
	// [errdefs.ErrConflict].
	ErrConflict = errdefs.New("volume already published with different arguments", errdefs.ErrConflict)
	// ErrSealed: the output volume was unpublished already and waits for
	// upload [errdefs.ErrPrecondition].
	ErrSealed = errdefs.New("volume already unpublished", errdefs.ErrPrecondition)
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidID reports whether id can name a volume's state: at most 128
// letters, digits, '.', '_' or '-', starting with a letter or digit.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// Direction says whether a volume consumes or produces an artifact.
type Direction string

// Directions.
const (
	Input  Direction = "input"
	Output Direction = "output"
)

// Volume attribute keys a Task author sets.
const (
	AttrDirection   = "direction"
	AttrArtifact    = "artifact"
	AttrRef         = "ref"
	AttrFrom        = "from"
	AttrBuildOutput = "buildOutput"
	AttrMediaType   = "mediaType"
	// AttrProducerTask (inputs) names the Task (taskRef.name) whose run
	// must have produced the input, as its signed provenance states: the
	// input is then verified whatever the configuration says.
	AttrProducerTask = "producerTask"
)

// Keys kubelet adds to the volume context (podInfoOnMount, ephemeral).
const (
	kubeletPrefix        = "csi.storage.k8s.io/"
	KeyPodName           = kubeletPrefix + "pod.name"
	KeyPodNamespace      = kubeletPrefix + "pod.namespace"
	KeyPodUID            = kubeletPrefix + "pod.uid"
	KeyServiceAccount    = kubeletPrefix + "serviceAccount.name"
	KeyEphemeral         = kubeletPrefix + "ephemeral"
	KeyServiceAccountTok = kubeletPrefix + "serviceAccount.tokens"
)

var userKeys = []string{AttrDirection, AttrArtifact, AttrRef, AttrFrom, AttrBuildOutput, AttrMediaType, AttrProducerTask}

// Pod identifies the pod a volume is for.
type Pod struct {
	Name, Namespace, UID, ServiceAccount string
}

// From names another task's output in the same PipelineRun:
// tasks.<PipelineTask>.outputs.<Artifact>.
type From struct {
	PipelineTask, Artifact string
}

func (f From) String() string { return "tasks." + f.PipelineTask + ".outputs." + f.Artifact }

// Spec is a validated volume request.
type Spec struct {
	Direction Direction
	Artifact  string
	// Ref is set for an input named by digest (or a Konflux blob
	// reference), as the Task author wrote it: the store of the volume's
	// backend parses it.
	Ref string
	// From is set for an input resolved from a producer's record.
	From *From
	// ProducerTask, for an input, is the Task its provenance must name.
	ProducerTask string
	// BuildOutput and MediaType apply to outputs.
	BuildOutput bool
	MediaType   string
	Pod         Pod
}

var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	fromPattern      = regexp.MustCompile(`^tasks\.([^.]+)\.outputs\.([^.]+)$`)
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Parse validates a NodePublishVolume volume context. Every problem is
// reported with the key it concerns; unknown attributes are rejected, while
// unknown keys under kubelet's csi.storage.k8s.io/ prefix are ignored so that
// a newer kubelet does not break the driver.
func Parse(ctx map[string]string) (*Spec, error) {
	var unknown []string
	for k := range ctx {
		if !slices.Contains(userKeys, k) && !strings.HasPrefix(k, kubeletPrefix) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return nil, invalid("unknown volume attribute(s) %q; known: %s", unknown, strings.Join(userKeys, ", "))
	}
	if ctx[KeyEphemeral] != "true" {
		return nil, invalid("only CSI ephemeral inline volumes are supported (%s=%q): use a csi: volume in the pod spec, not a PersistentVolume", KeyEphemeral, ctx[KeyEphemeral])
	}
	s := &Spec{Pod: Pod{
		Name:           ctx[KeyPodName],
		Namespace:      ctx[KeyPodNamespace],
		UID:            ctx[KeyPodUID],
		ServiceAccount: ctx[KeyServiceAccount],
	}}
	for k, v := range map[string]string{KeyPodName: s.Pod.Name, KeyPodNamespace: s.Pod.Namespace, KeyPodUID: s.Pod.UID} {
		if v == "" {
			return nil, invalid("%s is missing: the CSIDriver object must set podInfoOnMount: true", k)
		}
	}

	s.Direction = Direction(ctx[AttrDirection])
	if s.Direction != Input && s.Direction != Output {
		return nil, invalid("%s must be %q or %q, got %q", AttrDirection, Input, Output, ctx[AttrDirection])
	}
	s.Artifact = ctx[AttrArtifact]
	if len(s.Artifact) > 63 || !dns1123Label.MatchString(s.Artifact) {
		return nil, invalid("%s must be a DNS-1123 label (lower-case letters, digits and '-', at most 63), got %q", AttrArtifact, s.Artifact)
	}

	ref, hasRef := ctx[AttrRef]
	from, hasFrom := ctx[AttrFrom]
	switch s.Direction {
	case Input:
		for _, k := range []string{AttrBuildOutput, AttrMediaType} {
			if _, ok := ctx[k]; ok {
				return nil, invalid("%s applies to outputs only", k)
			}
		}
		if hasRef == hasFrom {
			return nil, invalid("an input needs exactly one of %s and %s", AttrRef, AttrFrom)
		}
		if hasRef {
			r, err := oci.ParseReference(ref, oci.HTTPS)
			if err != nil {
				return nil, invalid("%s: %v", AttrRef, err)
			}
			if r.Kind == oci.KindTag {
				return nil, invalid("%s %q must be pinned by digest (REPO@sha256:<digest>): a tag can change under a running pipeline", AttrRef, ref)
			}
			s.Ref = ref
		} else {
			m := fromPattern.FindStringSubmatch(from)
			if m == nil || !dns1123Label.MatchString(m[1]) || !dns1123Label.MatchString(m[2]) {
				return nil, invalid("%s must be tasks.<pipelineTask>.outputs.<artifact>, got %q", AttrFrom, from)
			}
			s.From = &From{PipelineTask: m[1], Artifact: m[2]}
		}
		if v, ok := ctx[AttrProducerTask]; ok {
			if len(v) > 253 || !dns1123Subdomain.MatchString(v) {
				return nil, invalid("%s must be the name of a Task (a DNS-1123 subdomain), got %q", AttrProducerTask, v)
			}
			s.ProducerTask = v
		}
	case Output:
		if _, ok := ctx[AttrProducerTask]; ok || hasRef || hasFrom {
			return nil, invalid("%s, %s and %s apply to inputs only", AttrRef, AttrFrom, AttrProducerTask)
		}
		if v, ok := ctx[AttrBuildOutput]; ok {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, invalid("%s must be \"true\" or \"false\", got %q", AttrBuildOutput, v)
			}
			s.BuildOutput = b
		}
		if v, ok := ctx[AttrMediaType]; ok {
			mt, params, err := mime.ParseMediaType(v)
			if err != nil || len(params) > 0 || !strings.Contains(mt, "/") {
				return nil, invalid("%s must be a media type such as application/spdx+json, got %q", AttrMediaType, v)
			}
			s.MediaType = v
		}
	}
	return s, nil
}

// CheckTargetPath checks that target is kubelet's mount point for an
// ephemeral volume of the pod: <kubeletDir>/pods/<pod uid>/volumes/
// kubernetes.io~csi/<volume name>/mount. It returns the volume name.
func CheckTargetPath(kubeletDir, target, podUID string) (string, error) {
	rel, err := filepath.Rel(filepath.Clean(kubeletDir), target)
	if err != nil || filepath.Clean(target) != target {
		return "", invalid("target path %q is not under the kubelet directory %q", target, kubeletDir)
	}
	parts := strings.Split(rel, string(filepath.Separator))
	if len(parts) != 6 || parts[0] != "pods" || parts[2] != "volumes" || parts[3] != "kubernetes.io~csi" || parts[5] != "mount" {
		return "", invalid("target path %q does not have kubelet's layout %s/pods/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount", target, kubeletDir)
	}
	if parts[1] != podUID {
		return "", invalid("target path %q belongs to pod %q, not to pod %q of the volume context", target, parts[1], podUID)
	}
	if len(parts[4]) > 63 || !dns1123Label.MatchString(parts[4]) {
		return "", invalid("target path %q: %q is not a volume name", target, parts[4])
	}
	return parts[4], nil
}
