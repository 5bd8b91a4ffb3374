package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
	"github.com/tektoncd/artifacts-csi-driver/pkg/signing"
)

func TestVerify(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	host := testregistry.InMemory(t, true)
	src := t.TempDir()
	testtree.Write(t, src, 3)
	out, _, err := run(t, "push", src, host+"/team/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	ref := lastLine(out)
	d, err := name.NewDigest(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := func(s *signing.ECDSA) string {
		pub, _ := signing.PublicKeyPEM(s.GetPublicKey())
		f := filepath.Join(t.TempDir(), "cosign.pub")
		os.WriteFile(f, pub, 0o644)
		return f
	}
	priv, _ := signing.GenerateKey()
	s, _ := signing.NewECDSA(priv)
	priv2, _ := signing.GenerateKey()
	other, _ := signing.NewECDSA(priv2)

	if _, _, err := run(t, "verify", ref, "--key", keyFile(s)); err == nil || !strings.Contains(err.Error(), "none attached") {
		t.Fatalf("verify without provenance: %v", err)
	}
	st, err := provenance.Statement(provenance.Facts{Repository: d.Context().String(), Digest: d.DigestStr(), Artifact: "app",
		Namespace: "team", Pod: provenance.Ref{Name: "p", UID: "u"},
		Inputs: []provenance.Dependency{{Artifact: "src", URI: "oci://" + ref, Digest: d.DigestStr()}}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := signing.Sign(st, s)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := v1.NewHash(d.DigestStr())
	if _, err := attest.Push(context.Background(), oci.New(oci.Options{}), d.Context(), h, b, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		out  string
		err  string
	}{
		{args: []string{"verify", ref, "--key", keyFile(s)}, out: "Build type:  " + provenance.BuildTypePod},
		{args: []string{"verify", host + "/team/app:v1", "--key", keyFile(s)}, out: "Input:       src oci://"},
		{args: []string{"verify", ref, "--key", keyFile(s), "-o", "json"}, out: `"predicateType":"https://slsa.dev/provenance/v1"`},
		{args: []string{"verify", ref, "--key", keyFile(other)}, err: "no provenance signed by a trusted key"},
		{args: []string{"verify", ref}, err: `"key" not set`},
	} {
		t.Run(strings.Join(tc.args[2:], " "), func(t *testing.T) {
			out, _, err := run(t, tc.args...)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !strings.Contains(out, tc.out) {
				t.Errorf("out %q, err %v; want %q", out, err, tc.out)
			}
		})
	}
}
