package errdefs

import (
	"errors"
	"fmt"
	"testing"
)

func TestLimit(t *testing.T) {
	base := New("content over 10 bytes", ErrTooLarge)
	err := fmt.Errorf("pull: %w", Limit("maxArtifactBytes", "raise it in the namespace's ConfigMap", base))
	if !errors.Is(err, base) || ClassOf(err) != ErrTooLarge {
		t.Errorf("a limit lost what it wraps: %v", err)
	}
	bound, raise, ok := LimitOf(err)
	if !ok || bound != "maxArtifactBytes" || raise != "raise it in the namespace's ConfigMap" {
		t.Errorf("LimitOf = %q, %q, %v", bound, raise, ok)
	}
	if want := "pull: content over 10 bytes (bound maxArtifactBytes: raise it in the namespace's ConfigMap)"; err.Error() != want {
		t.Errorf("message %q, want %q", err.Error(), want)
	}
	if _, _, ok := LimitOf(base); ok || Limit("x", "y", nil) != nil {
		t.Error("a plain error is not a limit; nil stays nil")
	}
}
