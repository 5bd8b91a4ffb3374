// Package filesystem is the reference storage provider
// (proto/provider/v1alpha1): it keeps blobs as content-addressed files
// under a root directory, a hostPath or a ReadWriteMany volume shared by
// the nodes.
//
// The layout is <root>/<repository>/blobs/sha256/<hex>, with uploads
// staged in <root>/.staging/ until their digest is verified. Every file
// access goes through an os.Root opened on the root directory, so no
// request, whatever its scope, reaches a file outside it.
package filesystem

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	pb "github.com/tektoncd/artifacts-csi-driver/proto/provider/v1alpha1"
)

// Name is the provider's name, as Info reports it and as namespaces select
// it (`backend: filesystem`).
const Name = "filesystem"

const (
	stagingDir = ".staging"
	dirMode    = 0o750
	fileMode   = 0o640
)

// Options configures a Provider. The zero value is not useful: Root is
// required, and NamespaceScoped is false there (NewServerOptions defaults
// it to true).
type Options struct {
	// Root is the directory holding the blobs; it is created if missing.
	// Required.
	Root string
	// NamespaceScoped makes a request's repository be its namespace or lie
	// under it ("<namespace>/..."), else the request is PERMISSION_DENIED,
	// so one namespace cannot read another's blobs by digest. The daemon's
	// default is true.
	NamespaceScoped bool
	// MaxBlobSize bounds the size of a blob Put accepts, in bytes; a larger
	// one is RESOURCE_EXHAUSTED. Default 0: unbounded.
	MaxBlobSize int64
	// Version is the build reported by Info. Default empty.
	Version string
}

// Provider serves the provider API on a directory. Every method is
// idempotent and safe for concurrent use, also for the same digest. Close
// it when done.
type Provider struct {
	pb.UnimplementedProviderServer

	opts Options
	root *os.Root
	// base is the root's absolute path as a file:// URL, without the
	// trailing slash; locations extend it.
	base string
}

var _ pb.ProviderServer = (*Provider)(nil)

// New opens (creating it if needed) the root directory o.Root and removes
// the uploads a previous run left in its staging directory.
//
// When several providers share the root (a ReadWriteMany volume), a
// provider starting while another has a Put in flight removes that Put's
// staging file; the other Put then fails UNAVAILABLE and its client
// retries it.
func New(ctx context.Context, o Options) (*Provider, error) {
	if o.Root == "" {
		return nil, errors.New("filesystem provider: root directory not set")
	}
	if o.MaxBlobSize < 0 {
		return nil, fmt.Errorf("filesystem provider: negative maximum blob size %d", o.MaxBlobSize)
	}
	abs, err := filepath.Abs(o.Root)
	if err != nil {
		return nil, fmt.Errorf("filesystem provider: root %s: %w", o.Root, err)
	}
	p := &Provider{opts: o, base: (&url.URL{Scheme: "file", Path: abs}).String()}
	// The longest location, for the longest repository, must stay valid.
	if loc := p.location(strings.Repeat("a", 255), strings.Repeat("0", 64)); !pb.ValidLocation(loc) {
		return nil, fmt.Errorf("filesystem provider: root %s is too long to give locations of at most %d characters", abs, pb.MaxLocationLength)
	}
	if err := os.MkdirAll(abs, dirMode); err != nil {
		return nil, fmt.Errorf("filesystem provider: create root: %w", err)
	}
	if p.root, err = os.OpenRoot(abs); err != nil {
		return nil, fmt.Errorf("filesystem provider: open root: %w", err)
	}
	if err := p.clearStaging(ctx); err != nil {
		p.root.Close()
		return nil, err
	}
	klog.FromContext(ctx).V(2).Info("Opened filesystem provider", "root", abs,
		"namespaceScoped", o.NamespaceScoped, "maxBlobSize", o.MaxBlobSize)
	return p, nil
}

// clearStaging empties the staging directory, creating it if needed. It
// keeps the directory itself, which other providers sharing the root use.
func (p *Provider) clearStaging(ctx context.Context) error {
	if err := p.root.MkdirAll(stagingDir, dirMode); err != nil {
		return fmt.Errorf("filesystem provider: create staging directory: %w", err)
	}
	entries, err := fs.ReadDir(p.root.FS(), stagingDir)
	if err != nil {
		return fmt.Errorf("filesystem provider: read staging directory: %w", err)
	}
	for _, e := range entries {
		if err := p.root.RemoveAll(path.Join(stagingDir, e.Name())); err != nil {
			return fmt.Errorf("filesystem provider: clear staging directory: %w", err)
		}
	}
	if len(entries) > 0 {
		klog.FromContext(ctx).Info("Removed unfinished uploads", "count", len(entries))
	}
	return nil
}

// Close releases the root directory. Calls in flight may fail after it.
func (p *Provider) Close() error { return p.root.Close() }

// Healthy reports whether the root directory is still usable, e.g. that
// its volume is still mounted.
func (p *Provider) Healthy() error {
	if _, err := p.root.Stat(stagingDir); err != nil {
		return fmt.Errorf("filesystem provider: root unusable: %w", err)
	}
	return nil
}

// Info implements pb.ProviderServer.
func (p *Provider) Info(context.Context, *pb.InfoRequest) (*pb.InfoResponse, error) {
	return &pb.InfoResponse{
		Name:             Name,
		Version:          p.opts.Version,
		ApiVersions:      []string{pb.APIVersion},
		DigestAlgorithms: []string{"sha256"},
		MaxBlobSize:      p.opts.MaxBlobSize,
	}, nil
}

// Put implements pb.ProviderServer: it stages the chunks while hashing
// them and, once the commit matches, links the file into place, never
// replacing a blob that is there already (unless its size shows it
// corrupt).
func (p *Provider) Put(stream pb.Provider_PutServer) (err error) {
	ctx := stream.Context()
	logger := klog.FromContext(ctx).WithValues("method", "Put")
	start := time.Now()
	defer func() { err = p.finish(logger, start, err) }()

	msg, err := stream.Recv()
	switch {
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: empty Put stream: want a PutHeader first", errInvalid)
	case err != nil:
		return err
	}
	header := msg.GetHeader()
	if header == nil {
		return fmt.Errorf("%w: the first message of a Put must be a PutHeader", errInvalid)
	}
	scope := header.GetScope()
	logger = logger.WithValues("namespace", scope.GetNamespace(), "repository", scope.GetRepository())
	if err := p.checkScope(scope); err != nil {
		return err
	}

	st, err := p.stage(stream, logger)
	if st != nil {
		defer p.discard(st, logger)
	}
	if err != nil {
		return err
	}
	logger = logger.WithValues("digest", st.digest, "size", st.size)
	name := blobPath(scope.GetRepository(), st.digest)
	existed, err := p.commit(st, name, logger)
	if err != nil {
		return err
	}
	logger = logger.WithValues("existed", existed)
	return stream.SendAndClose(&pb.PutResponse{Location: p.location(scope.GetRepository(), hexOf(st.digest)), Existed: existed})
}

// staged is an upload in the staging directory.
type staged struct {
	name   string
	f      *os.File
	digest string
	size   int64
}

// discard closes and removes a staging file, which a commit by rename
// has removed already.
func (p *Provider) discard(st *staged, logger klog.Logger) {
	if st.f != nil {
		st.f.Close()
	}
	if err := p.root.Remove(st.name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		logger.Error(err, "Cannot remove staging file", "file", st.name)
	}
}

// stage writes the chunks of stream to a new staging file until the
// commit, checks the commit against them and syncs the file. It returns
// the staging file, when it created one, also with an error.
func (p *Provider) stage(stream pb.Provider_PutServer, logger klog.Logger) (*staged, error) {
	st := &staged{name: path.Join(stagingDir, rand.Text())}
	f, err := p.root.OpenFile(st.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return nil, fmt.Errorf("create staging file: %w", retryIfGone(err))
	}
	st.f = f
	h := sha256.New()
	var commit *pb.PutCommit
	for commit == nil {
		msg, err := stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			return st, fmt.Errorf("%w: Put stream ended without a PutCommit after %d bytes; nothing stored", errInvalid, st.size)
		case err != nil:
			return st, err
		}
		switch part := msg.GetPart().(type) {
		case *pb.PutRequest_Chunk:
			if len(part.Chunk) > pb.ChunkSize {
				return st, fmt.Errorf("%w: chunk of %d bytes exceeds the limit of %d", errInvalid, len(part.Chunk), pb.ChunkSize)
			}
			st.size += int64(len(part.Chunk))
			if max := p.opts.MaxBlobSize; max > 0 && st.size > max {
				return st, fmt.Errorf("%w: blob exceeds the maximum size of %d bytes", errTooLarge, max)
			}
			h.Write(part.Chunk)
			if _, err := f.Write(part.Chunk); err != nil {
				return st, fmt.Errorf("write staging file: %w", err)
			}
		case *pb.PutRequest_Commit:
			commit = part.Commit
		case *pb.PutRequest_Header:
			return st, fmt.Errorf("%w: a second PutHeader", errInvalid)
		default:
			return st, fmt.Errorf("%w: a PutRequest without a part", errInvalid)
		}
	}
	st.digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	switch {
	case !pb.ValidDigest(commit.GetDigest()):
		return st, fmt.Errorf("%w: committed digest %q: want sha256: and 64 lowercase hex digits", errInvalid, commit.GetDigest())
	case commit.GetSize() != st.size:
		return st, fmt.Errorf("%w: committed size %d, but %d bytes were sent; nothing stored", errInvalid, commit.GetSize(), st.size)
	case commit.GetDigest() != st.digest:
		return st, fmt.Errorf("%w: committed digest %s, but the bytes sent hash to %s; nothing stored", errInvalid, commit.GetDigest(), st.digest)
	}
	if err := f.Sync(); err != nil {
		return st, fmt.Errorf("sync staging file: %w", err)
	}
	err = f.Close()
	st.f = nil
	if err != nil {
		return st, fmt.Errorf("close staging file: %w", err)
	}
	logger.V(5).Info("Staged blob", "digest", st.digest, "size", st.size)
	return st, nil
}

// commit moves the verified staging file to name and reports whether the
// blob was there already. A hard link, unlike a rename, never replaces an
// existing file, so concurrent Puts of one digest all succeed and the
// first one's file stays.
func (p *Provider) commit(st *staged, name string, logger klog.Logger) (existed bool, err error) {
	dir := path.Dir(name)
	if err := p.root.MkdirAll(dir, dirMode); err != nil {
		return false, fmt.Errorf("create blob directory: %w", err)
	}
	err = p.root.Link(st.name, name)
	switch {
	case errors.Is(err, fs.ErrExist):
		fi, serr := p.root.Lstat(name)
		if serr != nil || !fi.Mode().IsRegular() || fi.Size() != st.size {
			// Truncated or replaced behind our back: heal it.
			logger.Info("Replacing a corrupt stored blob")
			if err := p.root.Rename(st.name, name); err != nil {
				return false, fmt.Errorf("replace corrupt blob: %w", retryIfGone(err))
			}
			break
		}
		return true, nil
	case linkUnsupported(err):
		// No hard links on this filesystem: a rename, after checking, may
		// replace a blob a concurrent Put stored, with the same bytes.
		if _, err := p.root.Lstat(name); err == nil {
			return true, nil
		}
		if err := p.root.Rename(st.name, name); err != nil {
			return false, fmt.Errorf("move blob into place: %w", retryIfGone(err))
		}
	case err != nil:
		return false, fmt.Errorf("link blob into place: %w", retryIfGone(err))
	}
	if err := p.syncDir(dir); err != nil {
		return false, err
	}
	return false, nil
}

// syncDir makes the entries of dir durable.
func (p *Provider) syncDir(dir string) error {
	d, err := p.root.Open(dir)
	if err != nil {
		return fmt.Errorf("open blob directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync blob directory: %w", err)
	}
	return nil
}

// linkUnsupported reports whether err says the filesystem has no hard
// links.
func linkUnsupported(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOTSUP) ||
		errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EMLINK)
}

// retryIfGone marks the disappearance of the staging file or directory,
// which another provider starting on a shared root causes, as worth a
// retry.
func retryIfGone(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: staging file removed (a provider sharing the root restarted?): %w", errRetry, err)
	}
	return err
}

// Get implements pb.ProviderServer: it streams the file in chunks of at
// most pb.ChunkSize, hashing them, and ends with DATA_LOSS when the
// stored bytes do not match their digest.
func (p *Provider) Get(req *pb.GetRequest, stream pb.Provider_GetServer) (err error) {
	ctx := stream.Context()
	logger := p.requestLogger(ctx, "Get", req.GetScope(), req.GetDigest())
	start := time.Now()
	defer func() { err = p.finish(logger, start, err) }()

	name, err := p.checkRequest(req.GetScope(), req.GetDigest())
	if err != nil {
		return err
	}
	f, err := p.openBlob(name)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// A fresh buffer each time: gRPC may keep a sent message.
		buf := make([]byte, pb.ChunkSize)
		m, rerr := io.ReadFull(f, buf)
		if m > 0 {
			h.Write(buf[:m])
			n += int64(m)
			if err := stream.Send(&pb.GetResponse{Chunk: buf[:m]}); err != nil {
				return err
			}
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			return checkSum(h, req.GetDigest(), n)
		case rerr != nil:
			return fmt.Errorf("read blob: %w", rerr)
		}
	}
}

// checkSum returns errCorrupt when h does not hold digest.
func checkSum(h hash.Hash, digest string, n int64) error {
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("%w: the stored %d bytes hash to %s; delete the blob and put it again", errCorrupt, n, got)
	}
	return nil
}

// openBlob opens the blob file name, errNotFound when absent.
func (p *Provider) openBlob(name string) (*os.File, error) {
	f, err := p.root.Open(name)
	if err != nil {
		return nil, blobError("open", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat blob: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %s is not a regular file", errCorrupt, name)
	}
	return f, nil
}

// blobError turns a missing file into errNotFound.
func blobError(op string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("%w: %w", errNotFound, err)
	}
	return fmt.Errorf("%s blob: %w", op, err)
}

// Stat implements pb.ProviderServer.
func (p *Provider) Stat(ctx context.Context, req *pb.StatRequest) (_ *pb.StatResponse, err error) {
	logger := p.requestLogger(ctx, "Stat", req.GetScope(), req.GetDigest())
	start := time.Now()
	defer func() { err = p.finish(logger, start, err) }()

	name, err := p.checkRequest(req.GetScope(), req.GetDigest())
	if err != nil {
		return nil, err
	}
	fi, err := p.root.Stat(name)
	if err != nil {
		return nil, blobError("stat", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", errCorrupt, name)
	}
	return &pb.StatResponse{Size: fi.Size(), Location: p.location(req.GetScope().GetRepository(), hexOf(req.GetDigest()))}, nil
}

// Delete implements pb.ProviderServer. Deleting an absent blob succeeds.
// Empty directories stay: removing them could race with a Put creating
// its blob there.
func (p *Provider) Delete(ctx context.Context, req *pb.DeleteRequest) (_ *pb.DeleteResponse, err error) {
	logger := p.requestLogger(ctx, "Delete", req.GetScope(), req.GetDigest())
	start := time.Now()
	defer func() { err = p.finish(logger, start, err) }()

	name, err := p.checkRequest(req.GetScope(), req.GetDigest())
	if err != nil {
		return nil, err
	}
	if err := p.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		return nil, fmt.Errorf("delete blob: %w", err)
	}
	return &pb.DeleteResponse{}, nil
}

// requestLogger returns ctx's logger with a request's method, scope and
// digest.
func (p *Provider) requestLogger(ctx context.Context, method string, s *pb.Scope, digest string) klog.Logger {
	return klog.FromContext(ctx).WithValues("method", method,
		"namespace", s.GetNamespace(), "repository", s.GetRepository(), "digest", digest)
}

// checkRequest validates a scope and a digest and returns the blob's path
// under the root.
func (p *Provider) checkRequest(s *pb.Scope, digest string) (string, error) {
	if err := p.checkScope(s); err != nil {
		return "", err
	}
	if !pb.ValidDigest(digest) {
		return "", fmt.Errorf("%w: digest %q: want sha256: and 64 lowercase hex digits", errInvalid, digest)
	}
	return blobPath(s.GetRepository(), digest), nil
}

// checkScope validates a scope and, when namespace scoped, that its
// namespace may use its repository.
func (p *Provider) checkScope(s *pb.Scope) error {
	ns, repo := s.GetNamespace(), s.GetRepository()
	if err := pb.CheckScope(ns, repo); err != nil {
		return fmt.Errorf("%w: %w", errInvalid, err)
	}
	// A repository ending in .../blobs/sha256/<hex> would be a directory
	// where another repository keeps a blob.
	if strings.Contains(repo, "/blobs/sha256/") {
		return fmt.Errorf("%w: repository %q: the path segments blobs/sha256 are reserved by the filesystem provider", errInvalid, repo)
	}
	if p.opts.NamespaceScoped && repo != ns && !strings.HasPrefix(repo, ns+"/") {
		return fmt.Errorf("%w: namespace %s may only use repository %s or repositories under %s/, not %s", errDenied, ns, ns, ns, repo)
	}
	return nil
}

// blobPath is the path of a blob under the root.
func blobPath(repository, digest string) string {
	return path.Join(repository, "blobs", "sha256", hexOf(digest))
}

// hexOf returns the hex part of a valid digest.
func hexOf(digest string) string { return strings.TrimPrefix(digest, "sha256:") }

// location is the file:// URL of a blob.
func (p *Provider) location(repository, hex string) string {
	return p.base + "/" + repository + "/blobs/sha256/" + hex
}
