// Package artifact defines the OCI representation of a Tekton artifact:
// media types, annotations, the config blob, the manifest, tags and the
// per-PipelineRun grouping subject. It has no I/O; package oci moves what
// it describes.
//
// An artifact is an OCI image-spec v1.1 manifest with artifactType
// [ArtifactType], a small JSON config ([Config]) and exactly one layer: a
// reproducible tar archive of a directory, or a single file as-is.
package artifact

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strconv"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/chunked"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
)

// Media and artifact types.
const (
	ArtifactType          = "application/vnd.tekton.artifact.v1"
	ConfigMediaType       = "application/vnd.tekton.artifact.config.v1+json"
	layerMediaTypePrefix  = "application/vnd.tekton.artifact."
	GroupArtifactType     = "application/vnd.tekton.pipelinerun.v1"
	EmptyMediaType        = "application/vnd.oci.empty.v1+json"
	emptyJSON             = "{}"
	annotationTitle       = "org.opencontainers.image.title"
	annotationPrefix      = "dev.tekton.artifact/"
	AnnotationArchive     = annotationPrefix + "archive"
	AnnotationName        = annotationPrefix + "name"
	AnnotationNamespace   = annotationPrefix + "namespace"
	AnnotationTaskRun     = annotationPrefix + "taskrun"
	AnnotationPipelineRun = annotationPrefix + "pipelinerun"
	AnnotationBuildOutput = annotationPrefix + "build-output"
	// AnnotationPipelineRunUID distinguishes two PipelineRuns that reused a
	// name, so their groups differ.
	AnnotationPipelineRunUID = annotationPrefix + "pipelinerun-uid"
	// AnnotationTitle is the standard OCI title annotation, the file or
	// directory name of a layer.
	AnnotationTitle = annotationTitle
	// MaxManifestBytes bounds the manifests ParseManifest accepts: 4 MiB,
	// as registries bound them.
	MaxManifestBytes = 4 << 20
)

// ErrInvalid: a manifest or a directory is not a readable artifact (an
// index, several layers, an unknown layer type; a single-file output
// holding other than one regular file). Its class is errdefs.ErrInvalid.
var ErrInvalid = errdefs.New("invalid artifact", errdefs.ErrInvalid)

// Metadata says what an artifact is and where it came from. Only Name is
// required.
type Metadata struct {
	Name        string `json:"name"`
	Namespace   string `json:"namespace,omitempty"`
	TaskRun     string `json:"taskrun,omitempty"`
	PipelineRun string `json:"pipelinerun,omitempty"`
	BuildOutput bool   `json:"buildOutput"`
}

// Config is the content of the config blob.
type Config struct {
	Artifact Metadata `json:"artifact"`
}

// LayerMediaType is the media type of a directory layer archived with c.
func LayerMediaType(c archive.Compression) types.MediaType {
	return types.MediaType(layerMediaTypePrefix + c.ArchiveName())
}

// ArchiveLayer returns the descriptor of a directory layer: the archive
// of artifact name, compressed with c, whose blob has digest d and size n.
func ArchiveLayer(name string, c archive.Compression, d v1.Hash, n int64) v1.Descriptor {
	return v1.Descriptor{MediaType: LayerMediaType(c), Digest: d, Size: n, Annotations: map[string]string{
		AnnotationTitle:   name,
		AnnotationArchive: c.ArchiveName(),
	}}
}

// FileLayer returns the descriptor of a single-file layer: file fileName
// as-is, of media type mt, digest d and size n.
func FileLayer(fileName string, mt types.MediaType, d v1.Hash, n int64) v1.Descriptor {
	return v1.Descriptor{MediaType: mt, Digest: d, Size: n, Annotations: map[string]string{AnnotationTitle: fileName}}
}

// ConfigBlob returns the serialized config for m.
func ConfigBlob(m Metadata) []byte {
	b, _ := json.Marshal(Config{Artifact: m}) // cannot fail: plain strings and a bool
	return b
}

// Annotations returns the manifest annotations for m, omitting empty values.
func (m Metadata) Annotations() map[string]string {
	a := map[string]string{
		AnnotationName:        m.Name,
		AnnotationBuildOutput: strconv.FormatBool(m.BuildOutput),
	}
	for k, v := range map[string]string{
		AnnotationNamespace:   m.Namespace,
		AnnotationTaskRun:     m.TaskRun,
		AnnotationPipelineRun: m.PipelineRun,
	} {
		if v != "" {
			a[k] = v
		}
	}
	return a
}

// Descriptor returns the descriptor of blob b with media type mt.
func Descriptor(mt types.MediaType, b []byte) v1.Descriptor {
	h, n, _ := v1.SHA256(bytes.NewReader(b)) // reading memory cannot fail
	return v1.Descriptor{MediaType: mt, Digest: h, Size: n}
}

// Manifest returns the serialized manifest of an artifact with the given
// config and layer, and subject when non-nil. The result is deterministic.
func Manifest(m Metadata, config, layer v1.Descriptor, subject *v1.Descriptor) []byte {
	return manifest(ArtifactType, config, []v1.Descriptor{layer}, m.Annotations(), subject)
}

// ChunkedManifest returns the serialized manifest of an artifact of the
// chunked layout: its index, then its packs. The result is deterministic.
func ChunkedManifest(m Metadata, config, index v1.Descriptor, packs []v1.Descriptor, subject *v1.Descriptor) []byte {
	a := m.Annotations()
	a[chunked.FormatAnnotation] = chunked.FormatChunked
	return manifest(ArtifactType, config, append([]v1.Descriptor{index}, packs...), a, subject)
}

// manifest serializes an OCI image manifest.
func manifest(artifactType string, config v1.Descriptor, layers []v1.Descriptor, annotations map[string]string, subject *v1.Descriptor) []byte {
	b, _ := json.Marshal(v1.Manifest{ // cannot fail: plain strings and numbers
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  artifactType,
		Config:        config,
		Layers:        layers,
		Annotations:   annotations,
		Subject:       subject,
	})
	return b
}

// Group is the per-PipelineRun manifest that every artifact of the run
// names as its subject, so that the OCI referrers API lists the run's
// artifacts. Its content depends only on the run, so every pusher creates
// the same manifest: pushing it is idempotent.
type Group struct {
	Namespace, PipelineRun, UID string
}

// Manifest returns the group's manifest: an OCI artifact with the empty
// config and one empty layer, as the image spec recommends for artifacts
// without content.
func (g Group) Manifest() []byte {
	empty := Descriptor(EmptyMediaType, []byte(emptyJSON))
	return manifest(GroupArtifactType, empty, []v1.Descriptor{empty}, map[string]string{
		AnnotationNamespace:      g.Namespace,
		AnnotationPipelineRun:    g.PipelineRun,
		AnnotationPipelineRunUID: g.UID,
	}, nil)
}

// EmptyBlob is the content of the empty descriptor used by Group manifests.
func EmptyBlob() []byte { return []byte(emptyJSON) }

// Layout is what a consumer needs to know about a manifest's content.
type Layout struct {
	// Layer is the one layer of the archive layout, the file of a
	// single-file artifact, or the index of the chunked layout.
	Layer v1.Descriptor
	// Packs are the chunked layout's pack layers (Chunked), in order.
	Chunked bool
	Packs   []v1.Descriptor
	// FileName is set for a single-file artifact: the name to give the file.
	// Empty for an archive.
	FileName string
	// Metadata from the annotations, when the manifest is ours.
	Metadata *Metadata
}

// ParseManifest checks that raw is a single-layer image manifest (ours, or
// a foreign one with a plain tar, tar+gzip or tar+zstd layer, or a single
// titled file) and says how to unpack it.
func ParseManifest(raw []byte) (*Layout, error) {
	if len(raw) > MaxManifestBytes {
		return nil, fmt.Errorf("manifest is %d bytes, more than the %d allowed", len(raw), MaxManifestBytes)
	}
	var mf v1.Manifest
	if err := json.Unmarshal(raw, &mf); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	switch mf.MediaType {
	case types.OCIManifestSchema1, types.DockerManifestSchema2, "":
	case types.OCIImageIndex, types.DockerManifestList:
		return nil, fmt.Errorf("reference is an image index (%s); name one artifact manifest by digest", mf.MediaType)
	default:
		return nil, fmt.Errorf("unsupported manifest media type %q", mf.MediaType)
	}
	l := &Layout{}
	switch {
	case mf.Annotations[chunked.FormatAnnotation] == chunked.FormatChunked:
		if len(mf.Layers) == 0 || mf.Layers[0].MediaType != chunked.IndexMediaType {
			return nil, fmt.Errorf("a chunked artifact's first layer must be its index (%s)", chunked.IndexMediaType)
		}
		for _, p := range mf.Layers[1:] {
			if p.MediaType != chunked.PackMediaType {
				return nil, fmt.Errorf("a chunked artifact's layer of media type %q is not a pack", p.MediaType)
			}
		}
		l.Layer, l.Chunked, l.Packs = mf.Layers[0], true, mf.Layers[1:]
	case len(mf.Layers) != 1:
		return nil, fmt.Errorf("manifest has %d layers; an artifact has exactly one", len(mf.Layers))
	default:
		l.Layer = mf.Layers[0]
	}
	if name, ok := mf.Annotations[AnnotationName]; ok {
		bo, _ := strconv.ParseBool(mf.Annotations[AnnotationBuildOutput])
		l.Metadata = &Metadata{
			Name:        name,
			Namespace:   mf.Annotations[AnnotationNamespace],
			TaskRun:     mf.Annotations[AnnotationTaskRun],
			PipelineRun: mf.Annotations[AnnotationPipelineRun],
			BuildOutput: bo,
		}
	}
	if !l.Chunked && !IsArchive(l.Layer) {
		l.FileName = l.Layer.Annotations[annotationTitle]
		if l.FileName == "" {
			return nil, fmt.Errorf("layer of media type %q is neither a tar archive nor a titled file", l.Layer.MediaType)
		}
	}
	return l, nil
}

// IsArchive reports whether a layer holds a tar archive (plain or
// compressed): ours, OCI and Docker layer types, or any media type that
// names tar.
func IsArchive(d v1.Descriptor) bool {
	if _, ok := d.Annotations[AnnotationArchive]; ok {
		return true
	}
	return bytes.Contains([]byte(d.MediaType), []byte("tar"))
}

// shortHash returns the first n hex characters of sha256(s).
func shortHash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%x", sum)[:n]
}
