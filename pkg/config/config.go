// Package config holds the artifact storage settings a volume is published
// with: where outputs go, how they are tagged and compressed, which
// credentials to use, and limits. Settings are string keys, as in the
// config-artifact-storage ConfigMap; each level (cluster, namespace,
// Pipeline, PipelineRun) overrides the keys it sets and inherits the others.
package config

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/google/go-containerregistry/pkg/name"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/store"
	pb "github.com/tektoncd/artifacts-csi-driver/proto/provider/v1alpha1"
)

// Keys of the config-artifact-storage ConfigMap.
const (
	KeyRepository         = "oci.repository"
	KeyTagPattern         = "oci.tagPattern"
	KeyGroupByPipelineRun = "oci.groupByPipelineRun"
	KeyCredentialsSecret  = "oci.credentialsSecret"
	KeyPlainHTTP          = "oci.plainHTTP"
	KeyCompression        = "compression"
	KeyFormat             = "format"
	KeyMaxArtifactBytes   = "maxArtifactBytes"
	KeyVerifyAccess       = "cache.verifyAccess"
	KeyBackend            = "backend"
	KeyProviderRepository = "provider.repository"
	// KeyAllowedRepositories is set at the cluster level only.
	KeyAllowedRepositories = "oci.allowedRepositories"
	// KeyRetentionPolicy and KeyRetentionMaxAge are set at the cluster and
	// namespace levels only; the cluster's are ceilings.
	KeyRetentionPolicy = "retention.policy"
	KeyRetentionMaxAge = "retention.maxAge"
	// KeyProvenanceRequired and KeyProvenanceSameNamespace are ceilings:
	// a level above may turn them on, never off.
	KeyProvenanceRequired      = "provenance.required"
	KeyProvenanceSameNamespace = "provenance.sameNamespace"
)

// Keys lists every key, in the order the documentation gives them.
var Keys = []string{KeyBackend, KeyRepository, KeyTagPattern, KeyGroupByPipelineRun, KeyCredentialsSecret,
	KeyPlainHTTP, KeyAllowedRepositories, KeyProviderRepository, KeyCompression, KeyFormat, KeyMaxArtifactBytes, KeyVerifyAccess,
	KeyRetentionPolicy, KeyRetentionMaxAge, KeyProvenanceRequired, KeyProvenanceSameNamespace}

// levelKeys are the keys a PipelineRun or Pipeline annotation may never
// set, whatever maps annotations to keys: they are the cluster's and the
// namespace owner's.
// (oci.allowedRepositories is the cluster's alone: see bound.)
var levelKeys = []string{KeyRetentionPolicy, KeyRetentionMaxAge}

// Formats of directory outputs (the format key).
const (
	FormatArchive = "archive"
	FormatChunked = "chunked"
)

// DefaultMaxArtifactBytes is the default of maxArtifactBytes: 10Gi.
const DefaultMaxArtifactBytes = archive.DefaultMaxBytes

// Config is a resolved configuration. Use Defaults and Apply to build one.
type Config struct {
	// Backend stores artifacts: "oci" (an OCI registry, the oci.* keys
	// apply) or the name of a storage provider serving
	// <providers dir>/<name>.sock on the node (provider.* keys apply).
	// Default oci.
	Backend string
	// ProviderRepository is where a storage provider keeps the namespace's
	// artifacts, e.g. team-a/artifacts. Default: the pod's namespace (see
	// RepositoryFor).
	ProviderRepository string
	// Repository receives outputs, e.g. registry.example.com/team/artifacts.
	// No default: an output volume fails without one.
	Repository string
	// TagPattern names pushed manifests. Default
	// {{namespace}}.{{taskrun}}.{{artifact}}.
	TagPattern string
	// GroupByPipelineRun makes every artifact of a PipelineRun refer to one
	// per-run subject manifest. Default true.
	GroupByPipelineRun bool
	// CredentialsSecret names a Secret in the pod's namespace holding
	// registry credentials. Default none.
	CredentialsSecret string
	// PlainHTTP talks to the registry over HTTP. Default false.
	PlainHTTP bool
	// Compression of directory outputs. Default gzip.
	Compression archive.Compression
	// Format of directory outputs: FormatArchive (one tar layer, the
	// default, which Konflux and oras read) or FormatChunked (content-
	// defined chunks in packs, docs/format.md; OCI registries only).
	Format string
	// MaxArtifactBytes caps an artifact's size on disk, archive.Usage:
	// file content in 4 KiB blocks, plus 4 KiB per directory. Default 10Gi.
	MaxArtifactBytes int64
	// VerifyAccess re-checks, on every input cache hit, that the pod's
	// credentials can read the manifest. Default true.
	VerifyAccess bool
	// AllowedRepositories are the repository prefixes (a registry host,
	// or a host and leading path segments) outputs may go to, at every
	// level; set at the cluster level only. Default: any.
	AllowedRepositories []string
	// Retention says when the controller removes outputs from the
	// registry. Default: never (Keep, no maximum age).
	Retention Retention
	// Provenance says what an input's provenance must show before the
	// input is mounted. Default: nothing (no verification).
	Provenance Provenance
}

// Provenance is what an input's signed provenance must show before its
// volume is published. The zero value requires nothing.
type Provenance struct {
	// Required: an input is mounted only if a provenance signed by a
	// trusted key (the controller's) is attached to its digest. Default
	// false.
	Required bool
	// SameNamespace: ... and that provenance names the consumer's
	// namespace as the producer's; implies Required. Default false.
	SameNamespace bool
}

// Enabled reports whether inputs are verified at all.
func (p Provenance) Enabled() bool { return p.Required || p.SameNamespace }

// RetentionPolicy says whether the deletion of a run removes its outputs.
type RetentionPolicy string

// Retention policies.
const (
	// RetainKeep leaves outputs in the registry when their run is deleted
	// (the default).
	RetainKeep RetentionPolicy = "Keep"
	// RetainOnRunDeletion removes a run's outputs (tags, then manifests no
	// live run references) once its TaskRun (or, for a plain pod, the pod)
	// is deleted.
	RetainOnRunDeletion RetentionPolicy = "OnRunDeletion"
)

// Retention is when the controller removes outputs from the registry
// (pkg/retention). The zero value keeps everything.
type Retention struct {
	// Policy is RetainKeep (also for "") or RetainOnRunDeletion.
	Policy RetentionPolicy
	// MaxAge, when positive, removes an output once its record is older,
	// even while its run lives. Default 0: no maximum.
	MaxAge time.Duration
}

// OnRunDeletion reports whether a run's deletion removes its outputs.
func (r Retention) OnRunDeletion() bool { return r.Policy == RetainOnRunDeletion }

// Enabled reports whether the controller removes anything at all.
func (r Retention) Enabled() bool { return r.OnRunDeletion() || r.MaxAge > 0 }

// Expired reports whether something created at created is older than
// MaxAge at now; never when MaxAge is 0.
func (r Retention) Expired(created, now time.Time) bool {
	return r.MaxAge > 0 && now.Sub(created) >= r.MaxAge
}

// Defaults returns the configuration with every default.
func Defaults() Config {
	return Config{
		Backend:            store.OCI,
		TagPattern:         artifact.DefaultTagPattern,
		GroupByPipelineRun: true,
		Compression:        archive.Gzip,
		Format:             FormatArchive,
		MaxArtifactBytes:   DefaultMaxArtifactBytes,
		VerifyAccess:       true,
		Retention:          Retention{Policy: RetainKeep},
	}
}

// KeyError says why a key's value is invalid, and at which level it was
// set.
type KeyError struct {
	Level              Level
	Key, Value, Reason string
}

func (e *KeyError) Error() string {
	if e.Level != "" {
		return fmt.Sprintf("%s: %s=%q: %s", e.Level, e.Key, e.Value, e.Reason)
	}
	return fmt.Sprintf("%s=%q: %s", e.Key, e.Value, e.Reason)
}

// Level names where a setting comes from, as error messages and Events
// say it.
type Level string

// Levels, from the lowest. Tekton merges a Pipeline's annotations under
// its PipelineRun's (the run's win) and copies the result onto every pod,
// so the driver sees the two upper levels as one: the pod's annotations.
const (
	LevelCluster    Level = "cluster ConfigMap"
	LevelNamespace  Level = "namespace ConfigMap"
	LevelAnnotation Level = "PipelineRun or Pipeline annotation"
)

// Layer is the keys one level sets.
type Layer struct {
	Level Level
	Data  map[string]string
}

// Resolve applies layers over the defaults, lowest first: each level
// overrides the keys it sets and inherits the others. The security
// settings of a level (see bound) bound the levels above it, which may
// tighten them and never relax them; oci.allowedRepositories is the
// cluster level's alone, and bounds every level's repository. A
// repository not set by the namespace level may be shared by namespaces,
// so its tag pattern must contain {{namespace}}. Every invalid or refused
// value is reported as a *KeyError naming its level; that key then keeps
// the value from the levels below.
func Resolve(layers ...Layer) (Config, error) {
	c := Defaults()
	var (
		errs      []error
		repoLevel Level // which level set the repository
		tagLevel  Level
	)
	for i, l := range layers {
		data, refused := l.Data, []error(nil)
		if l.Level != LevelCluster && l.Level != LevelNamespace {
			data, refused = withoutLevelKeys(data)
		}
		next, err := c.Apply(data)
		if i > 0 {
			next, err = bound(c, next, data, err)
		}
		err = errors.Join(append(refused, unwrapAll(err)...)...)
		for _, e := range unwrapAll(err) {
			var ke *KeyError
			if errors.As(e, &ke) {
				ke.Level = l.Level
			}
			errs = append(errs, e)
		}
		if sets(l.Data, KeyRepository, next.Repository) {
			repoLevel = l.Level
		}
		if sets(l.Data, KeyTagPattern, next.TagPattern) {
			tagLevel = l.Level
		}
		if err := next.allowed(); err != nil {
			err.Level, next.Repository = l.Level, c.Repository
			errs = append(errs, err)
		}
		c = next
	}
	if c.IsProvider() && c.Format == FormatChunked {
		errs = append(errs, &KeyError{Key: KeyFormat, Value: c.Format, Reason: "storage providers take the archive format only, for now"})
		c.Format = FormatArchive
	}
	if !c.IsProvider() && c.Repository != "" && repoLevel != LevelNamespace && !strings.Contains(c.TagPattern, "{{namespace}}") {
		errs = append(errs, &KeyError{Level: tagLevel, Key: KeyTagPattern, Value: c.TagPattern, Reason: fmt.Sprintf(
			"repository %s is set by the %s and may be shared by namespaces: the tag pattern must contain {{namespace}}", c.Repository, repoLevel)})
	}
	return c, errors.Join(errs...)
}

// sets reports whether data sets key to value.
func sets(data map[string]string, key, value string) bool {
	v, ok := data[key]
	return ok && strings.TrimSpace(v) == value
}

// bound returns next, the configuration of a level above prev's that sets
// data, with every ceiling it relaxed put back to prev's value, and err
// (next's errors) with a *KeyError for each. The ceilings are the
// security settings: cache.verifyAccess, maxArtifactBytes and
// oci.plainHTTP, provenance.required and provenance.sameNamespace may be
// tightened, never relaxed; oci.allowedRepositories
// is the cluster level's alone. The retention settings bound how long
// artifacts stay in the registry, as maxArtifactBytes bounds their size:
// retention.policy may be turned to OnRunDeletion, not back to Keep, and
// retention.maxAge only lowered (0, no maximum, is the highest).
func bound(prev, next Config, data map[string]string, err error) (Config, error) {
	errs := unwrapAll(err)
	refuse := func(k, reason string) {
		errs = append(errs, &KeyError{Key: k, Value: strings.TrimSpace(data[k]), Reason: reason})
	}
	if _, set := data[KeyAllowedRepositories]; set {
		refuse(KeyAllowedRepositories, "may be set in the cluster ConfigMap only")
		next.AllowedRepositories = prev.AllowedRepositories
	}
	if prev.VerifyAccess && !next.VerifyAccess {
		refuse(KeyVerifyAccess, "a level below requires access checks on cache hits: it may not be turned off here")
		next.VerifyAccess = true
	}
	if next.MaxArtifactBytes > prev.MaxArtifactBytes {
		refuse(KeyMaxArtifactBytes, fmt.Sprintf("may only be lowered here: a level below allows %s", resource.NewQuantity(prev.MaxArtifactBytes, resource.BinarySI)))
		next.MaxArtifactBytes = prev.MaxArtifactBytes
	}
	if !prev.PlainHTTP && next.PlainHTTP {
		refuse(KeyPlainHTTP, "a level below requires HTTPS: plain HTTP may not be turned on here")
		next.PlainHTTP = false
	}
	if prev.Provenance.Required && !next.Provenance.Required {
		refuse(KeyProvenanceRequired, "a level below requires a signed provenance of every input: it may not be turned off here")
		next.Provenance.Required = true
	}
	if prev.Provenance.SameNamespace && !next.Provenance.SameNamespace {
		refuse(KeyProvenanceSameNamespace, "a level below requires inputs produced in the consumer's namespace: it may not be turned off here")
		next.Provenance.SameNamespace = true
	}
	if prev.Retention.OnRunDeletion() && !next.Retention.OnRunDeletion() {
		refuse(KeyRetentionPolicy, "a level below removes a run's outputs when it is deleted: Keep may not be set here")
		next.Retention.Policy = prev.Retention.Policy
	}
	if prev.Retention.MaxAge > 0 && (next.Retention.MaxAge == 0 || next.Retention.MaxAge > prev.Retention.MaxAge) {
		refuse(KeyRetentionMaxAge, fmt.Sprintf("may only be lowered here: a level below keeps outputs at most %s", FormatAge(prev.Retention.MaxAge)))
		next.Retention.MaxAge = prev.Retention.MaxAge
	}
	return next, errors.Join(errs...)
}

// withoutLevelKeys returns data without the keys of levelKeys, and a
// *KeyError for each it set: a PipelineRun's or a Pipeline's annotation
// sets none of them.
func withoutLevelKeys(data map[string]string) (map[string]string, []error) {
	var refused []error
	out := maps.Clone(data)
	for _, k := range levelKeys {
		if v, set := data[k]; set {
			refused = append(refused, &KeyError{Key: k, Value: strings.TrimSpace(v), Reason: "may be set in the cluster or namespace ConfigMap only"})
			delete(out, k)
		}
	}
	return out, refused
}

// allowed checks c's repository against its allowed prefixes.
func (c Config) allowed() *KeyError {
	if len(c.AllowedRepositories) == 0 || c.Repository == "" || c.IsProvider() {
		return nil
	}
	repo := strings.ToLower(c.Repository)
	for _, p := range c.AllowedRepositories {
		if repo == p || strings.HasPrefix(repo, p+"/") {
			return nil
		}
	}
	return &KeyError{Key: KeyRepository, Value: c.Repository, Reason: fmt.Sprintf(
		"not under a repository the cluster allows (%s: %s)", KeyAllowedRepositories, strings.Join(c.AllowedRepositories, ", "))}
}

func unwrapAll(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// Apply returns c with the keys set in data applied over it. Invalid values
// and unknown keys are all reported, each as a *KeyError, and leave c's
// value for that key; keys that are valid still apply.
func (c Config) Apply(data map[string]string) (Config, error) {
	var errs []error
	bad := func(k, v, format string, args ...any) {
		errs = append(errs, &KeyError{Key: k, Value: v, Reason: fmt.Sprintf(format, args...)})
	}
	parseBool := func(k, v string, dst *bool) {
		if b, err := strconv.ParseBool(v); err != nil {
			bad(k, v, "want true or false")
		} else {
			*dst = b
		}
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := strings.TrimSpace(data[k])
		switch k {
		case KeyRepository:
			if _, err := name.NewRepository(v, name.StrictValidation); err != nil {
				bad(k, v, "want a repository such as registry.example.com/team/artifacts, without tag or digest")
			} else {
				c.Repository = v
			}
		case KeyTagPattern:
			if _, err := artifact.Tag(v, artifact.TagVars{"namespace": "ns", "taskrun": "tr", "pipelinerun": "pr", "pod": "pod", "artifact": "a"}); err != nil {
				bad(k, v, "%v", err)
			} else {
				c.TagPattern = v
			}
		case KeyGroupByPipelineRun:
			parseBool(k, v, &c.GroupByPipelineRun)
		case KeyCredentialsSecret:
			if v != "" && !isDNSSubdomain(v) {
				bad(k, v, "want the name of a Secret in the pod's namespace")
			} else {
				c.CredentialsSecret = v
			}
		case KeyPlainHTTP:
			parseBool(k, v, &c.PlainHTTP)
		case KeyCompression:
			if comp, err := archive.ParseCompression(v); err != nil || v == "" {
				bad(k, v, "want gzip, zstd or none")
			} else {
				c.Compression = comp
			}
		case KeyFormat:
			if v != FormatArchive && v != FormatChunked {
				bad(k, v, "want %s or %s", FormatArchive, FormatChunked)
			} else {
				c.Format = v
			}
		case KeyMaxArtifactBytes:
			q, err := resource.ParseQuantity(v)
			if err != nil || q.Sign() <= 0 {
				bad(k, v, "want a positive size such as 500Mi or 10Gi")
			} else {
				c.MaxArtifactBytes = q.Value()
			}
		case KeyVerifyAccess:
			parseBool(k, v, &c.VerifyAccess)
		case KeyAllowedRepositories:
			if prefixes, err := parsePrefixes(v); err != nil {
				bad(k, v, "%v", err)
			} else {
				c.AllowedRepositories = prefixes
			}
		case KeyBackend:
			if !pb.ValidName(v) { // store.OCI is one
				bad(k, v, "want oci or the name of a storage provider (a DNS-1123 label)")
			} else {
				c.Backend = v
			}
		case KeyProviderRepository:
			if v != "" && !pb.ValidRepository(v) {
				bad(k, v, "want lowercase path segments [a-z0-9._-] separated by '/', such as team-a/artifacts")
			} else {
				c.ProviderRepository = v
			}
		case KeyRetentionPolicy:
			switch p := RetentionPolicy(v); p {
			case RetainKeep, RetainOnRunDeletion:
				c.Retention.Policy = p
			default:
				bad(k, v, "want %s or %s", RetainKeep, RetainOnRunDeletion)
			}
		case KeyProvenanceRequired:
			parseBool(k, v, &c.Provenance.Required)
		case KeyProvenanceSameNamespace:
			parseBool(k, v, &c.Provenance.SameNamespace)
		case KeyRetentionMaxAge:
			if d, err := ParseAge(v); err != nil {
				bad(k, v, "%v", err)
			} else {
				c.Retention.MaxAge = d
			}
		default:
			bad(k, v, "unknown key; known keys: %s", strings.Join(Keys, ", "))
		}
	}
	return c, errors.Join(errs...)
}

// IsProvider reports whether artifacts go to a storage provider rather
// than an OCI registry.
func (c Config) IsProvider() bool { return c.Backend != store.OCI }

// RepositoryFor returns the repository outputs of namespace go to:
// Repository for an OCI registry; for a provider, ProviderRepository, or
// the namespace's name when it is unset.
func (c Config) RepositoryFor(namespace string) string {
	switch {
	case !c.IsProvider():
		return c.Repository
	case c.ProviderRepository != "":
		return c.ProviderRepository
	}
	return namespace
}

// parsePrefixes parses a list of repository prefixes, separated by commas
// or white space: each a registry host (with its port) or a repository,
// lowercase, without a tag, digest or trailing slash.
func parsePrefixes(v string) ([]string, error) {
	var out []string
	for _, p := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }) {
		p = strings.TrimSuffix(p, "/")
		host, _, _ := strings.Cut(p, "/")
		_, hostErr := name.NewRegistry(host, name.StrictValidation)
		_, repoErr := name.NewRepository(p, name.StrictValidation)
		if p != strings.ToLower(p) || hostErr != nil || strings.Contains(p, "/") && repoErr != nil {
			return nil, fmt.Errorf("%q: want registry hosts or repositories such as registry.example.com/team, separated by commas", p)
		}
		out = append(out, p)
	}
	return out, nil
}

// ParseAge parses a retention age: a number of days ("30d"), a Go
// duration of at least a minute ("36h", "90m"), or "0" for no maximum.
func ParseAge(s string) (time.Duration, error) {
	const want = "want a number of days such as 30d, a duration such as 36h, or 0 for no maximum"
	if s == "0" {
		return 0, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil || n == 0 {
			return 0, errors.New(want)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Minute {
		return 0, errors.New(want)
	}
	return d, nil
}

// FormatAge formats an age as ParseAge reads it: in days when it is a
// whole number of them, else as a duration without zero minutes or
// seconds ("36h", "1h30m").
func FormatAge(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func isDNSSubdomain(s string) bool {
	if len(s) > 253 || s == "" {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if part == "" || part[0] == '-' || part[len(part)-1] == '-' {
			return false
		}
		for _, r := range part {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// ReadDir reads a ConfigMap mounted as a directory: one file per key.
// Hidden entries (kubelet's ..data links and timestamped directories) are
// skipped. A missing directory holds no keys.
func ReadDir(dir string) (map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	data := map[string]string{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		data[e.Name()] = string(b)
	}
	return data, nil
}

// Dir is the cluster level of a configuration: the ConfigMap mounted at
// the directory it names (one file per key). It is read at every call.
type Dir string
