// Package signing signs provenance statements into Sigstore bundles
// (application/vnd.dev.sigstore.bundle.v0.3+json: a DSSE envelope and the
// hint of the public key that verifies it), the format cosign's
// --new-bundle-format and sigstore-go read, and verifies them against a
// set of trusted public keys.
//
// A Signer is sigstore-go's sign.Keypair: ECDSA P-256 keys from a PEM
// file or a Secret here, and a KMS or keyless signer later, behind the
// same seven methods. Keys are identified by their hint, the base64 of the
// SHA-256 of their PKIX encoding, as sigstore-go computes it.
package signing

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	intoto "github.com/in-toto/attestation/go/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
)

// BundleMediaType is the media type of what Sign returns.
const BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"

// ErrUntrusted: a bundle that no trusted key verifies, or whose statement
// is not about the expected artifact [errdefs.ErrPrecondition].
var ErrUntrusted = errdefs.New("provenance not trusted", errdefs.ErrPrecondition)

// Signer signs; sigstore-go's sign.Keypair.
type Signer = sign.Keypair

// GenerateKey returns a new ECDSA P-256 private key, PEM-encoded
// (PKCS #8), as the controller stores it when none exists.
func GenerateKey() ([]byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ECDSA is a Signer over an ECDSA P-256 private key. Safe for concurrent
// use.
type ECDSA struct {
	key  *ecdsa.PrivateKey
	hint []byte
}

// NewECDSA reads a PEM-encoded ECDSA P-256 private key (PKCS #8 or SEC 1).
func NewECDSA(pemKey []byte) (*ECDSA, error) {
	block, _ := pem.Decode(pemKey)
	if block == nil {
		return nil, errors.New("signing: no PEM block in the private key")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("signing: PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, errors.New("signing: the key is not ECDSA P-256")
	}
	hint, err := Hint(ec.Public())
	if err != nil {
		return nil, err
	}
	return &ECDSA{key: ec, hint: []byte(hint)}, nil
}

// Hint returns a public key's identifier: the base64 of the SHA-256 of its
// PKIX encoding.
func Hint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("signing: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}

// GetHashAlgorithm implements sign.Keypair.
func (e *ECDSA) GetHashAlgorithm() protocommon.HashAlgorithm {
	return protocommon.HashAlgorithm_SHA2_256
}

// GetSigningAlgorithm implements sign.Keypair.
func (e *ECDSA) GetSigningAlgorithm() protocommon.PublicKeyDetails {
	return protocommon.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256
}

// GetHint implements sign.Keypair.
func (e *ECDSA) GetHint() []byte { return e.hint }

// GetKeyAlgorithm implements sign.Keypair.
func (e *ECDSA) GetKeyAlgorithm() string { return "ECDSA" }

// GetPublicKey implements sign.Keypair.
func (e *ECDSA) GetPublicKey() crypto.PublicKey { return e.key.Public() }

// GetPublicKeyPem implements sign.Keypair.
func (e *ECDSA) GetPublicKeyPem() (string, error) {
	b, err := PublicKeyPEM(e.key.Public())
	return string(b), err
}

// SignData implements sign.Keypair: the signature of data's SHA-256, and
// that digest.
func (e *ECDSA) SignData(_ context.Context, data []byte) ([]byte, []byte, error) {
	sum := sha256.Sum256(data)
	sig, err := ecdsa.SignASN1(rand.Reader, e.key, sum[:])
	return sig, sum[:], err
}

// PublicKeyPEM encodes a public key as PEM (PKIX), as cosign reads it
// with --key.
func PublicKeyPEM(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// Sign signs st with s into a Sigstore bundle, JSON-encoded. No
// transparency log and no timestamp authority: the trust is in the key.
func Sign(st *intoto.Statement, s Signer) ([]byte, error) {
	payload, err := provenance.Marshal(st)
	if err != nil {
		return nil, err
	}
	pb, err := sign.Bundle(&sign.DSSEData{Data: payload, PayloadType: provenance.PayloadType}, s, sign.BundleOptions{})
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return protojson.Marshal(pb)
}

// Keys are the public keys a verifier trusts, by hint.
type Keys map[string]crypto.PublicKey

// ParseKeys reads every PEM public key in b (several may be
// concatenated: the current key and the ones it replaced).
func ParseKeys(b []byte) (Keys, error) {
	keys := Keys{}
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("signing: public key: %w", err)
		}
		hint, err := Hint(pub)
		if err != nil {
			return nil, err
		}
		keys[hint] = pub
	}
	if len(bytes.TrimSpace(b)) > 0 || len(keys) == 0 {
		return nil, errors.New("signing: want one or more PEM public keys")
	}
	return keys, nil
}

// Verify checks that bundle is signed by one of keys and that its
// statement is a SLSA provenance about the manifest digest (sha256:HEX);
// it returns the statement and the hint of the key that verified it.
// Every refusal wraps ErrUntrusted and says which check failed.
func Verify(b []byte, keys Keys, digest string) (*intoto.Statement, string, error) {
	var bun bundle.Bundle
	if err := bun.UnmarshalJSON(b); err != nil {
		return nil, "", fmt.Errorf("%w: not a Sigstore bundle: %w", ErrUntrusted, err)
	}
	hint := string(bun.GetVerificationMaterial().GetPublicKey().GetHint())
	pub, ok := keys[hint]
	if !ok {
		return nil, "", fmt.Errorf("%w: signed by a key that is not trusted (hint %s)", ErrUntrusted, hint)
	}
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, "", fmt.Errorf("signing: %w", err)
	}
	trusted := root.NewTrustedPublicKeyMaterialFromMapping(map[string]*root.ExpiringKey{hint: root.NewExpiringKey(v, time.Time{}, time.Time{})})
	verifier, err := verify.NewVerifier(trusted, verify.WithNoObserverTimestamps())
	if err != nil {
		return nil, "", fmt.Errorf("signing: %w", err)
	}
	hexDigest, ok := strings.CutPrefix(digest, "sha256:")
	raw, err := hex.DecodeString(hexDigest)
	if !ok || err != nil {
		return nil, "", fmt.Errorf("signing: digest %q is not sha256:HEX", digest)
	}
	res, err := verifier.Verify(&bun, verify.NewPolicy(verify.WithArtifactDigest("sha256", raw), verify.WithKey()))
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	st := res.Statement
	if st == nil || st.GetPredicateType() != provenance.PredicateType {
		return nil, "", fmt.Errorf("%w: the bundle is not a SLSA provenance", ErrUntrusted)
	}
	return st, hint, nil
}
