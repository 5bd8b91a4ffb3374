package provider_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/tektoncd/artifacts-csi-driver/internal/testregistry"
	"github.com/tektoncd/artifacts-csi-driver/internal/testtree"
	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provider/filesystem"
)

// BenchmarkPushPull stores testtree's tree (3.4 MB in 9 entries) and
// fetches it back, verified and extracted, through the filesystem
// provider over a unix socket, side by side with the baseline: the same
// through pkg/oci to an in-process registry over loopback HTTP.
//
//	go test -run '^$' -bench PushPull -benchtime 50x ./pkg/provider
func BenchmarkPushPull(b *testing.B) {
	ctx := context.Background()
	src := filepath.Join(b.TempDir(), "src")
	testtree.Write(b, src, 7)
	meta := artifact.Metadata{Name: "bench", Namespace: "bench"}

	dir := b.TempDir()
	p, err := filesystem.New(ctx, filesystem.Options{Root: filepath.Join(dir, "store")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	c := serveProvider(b, dir, "filesystem", p)
	scope := provider.Scope{Namespace: "bench", Repository: "bench"}

	repo, _, err := oci.ParseRepositoryTag(testregistry.InMemory(b, true)+"/bench/artifacts", oci.PlainHTTP)
	if err != nil {
		b.Fatal(err)
	}
	reg := oci.New(oci.Options{})

	b.Run("push/provider-filesystem", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Push(ctx, provider.PushRequest{Backend: "filesystem", Scope: scope, Dir: src, Metadata: meta}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("push/oci-baseline", func(b *testing.B) {
		for b.Loop() {
			if _, err := reg.Push(ctx, oci.PushRequest{Dir: src, Repository: repo, Metadata: meta}); err != nil {
				b.Fatal(err)
			}
		}
	})
	pres, err := c.Push(ctx, provider.PushRequest{Backend: "filesystem", Scope: scope, Dir: src, Metadata: meta})
	if err != nil {
		b.Fatal(err)
	}
	ores, err := reg.Push(ctx, oci.PushRequest{Dir: src, Repository: repo, Metadata: meta})
	if err != nil {
		b.Fatal(err)
	}
	ref, _ := oci.ParseReference(ores.Ref.Name(), oci.PlainHTTP)
	pull := func(b *testing.B, fetch func(dest string) error) {
		for b.Loop() {
			dest := filepath.Join(b.TempDir(), "dest")
			if err := fetch(dest); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.RemoveAll(dest)
			b.StartTimer()
		}
	}
	b.Run("pull/provider-filesystem", func(b *testing.B) {
		pull(b, func(dest string) error {
			_, err := c.Pull(ctx, "filesystem", scope, pres.Manifest.Digest.String(), dest, archive.Limits{})
			return err
		})
	})
	b.Run("pull/oci-baseline", func(b *testing.B) {
		pull(b, func(dest string) error {
			_, err := reg.Pull(ctx, ref, dest)
			return err
		})
	})
}
