// Command image assembles an OCI image from files on this machine, the way
// ko does, and pushes it: no Docker engine, no base image to pull. The
// development cluster builds its images with it: the driver's (static Go
// binaries), the sandbox image and a busybox test image.
//
//	go run ./hack/image --push 127.0.0.1:5000/tekton-artifacts:dev \
//	  --file bin/artifacts-csi-node:/usr/local/bin/artifacts-csi-node \
//	  --entrypoint /usr/local/bin/artifacts --user 65532:65532
//
// Layers are reproducible: the same files give the same digest.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	var files, links, entrypoint list
	push := flag.String("push", "", "image reference to push to (required); plain HTTP for 127.0.0.1 and localhost")
	user := flag.String("user", "", "user:group the image runs as (default root)")
	flag.Var(&files, "file", "SRC:DEST, a file to add with its mode (repeatable)")
	flag.Var(&links, "link", "DEST:TARGET, a symlink to add (repeatable)")
	flag.Var(&entrypoint, "entrypoint", "entrypoint argument (repeatable)")
	flag.Parse()
	if err := run(*push, *user, files, links, entrypoint); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(push, user string, files, links, entrypoint []string) error {
	if push == "" {
		return fmt.Errorf("--push is required")
	}
	ref, err := name.ParseReference(push, name.Insecure)
	if err != nil {
		return err
	}
	layerTar, err := buildTar(files, links)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile() // holds the layer's diff id
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Config = v1.Config{Entrypoint: entrypoint, User: user, Env: []string{"PATH=/usr/local/bin:/bin"}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	if img, err = mutate.CreatedAt(img, v1.Time{Time: time.Unix(0, 0)}); err != nil {
		return err
	}
	if err := remote.Write(ref, img); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s\n", ref.Context(), d)
	return nil
}

// buildTar writes the files and links, with their parent directories, in
// sorted order, owned by root, with a fixed time.
func buildTar(files, links []string) ([]byte, error) {
	type entry struct {
		hdr  tar.Header
		data []byte
	}
	entries := map[string]entry{}
	addDirs := func(p string) {
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			entries[d] = entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755}}
		}
	}
	for _, f := range files {
		src, dest, ok := strings.Cut(f, ":")
		if !ok || !path.IsAbs(dest) {
			return nil, fmt.Errorf("--file %q: want SRC:/DEST", f)
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		fi, err := os.Stat(src)
		if err != nil {
			return nil, err
		}
		addDirs(dest)
		entries[dest] = entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(dest, "/"), Mode: int64(fi.Mode().Perm()), Size: int64(len(b))}, data: b}
	}
	for _, l := range links {
		dest, target, ok := strings.Cut(l, ":")
		if !ok || !path.IsAbs(dest) {
			return nil, fmt.Errorf("--link %q: want /DEST:TARGET", l)
		}
		addDirs(dest)
		entries[dest] = entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(dest, "/"), Linkname: target, Mode: 0o777}}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range slices.Sorted(maps.Keys(entries)) {
		e := entries[p]
		e.hdr.ModTime, e.hdr.Format = time.Unix(0, 0), tar.FormatPAX
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
