// Package trust decides whether an input may be mounted: a provenance
// signed by a trusted key exists for its exact digest, and what it states
// meets the consumer's policy (same namespace, producer Task, producer
// run). Verified provenances are cached by digest and key set, so that a
// second pod mounting the same input pays a map lookup, not a registry
// round trip.
package trust

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
	"github.com/tektoncd/artifacts-csi-driver/pkg/signing"
)

// Why an input was refused. Each is of class errdefs.ErrPrecondition
// (gRPC FailedPrecondition): the input exists, but may not be mounted
// until someone fixes what the message says.
var (
	// ErrNoKeys: verification is asked for, but no trusted key is known.
	ErrNoKeys = errdefs.New("no trusted provenance keys", errdefs.ErrPrecondition)
	// ErrNoProvenance: no provenance is attached to the digest.
	ErrNoProvenance = errdefs.New("no provenance", errdefs.ErrPrecondition)
	// ErrUntrusted: provenances are attached, none signed by a trusted key
	// for this digest (another key, an altered statement, another
	// artifact's).
	ErrUntrusted = signing.ErrUntrusted
	// ErrMismatch: a trusted provenance exists, but states another
	// producer than the policy requires.
	ErrMismatch = errdefs.New("provenance does not meet the policy", errdefs.ErrPrecondition)
)

// Policy is what an input's provenance must show. The zero value
// requires nothing.
type Policy struct {
	// Required: a provenance signed by a trusted key must exist for the
	// digest.
	Required bool
	// Namespace, when set, must be the producer's namespace the
	// provenance states.
	Namespace string
	// Task, when set, must be the producer's Task (taskRef.name).
	Task string
	// Invocation, when set, must be the provenance's invocation id:
	// taskrun/<uid> of the TaskRun a from: input resolved to.
	Invocation string
}

// Active reports whether p asks for verification at all.
func (p Policy) Active() bool {
	return p.Required || p.Namespace != "" || p.Task != "" || p.Invocation != ""
}

// Claim is what a verified provenance states that a Policy looks at.
type Claim struct {
	Namespace, Task, Invocation string
	// KeyID is the hint of the key that verified it.
	KeyID string
}

// check returns why c does not meet p, or "".
func (p Policy) check(c Claim) string {
	var why []string
	if p.Namespace != "" && c.Namespace != p.Namespace {
		why = append(why, fmt.Sprintf("it names namespace %q as the producer's, and provenance.sameNamespace requires %q", c.Namespace, p.Namespace))
	}
	if p.Task != "" && c.Task != p.Task {
		why = append(why, fmt.Sprintf("it names Task %q as the producer, and the volume's producerTask requires %q", c.Task, p.Task))
	}
	if p.Invocation != "" && c.Invocation != p.Invocation {
		why = append(why, fmt.Sprintf("it names run %q as the producer, and from: resolved to %q", c.Invocation, p.Invocation))
	}
	return strings.Join(why, "; ")
}

// KeySource gives the trusted keys and a fingerprint that changes when
// they do.
type KeySource interface {
	Keys() (signing.Keys, string, error)
}

// KeyFile reads the trusted keys, PEM public keys, from Path (the node
// plugin mounts ConfigMap artifacts-signing-keys, which the controller
// publishes) at every call, so that a rotation applies without a
// restart; it parses them again only when the file changed. A missing or
// empty file gives no keys. Safe for concurrent use.
type KeyFile struct {
	Path string

	mu   sync.Mutex
	raw  []byte
	keys signing.Keys
	fp   string
}

// Keys implements KeySource.
func (f *KeyFile) Keys() (signing.Keys, string, error) {
	raw, err := os.ReadFile(f.Path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, "", fmt.Errorf("read trusted keys %s: %w", f.Path, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.keys != nil && bytes.Equal(raw, f.raw) {
		return f.keys, f.fp, nil
	}
	keys := signing.Keys{}
	if len(bytes.TrimSpace(raw)) > 0 {
		if keys, err = signing.ParseKeys(raw); err != nil {
			return nil, "", fmt.Errorf("trusted keys %s: %w", f.Path, err)
		}
	}
	sum := sha256.Sum256(raw)
	f.raw, f.keys, f.fp = raw, keys, hex.EncodeToString(sum[:8])
	return f.keys, f.fp, nil
}

// Bundles lists the provenance bundles of an artifact, as store.Store's
// Bundles does.
type Bundles func(ctx context.Context) ([]attest.Bundle, error)

// Verifier checks inputs against a Policy with the keys of Keys, caching
// what verified. Safe for concurrent use; the zero value (with Keys set)
// is ready.
type Verifier struct {
	Keys KeySource
	// MaxEntries bounds the digests whose verified claims are cached,
	// least recently used first out. Default 4096.
	MaxEntries int

	mu    sync.Mutex
	cache map[string]*list.Element
	lru   list.List // of *entry, most recent first
}

type entry struct {
	key    string
	claims []Claim
}

// Result says how an input passed.
type Result struct {
	Claim Claim
	// Cached: a verification cached for this digest and key set answered,
	// without reading the bundles.
	Cached bool
}

// Verify checks that a provenance signed by a trusted key exists for
// digest (sha256:HEX) and meets p, reading the bundles from list when no
// cached verification meets p. Only successful verifications are cached,
// so that a provenance attached later is found. The error wraps
// ErrNoKeys, ErrNoProvenance, ErrUntrusted or ErrMismatch, and says
// which check failed; or it is list's (the registry unreachable).
func (v *Verifier) Verify(ctx context.Context, digest string, p Policy, list Bundles) (Result, error) {
	keys, fp, err := v.Keys.Keys()
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrNoKeys, err)
	}
	if len(keys) == 0 {
		return Result{}, ErrNoKeys
	}
	key := digest + "|" + fp
	for _, c := range v.cached(key) {
		if p.check(c) == "" {
			return Result{Claim: c, Cached: true}, nil
		}
	}
	bundles, err := list(ctx)
	if err != nil {
		return Result{}, err
	}
	if len(bundles) == 0 {
		return Result{}, ErrNoProvenance
	}
	var (
		claims []Claim
		why    []string
	)
	for _, b := range bundles {
		if b.Err != nil {
			why = append(why, fmt.Sprintf("%s: %v", b.Digest, b.Err))
			continue
		}
		c, err := verify(b.Content, keys, digest)
		if err != nil {
			why = append(why, fmt.Sprintf("%s: %s", b.Digest, strings.TrimPrefix(err.Error(), ErrUntrusted.Error()+": ")))
			continue
		}
		claims = append(claims, c)
	}
	if len(claims) == 0 {
		return Result{}, fmt.Errorf("%w: %s", ErrUntrusted, strings.Join(why, "; "))
	}
	v.store(key, claims)
	for _, c := range claims {
		if p.check(c) == "" {
			return Result{Claim: c}, nil
		}
	}
	return Result{}, fmt.Errorf("%w: %s", ErrMismatch, p.check(claims[0]))
}

// verify checks one bundle and reads its claim. A statement not written
// by this driver (another builder) is not trusted, whoever signed it.
func verify(bundle []byte, keys signing.Keys, digest string) (Claim, error) {
	st, hint, err := signing.Verify(bundle, keys, digest)
	if err != nil {
		return Claim{}, err
	}
	pred, err := provenance.Predicate(st)
	if err != nil {
		return Claim{}, err
	}
	if id := pred.GetRunDetails().GetBuilder().GetId(); id != provenance.BuilderID {
		return Claim{}, fmt.Errorf("%w: built by %q, not by %s", ErrUntrusted, id, provenance.BuilderID)
	}
	ext := pred.GetBuildDefinition().GetExternalParameters().AsMap()
	c := Claim{KeyID: hint, Invocation: pred.GetRunDetails().GetMetadata().GetInvocationId()}
	c.Namespace, _ = ext["namespace"].(string)
	if ref, ok := ext["taskRef"].(map[string]any); ok {
		c.Task, _ = ref["name"].(string)
	}
	return c, nil
}

// VerifyBundle checks bundle, e.g. from a producer's record, against
// digest and p, as Verify does.
func (v *Verifier) VerifyBundle(ctx context.Context, digest string, p Policy, bundle []byte) (Result, error) {
	return v.Verify(ctx, digest, p, func(context.Context) ([]attest.Bundle, error) {
		if len(bundle) == 0 {
			return nil, nil
		}
		sum := sha256.Sum256(bundle)
		return []attest.Bundle{{Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, Content: bundle}}, nil
	})
}

func (v *Verifier) cached(key string) []Claim {
	v.mu.Lock()
	defer v.mu.Unlock()
	el, ok := v.cache[key]
	if !ok {
		return nil
	}
	v.lru.MoveToFront(el)
	return el.Value.(*entry).claims
}

func (v *Verifier) store(key string, claims []Claim) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cache == nil {
		v.cache = map[string]*list.Element{}
	}
	if el, ok := v.cache[key]; ok {
		el.Value.(*entry).claims = claims
		v.lru.MoveToFront(el)
		return
	}
	v.cache[key] = v.lru.PushFront(&entry{key: key, claims: claims})
	limit := v.MaxEntries
	if limit <= 0 {
		limit = 4096
	}
	for v.lru.Len() > limit {
		old := v.lru.Back()
		v.lru.Remove(old)
		delete(v.cache, old.Value.(*entry).key)
	}
}
