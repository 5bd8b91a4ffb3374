package attest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testsign"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
	"github.com/tektoncd/artifacts-csi-driver/pkg/signing"
)

func key(t testing.TB) (*signing.ECDSA, signing.Keys) {
	s, _, keys := testsign.Key(t)
	return s, keys
}

// TestPushVerify: a provenance attached by Push verifies with the key
// that signed it, for that artifact only; another key's, or none, does
// not.
func TestPushVerify(t *testing.T) {
	for _, referrers := range []bool{true, false} {
		host := testregistry.InMemory(t, referrers)
		ctx := context.Background()
		c := oci.New(oci.Options{})
		r, _ := name.NewRepository(host+"/team/a", name.Insecure)
		push := func(seed uint64) *oci.PushResult {
			src := t.TempDir()
			testtree.Write(t, src, seed)
			res, err := c.Push(ctx, oci.PushRequest{Dir: src, Repository: r, Metadata: artifact.Metadata{Name: "build", Namespace: "ns"}})
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		signed, unsigned := push(1), push(2)
		s, keys := key(t)
		other, otherKeys := key(t)
		st, err := provenance.Statement(provenance.Facts{Repository: r.String(), Digest: signed.Manifest.Digest.String(),
			Artifact: "build", Namespace: "ns", Pod: provenance.Ref{Name: "p", UID: "u"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, signer := range []signing.Signer{s, other} {
			b, err := signing.Sign(st, signer)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := attest.Push(ctx, c, r, signed.Manifest.Digest, b, time.Unix(0, 0)); err != nil {
				t.Fatal(err)
			}
		}
		v, err := attest.Verify(ctx, c, r, signed.Manifest.Digest, keys)
		if err != nil {
			t.Fatalf("referrers %v: %v", referrers, err)
		}
		if v.KeyHint != string(s.GetHint()) || v.Statement.GetSubject()[0].GetDigest()["sha256"] != signed.Manifest.Digest.Hex {
			t.Errorf("verified %+v", v)
		}
		if _, err := attest.Verify(ctx, c, r, signed.Manifest.Digest, otherKeys); err != nil {
			t.Errorf("the other key's bundle: %v", err)
		}
		_, err = attest.Verify(ctx, c, r, unsigned.Manifest.Digest, keys)
		if !errors.Is(err, attest.ErrNone) || !strings.Contains(err.Error(), "none attached") {
			t.Errorf("an artifact without provenance: %v", err)
		}
		_, third := key(t)
		if _, err := attest.Verify(ctx, c, r, signed.Manifest.Digest, third); !errors.Is(err, signing.ErrUntrusted) || !strings.Contains(err.Error(), "not trusted") {
			t.Errorf("no trusted key: %v", err)
		}
	}
}
