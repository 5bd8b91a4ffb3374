// Package testsign makes signing keys and signed provenance bundles for
// tests, as the controller makes them.
package testsign

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
	"github.com/tektoncd/artifacts-csi-driver/pkg/signing"
)

// Key returns a new ECDSA P-256 signer, its public key (PEM) and the key
// set that trusts it alone.
func Key(t testing.TB) (*signing.ECDSA, []byte, signing.Keys) {
	t.Helper()
	priv, err := signing.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := signing.NewECDSA(priv)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := signing.PublicKeyPEM(s.GetPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := signing.ParseKeys(pub)
	if err != nil {
		t.Fatal(err)
	}
	return s, pub, keys
}

// Bundle returns the Sigstore bundle of the provenance f states, signed
// by s.
func Bundle(t testing.TB, s signing.Signer, f provenance.Facts) []byte {
	t.Helper()
	st, err := provenance.Statement(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := signing.Sign(st, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Alter replaces every "from" (a JSON string) with "to" in the statement
// inside bundle, keeping its signature: a forgery.
func Alter(t testing.TB, bundle []byte, from, to string) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(bundle, &doc); err != nil {
		t.Fatal(err)
	}
	env, _ := doc["dsseEnvelope"].(map[string]any)
	payload, err := base64.StdEncoding.DecodeString(env["payload"].(string))
	if err != nil {
		t.Fatal(err)
	}
	env["payload"] = base64.StdEncoding.EncodeToString(bytes.ReplaceAll(payload, []byte(`"`+from+`"`), []byte(`"`+to+`"`)))
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
