package archive

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Expect is what a blob must be: its digest and, when known, its size.
type Expect struct {
	Digest v1.Hash // sha256 of the blob as stored; required
	Size   int64   // bytes; negative means unknown
}

// verifier hashes and counts what passes through it, and fails as soon as
// more bytes arrive than the expected size, so a blob whose declared size
// lies cannot make us read without bound.
type verifier struct {
	r    io.Reader
	want Expect
	h    hash.Hash
	n    int64
}

func newVerifier(r io.Reader, want Expect) (*verifier, error) {
	if want.Digest.Algorithm != "sha256" || len(want.Digest.Hex) != 64 {
		return nil, fmt.Errorf("expected digest %q: only sha256 digests are supported", want.Digest)
	}
	return &verifier{r: r, want: want, h: sha256.New()}, nil
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.want.Size >= 0 && v.n > v.want.Size {
		return n, fmt.Errorf("%w: blob %s is longer than its declared %d bytes", ErrDigestMismatch, v.want.Digest, v.want.Size)
	}
	return n, err
}

// drain reads what is left of the stream and checks digest and size.
func (v *verifier) drain() error {
	if _, err := io.Copy(io.Discard, v); err != nil {
		return fmt.Errorf("read blob %s: %w", v.want.Digest, err)
	}
	if v.want.Size >= 0 && v.n != v.want.Size {
		return fmt.Errorf("%w: blob %s has %d bytes, %d declared", ErrDigestMismatch, v.want.Digest, v.n, v.want.Size)
	}
	if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want.Digest.Hex {
		return fmt.Errorf("%w: blob is sha256:%s, expected %s", ErrDigestMismatch, got, v.want.Digest)
	}
	return nil
}

// limitedReader fails with ErrLimitExceeded, saying why, once more than max
// bytes were read. The extractor moves max as it goes, so that every part
// of the stream (headers, content, what follows the end) has its own bound:
// a decompression bomb stops here whatever its ratio.
type limitedReader struct {
	r    io.Reader
	n    int64
	max  int64
	what string // the bound, for the error: "file content larger than ..."
}

// allow lets n more bytes through, described by what.
func (l *limitedReader) allow(n int64, what string) {
	l.max, l.what = satAdd(l.n, n), what
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n >= l.max {
		return 0, fmt.Errorf("%w: %s", ErrLimitExceeded, l.what)
	}
	p = p[:min(int64(len(p)), l.max-l.n+1)]
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.max {
		return n, fmt.Errorf("%w: %s", ErrLimitExceeded, l.what)
	}
	return n, err
}
