package oci_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

// TestAttach attaches a document to an artifact as a referrer, on
// registries with and without the referrers API, lists it and reads it
// back verified.
func TestAttach(t *testing.T) {
	const bundleType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	for _, reg := range registries {
		t.Run(reg.name, func(t *testing.T) {
			host := reg.start(t)
			ctx := context.Background()
			c := oci.New(oci.Options{})
			src := t.TempDir()
			testtree.Write(t, src, 1)
			r := repo(t, host, "team/attach")
			res, err := c.Push(ctx, oci.PushRequest{Dir: src, Repository: r, Metadata: artifact.Metadata{Name: "build", Namespace: "ns"}})
			if err != nil {
				t.Fatal(err)
			}
			a := oci.Attachment{ArtifactType: bundleType, MediaType: bundleType, Content: []byte(`{"mediaType":"` + bundleType + `"}`),
				Annotations: map[string]string{"dev.sigstore.bundle.predicateType": "https://slsa.dev/provenance/v1"}}
			first, err := c.Attach(ctx, r, res.Manifest.Digest, a)
			if err != nil {
				t.Fatal(err)
			}
			if again, err := c.Attach(ctx, r, res.Manifest.Digest, a); err != nil || again.Digest != first.Digest {
				t.Fatalf("a second Attach: %v, %v; want the same manifest", again.Digest, err)
			}
			other := a
			other.ArtifactType = "application/vnd.example.other"
			if _, err := c.Attach(ctx, r, res.Manifest.Digest, other); err != nil {
				t.Fatal(err)
			}
			list, err := c.Attached(ctx, r, res.Manifest.Digest, bundleType)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 1 || list[0].Digest != first.Digest {
				t.Fatalf("Attached = %v, want only %s", list, first.Digest)
			}
			got, err := c.Attachment(ctx, r, list[0].Digest, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if string(got.Content) != string(a.Content) || got.ArtifactType != bundleType || got.Annotations["dev.sigstore.bundle.predicateType"] == "" {
				t.Errorf("Attachment = %+v", got)
			}
			if _, err := c.Attachment(ctx, r, list[0].Digest, 4); !errors.Is(err, errdefs.ErrTooLarge) {
				t.Errorf("Attachment over its bound: %v, want too large", err)
			}
		})
	}
}
