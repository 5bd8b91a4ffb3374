// Package broker hands a node plugin the registry credentials of the pods
// bound to its node, and of no other pod: what kubelet's Node authorizer
// lets kubelet read. The node plugin then needs no permission on Secrets
// or ServiceAccounts at all, so a compromised node yields no more secrets
// than its kubelet already could.
//
// The controller serves the broker (Server) over HTTPS with a certificate
// it makes itself (EnsureCertificate) and publishes in a ConfigMap; the
// node plugin asks it (Client) with a ServiceAccount token of audience
// Audience, bound to its own pod. The server authenticates the token with
// a TokenReview, takes the node from the token's node-name claim (which
// the API server writes), checks that the pod named is bound to that node,
// and answers the pod's credentials in the brief's order: the Secret
// oci.credentialsSecret names (in the cluster or namespace ConfigMap;
// annotations cannot name one), then the pod ServiceAccount's
// imagePullSecrets. Only Secrets of type kubernetes.io/dockerconfigjson or
// dockercfg are ever returned.
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	authenticationclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tektoncd/artifacts-csi-driver/pkg/config"
	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
)

// Path is where the broker answers, with POST.
const Path = "/v1alpha1/credentials"

// Audience is the audience of the node plugin's token for the broker: a
// token for the API server is never sent to it, nor accepted by it.
const Audience = "artifacts.tekton.dev/broker"

// nodeNameExtra is the claim of a pod-bound token naming the pod's node.
const nodeNameExtra = "authentication.kubernetes.io/node-name"

// maxRequestBytes bounds a request body.
const maxRequestBytes = 4 << 10

// Request names the pod whose credentials a node plugin asks for.
type Request struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	UID       string `json:"uid"`
}

// Server answers node plugins' requests. It is safe for concurrent use.
type Server struct {
	// Tokens authenticates node plugins. Required.
	Tokens authenticationclient.TokenReviewInterface
	// Reader reads pods, ServiceAccounts, Secrets and ConfigMaps from the
	// API server (GET only: nothing is listed or cached). Required.
	Reader client.Reader
	// NodeUser is the username of the node plugin's ServiceAccount,
	// system:serviceaccount:<namespace>:<name>. Required.
	NodeUser string
	// ClusterConfig is the cluster level config-artifact-storage
	// ConfigMap. Required.
	ClusterConfig client.ObjectKey
}

// httpError is an answer with a status code.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func fail(code int, format string, args ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != Path {
		http.Error(w, "POST "+Path+" only", http.StatusNotFound)
		return
	}
	snap, err := s.answer(r)
	if err != nil {
		var he *httpError
		if !errors.As(err, &he) {
			he = &httpError{code: http.StatusServiceUnavailable, msg: err.Error()}
		}
		klog.FromContext(r.Context()).V(2).Info("Refused a credentials request", "code", he.code, "reason", he.msg)
		http.Error(w, he.msg, he.code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(snap)
}

// answer authenticates the request and collects the pod's credentials.
func (s *Server) answer(r *http.Request) (credentials.Snapshot, error) {
	ctx := r.Context()
	node, err := s.authenticate(ctx, r.Header.Get("Authorization"))
	if err != nil {
		return credentials.Snapshot{}, err
	}
	var req Request
	if err := json.NewDecoder(io.LimitReader(r.Body, maxRequestBytes)).Decode(&req); err != nil {
		return credentials.Snapshot{}, fail(http.StatusBadRequest, "request: %v", err)
	}
	if len(validation.IsDNS1123Label(req.Namespace)) > 0 || len(validation.IsDNS1123Subdomain(req.Pod)) > 0 || req.UID == "" {
		return credentials.Snapshot{}, fail(http.StatusBadRequest, "request: want a namespace, a pod name and its uid")
	}
	pod := &corev1.Pod{}
	err = s.Reader.Get(ctx, client.ObjectKey{Namespace: req.Namespace, Name: req.Pod}, pod)
	switch {
	case apierrors.IsNotFound(err):
		return credentials.Snapshot{}, fail(http.StatusNotFound, "pod %s/%s not found", req.Namespace, req.Pod)
	case err != nil:
		return credentials.Snapshot{}, fmt.Errorf("get pod %s/%s: %w", req.Namespace, req.Pod, err)
	case string(pod.UID) != req.UID:
		return credentials.Snapshot{}, fail(http.StatusNotFound, "pod %s/%s is another pod now (uid %s)", req.Namespace, req.Pod, pod.UID)
	case pod.Spec.NodeName != node:
		return credentials.Snapshot{}, fail(http.StatusForbidden, "pod %s/%s is not bound to node %s", req.Namespace, req.Pod, node)
	}
	return s.collect(ctx, pod)
}

// authenticate returns the node of the node plugin whose token the
// Authorization header carries.
func (s *Server) authenticate(ctx context.Context, header string) (string, error) {
	token, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || token == "" {
		return "", fail(http.StatusUnauthorized, "a bearer token is required")
	}
	tr, err := s.Tokens.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{
		Token: token, Audiences: []string{Audience}}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("review token: %w", err)
	}
	st := tr.Status
	switch {
	case !st.Authenticated:
		return "", fail(http.StatusUnauthorized, "token not authenticated for audience %s: %s", Audience, st.Error)
	case !slices.Contains(st.Audiences, Audience):
		return "", fail(http.StatusUnauthorized, "token not for audience %s", Audience)
	case st.User.Username != s.NodeUser:
		return "", fail(http.StatusForbidden, "%s is not the node plugin", st.User.Username)
	case len(st.User.Extra[nodeNameExtra]) != 1 || st.User.Extra[nodeNameExtra][0] == "":
		return "", fail(http.StatusForbidden, "the token is not bound to a pod on a node (no %s claim)", nodeNameExtra)
	}
	return st.User.Extra[nodeNameExtra][0], nil
}

// collect returns the credentials of pod: the Secret the configuration's
// oci.credentialsSecret names, then its ServiceAccount's
// imagePullSecrets.
func (s *Server) collect(ctx context.Context, pod *corev1.Pod) (credentials.Snapshot, error) {
	name, err := s.credentialsSecret(ctx, pod.Namespace)
	if err != nil {
		return credentials.Snapshot{}, err
	}
	var snap credentials.Snapshot
	add := func(name string, optional bool) error {
		sec := &corev1.Secret{}
		err := s.Reader.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: name}, sec)
		switch {
		case apierrors.IsNotFound(err) && optional:
			return nil
		case apierrors.IsNotFound(err):
			return fail(http.StatusNotFound, "%s %s/%s not found", config.KeyCredentialsSecret, pod.Namespace, name)
		case err != nil:
			return fmt.Errorf("get Secret %s/%s: %w", pod.Namespace, name, err)
		}
		if err := snap.Add(sec); err != nil {
			return fail(http.StatusUnprocessableEntity, "%v", err)
		}
		return nil
	}
	if name != "" {
		if err := add(name, false); err != nil {
			return credentials.Snapshot{}, err
		}
	}
	sa := &corev1.ServiceAccount{}
	saName := pod.Spec.ServiceAccountName
	if saName == "" {
		saName = "default"
	}
	err = s.Reader.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: saName}, sa)
	if apierrors.IsNotFound(err) {
		return snap, nil
	}
	if err != nil {
		return credentials.Snapshot{}, fmt.Errorf("get ServiceAccount %s/%s: %w", pod.Namespace, saName, err)
	}
	for _, ref := range sa.ImagePullSecrets {
		if err := add(ref.Name, true); err != nil {
			return credentials.Snapshot{}, err
		}
	}
	return snap, nil
}

// credentialsSecret is the oci.credentialsSecret of namespace: the
// namespace's labelled ConfigMap's, else the cluster's. Annotations cannot
// set it.
func (s *Server) credentialsSecret(ctx context.Context, namespace string) (string, error) {
	cfg, err := config.ReadNamespace(ctx, s.Reader, s.ClusterConfig, namespace)
	var ke *config.KeyError
	if err != nil && !errors.As(err, &ke) {
		return "", err
	}
	// Invalid values are the node plugin's to report, on the pod.
	return cfg.CredentialsSecret, nil
}
