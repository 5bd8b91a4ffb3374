package trust_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tektoncd/artifacts-csi-driver/internal/testsign"
	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
	"github.com/tektoncd/artifacts-csi-driver/pkg/signing"
	"github.com/tektoncd/artifacts-csi-driver/pkg/trust"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func newKey(t *testing.T) (*signing.ECDSA, []byte) {
	s, pub, _ := testsign.Key(t)
	return s, pub
}

// sign returns the bundle of a provenance of digest by a TaskRun of Task
// task in namespace, signed by s.
func sign(t *testing.T, s signing.Signer, subject, namespace, task, taskRunUID string) []byte {
	return testsign.Bundle(t, s, provenance.Facts{Repository: "registry.example/team/a", Digest: subject, Artifact: "report",
		Namespace: namespace, Pod: provenance.Ref{Name: "p", UID: "pod-uid"}, TaskRun: &provenance.Ref{Name: "tr", UID: taskRunUID},
		TaskRef: map[string]any{"name": task}})
}

// keyFile writes pems to a file and returns a KeyFile reading it.
func keyFile(t *testing.T, pems ...[]byte) *trust.KeyFile {
	t.Helper()
	p := filepath.Join(t.TempDir(), "trusted.pub")
	if err := os.WriteFile(p, bytes.Join(pems, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	return &trust.KeyFile{Path: p}
}

// listing counts the calls of a Bundles that returns bundles.
func listing(calls *int, bundles ...[]byte) trust.Bundles {
	return func(context.Context) ([]attest.Bundle, error) {
		*calls++
		out := make([]attest.Bundle, 0, len(bundles))
		for i, b := range bundles {
			out = append(out, attest.Bundle{Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string(rune('a'+i)), 64)}, Content: b})
		}
		return out, nil
	}
}

func TestVerify(t *testing.T) {
	ours, ourPub := newKey(t)
	theirs, _ := newKey(t)
	good := sign(t, ours, digest, "team-a", "build", "tr-uid")
	other := sign(t, ours, digest, "team-b", "lint", "tr-other")
	for _, tc := range []struct {
		name    string
		policy  trust.Policy
		bundles [][]byte
		want    error // nil when it passes
		says    string
	}{
		{"signed by the trusted key", trust.Policy{Required: true}, [][]byte{good}, nil, ""},
		{"every constraint met", trust.Policy{Required: true, Namespace: "team-a", Task: "build", Invocation: "taskrun/tr-uid"}, [][]byte{good}, nil, ""},
		{"the one that meets the policy among several", trust.Policy{Namespace: "team-a"}, [][]byte{other, good}, nil, ""},
		{"none attached", trust.Policy{Required: true}, nil, trust.ErrNoProvenance, "no provenance"},
		{"signed by another key", trust.Policy{Required: true}, [][]byte{sign(t, theirs, digest, "team-a", "build", "tr-uid")}, trust.ErrUntrusted, "not trusted"},
		{"statement altered", trust.Policy{Required: true}, [][]byte{testsign.Alter(t, good, "team-a", "team-b")}, trust.ErrUntrusted, "not trusted"},
		{"about another artifact", trust.Policy{Required: true}, [][]byte{sign(t, ours, "sha256:"+strings.Repeat("f", 64), "team-a", "build", "u")}, trust.ErrUntrusted, "not trusted"},
		{"another namespace", trust.Policy{Required: true, Namespace: "team-a"}, [][]byte{other}, trust.ErrMismatch, `names namespace "team-b" as the producer's, and provenance.sameNamespace requires "team-a"`},
		{"another Task", trust.Policy{Task: "build"}, [][]byte{other}, trust.ErrMismatch, `names Task "lint" as the producer, and the volume's producerTask requires "build"`},
		{"another run", trust.Policy{Invocation: "taskrun/tr-uid"}, [][]byte{other}, trust.ErrMismatch, `from: resolved to "taskrun/tr-uid"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &trust.Verifier{Keys: keyFile(t, ourPub)}
			calls := 0
			res, err := v.Verify(t.Context(), digest, tc.policy, listing(&calls, tc.bundles...))
			if tc.want == nil {
				if err != nil || res.Claim.KeyID == "" || res.Cached {
					t.Fatalf("Verify = %+v, %v", res, err)
				}
				// A second pod: answered from the cache, no bundle read.
				if res, err := v.Verify(t.Context(), digest, tc.policy, listing(&calls, tc.bundles...)); err != nil || !res.Cached || calls != 1 {
					t.Errorf("second Verify = %+v, %v after %d listings; want cached after 1", res, err, calls)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) || errdefs.ClassOf(err) != errdefs.ErrPrecondition {
				t.Errorf("Verify = %v, want %v (a failed precondition) saying %q", err, tc.want, tc.says)
			}
		})
	}
}

// TestVerifyKeys: no key, no verification; a key rotated in (the file
// the ConfigMap volume updates) applies to the next call and keeps no
// verification made with the old set.
func TestVerifyKeys(t *testing.T) {
	ours, ourPub := newKey(t)
	next, nextPub := newKey(t)
	calls := 0
	if _, err := (&trust.Verifier{Keys: keyFile(t)}).Verify(t.Context(), digest, trust.Policy{Required: true}, listing(&calls)); !errors.Is(err, trust.ErrNoKeys) {
		t.Errorf("without keys: %v, want ErrNoKeys", err)
	}
	if _, err := (&trust.Verifier{Keys: &trust.KeyFile{Path: "/nonexistent/trusted.pub"}}).Verify(t.Context(), digest, trust.Policy{Required: true}, listing(&calls)); !errors.Is(err, trust.ErrNoKeys) {
		t.Errorf("without a key file: %v, want ErrNoKeys", err)
	}
	if _, err := (&trust.Verifier{Keys: keyFile(t, []byte("not a key"))}).Verify(t.Context(), digest, trust.Policy{Required: true}, listing(&calls)); !errors.Is(err, trust.ErrNoKeys) {
		t.Errorf("with a bad key file: %v, want ErrNoKeys", err)
	}

	kf := keyFile(t, ourPub)
	v := &trust.Verifier{Keys: kf}
	bundle := sign(t, ours, digest, "team-a", "build", "u")
	if _, err := v.Verify(t.Context(), digest, trust.Policy{Required: true}, listing(&calls, bundle)); err != nil {
		t.Fatal(err)
	}
	// The old key is dropped from the trusted set: the cached verification
	// no longer counts, and the bundle no longer verifies.
	if err := os.WriteFile(kf.Path, nextPub, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(t.Context(), digest, trust.Policy{Required: true}, listing(&calls, bundle)); !errors.Is(err, trust.ErrUntrusted) {
		t.Errorf("after the key was dropped: %v, want ErrUntrusted", err)
	}
	if res, err := v.Verify(t.Context(), digest, trust.Policy{Required: true}, listing(&calls, sign(t, next, digest, "team-a", "build", "u"))); err != nil || res.Cached {
		t.Errorf("signed by the new key: %+v, %v", res, err)
	}
}

// TestVerifyCacheBound: the cache holds MaxEntries digests at most.
func TestVerifyCacheBound(t *testing.T) {
	ours, ourPub := newKey(t)
	v := &trust.Verifier{Keys: keyFile(t, ourPub), MaxEntries: 2}
	digests := []string{digest, "sha256:" + strings.Repeat("1", 64), "sha256:" + strings.Repeat("2", 64)}
	calls := 0
	for _, d := range digests {
		if _, err := v.Verify(t.Context(), d, trust.Policy{Required: true}, listing(&calls, sign(t, ours, d, "team-a", "build", "u"))); err != nil {
			t.Fatal(err)
		}
	}
	// The two most recent are cached, the first was evicted.
	for i := len(digests) - 1; i >= 0; i-- {
		d := digests[i]
		res, err := v.Verify(t.Context(), d, trust.Policy{Required: true}, listing(&calls, sign(t, ours, d, "team-a", "build", "u")))
		if err != nil || res.Cached != (i > 0) {
			t.Errorf("%s: cached %v, %v; want cached %v", d, res.Cached, err, i > 0)
		}
	}
}

// TestVerifyBundle: a provider's bundle, from the producer's record.
func TestVerifyBundle(t *testing.T) {
	ours, ourPub := newKey(t)
	v := &trust.Verifier{Keys: keyFile(t, ourPub)}
	if _, err := v.VerifyBundle(t.Context(), digest, trust.Policy{Required: true}, sign(t, ours, digest, "team-a", "build", "u")); err != nil {
		t.Errorf("the record's bundle: %v", err)
	}
	if _, err := v.VerifyBundle(t.Context(), "sha256:"+strings.Repeat("3", 64), trust.Policy{Required: true}, nil); !errors.Is(err, trust.ErrNoProvenance) {
		t.Errorf("a record without one: %v, want ErrNoProvenance", err)
	}
}
