package conformance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"

	pb "github.com/tektoncd/artifacts-csi-driver/proto/provider/v1alpha1"
)

// Cases returns the suite's cases, in the order Run runs them. Each uses
// fresh random content, so it neither depends on nor disturbs another.
func Cases() []Case {
	cases := []Case{{Name: "Info", Run: info}}
	for _, rt := range []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"1B", 1},
		{"ChunkSize", pb.ChunkSize},
		{"ChunkSize+1", pb.ChunkSize + 1},
		{"3MiB+7", 3*pb.ChunkSize + 7},
	} {
		cases = append(cases, Case{Name: "RoundTrip/" + rt.name, Run: func(ctx context.Context, e *Env) error {
			return roundTrip(ctx, e, rt.size)
		}})
	}
	return append(cases,
		Case{Name: "Stat", Run: stat},
		Case{Name: "PutExisting", Run: putExisting},
		Case{Name: "Missing", Run: missing},
		Case{Name: "PutDigestMismatch", Run: putDigestMismatch},
		Case{Name: "PutSizeMismatch", Run: putSizeMismatch},
		Case{Name: "PutWithoutHeader", Run: putWithoutHeader},
		Case{Name: "PutWithoutCommit", Run: putWithoutCommit},
		Case{Name: "PutCancelled", Run: putCancelled},
		Case{Name: "PutTooLarge", Run: putTooLarge},
		Case{Name: "InvalidDigest", Run: invalidDigest},
		Case{Name: "InvalidScope", Run: invalidScope},
		Case{Name: "ScopeIsolation", Run: scopeIsolation},
		Case{Name: "ConcurrentPut", Run: concurrentPut},
		Case{Name: "LargeStream", Run: largeStream},
		Case{Name: "GetCancelled", Run: getCancelled},
		Case{Name: "Delete", Run: deleteBlob},
	)
}

// info: the provider speaks v1alpha1 and sha256.
func info(ctx context.Context, e *Env) error {
	resp, err := e.Client.Info(ctx, &pb.InfoRequest{})
	if err != nil {
		return fmt.Errorf("Info: %w", err)
	}
	var errs []error
	if resp.GetName() == "" {
		errs = append(errs, errors.New("Info: empty name"))
	}
	if !slices.Contains(resp.GetApiVersions(), pb.APIVersion) {
		errs = append(errs, fmt.Errorf("Info: api_versions %q lack %q", resp.GetApiVersions(), pb.APIVersion))
	}
	if !slices.Contains(resp.GetDigestAlgorithms(), "sha256") {
		errs = append(errs, fmt.Errorf("Info: digest_algorithms %q lack \"sha256\"", resp.GetDigestAlgorithms()))
	}
	if resp.GetMaxBlobSize() < 0 {
		errs = append(errs, fmt.Errorf("Info: negative max_blob_size %d", resp.GetMaxBlobSize()))
	}
	return errors.Join(errs...)
}

// fits returns an ErrSkipped error when the provider's size limit is
// under size.
func (e *Env) fits(size int64) error {
	if m := e.Info.GetMaxBlobSize(); m > 0 && size > m {
		return fmt.Errorf("%w: the provider accepts blobs of at most %d bytes, the case needs %d", ErrSkipped, m, size)
	}
	return nil
}

// roundTrip: what Put stores, Get returns, in chunks of at most ChunkSize.
func roundTrip(ctx context.Context, e *Env, size int) error {
	if err := e.fits(int64(size)); err != nil {
		return err
	}
	data := e.random(size)
	if _, err := e.putBytes(ctx, e.Scope(), data); err != nil {
		return err
	}
	return e.checkContent(ctx, e.Scope(), data)
}

// stat: Stat reports the size and the location Put reported.
func stat(ctx context.Context, e *Env) error {
	data := e.random(1000)
	put, err := e.putBytes(ctx, e.Scope(), data)
	if err != nil {
		return err
	}
	resp, err := e.Client.Stat(ctx, &pb.StatRequest{Scope: e.Scope(), Digest: digestBytes(data)})
	switch {
	case err != nil:
		return fmt.Errorf("Stat after Put: %w", err)
	case resp.GetSize() != int64(len(data)):
		return fmt.Errorf("Stat: size %d, want %d", resp.GetSize(), len(data))
	case !pb.ValidLocation(resp.GetLocation()):
		return fmt.Errorf("Stat: invalid location %q", resp.GetLocation())
	case resp.GetLocation() != put.GetLocation():
		return fmt.Errorf("Stat: location %q, but Put reported %q", resp.GetLocation(), put.GetLocation())
	}
	return nil
}

// putExisting: a second Put of a blob succeeds with existed and changes
// nothing.
func putExisting(ctx context.Context, e *Env) error {
	data := e.random(3000)
	first, err := e.putBytes(ctx, e.Scope(), data)
	if err != nil {
		return err
	}
	if first.GetExisted() {
		return errors.New("first Put of new content: existed is true, want false")
	}
	second, err := e.putBytes(ctx, e.Scope(), data)
	if err != nil {
		return fmt.Errorf("second Put: %w", err)
	}
	if !second.GetExisted() {
		return errors.New("second Put of the same content: existed is false, want true")
	}
	if second.GetLocation() != first.GetLocation() {
		return fmt.Errorf("second Put: location %q, first %q", second.GetLocation(), first.GetLocation())
	}
	return e.checkContent(ctx, e.Scope(), data)
}

// missing: Get and Stat of an absent blob are NOT_FOUND.
func missing(ctx context.Context, e *Env) error {
	return e.checkAbsent(ctx, e.Scope(), digestBytes(e.random(32)), "of a missing blob")
}

// putDigestMismatch: a commit whose digest does not match stores nothing.
func putDigestMismatch(ctx context.Context, e *Env) error {
	data, other := e.random(2000), e.random(2000)
	_, err := e.put(ctx, putPlan{scope: e.Scope(), data: bytes.NewReader(data), commit: func(_ string, n int64) *pb.PutCommit {
		return &pb.PutCommit{Digest: digestBytes(other), Size: n}
	}})
	if err := wantCode("Put committing another digest", err, codes.InvalidArgument); err != nil {
		return err
	}
	if err := e.checkAbsent(ctx, e.Scope(), digestBytes(other), "of the digest a refused Put committed"); err != nil {
		return err
	}
	return e.checkAbsent(ctx, e.Scope(), digestBytes(data), "of the content a refused Put sent")
}

// putSizeMismatch: a commit whose size does not match stores nothing.
func putSizeMismatch(ctx context.Context, e *Env) error {
	data := e.random(2000)
	for _, delta := range []int64{1, -1} {
		_, err := e.put(ctx, putPlan{scope: e.Scope(), data: bytes.NewReader(data), commit: func(d string, n int64) *pb.PutCommit {
			return &pb.PutCommit{Digest: d, Size: n + delta}
		}})
		if err := wantCode(fmt.Sprintf("Put committing size %+d", delta), err, codes.InvalidArgument); err != nil {
			return err
		}
		if err := e.checkAbsent(ctx, e.Scope(), digestBytes(data), "after a Put with a wrong size"); err != nil {
			return err
		}
	}
	return nil
}

// putWithoutHeader: a stream not starting with a PutHeader is refused and
// stores nothing.
func putWithoutHeader(ctx context.Context, e *Env) error {
	data := e.random(100)
	for _, tc := range []struct {
		name string
		plan putPlan
	}{
		{"an empty Put stream", putPlan{noHeader: true, noCommit: true}},
		{"a Put stream starting with a chunk", putPlan{noHeader: true, data: bytes.NewReader(data)}},
		{"a Put stream of only a commit", putPlan{noHeader: true}},
	} {
		_, err := e.put(ctx, tc.plan)
		if err := wantCode(tc.name, err, codes.InvalidArgument); err != nil {
			return err
		}
	}
	return e.checkAbsent(ctx, e.Scope(), digestBytes(data), "after a Put without a header")
}

// putWithoutCommit: a stream that ends without a commit stores nothing.
func putWithoutCommit(ctx context.Context, e *Env) error {
	size := pb.ChunkSize + 100
	if err := e.fits(int64(size)); err != nil {
		return err
	}
	data := e.random(size)
	_, err := e.put(ctx, putPlan{scope: e.Scope(), data: bytes.NewReader(data), noCommit: true})
	if err := wantCode("Put stream closed without a commit", err, codes.InvalidArgument); err != nil {
		return err
	}
	if err := e.checkAbsent(ctx, e.Scope(), digestBytes(data), "after a Put without a commit"); err != nil {
		return err
	}
	return putNew(ctx, e, data)
}

// putNew checks that data is not stored yet: its Put says existed false.
func putNew(ctx context.Context, e *Env, data []byte) error {
	resp, err := e.putBytes(ctx, e.Scope(), data)
	if err != nil {
		return err
	}
	if resp.GetExisted() {
		return errors.New("Put after a failed Put of the same content: existed is true, want false")
	}
	return e.checkContent(ctx, e.Scope(), data)
}

// putCancelled: a Put cancelled mid-stream stores nothing.
func putCancelled(ctx context.Context, e *Env) error {
	size := 2*pb.ChunkSize + 100
	if err := e.fits(int64(size)); err != nil {
		return err
	}
	data := e.random(size)
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// No commit: one sent after cancel could still reach the provider.
	_, err := e.put(pctx, putPlan{scope: e.Scope(), data: bytes.NewReader(data), noCommit: true, afterChunks: cancel})
	if err := wantCode("Put cancelled before its commit", err, codes.Canceled); err != nil {
		return err
	}
	if err := e.checkAbsent(ctx, e.Scope(), digestBytes(data), "after a cancelled Put"); err != nil {
		return err
	}
	return putNew(ctx, e, data)
}

// putTooLarge: a Put over the advertised limit is RESOURCE_EXHAUSTED.
func putTooLarge(ctx context.Context, e *Env) error {
	limit := e.Info.GetMaxBlobSize()
	switch {
	case limit == 0:
		return fmt.Errorf("%w: the provider advertises no size limit", ErrSkipped)
	case limit >= e.Config.LargeSize:
		return fmt.Errorf("%w: the size limit %d is not under the large size %d", ErrSkipped, limit, e.Config.LargeSize)
	}
	seed := e.seed()
	_, err := e.put(ctx, putPlan{scope: e.Scope(), data: generated(seed, limit+1)})
	if err := wantCode(fmt.Sprintf("Put of %d bytes, over the limit of %d", limit+1, limit), err, codes.ResourceExhausted); err != nil {
		return err
	}
	h := sha256.New()
	io.Copy(h, generated(seed, limit+1))
	if err := e.checkAbsent(ctx, e.Scope(), digestOf(h), "after a Put over the limit"); err != nil {
		return err
	}
	if _, err := e.put(ctx, putPlan{scope: e.Scope(), data: generated(seed, limit)}); err != nil {
		return fmt.Errorf("Put of %d bytes, the limit: %w", limit, err)
	}
	return nil
}

// invalidDigest: every method refuses a malformed digest.
func invalidDigest(ctx context.Context, e *Env) error {
	hex := strings.TrimPrefix(digestBytes(e.random(8)), "sha256:")
	var errs []error
	for _, d := range []string{
		"",
		"sha256:",
		"sha256:xyz",
		"sha256:" + strings.ToUpper(hex),
		"SHA256:" + hex,
		"sha256:" + hex[1:],
		"sha256:" + hex + "0",
		"sha512:" + hex + hex,
		hex,
		"sha256:../../" + hex[6:],
	} {
		errs = append(errs, e.checkInvalid(ctx, e.Scope(), d, fmt.Sprintf("digest %q", d)))
	}
	return errors.Join(errs...)
}

// invalidScope: every method refuses a malformed scope.
func invalidScope(ctx context.Context, e *Env) error {
	ns, repo := e.Config.Namespace, e.Config.Repository
	digest := digestBytes(e.random(8))
	var errs []error
	for _, s := range []*pb.Scope{
		nil,
		{Namespace: ns},
		{Namespace: ns, Repository: "../x"},
		{Namespace: ns, Repository: repo + "/../x"},
		{Namespace: ns, Repository: "/abs"},
		{Namespace: ns, Repository: "/" + repo},
		{Namespace: ns, Repository: repo + "/"},
		{Namespace: ns, Repository: strings.Replace(repo, "/", "//", 1) + "//x"},
		{Namespace: ns, Repository: "UPPER"},
		{Namespace: ns, Repository: repo + "/UPPER"},
		{Namespace: ns, Repository: repo + "/a b"},
		{Namespace: ns, Repository: repo + "/" + strings.Repeat("a", 256)},
		{Namespace: ns, Repository: "."},
		{Repository: repo},
		{Namespace: "Bad_NS", Repository: repo},
		{Namespace: "-x", Repository: repo},
		{Namespace: strings.Repeat("a", 64), Repository: repo},
	} {
		errs = append(errs, e.checkInvalid(ctx, s, digest, fmt.Sprintf("namespace %q, repository %q", s.GetNamespace(), s.GetRepository())))
	}
	return errors.Join(errs...)
}

// checkInvalid checks that Get, Stat, Delete and Put are INVALID_ARGUMENT
// for a scope and digest, one of which is malformed.
func (e *Env) checkInvalid(ctx context.Context, scope *pb.Scope, digest, what string) error {
	var errs []error
	_, err := e.Client.Stat(ctx, &pb.StatRequest{Scope: scope, Digest: digest})
	errs = append(errs, wantCode("Stat of "+what, err, codes.InvalidArgument))
	_, _, err = e.get(ctx, scope, digest, nil)
	errs = append(errs, wantCode("Get of "+what, err, codes.InvalidArgument))
	_, err = e.Client.Delete(ctx, &pb.DeleteRequest{Scope: scope, Digest: digest})
	errs = append(errs, wantCode("Delete of "+what, err, codes.InvalidArgument))
	_, err = e.put(ctx, putPlan{scope: scope, data: strings.NewReader("x"), commit: func(d string, n int64) *pb.PutCommit {
		if !pb.ValidDigest(digest) {
			d = digest
		}
		return &pb.PutCommit{Digest: d, Size: n}
	}})
	errs = append(errs, wantCode("Put of "+what, err, codes.InvalidArgument))
	return errors.Join(errs...)
}

// scopeIsolation: a blob put in one repository is not in another.
func scopeIsolation(ctx context.Context, e *Env) error {
	other := &pb.Scope{Namespace: e.Config.Namespace, Repository: e.Config.Repository + "/isolation"}
	data := e.random(500)
	if _, err := e.putBytes(ctx, e.Scope(), data); err != nil {
		return err
	}
	if err := e.checkAbsent(ctx, other, digestBytes(data), "in another repository"); err != nil {
		return err
	}
	resp, err := e.putBytes(ctx, other, data)
	if err != nil {
		return err
	}
	if resp.GetExisted() {
		return errors.New("Put in another repository: existed is true, want false")
	}
	if _, err := e.Client.Delete(ctx, &pb.DeleteRequest{Scope: other, Digest: digestBytes(data)}); err != nil {
		return fmt.Errorf("Delete in the other repository: %w", err)
	}
	return e.checkContent(ctx, e.Scope(), data)
}

// concurrentPut: Puts of the same blob at once all succeed.
func concurrentPut(ctx context.Context, e *Env) error {
	const n = 8
	size := 2*pb.ChunkSize + 3
	if err := e.fits(int64(size)); err != nil {
		return err
	}
	data := e.random(size)
	var (
		wg      sync.WaitGroup
		errs    = make([]error, n)
		existed = make([]bool, n)
	)
	for i := range n {
		wg.Go(func() {
			resp, err := e.putBytes(ctx, e.Scope(), data)
			errs[i], existed[i] = err, resp.GetExisted()
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%d concurrent Puts of one blob: %w", n, err)
	}
	if !slices.Contains(existed, false) {
		return fmt.Errorf("%d concurrent Puts of new content: every one says existed", n)
	}
	return e.checkContent(ctx, e.Scope(), data)
}

// largeStream: a large blob, sent in chunks of varied sizes, comes back
// whole in chunks of at most ChunkSize.
func largeStream(ctx context.Context, e *Env) error {
	size := e.Config.LargeSize
	if err := e.fits(size); err != nil {
		return err
	}
	seed := e.seed()
	sizes := []int{pb.ChunkSize, 1, 64 << 10, pb.ChunkSize - 1, 4093}
	put, err := e.put(ctx, putPlan{scope: e.Scope(), data: generated(seed, size), sizes: sizes})
	if err != nil {
		return fmt.Errorf("Put of %d bytes: %w", size, err)
	}
	if put.GetExisted() {
		return errors.New("Put of new content: existed is true, want false")
	}
	h := sha256.New()
	io.Copy(h, generated(seed, size))
	want := digestOf(h)
	n, got, err := e.get(ctx, e.Scope(), want, nil)
	switch {
	case err != nil:
		return fmt.Errorf("Get of %d bytes after %d: %w", size, n, err)
	case n != size || got != want:
		return fmt.Errorf("Get: %d bytes hashing to %s, want %d hashing to %s", n, got, size, want)
	}
	resp, err := e.Client.Stat(ctx, &pb.StatRequest{Scope: e.Scope(), Digest: want})
	if err != nil {
		return fmt.Errorf("Stat: %w", err)
	}
	if resp.GetSize() != size {
		return fmt.Errorf("Stat: size %d, want %d", resp.GetSize(), size)
	}
	return nil
}

// getCancelled: a Get cancelled mid-stream leaves the provider serving.
func getCancelled(ctx context.Context, e *Env) error {
	size := 4*pb.ChunkSize + 5
	if err := e.fits(int64(size)); err != nil {
		return err
	}
	data := e.random(size)
	if _, err := e.putBytes(ctx, e.Scope(), data); err != nil {
		return err
	}
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := e.Client.Get(gctx, &pb.GetRequest{Scope: e.Scope(), Digest: digestBytes(data)})
	if err != nil {
		return fmt.Errorf("Get: %w", err)
	}
	if _, err := stream.Recv(); err != nil {
		return fmt.Errorf("Get, first chunk: %w", err)
	}
	cancel()
	for err == nil {
		_, err = stream.Recv()
	}
	if err := wantCode("Get cancelled after its first chunk", err, codes.Canceled); err != nil {
		return err
	}
	if _, err := e.Client.Stat(ctx, &pb.StatRequest{Scope: e.Scope(), Digest: digestBytes(data)}); err != nil {
		return fmt.Errorf("Stat after a cancelled Get: %w", err)
	}
	return e.checkContent(ctx, e.Scope(), data)
}

// deleteBlob: Delete removes a blob, and deleting an absent one succeeds.
func deleteBlob(ctx context.Context, e *Env) error {
	data := e.random(700)
	d := digestBytes(data)
	if _, err := e.putBytes(ctx, e.Scope(), data); err != nil {
		return err
	}
	for i := range 2 {
		if _, err := e.Client.Delete(ctx, &pb.DeleteRequest{Scope: e.Scope(), Digest: d}); err != nil {
			return fmt.Errorf("Delete #%d: %w", i+1, err)
		}
		if err := e.checkAbsent(ctx, e.Scope(), d, "after Delete"); err != nil {
			return err
		}
	}
	if _, err := e.Client.Delete(ctx, &pb.DeleteRequest{Scope: e.Scope(), Digest: digestBytes(e.random(8))}); err != nil {
		return fmt.Errorf("Delete of a blob never stored: %w", err)
	}
	return putNew(ctx, e, data)
}
