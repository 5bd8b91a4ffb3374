// Package provider is the node plugin's side of the storage provider API
// (proto/provider/v1alpha1): a client that stores artifacts in, and
// fetches them from, a provider serving a unix socket, and the rules both
// sides check (digests, scopes, chunk sizes).
//
// A provider stores blobs by digest and nothing else. This package keeps
// the artifact format: an output is the same OCI manifest, config blob and
// layer it would be in a registry, put as three blobs; an input is fetched
// manifest first, every blob verified against its digest while it streams,
// before anything is extracted.
package provider

import (
	"fmt"
	"regexp"
	"strings"
)

// APIVersion is the provider API version this package speaks.
const APIVersion = "v1alpha1"

// ChunkSize is the largest stream chunk either side sends: 1 MiB, well
// under gRPC's default 4 MiB message limit.
const ChunkSize = 1 << 20

// MaxLocationLength bounds the location a provider reports.
const MaxLocationLength = 1024

var (
	digestPattern     = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	repositoryPattern = regexp.MustCompile(`^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$`)
	namePattern       = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// ValidDigest reports whether d is sha256: and 64 lowercase hex digits,
// the only digests the API carries.
func ValidDigest(d string) bool { return digestPattern.MatchString(d) }

// ValidRepository reports whether r is a scope repository: lowercase
// segments of [a-z0-9] separated by single '.', '_' or '-', joined by '/',
// at most 255 characters, as OCI repository paths are. It can never be
// absolute, hold "..", or be empty, so a provider may use it as a relative
// path.
func ValidRepository(r string) bool { return len(r) <= 255 && repositoryPattern.MatchString(r) }

// ValidName reports whether n can name a provider: a DNS-1123 label. The
// socket is then <providers dir>/<n>.sock.
func ValidName(n string) bool { return namePattern.MatchString(n) }

// ValidLocation reports whether loc is a location a provider may report:
// at most MaxLocationLength printable ASCII characters, no spaces.
func ValidLocation(loc string) bool {
	if len(loc) > MaxLocationLength {
		return false
	}
	for i := 0; i < len(loc); i++ {
		if loc[i] <= ' ' || loc[i] > '~' {
			return false
		}
	}
	return true
}

// Ref names an artifact of provider backend for people and logs:
// backend:repository@digest.
func Ref(backend, repository, digest string) string {
	return backend + ":" + repository + "@" + digest
}

// CheckScope returns an error saying what is wrong with a request's scope.
func CheckScope(namespace, repository string) error {
	var errs []string
	if !namePattern.MatchString(namespace) {
		errs = append(errs, fmt.Sprintf("namespace %q is not a DNS-1123 label", namespace))
	}
	if !ValidRepository(repository) {
		errs = append(errs, fmt.Sprintf("repository %q: want lowercase path segments [a-z0-9._-] separated by '/'", repository))
	}
	if errs != nil {
		return fmt.Errorf("invalid scope: %s", strings.Join(errs, "; "))
	}
	return nil
}
