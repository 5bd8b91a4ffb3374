package cli_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testsign"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
	"github.com/tektoncd/artifacts-csi-driver/pkg/signing"
)

// newSigner returns a signer over a new key and a PEM file of its public
// key.
func newSigner(t *testing.T) (*signing.ECDSA, string) {
	t.Helper()
	s, pub, _ := testsign.Key(t)
	f := filepath.Join(t.TempDir(), "cosign.pub")
	if err := os.WriteFile(f, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return s, f
}

// attachProvenance signs with s a provenance of ref (REPO@sha256:…) and
// attaches it, created at created; it returns the referrer's digest.
func attachProvenance(t *testing.T, ref string, s signing.Signer, created time.Time) string {
	t.Helper()
	d, err := name.NewDigest(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	b := testsign.Bundle(t, s, provenance.Facts{Repository: d.Context().String(), Digest: d.DigestStr(), Artifact: "app",
		Namespace: "team", Pod: provenance.Ref{Name: "p", UID: "u"},
		Inputs: []provenance.Dependency{{Artifact: "src", URI: "oci://" + ref, Digest: d.DigestStr()}}})
	h, _ := v1.NewHash(d.DigestStr())
	desc, err := attest.Push(context.Background(), oci.New(oci.Options{}), d.Context(), h, b, created)
	if err != nil {
		t.Fatal(err)
	}
	return desc.Digest.String()
}

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
	s, key := newSigner(t)
	_, otherKey := newSigner(t)

	if _, _, err := run(t, "verify", ref, "--key", key); err == nil || !strings.Contains(err.Error(), "none attached") {
		t.Fatalf("verify without provenance: %v", err)
	}
	attachProvenance(t, ref, s, time.Now())
	for _, tc := range []struct {
		args []string
		out  string
		err  string
	}{
		{args: []string{"verify", ref, "--key", key}, out: "Build type:  " + provenance.BuildTypePod},
		{args: []string{"verify", host + "/team/app:v1", "--key", key}, out: "Input:       src oci://"},
		{args: []string{"verify", ref, "--key", key, "-o", "json"}, out: `"predicateType":"https://slsa.dev/provenance/v1"`},
		{args: []string{"verify", ref, "--key", otherKey}, err: "no provenance signed by a trusted key"},
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

// provenanceJSON is an entry of inspect -o json's provenance array.
type provenanceJSON struct {
	Digest        string `json:"digest"`
	PredicateType string `json:"predicateType"`
	Created       string `json:"created"`
	KeyHint       string `json:"keyHint"`
	Verified      *bool  `json:"verified"`
	Error         string `json:"error"`
}

func TestInspectProvenance(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	s, key := newSigner(t)
	_, otherKey := newSigner(t)
	hint := string(s.GetHint())
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	yes, no := true, false
	// The referrers API refused: inspect warns and carries on.
	refused := testregistry.Handler(t, true, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/referrers/") {
				http.Error(w, `{"errors":[{"code":"DENIED","message":"no"}]}`, http.StatusForbidden)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	push := func(repo string, seed uint64) string {
		t.Helper()
		src := t.TempDir()
		testtree.Write(t, src, seed)
		out, _, err := run(t, "push", src, repo)
		if err != nil {
			t.Fatal(err)
		}
		return lastLine(out)
	}

	type testCase struct {
		name string
		ref  string
		key  string
		// text: regexps the text output matches, line by line; json: the
		// provenance array (nil: null), each error a substring.
		text    []string
		json    []provenanceJSON
		warning string
	}
	var tests []testCase
	for _, referrers := range []bool{true, false} {
		host := testregistry.InMemory(t, referrers)
		bare := push(host+"/team/bare", 4)
		signed := push(host+"/team/app", 5)
		bundle := attachProvenance(t, signed, s, created)
		listed := []string{`^Provenance:$`, `^  ` + bundle + `$`,
			`^    Predicate type:\s+` + regexp.QuoteMeta(provenance.PredicateType) + `$`,
			`^    Created:\s+2026-01-02T03:04:05Z$`, `^    Key hint:\s+` + regexp.QuoteMeta(hint) + `$`}
		entry := provenanceJSON{Digest: bundle, PredicateType: provenance.PredicateType, Created: "2026-01-02T03:04:05Z", KeyHint: hint}
		verified, notVerified := entry, entry
		verified.Verified, notVerified.Verified, notVerified.Error = &yes, &no, "not trusted"
		var layer struct{ Layers []struct{ Digest string } }
		out, _, err := run(t, "inspect", "-o", "json", signed)
		if err := errors.Join(err, json.Unmarshal([]byte(out), &layer)); err != nil || len(layer.Layers) != 1 {
			t.Fatalf("inspect -o json %s: %v\n%s", signed, err, out)
		}
		repo, _, _ := strings.Cut(signed, "@")
		p := fmt.Sprintf("referrers=%v/", referrers)
		tests = append(tests,
			testCase{name: p + "none", ref: bare, text: []string{`^Provenance: none$`}, json: []provenanceJSON{}},
			testCase{name: p + "signed", ref: signed, json: []provenanceJSON{entry},
				text: slices.Concat(listed, []string{`^    Signature:\s+not verified \(pass --key FILE to check it\)$`})},
			testCase{name: p + "signed, trusted key", ref: signed, key: key, json: []provenanceJSON{verified},
				text: slices.Concat(listed, []string{`^    Signature:\s+verified \(signed by a key in --key`})},
			testCase{name: p + "signed, other key", ref: signed, key: otherKey, json: []provenanceJSON{notVerified},
				text: slices.Concat(listed, []string{`^    Signature:\s+NOT verified$`, `^    Error:\s+.*not trusted`})},
			testCase{name: p + "blob", ref: "oci:" + repo + "@" + layer.Layers[0].Digest, text: []string{`^Digest:\s+sha256:`}},
		)
	}
	tests = append(tests, testCase{name: "referrers refused", ref: push(refused+"/team/app", 6),
		text: []string{`^Digest:\s+sha256:`}, warning: "artifacts: warning: list provenance: "})

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"inspect", tc.ref}
			if tc.key != "" {
				args = append(args, "--key", tc.key)
			}
			out, errOut, err := run(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			for _, re := range tc.text {
				if !regexp.MustCompile("(?m)" + re).MatchString(out) {
					t.Errorf("text output does not match %s:\n%s", re, out)
				}
			}
			if tc.json == nil && strings.Contains(out, "Provenance") {
				t.Errorf("text output lists provenance:\n%s", out)
			}
			if (tc.warning == "") != (errOut == "") || !strings.HasPrefix(errOut, tc.warning) || strings.Count(errOut, "\n") > 1 {
				t.Errorf("stderr %q, want one line starting with %q", errOut, tc.warning)
			}

			out, _, err = run(t, append(args, "-o", "json")...)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Reference  string
				Provenance []provenanceJSON
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if got.Reference != tc.ref {
				t.Errorf("reference = %q, want %q", got.Reference, tc.ref)
			}
			for i := range got.Provenance {
				if i < len(tc.json) && tc.json[i].Error != "" && strings.Contains(got.Provenance[i].Error, tc.json[i].Error) {
					got.Provenance[i].Error = tc.json[i].Error
				}
			}
			if !reflect.DeepEqual(got.Provenance, tc.json) {
				t.Errorf("provenance differs from %+v:\n%s", tc.json, out)
			}
		})
	}
}
