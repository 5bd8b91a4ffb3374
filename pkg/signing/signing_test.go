package signing

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func newSigner(t *testing.T) (*ECDSA, []byte) {
	t.Helper()
	priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewECDSA(priv)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := PublicKeyPEM(s.GetPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return s, pub
}

func signed(t *testing.T, s Signer, subject string) []byte {
	t.Helper()
	st, err := provenance.Statement(provenance.Facts{Repository: "registry.example/team/a", Digest: subject, Artifact: "report",
		Namespace: "team", Pod: provenance.Ref{Name: "p", UID: "u"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Sign(st, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// alter rewrites the statement inside a bundle, keeping its signature.
func alter(t *testing.T, b []byte) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	env := doc["dsseEnvelope"].(map[string]any)
	payload, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
	env["payload"] = base64.StdEncoding.EncodeToString(bytes.Replace(payload, []byte(`"report"`), []byte(`"forged"`), 1))
	out, _ := json.Marshal(doc)
	return out
}

func TestSignVerify(t *testing.T) {
	current, currentPub := newSigner(t)
	old, oldPub := newSigner(t)
	other, _ := newSigner(t)
	// The current key and the one it replaced stay trusted (rotation).
	keys, err := ParseKeys(append(currentPub, oldPub...))
	if err != nil {
		t.Fatal(err)
	}
	const otherDigest = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	for _, tc := range []struct {
		name   string
		bundle []byte
		digest string
		want   string // "" when it verifies
	}{
		{"signed by the current key", signed(t, current, digest), digest, ""},
		{"signed by a key it replaced", signed(t, old, digest), digest, ""},
		{"signed by another key", signed(t, other, digest), digest, "not trusted"},
		{"statement altered", alter(t, signed(t, current, digest)), digest, "provenance not trusted"},
		{"about another artifact", signed(t, current, otherDigest), digest, "provenance not trusted"},
		{"not a bundle", []byte(`{"mediaType":"x"}`), digest, "provenance not trusted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, hint, err := Verify(tc.bundle, keys, tc.digest)
			if tc.want == "" {
				if err != nil || st == nil || hint == "" {
					t.Fatalf("Verify = %v, %q, %v", st, hint, err)
				}
				return
			}
			if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Verify = %v, want ErrUntrusted about %q", err, tc.want)
			}
		})
	}
}

func TestBundleFormat(t *testing.T) {
	s, _ := newSigner(t)
	var doc map[string]any
	if err := json.Unmarshal(signed(t, s, digest), &doc); err != nil {
		t.Fatal(err)
	}
	if doc["mediaType"] != BundleMediaType {
		t.Errorf("mediaType %v", doc["mediaType"])
	}
	if env, _ := doc["dsseEnvelope"].(map[string]any); env["payloadType"] != provenance.PayloadType {
		t.Errorf("payloadType %v", env["payloadType"])
	}
	vm, _ := doc["verificationMaterial"].(map[string]any)
	if hint, _ := vm["publicKey"].(map[string]any)["hint"].(string); hint != string(s.GetHint()) {
		t.Errorf("hint %q, want %q", hint, s.GetHint())
	}
}

func TestParseKeys(t *testing.T) {
	for _, in := range []string{"", "not pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"} {
		if _, err := ParseKeys([]byte(in)); err == nil {
			t.Errorf("ParseKeys(%q) accepted", in)
		}
	}
	if _, err := NewECDSA([]byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")); err == nil {
		t.Error("NewECDSA accepted a public key")
	}
}
