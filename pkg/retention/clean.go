package retention

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/pkg/apis/artifacts/v1alpha1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/metrics"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/tekton"
)

// Fields the reconciler indexes records by, in the manager's cache.
const (
	// refField: "<repository>@<digest>" of every record with a digest,
	// input or output.
	refField = "retention.ref"
	// tagField: "<repository>:<tag>" of every output with a tag.
	tagField = "retention.tag"
	// groupField: the PipelineRun UID of every output of a PipelineRun.
	groupField = "retention.pipelineRunUID"
)

// repoKey is the canonical name of repository, as indexed.
func repoKey(repository string) string {
	if r, err := name.NewRepository(repository); err == nil {
		return r.Name()
	}
	return repository
}

// indexes are the extractors of refField, tagField and groupField.
var indexes = map[string]func(client.Object) []string{
	refField: func(o client.Object) []string {
		if rec := o.(*v1alpha1.ArtifactRecord); rec.Status.Digest != "" {
			return []string{repoKey(rec.Spec.Repository) + "@" + rec.Status.Digest}
		}
		return nil
	},
	tagField: func(o client.Object) []string {
		if rec := o.(*v1alpha1.ArtifactRecord); rec.Spec.Direction == v1alpha1.Output && rec.Spec.Tag != "" {
			return []string{repoKey(rec.Spec.Repository) + ":" + rec.Spec.Tag}
		}
		return nil
	},
	groupField: func(o client.Object) []string {
		if rec := o.(*v1alpha1.ArtifactRecord); rec.Spec.Direction == v1alpha1.Output && rec.Spec.PipelineRunUID != "" {
			return []string{rec.Spec.PipelineRunUID}
		}
		return nil
	},
}

// outcome is what happened to one object of an output.
type outcome struct {
	object, result, ref, why string
}

// cleanup removes rec's output from the registry: its tag, when it still
// names the record's manifest and no live output has it; its manifest,
// when no live record (input or output, any namespace) references it; and
// its PipelineRun's group manifest (with its referrers tag), when no live
// output of that PipelineRun is left. Each step is idempotent: what is
// gone already counts as absent, so a retry after an error starts over
// safely. Once the registry refuses a deletion (405 UNSUPPORTED), the
// remaining steps are not tried: it would refuse them too.
func (r *Reconciler) cleanup(ctx context.Context, rec *v1alpha1.ArtifactRecord, c config.Config, live *liveness) ([]outcome, error) {
	repo, tag, err := oci.ParseRepositoryTag(rec.Spec.Repository, oci.SchemeOf(c.PlainHTTP))
	if err != nil || tag != "" {
		return nil, errdefs.Classify(fmt.Errorf("record %s/%s: repository %q: %w", rec.Namespace, rec.Name, rec.Spec.Repository, err), errdefs.ErrInvalid)
	}
	digest := rec.Status.Digest
	if h, err := v1.NewHash(digest); err != nil || h.Algorithm != "sha256" {
		return nil, errdefs.Classify(fmt.Errorf("record %s/%s: %q is not a sha256 digest", rec.Namespace, rec.Name, digest), errdefs.ErrInvalid)
	}
	reg, err := r.Registries.Open(ctx, rec.Namespace, c)
	if err != nil {
		return nil, err
	}
	var (
		outs        []outcome
		unsupported bool
	)
	// del deletes ref, counting what happened as object.
	del := func(object string, ref name.Reference) error {
		if unsupported {
			outs = append(outs, outcome{object: object, result: metrics.RetentionUnsupported, ref: ref.String()})
			return nil
		}
		err := reg.Delete(ctx, ref)
		switch {
		case err == nil:
			outs = append(outs, outcome{object: object, result: metrics.RetentionDeleted, ref: ref.String()})
		case errors.Is(err, errdefs.ErrNotFound):
			outs = append(outs, outcome{object: object, result: metrics.RetentionAbsent, ref: ref.String()})
		case errors.Is(err, oci.ErrDeleteUnsupported):
			unsupported = true
			outs = append(outs, outcome{object: object, result: metrics.RetentionUnsupported, ref: ref.String(), why: "the registry does not allow deletion"})
		default:
			r.Metrics.Deletion(object, metrics.RetentionError)
			return err
		}
		return nil
	}

	if rec.Spec.Tag != "" {
		ref := repo.Tag(rec.Spec.Tag)
		holder, err := live.first(ctx, rec, tagField, repoKey(rec.Spec.Repository)+":"+rec.Spec.Tag)
		if err != nil {
			return nil, err
		}
		switch d, err := reg.Resolve(ctx, oci.Reference{Kind: oci.KindTag, Ref: ref}); {
		case holder != "":
			outs = append(outs, outcome{object: metrics.ObjectTag, result: metrics.RetentionReferenced, ref: ref.String(), why: "output of a live run: " + holder})
		case errors.Is(err, errdefs.ErrNotFound):
			outs = append(outs, outcome{object: metrics.ObjectTag, result: metrics.RetentionAbsent, ref: ref.String()})
		case err != nil:
			r.Metrics.Deletion(metrics.ObjectTag, metrics.RetentionError)
			return nil, err
		case d.DigestStr() != digest:
			outs = append(outs, outcome{object: metrics.ObjectTag, result: metrics.RetentionAbsent, ref: ref.String(), why: "it names " + d.DigestStr() + " now"})
		default:
			if err := del(metrics.ObjectTag, ref); err != nil {
				return nil, err
			}
		}
	}

	holder, err := live.first(ctx, rec, refField, repoKey(rec.Spec.Repository)+"@"+digest)
	if err != nil {
		return nil, err
	}
	manifest := repo.Digest(digest)
	if holder != "" {
		outs = append(outs, outcome{object: metrics.ObjectManifest, result: metrics.RetentionReferenced, ref: manifest.String(), why: "referenced by a live run: " + holder})
	} else if err := del(metrics.ObjectManifest, manifest); err != nil {
		return nil, err
	}

	if rec.Spec.PipelineRunUID != "" && rec.Spec.PipelineRun != "" {
		holder, err := live.first(ctx, rec, groupField, rec.Spec.PipelineRunUID)
		if err != nil {
			return nil, err
		}
		if holder == "" {
			raw := artifact.Group{Namespace: rec.Namespace, PipelineRun: rec.Spec.PipelineRun, UID: rec.Spec.PipelineRunUID}.Manifest()
			sum := sha256.Sum256(raw)
			hexSum := hex.EncodeToString(sum[:])
			// The referrers tag schema's index, where the registry has no
			// referrers API, then the group manifest itself.
			if err := del(metrics.ObjectGroup, repo.Tag("sha256-"+hexSum)); err != nil {
				return nil, err
			}
			if err := del(metrics.ObjectGroup, repo.Digest("sha256:"+hexSum)); err != nil {
				return nil, err
			}
		}
	}
	return outs, nil
}

// liveness answers, within one reconcile, whether other records are
// live: not being deleted, not older than their namespace's maxAge, and
// of a run that exists. Only those protect what they reference.
type liveness struct {
	r    *Reconciler
	runs map[types.UID]bool // record UID → its run is gone
}

// first returns "namespace/name" of a live record other than rec whose
// index field has value, or "" when there is none.
func (l *liveness) first(ctx context.Context, rec *v1alpha1.ArtifactRecord, field, value string) (string, error) {
	var list v1alpha1.ArtifactRecordList
	if err := l.r.Client.List(ctx, &list, client.MatchingFields{field: value}); err != nil {
		return "", fmt.Errorf("list ArtifactRecords by %s: %w", field, err)
	}
	for i := range list.Items {
		o := &list.Items[i]
		if o.UID == rec.UID || o.DeletionTimestamp != nil {
			continue
		}
		c, err := l.r.Config.Config(ctx, o.Namespace)
		if err != nil {
			return "", err
		}
		if c.Retention.Expired(o.CreationTimestamp.Time, l.r.now()) {
			continue
		}
		gone, err := l.runGone(ctx, o)
		if err != nil {
			return "", err
		}
		if !gone {
			return o.Namespace + "/" + o.Name, nil
		}
	}
	return "", nil
}

func (l *liveness) runGone(ctx context.Context, rec *v1alpha1.ArtifactRecord) (bool, error) {
	if gone, ok := l.runs[rec.UID]; ok {
		return gone, nil
	}
	gone, err := l.r.runGone(ctx, rec)
	if err == nil {
		l.runs[rec.UID] = gone
	}
	return gone, err
}

var podGVK = schema.GroupVersionKind{Version: "v1", Kind: "Pod"}

// runGone reports whether the run rec was written for is deleted or being
// deleted: its TaskRun (by UID), or for a plain pod the pod. The TaskRun
// is looked up in the manager's cache first; what the cache does not
// show as there is confirmed with the API server, since the answer
// deletes things.
func (r *Reconciler) runGone(ctx context.Context, rec *v1alpha1.ArtifactRecord) (bool, error) {
	gvk, ref := podGVK, rec.Spec.Pod
	if rec.Spec.TaskRun != nil {
		gvk, ref = tekton.TaskRunGVK, *rec.Spec.TaskRun
	}
	key := client.ObjectKey{Namespace: rec.Namespace, Name: ref.Name}
	there := func(m *metav1.PartialObjectMetadata, err error) (bool, error) {
		switch {
		case apierrors.IsNotFound(err):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("get %s %s: %w", gvk.Kind, key, err)
		}
		return string(m.UID) == ref.UID && m.DeletionTimestamp == nil, nil
	}
	get := func(c client.Reader) (bool, error) {
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(gvk)
		return there(m, c.Get(ctx, key, m))
	}
	if gvk == tekton.TaskRunGVK {
		if ok, err := get(r.Client); err == nil && ok {
			return false, nil
		}
	}
	ok, err := get(r.Reader)
	return !ok, err
}

// describe lists outcomes for an Event: "tag reg/repo:t, manifest
// reg/repo@sha256:… (why)".
func describe(outs []outcome) string {
	parts := make([]string, 0, len(outs))
	for _, o := range outs {
		s := o.object + " " + o.ref
		if o.why != "" {
			s += " (" + o.why + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}
