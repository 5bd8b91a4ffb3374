package attest_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
	"github.com/tektoncd/artifacts-csi-driver/pkg/signing"
)

// BenchmarkAttest measures what the controller adds per pushed output,
// its registry and signing work (the API reads aside): build and sign the
// statement, look for a provenance signed before, and attach the new
// one; side by side with the push of a small artifact (4 files) to the
// same in-memory registry, with and without the referrers API.
func BenchmarkAttest(b *testing.B) {
	for _, referrers := range []bool{true, false} {
		host := testregistry.InMemory(b, referrers)
		c := oci.New(oci.Options{})
		r, _ := name.NewRepository(host+"/team/a", name.Insecure)
		src := b.TempDir()
		for i := range 4 {
			if err := os.WriteFile(filepath.Join(src, fmt.Sprint("f", i)), []byte(strings.Repeat("x", 1024*(i+1))), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		s, keys := key(b)
		suffix := map[bool]string{true: "/referrers=api", false: "/referrers=tag"}[referrers]
		b.Run("sign+attach"+suffix, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				res, err := c.Push(b.Context(), oci.PushRequest{Dir: src, Repository: r, Metadata: artifact.Metadata{Name: "a", Namespace: "ns", TaskRun: b.Name() + time.Now().String()}})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				st, err := provenance.Statement(provenance.Facts{Repository: r.String(), Digest: res.Manifest.Digest.String(), Artifact: "a",
					Namespace: "ns", Pod: provenance.Ref{Name: "p", UID: "u"}, TaskRun: &provenance.Ref{Name: "tr", UID: "tr-uid"}})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := attest.Verify(b.Context(), c, r, res.Manifest.Digest, keys); err == nil {
					b.Fatal("signed before")
				}
				bundle, err := signing.Sign(st, s)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := attest.Push(b.Context(), c, r, res.Manifest.Digest, bundle, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("baseline=push"+suffix, func(b *testing.B) {
			for b.Loop() {
				if _, err := c.Push(b.Context(), oci.PushRequest{Dir: src, Repository: r, Metadata: artifact.Metadata{Name: "a", Namespace: "ns", TaskRun: time.Now().String()}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
