// Package oci moves artifacts between directories and OCI registries: push
// (archive, compress and upload in one streaming pass), pull (fetch, verify
// and extract), resolve and inspect. It is built on go-containerregistry.
//
// Everything read from a registry is verified against a digest before it is
// used: manifests against the digest they were asked by, blobs against the
// manifest's descriptor, while they stream, before extraction commits.
package oci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/chunked"
	"github.com/tektoncd/artifacts-csi-driver/pkg/digestcache"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
)

// Errors are sorted into the classes of pkg/errdefs where they arise:
// errdefs.ErrNotFound for a repository, manifest, tag or blob the registry
// does not have; errdefs.ErrDenied when it refuses the credentials (401,
// 403); errdefs.ErrUnavailable when it cannot be reached or fails on its
// side (429, 5xx, a network error, no progress for Options.IdleTimeout);
// artifact.ErrInvalid (ErrInvalid) for what is not a readable artifact;
// archive's errors for what the content breaks (archive.ErrLimitExceeded,
// ErrTooLarge, for a blob larger than the limits allow).

// Options configures a Client. The zero value is usable: credentials from
// the Docker config file (~/.docker/config.json and credential helpers, as
// crane and oras read them), HTTPS except for localhost and private
// addresses, no digest cache, default extraction limits.
type Options struct {
	// Keychain resolves credentials per registry. Default:
	// authn.DefaultKeychain.
	Keychain authn.Keychain
	// Transport is the HTTP transport. Default: remote.DefaultTransport,
	// whose connections are made within 30s and TLS handshakes done within
	// 10s.
	Transport http.RoundTripper
	// IdleTimeout aborts a request to a registry (manifest, blob, upload,
	// referrers, ping, token exchange) once it has waited that long on the
	// registry without a byte moving either way, the wait for the response
	// headers included; the time spent producing the upload or extracting
	// the download does not count. The request fails with an error of
	// class errdefs.ErrUnavailable. Zero means DefaultIdleTimeout (60s);
	// negative disables it, leaving requests bounded by their context only.
	IdleTimeout time.Duration
	// UserAgent is sent with every request. Default:
	// "tekton-artifacts".
	UserAgent string
	// DigestCache, when set, lets Push skip compression and upload of a tree
	// the registry already has. Default: none.
	DigestCache *digestcache.Cache
	// Limits bounds what Pull extracts. Default: archive defaults.
	Limits archive.Limits
	// Modes are the permission bits of what Pull extracts. Default:
	// archive.ArchiveModes, the producer's.
	Modes archive.Modes
	// Retry is the backoff of go-containerregistry's own retries of a
	// failed request. Zero: its default (3 tries, 1 s then ×3).
	Retry remote.Backoff
	// Progress, when set, is called with the bytes of blob content moved so
	// far by the current Push or Pull. It is called from one goroutine at a
	// time and must return quickly.
	Progress func(done int64)
}

// Client talks to OCI registries. It is safe for concurrent use. Clients
// derived with With and WithLimits share its cache of authorised
// transports.
type Client struct {
	o          Options
	transports *transportCache
	local      chunked.Local // WithLocal
}

// New returns a Client with o's zero fields set to their defaults.
func New(o Options) *Client {
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.Transport == nil {
		o.Transport = remote.DefaultTransport
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	o.Transport = withIdleTimeout(o.Transport, o.IdleTimeout)
	if o.UserAgent == "" {
		o.UserAgent = "tekton-artifacts"
	}
	return &Client{o: o, transports: &transportCache{m: map[string]cachedTransport{}}}
}

// With returns a client that differs from c only by the keychain: one per
// pod's credentials, sharing c's transport, digest cache and defaults.
func (c *Client) With(kc authn.Keychain) *Client {
	n := *c
	n.o.Keychain = kc
	return &n
}

// WithLimits returns a client that differs from c only by its extraction
// limits.
func (c *Client) WithLimits(l archive.Limits) *Client {
	n := *c
	n.o.Limits = l
	return &n
}

// WithLocal returns a client whose pulls of chunked artifacts take the
// chunks l has from l rather than from the registry (verified all the
// same). Default: none.
func (c *Client) WithLocal(l chunked.Local) *Client {
	n := *c
	n.local = l
	return &n
}

func (c *Client) remoteOptions(ctx context.Context) []remote.Option {
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(c.o.Keychain),
		remote.WithTransport(c.o.Transport),
		remote.WithUserAgent(c.o.UserAgent),
	}
	if c.o.Retry.Steps > 0 {
		opts = append(opts, remote.WithRetryBackoff(c.o.Retry))
	}
	return opts
}

// httpClient returns a client authorised for repo with the given scope
// actions (transport.PullScope or transport.PushScope). Authorised
// transports are cached by registry, scope and credentials, so that a
// request repeated within transportTTL (an access check per volume) skips
// the registry ping and the token exchange.
func (c *Client) httpClient(ctx context.Context, repo name.Repository, scope string) (*http.Client, error) {
	auth, err := authn.Resolve(ctx, c.o.Keychain, repo)
	if err != nil {
		return nil, fmt.Errorf("resolve credentials for %s: %w", repo.RegistryStr(), err)
	}
	cfg, err := authn.Authorization(ctx, auth)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", repo.RegistryStr(), err)
	}
	credsJSON, _ := json.Marshal(cfg)
	sum := sha256.Sum256(credsJSON)
	key := repo.Scheme() + "://" + repo.RegistryStr() + "\x00" + repo.Scope(scope) + "\x00" + c.o.UserAgent + "\x00" + hex.EncodeToString(sum[:])
	if rt := c.transports.get(key); rt != nil {
		return &http.Client{Transport: rt}, nil
	}
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth,
		transport.NewUserAgent(c.o.Transport, c.o.UserAgent), []string{repo.Scope(scope)})
	if err != nil {
		return nil, classify(err)
	}
	c.transports.put(key, rt)
	return &http.Client{Transport: rt}, nil
}

// Bounds of the transport cache. Bearer tokens last minutes; go-
// containerregistry's bearer transport also refreshes one the registry
// rejects.
const (
	transportTTL  = 2 * time.Minute
	maxTransports = 256
)

type transportCache struct {
	mu sync.Mutex
	m  map[string]cachedTransport
}

type cachedTransport struct {
	rt      http.RoundTripper
	expires time.Time
}

func (tc *transportCache) get(key string) http.RoundTripper {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	e, ok := tc.m[key]
	if !ok || time.Now().After(e.expires) {
		delete(tc.m, key)
		return nil
	}
	return e.rt
}

func (tc *transportCache) put(key string, rt http.RoundTripper) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	now := time.Now()
	if len(tc.m) >= maxTransports {
		for k, e := range tc.m {
			if now.After(e.expires) || len(tc.m) >= maxTransports {
				delete(tc.m, k)
			}
		}
	}
	tc.m[key] = cachedTransport{rt: rt, expires: now.Add(transportTTL)}
}

func blobURL(repo name.Repository, d v1.Hash) string {
	return fmt.Sprintf("%s://%s/v2/%s/blobs/%s", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), d)
}

// manifestURL is where repo serves the manifest of reference (a tag or a
// digest).
func manifestURL(repo name.Repository, reference string) string {
	return fmt.Sprintf("%s://%s/v2/%s/manifests/%s", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), reference)
}

// request sends a bodiless request for u, authorised for repo with scope,
// and returns the response when its status is one of ok.
func (c *Client) request(ctx context.Context, repo name.Repository, scope, method, u string, ok ...int) (*http.Response, error) {
	return c.requestAccept(ctx, repo, scope, method, u, "", ok...)
}

// requestAccept is request with an Accept header ("" for none).
func (c *Client) requestAccept(ctx context.Context, repo name.Repository, scope, method, u, accept string, ok ...int) (*http.Response, error) {
	hc, err := c.httpClient(ctx, repo, scope)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if err := transport.CheckError(resp, ok...); err != nil {
		resp.Body.Close()
		return nil, classify(err)
	}
	return resp, nil
}

// openBlob starts a GET of blob d and returns its body, unverified: the
// caller verifies while reading.
func (c *Client) openBlob(ctx context.Context, repo name.Repository, d v1.Hash) (io.ReadCloser, error) {
	resp, err := c.request(ctx, repo, transport.PullScope, http.MethodGet, blobURL(repo, d), http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("fetch blob %s from %s: %w", d, repo, err)
	}
	return resp.Body, nil
}

// blobExists asks the registry whether repo has blob d.
func (c *Client) blobExists(ctx context.Context, repo name.Repository, d v1.Hash) (bool, error) {
	resp, err := c.request(ctx, repo, transport.PushScope, http.MethodHead, blobURL(repo, d), http.StatusOK, http.StatusNotFound)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// classify sorts a registry's answer into its errdefs class, by status
// code then by the error codes of the body: ErrNotFound and ErrDenied are
// prefixed to the message ("not found: ..."), ErrUnavailable (429, 5xx)
// leaves it as it is. Other errors are returned unchanged: network errors
// are ErrUnavailable by errdefs.ClassOf.
func classify(err error) error {
	var te *transport.Error
	if !errors.As(err, &te) {
		return err
	}
	switch {
	case te.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
	case te.StatusCode == http.StatusUnauthorized, te.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: %w", errdefs.ErrDenied, err)
	case te.StatusCode == http.StatusTooManyRequests, te.StatusCode >= http.StatusInternalServerError:
		return errdefs.Classify(err, errdefs.ErrUnavailable)
	}
	for _, d := range te.Errors {
		switch d.Code {
		case transport.ManifestUnknownErrorCode, transport.BlobUnknownErrorCode, transport.NameUnknownErrorCode:
			return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
		case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
			return fmt.Errorf("%w: %w", errdefs.ErrDenied, err)
		}
	}
	return err
}
