package broker

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/errdefs"
	"github.com/tektoncd/artifacts-csi-driver/pkg/volume"
)

// maxResponseBytes bounds an answer: a few pull secrets.
const maxResponseBytes = 1 << 20

// Client asks the broker for pods' credentials. It is safe for concurrent
// use.
type Client struct {
	url, tokenFile, caFile string
	timeout                time.Duration

	mu     sync.Mutex
	ca     []byte // the CA file's content the transport trusts
	client *http.Client
}

// ClientOptions configures a Client.
type ClientOptions struct {
	// URL is the broker's base URL, e.g.
	// https://artifacts-controller.artifacts-csi.svc:9443. Required.
	URL string
	// TokenFile holds the node plugin's token of audience Audience
	// (a projected ServiceAccount token, which kubelet refreshes; read at
	// every request). Required.
	TokenFile string
	// CAFile holds the PEM certificate the broker serves with (the
	// ConfigMap the controller publishes, mounted; read again when it
	// changes). Required.
	CAFile string
	// Timeout bounds a request. Default 10s.
	Timeout time.Duration
}

// NewClient returns a client for o.
func NewClient(o ClientOptions) (*Client, error) {
	if o.URL == "" || o.TokenFile == "" || o.CAFile == "" {
		return nil, errors.New("broker client: URL, TokenFile and CAFile are required")
	}
	if !strings.HasPrefix(o.URL, "https://") {
		return nil, fmt.Errorf("broker client: URL %q: want https://", o.URL)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	return &Client{url: strings.TrimSuffix(o.URL, "/") + Path, tokenFile: o.TokenFile, caFile: o.CAFile, timeout: o.Timeout}, nil
}

// Credentials returns the registry credentials of pod, which must be
// bound to this node. Errors are classed: the broker or the API server
// unreachable, or its certificate not published yet, are
// errdefs.ErrUnavailable; a Secret the configuration names but that is
// missing is errdefs.ErrPrecondition; a Secret of the wrong type is
// credentials.ErrInvalid; a refusal of this node is errdefs.ErrPrecondition
// (a deployment error: the plugin's token or the broker's configuration).
func (c *Client) Credentials(ctx context.Context, pod volume.Pod) (credentials.Snapshot, error) {
	hc, err := c.httpClient()
	if err != nil {
		return credentials.Snapshot{}, err
	}
	token, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return credentials.Snapshot{}, errdefs.Classify(fmt.Errorf("credentials broker: read token: %w", err), errdefs.ErrUnavailable)
	}
	body, _ := json.Marshal(Request{Namespace: pod.Namespace, Pod: pod.Name, UID: pod.UID})
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return credentials.Snapshot{}, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return credentials.Snapshot{}, errdefs.Classify(fmt.Errorf("credentials broker: %w", err), errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return credentials.Snapshot{}, errdefs.Classify(fmt.Errorf("credentials broker: %w", err), errdefs.ErrUnavailable)
	}
	if resp.StatusCode != http.StatusOK {
		msg := fmt.Sprintf("credentials broker: %s: %s", resp.Status, strings.TrimSpace(string(b)))
		switch resp.StatusCode {
		case http.StatusUnprocessableEntity:
			return credentials.Snapshot{}, fmt.Errorf("%w: %s", credentials.ErrInvalid, msg)
		case http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden, http.StatusBadRequest:
			return credentials.Snapshot{}, errdefs.New(msg, errdefs.ErrPrecondition)
		}
		return credentials.Snapshot{}, errdefs.New(msg, errdefs.ErrUnavailable)
	}
	var snap credentials.Snapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		return credentials.Snapshot{}, errdefs.Classify(fmt.Errorf("credentials broker: answer: %w", err), errdefs.ErrUnavailable)
	}
	return snap, nil
}

// httpClient returns a client trusting the CA file's current content.
func (c *Client) httpClient() (*http.Client, error) {
	ca, err := os.ReadFile(c.caFile)
	if err != nil {
		return nil, errdefs.Classify(fmt.Errorf("credentials broker: its certificate is not published yet: %w", err), errdefs.ErrUnavailable)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client != nil && bytes.Equal(ca, c.ca) {
		return c.client, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errdefs.New("credentials broker: "+c.caFile+" holds no PEM certificate", errdefs.ErrUnavailable)
	}
	c.ca = ca
	c.client = &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     time.Minute,
	}}
	return c.client, nil
}
