// Package providerv1alpha1 is the storage provider API: the code protoc
// generates from provider.proto, and beside it the rules that both sides
// check: the API version, the chunk size,
// and what a digest, a scope, a provider name and a location may be. They
// are here, in a package that imports only the generated code's own
// dependencies, so that a provider (pkg/provider/filesystem, a third
// party's) and the conformance suite share them with the node plugin's
// client without compiling any of the node plugin.
package providerv1alpha1

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
