package oci_test

import (
	"errors"
	"testing"

	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
)

// TestDelete deletes a tag, then the manifest, from a real distribution
// registry, and again (not found); with deletion turned off, both are
// refused with ErrDeleteUnsupported and stay.
func TestDelete(t *testing.T) {
	for _, tc := range []struct {
		name     string
		noDelete bool
	}{{"deletion enabled", false}, {"deletion disabled", true}} {
		t.Run(tc.name, func(t *testing.T) {
			host := testregistry.StartDistributionWith(t, testregistry.DistributionOptions{NoDelete: tc.noDelete}).Host
			ctx := t.Context()
			c := oci.New(oci.Options{})
			src := t.TempDir()
			testtree.Write(t, src, 3)
			r := repo(t, host, "team/delete")
			res, err := c.Push(ctx, oci.PushRequest{Dir: src, Repository: r, Tag: "v1", Metadata: artifact.Metadata{Name: "a"}})
			if err != nil {
				t.Fatal(err)
			}
			exists := func(ref string) bool {
				t.Helper()
				parsed, err := oci.ParseReference(ref, oci.PlainHTTP)
				if err != nil {
					t.Fatal(err)
				}
				_, err = c.Inspect(ctx, parsed)
				if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
					t.Fatal(err)
				}
				return err == nil
			}
			tag, manifest := r.Tag("v1"), res.Ref
			// The tag, then the tag again: not found, which says it is done.
			for _, again := range []bool{false, true} {
				err := c.Delete(ctx, tag)
				var want error
				switch {
				case tc.noDelete:
					want = oci.ErrDeleteUnsupported
				case again:
					want = errdefs.ErrNotFound
				}
				if want == nil && err != nil || want != nil && !errors.Is(err, want) {
					t.Fatalf("delete the tag (again: %t): %v, want %v", again, err, want)
				}
				if exists(tag.Name()) != tc.noDelete {
					t.Errorf("after deleting it, the tag exists: %t", !tc.noDelete)
				}
				if !exists(manifest.Name()) {
					t.Error("deleting the tag deleted the manifest")
				}
			}
			err = c.Delete(ctx, manifest)
			if tc.noDelete {
				if !errors.Is(err, oci.ErrDeleteUnsupported) || !errors.Is(err, errdefs.ErrPrecondition) {
					t.Fatalf("delete the manifest: %v, want ErrDeleteUnsupported", err)
				}
				if !exists(manifest.Name()) {
					t.Error("the registry refused, yet the manifest is gone")
				}
				return
			}
			if err != nil {
				t.Fatalf("delete the manifest: %v", err)
			}
			if exists(manifest.Name()) {
				t.Error("the manifest is still there")
			}
			if err := c.Delete(ctx, manifest); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("delete the manifest again: %v, want ErrNotFound", err)
			}
		})
	}
}
