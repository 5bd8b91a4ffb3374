package archive_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
)

// Pack a directory into a reproducible tar+gzip blob, then verify and
// extract the blob somewhere else.
func ExamplePack() {
	tmp, err := os.MkdirTemp("", "archive-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "src")
	if err := os.MkdirAll(filepath.Join(src, "models"), 0o755); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "models", "weights.bin"), []byte("0123456789"), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "README"), []byte("hello\n"), 0o600); err != nil {
		log.Fatal(err)
	}
	if err := os.Symlink("models/weights.bin", filepath.Join(src, "latest")); err != nil {
		log.Fatal(err)
	}

	// Pack and compress in one pass; the digest identifies the content.
	pack := func() (*bytes.Buffer, archive.Stats, v1.Hash) {
		var blob bytes.Buffer
		zw, err := archive.NewCompressor(&blob, archive.Gzip)
		if err != nil {
			log.Fatal(err)
		}
		stats, err := archive.Pack(context.Background(), src, zw)
		if err != nil {
			log.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			log.Fatal(err)
		}
		sum := sha256.Sum256(blob.Bytes())
		return &blob, stats, v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	}
	blob, packed, digest := pack()
	fmt.Printf("packed %d entries, %d bytes\n", packed.Entries, packed.Bytes)

	// Touching the tree does not change the digest: packing is reproducible.
	if err := os.Chtimes(filepath.Join(src, "README"), time.Unix(1e9, 0), time.Unix(1e9, 0)); err != nil {
		log.Fatal(err)
	}
	_, _, again := pack()
	fmt.Println("same digest when packed again:", again == digest)

	dest := filepath.Join(tmp, "dest")
	want := archive.Expect{Digest: digest, Size: int64(blob.Len())}
	extracted, comp, err := archive.Extract(context.Background(), blob, want, dest, archive.Limits{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("extracted %d entries, %d bytes from a %s blob\n", extracted.Entries, extracted.Bytes, comp.ArchiveName())
	// Limits.MaxBytes bounds the footprint: whole blocks per file and
	// directory; the short symlink lives in its inode.
	measured, err := archive.Measure(context.Background(), dest, archive.Limits{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("footprint %d bytes, %d inodes; measured again: %v\n", extracted.Usage.Bytes, extracted.Usage.Inodes, measured == extracted.Usage)
	target, _ := os.Readlink(filepath.Join(dest, "latest"))
	data, _ := os.ReadFile(filepath.Join(dest, "latest"))
	fmt.Printf("latest -> %s: %s\n", target, data)
	fi, _ := os.Stat(filepath.Join(dest, "README"))
	fmt.Println("README mode:", fi.Mode())

	// Output:
	// packed 4 entries, 16 bytes
	// same digest when packed again: true
	// extracted 4 entries, 16 bytes from a tar+gzip blob
	// footprint 12288 bytes, 4 inodes; measured again: true
	// latest -> models/weights.bin: 0123456789
	// README mode: -rw-------
}
