package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"
)

// grants remembers, per input cache entry, which tenants a registry has
// recently let read it: a tenant is a repository, a namespace and the
// credentials its pod presented for that repository. Where
// cache.verifyAccess is false, a cache hit skips the live access check
// only for a tenant granted within the TTL; a pod of another namespace,
// with other credentials, or without any, is always checked. Grants live
// in memory: a restarted plugin checks again. It is safe for concurrent
// use.
type grants struct {
	ttl time.Duration
	now func() time.Time

	mu sync.Mutex
	m  map[string]map[string]time.Time // cache key → tenant → granted until
}

func newGrants(ttl time.Duration) *grants {
	return &grants{ttl: ttl, now: time.Now, m: map[string]map[string]time.Time{}}
}

// tenant names who reads repository from namespace with the credentials
// of fingerprint; "" (no credentials) is nobody, never granted.
func tenant(repository, namespace, fingerprint string) string {
	if fingerprint == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(repository + "\x00" + namespace + "\x00" + fingerprint))
	return hex.EncodeToString(sum[:])
}

// allowed reports whether who was granted key within the TTL.
func (g *grants) allowed(key, who string) bool {
	if who == "" || g.ttl <= 0 {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.m[key][who]
	return ok && g.now().Before(until)
}

// grant records that the registry let who read key just now, and forgets
// the key's expired grants.
func (g *grants) grant(key, who string) {
	if who == "" || g.ttl <= 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	byTenant := g.m[key]
	if byTenant == nil {
		byTenant = map[string]time.Time{}
		g.m[key] = byTenant
	}
	for t, until := range byTenant {
		if !now.Before(until) {
			delete(byTenant, t)
		}
	}
	byTenant[who] = now.Add(g.ttl)
}
