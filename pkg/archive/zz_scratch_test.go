package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
)

func exp(b []byte) archive.Expect {
	s := sha256.Sum256(b)
	return archive.Expect{Digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", s)}, Size: int64(len(b))}
}

func TestScratchEvict(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "src/f", Typeflag: tar.TypeReg, Mode: 0644, Size: 1})
	tw.Write([]byte("x"))
	for i := 0; i < 127; i++ {
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%03d/", i), Typeflag: tar.TypeDir, Mode: 0755})
	}
	tw.WriteHeader(&tar.Header{Name: "new/l", Typeflag: tar.TypeLink, Linkname: "src/f"})
	tw.Close()
	dest := filepath.Join(t.TempDir(), "dest")
	_, _, err := archive.Extract(context.Background(), bytes.NewReader(buf.Bytes()), exp(buf.Bytes()), dest, archive.Limits{})
	t.Log(err)
}

func TestScratchTrunc(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0644, Size: 100000})
	tw.Write(bytes.Repeat([]byte("x"), 100000))
	tw.Close()
	for _, c := range []archive.Compression{archive.None, archive.Gzip, archive.Zstd} {
		var z bytes.Buffer
		w, _ := archive.NewCompressor(&z, c)
		w.Write(buf.Bytes())
		w.Close()
		b := z.Bytes()
		for _, cut := range []int{len(b) / 2, len(b) - 4, len(b) - 1} {
			tb := b[:cut]
			dest := filepath.Join(t.TempDir(), "dest")
			_, _, err := archive.Extract(context.Background(), bytes.NewReader(tb), exp(tb), dest, archive.Limits{})
			t.Log(c, cut, len(b), err)
		}
		// trailing garbage
		tb := append(append([]byte{}, b...), []byte("garbage!garbage!")...)
		dest := filepath.Join(t.TempDir(), "dest")
		_, _, err := archive.Extract(context.Background(), bytes.NewReader(tb), exp(tb), dest, archive.Limits{})
		t.Log(c, "trailing", err)
	}
}

type zeroR struct{}

func (zeroR) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestScratchBomb(t *testing.T) {
	for _, c := range []archive.Compression{archive.Gzip, archive.Zstd} {
		start := time.Now()
		var z bytes.Buffer
		w, _ := archive.NewCompressor(&z, c)
		tw := tar.NewWriter(w)
		tw.WriteHeader(&tar.Header{Name: "zero", Typeflag: tar.TypeReg, Mode: 0644, Size: 2 << 30})
		io.CopyN(tw, zeroR{}, 2<<30)
		tw.Close()
		w.Close()
		t.Log(c, z.Len(), time.Since(start))
	}
	_ = os.Getpid
}
