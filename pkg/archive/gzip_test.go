package archive_test

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/pgzip"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
)

// The gzip member layout of docs/format.md, read independently of the
// package: 20 header bytes, the deflate data, 8 trailer bytes.
const (
	memberBlock   = 1 << 20
	memberHeader  = 20
	memberTrailer = 8
	memberBound   = 2*memberBlock + 64<<10 // the largest size a reader accepts
)

var memberPrefix = []byte{0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 8, 0, 'T', 'K', 4, 0}

// textLike returns n deterministic bytes of word salad: compressible like
// source code or logs, but not trivially.
func textLike(n int, seed uint64) []byte {
	words := strings.Fields(`func return if else for range package import type struct
		interface map chan select case default go defer err nil true false
		the of and to in is that for it as with was on be at by this from
		error archive member block deflate gzip stream reader writer header
		0 1 2 3 42 1024 65536 0x1f 0x8b {} () [] := == != && || // /* */`)
	r := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	b := make([]byte, 0, n+16)
	for len(b) < n {
		b = append(b, words[r.IntN(len(words))]...)
		if r.IntN(12) == 0 {
			b = append(b, '\n', '\t')
		} else {
			b = append(b, ' ')
		}
	}
	return b[:n]
}

// splitMembers cuts a stream into members by the sizes their headers
// state, failing the test if a header is not the specified one.
func splitMembers(t testing.TB, blob []byte) [][]byte {
	t.Helper()
	var members [][]byte
	for len(blob) > 0 {
		if len(blob) < memberHeader || !bytes.Equal(blob[:16], memberPrefix) {
			t.Fatalf("member %d: header % x, want % x and a size", len(members), blob[:min(len(blob), memberHeader)], memberPrefix)
		}
		size := int(binary.LittleEndian.Uint32(blob[16:20]))
		if size < memberHeader+2+memberTrailer || size > len(blob) {
			t.Fatalf("member %d: size %d, %d bytes left", len(members), size, len(blob))
		}
		members = append(members, blob[:size])
		blob = blob[size:]
	}
	return members
}

// memberSpec describes a hand-built member: the content, deflated by the
// standard library (not the writer under test), and what to get wrong.
type memberSpec struct {
	content    []byte
	size       int    // stated size; 0: the true size plus sizeDelta
	sizeDelta  int    // added to the true size
	crcXor     uint32 // flips CRC-32 bits
	isizeDelta uint32 // added to ISIZE
	pad        []byte // between the deflate data and the trailer
	cut        int    // bytes cut from the end of the deflate data
}

func (s memberSpec) build(t testing.TB) []byte {
	t.Helper()
	var d bytes.Buffer
	fw, err := flate.NewWriter(&d, 6)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Write(s.content); err != nil {
		t.Fatal(err)
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	data := d.Bytes()[:d.Len()-s.cut]
	m := append(bytes.Clone(memberPrefix), 0, 0, 0, 0)
	m = append(append(m, data...), s.pad...)
	m = binary.LittleEndian.AppendUint32(m, crc32.ChecksumIEEE(s.content)^s.crcXor)
	m = binary.LittleEndian.AppendUint32(m, uint32(len(s.content))+s.isizeDelta)
	size := s.size
	if size == 0 {
		size = len(m) + s.sizeDelta
	}
	binary.LittleEndian.PutUint32(m[16:20], uint32(size))
	return m
}

// plainGzip is data as one ordinary gzip member, without the TK field.
func plainGzip(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pgzipCompress writes data as the driver did before issue 17: one pgzip
// stream (a single member, blocks deflated with the previous block as
// dictionary), level 5, 1 MiB blocks. Decompress reads it serially.
func pgzipCompress(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := pgzip.NewWriterLevel(&buf, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := zw.SetConcurrency(1<<20, 2*runtime.GOMAXPROCS(0)); err != nil {
		t.Fatal(err)
	}
	zw.ModTime = time.Unix(0, 0)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// concat joins byte slices into a new one.
func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// decompressAll reads blob through archive.Decompress to its end.
func decompressAll(t testing.TB, blob []byte) ([]byte, archive.Compression, error) {
	t.Helper()
	rc, c, err := archive.Decompress(bytes.NewReader(blob))
	if err != nil {
		return nil, c, err
	}
	defer rc.Close()
	out, err := io.ReadAll(rc)
	return out, c, err
}

var gzipRoundTripSizes = []struct {
	name string
	size int
}{
	{"empty", 0},
	{"one byte", 1},
	{"1 MiB", memberBlock},
	{"1 MiB + 1", memberBlock + 1},
	{"5.5 MiB", 5*memberBlock + memberBlock/2},
}

// TestGzipMembers checks the layout NewCompressor writes, and that
// Decompress, compress/gzip, pgzip and gzip(1) all read it back.
func TestGzipMembers(t *testing.T) {
	gzipBin, _ := exec.LookPath("gzip")
	for _, tc := range gzipRoundTripSizes {
		t.Run(tc.name, func(t *testing.T) {
			data := textLike(tc.size, uint64(tc.size))
			blob := compress(t, data, archive.Gzip)
			members := splitMembers(t, blob)
			if want := max(1, (tc.size+memberBlock-1)/memberBlock); len(members) != want {
				t.Fatalf("%d members, want %d", len(members), want)
			}
			for i, m := range members {
				want := min(memberBlock, tc.size-i*memberBlock)
				if isize := binary.LittleEndian.Uint32(m[len(m)-4:]); isize != uint32(want) {
					t.Errorf("member %d: ISIZE %d, want %d", i, isize, want)
				}
			}
			readers := map[string]func() ([]byte, error){
				"Decompress": func() ([]byte, error) {
					out, c, err := decompressAll(t, blob)
					if err == nil && c != archive.Gzip {
						err = fmt.Errorf("compression %q", c)
					}
					return out, err
				},
				"compress/gzip": func() ([]byte, error) {
					zr, err := gzip.NewReader(bytes.NewReader(blob))
					if err != nil {
						return nil, err
					}
					return io.ReadAll(zr)
				},
				"pgzip": func() ([]byte, error) {
					zr, err := pgzip.NewReader(bytes.NewReader(blob))
					if err != nil {
						return nil, err
					}
					defer zr.Close()
					return io.ReadAll(zr)
				},
				"gzip -d": func() ([]byte, error) {
					if gzipBin == "" {
						t.Skip("no gzip on PATH")
					}
					cmd := exec.Command(gzipBin, "-d", "-c")
					cmd.Stdin = bytes.NewReader(blob)
					var stderr bytes.Buffer
					cmd.Stderr = &stderr
					out, err := cmd.Output()
					if err != nil || stderr.Len() > 0 {
						return out, fmt.Errorf("%v: %s", err, stderr.String())
					}
					return out, nil
				},
			}
			for name, read := range readers {
				t.Run(name, func(t *testing.T) {
					out, err := read()
					if err != nil || !bytes.Equal(out, data) {
						t.Fatalf("%d bytes, %v; want the %d bytes written", len(out), err, len(data))
					}
				})
			}
		})
	}
}

// TestGzipMembersExtract packs a tree holding one file of each size,
// compresses it and extracts it.
func TestGzipMembersExtract(t *testing.T) {
	for _, tc := range gzipRoundTripSizes {
		t.Run(tc.name, func(t *testing.T) {
			data := textLike(tc.size, uint64(tc.size)+1)
			src := filepath.Join(tempDir(t), "src")
			if err := os.MkdirAll(filepath.Join(src, "d"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(src, "d", "f"), data, 0o640); err != nil {
				t.Fatal(err)
			}
			var tarball bytes.Buffer
			if _, err := archive.Pack(context.Background(), src, &tarball); err != nil {
				t.Fatal(err)
			}
			blob := compress(t, tarball.Bytes(), archive.Gzip)
			dest := filepath.Join(tempDir(t), "dest")
			stats, c, err := archive.Extract(context.Background(), bytes.NewReader(blob), expectOf(blob), dest, archive.Limits{})
			if err != nil || c != archive.Gzip {
				t.Fatalf("Extract: %v, %q", err, c)
			}
			if stats.Entries != 2 || stats.Bytes != int64(tc.size) {
				t.Errorf("stats %+v, want 2 entries and %d bytes", stats, tc.size)
			}
			got, err := os.ReadFile(filepath.Join(dest, "d", "f"))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("d/f: %d bytes, %v; want the %d bytes packed", len(got), err, len(data))
			}
			if fi, err := os.Stat(filepath.Join(dest, "d", "f")); err != nil || fi.Mode().Perm() != 0o640 {
				t.Errorf("d/f: %v, %v; want mode 0640", fi, err)
			}
		})
	}
}

// TestGzipMembersHandBuilt checks that Decompress reads members another
// deflate encoder wrote, so that the hostile cases below, built the same
// way, fail for what they break and not for how they are built.
func TestGzipMembersHandBuilt(t *testing.T) {
	a, b := textLike(memberBlock, 1), textLike(1000, 2)
	for name, blob := range map[string][]byte{
		"one member":         memberSpec{content: b}.build(t),
		"empty member":       memberSpec{}.build(t),
		"two members":        concat(memberSpec{content: a}.build(t), memberSpec{content: b}.build(t)),
		"short then full":    concat(memberSpec{content: b}.build(t), memberSpec{content: a}.build(t)),
		"empty in between":   concat(memberSpec{content: b}.build(t), memberSpec{}.build(t), memberSpec{content: b}.build(t)),
		"exactly 1 MiB each": concat(memberSpec{content: a}.build(t), memberSpec{content: a}.build(t)),
	} {
		t.Run(name, func(t *testing.T) {
			var want []byte
			for _, m := range splitMembers(t, blob) {
				zr, err := gzip.NewReader(bytes.NewReader(m))
				if err != nil {
					t.Fatal(err)
				}
				content, err := io.ReadAll(zr)
				if err != nil {
					t.Fatalf("compress/gzip refuses the hand-built member: %v", err)
				}
				want = append(want, content...)
			}
			got, _, err := decompressAll(t, blob)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Decompress: %d bytes, %v; want %d bytes", len(got), err, len(want))
			}
		})
	}
}

// repText is n bytes of a 4 KiB textLike block repeated: deflate codes it
// in a few bytes per KiB, so that streams of several members stay small
// enough to seed the fuzzer.
func repText(n int, seed uint64) []byte {
	return bytes.Repeat(textLike(4096, seed), n/4096+1)[:n]
}

var memberBaseCache struct {
	sync.Mutex
	blob []byte
}

// memberBase returns, built once, a valid stream of two members that
// Extract accepts within the fuzz limits: a small tree, then zeros after
// the end of the archive up to 1 MiB + 200 KiB of tar.
func memberBase(t testing.TB) []byte {
	t.Helper()
	memberBaseCache.Lock()
	defer memberBaseCache.Unlock()
	if memberBaseCache.blob == nil {
		data := newTar(t).dir("d/", 0o755).file("d/f", 0o644, string(repText(300<<10, 3))).
			file("d/g", 0o644, "hello").bytes()
		data = append(data, make([]byte, memberBlock+200<<10-len(data))...)
		memberBaseCache.blob = compress(t, data, archive.Gzip)
	}
	return bytes.Clone(memberBaseCache.blob)
}

// hostileMember is a gzip stream whose first member has the TK field but
// that breaks a rule of docs/format.md.
type hostileMember struct {
	name  string
	build func(t testing.TB) []byte
	msg   string // the error must say this: the rule that caught it
	big   bool   // too big to seed the fuzzer
}

// withMember returns the base stream with member i replaced by f(member).
func withMember(t testing.TB, i int, f func(m []byte) []byte) []byte {
	t.Helper()
	members := splitMembers(t, memberBase(t))
	if len(members) != 2 {
		t.Fatalf("base stream has %d members, want 2", len(members))
	}
	members[i] = f(members[i])
	return concat(members...)
}

// statedSize sets a member's stated size.
func statedSize(size func(m []byte) int) func(m []byte) []byte {
	return func(m []byte) []byte {
		binary.LittleEndian.PutUint32(m[16:20], uint32(size(m)))
		return m
	}
}

func hostileMembers() []hostileMember {
	first := func(t testing.TB) []byte { return splitMembers(t, memberBase(t))[0] }
	return []hostileMember{
		{name: "stated size zero", msg: "stated size 0 is outside",
			build: func(t testing.TB) []byte { return withMember(t, 0, statedSize(func([]byte) int { return 0 })) }},
		{name: "stated size below the minimum", msg: "stated size 29 is outside",
			build: func(t testing.TB) []byte { return withMember(t, 1, statedSize(func([]byte) int { return 29 })) }},
		{name: "stated size one short", msg: "gzip member 0 at offset 0: deflate: unexpected EOF",
			build: func(t testing.TB) []byte {
				return withMember(t, 0, statedSize(func(m []byte) int { return len(m) - 1 }))
			}},
		{name: "stated size one long", msg: "deflate stream ends 1 bytes before the trailer",
			build: func(t testing.TB) []byte {
				return withMember(t, 0, statedSize(func(m []byte) int { return len(m) + 1 }))
			}},
		{name: "stated size beyond the bound", msg: fmt.Sprintf("stated size %d is outside", memberBound+1),
			build: func(t testing.TB) []byte {
				return withMember(t, 1, statedSize(func([]byte) int { return memberBound + 1 }))
			}},
		{name: "stated size 4 GiB - 1", msg: "stated size 4294967295 is outside",
			build: func(t testing.TB) []byte {
				return withMember(t, 0, statedSize(func([]byte) int { return 1<<32 - 1 }))
			}},
		{name: "stated size past the end of the stream", msg: "stream ends inside a member",
			build: func(t testing.TB) []byte {
				return withMember(t, 1, statedSize(func(m []byte) int { return len(m) + 100 }))
			}},
		{name: "member inflating past 1 MiB", msg: "inflates to more than 1048576 bytes",
			build: func(t testing.TB) []byte {
				return memberSpec{content: repText(memberBlock+1, 5)}.build(t)
			}},
		{name: "member inflating to 64 MiB of zeros", msg: "inflates to more than 1048576 bytes", big: true,
			build: func(t testing.TB) []byte {
				return concat(first(t), memberSpec{content: make([]byte, 64<<20)}.build(t))
			}},
		{name: "bad CRC", msg: "CRC-32",
			build: func(t testing.TB) []byte {
				return withMember(t, 1, func(m []byte) []byte { m[len(m)-8] ^= 1; return m })
			}},
		{name: "bad ISIZE", msg: "ISIZE says 1048577",
			build: func(t testing.TB) []byte {
				return withMember(t, 0, func(m []byte) []byte { m[len(m)-4]++; return m })
			}},
		{name: "bad ISIZE, hand-built", msg: "ISIZE says 1001",
			build: func(t testing.TB) []byte {
				return concat(first(t), memberSpec{content: textLike(1000, 6), isizeDelta: 1}.build(t))
			}},
		{name: "truncated mid-member", msg: "stream ends inside a member",
			build: func(t testing.TB) []byte { b := memberBase(t); return b[:len(b)-100] }},
		{name: "truncated before the trailer", msg: "stream ends inside a member",
			build: func(t testing.TB) []byte { b := memberBase(t); return b[:len(b)-memberTrailer] }},
		{name: "truncated mid-header", msg: "10 bytes, not a member header",
			build: func(t testing.TB) []byte { return memberBase(t)[:len(first(t))+10] }},
		{name: "short trailing garbage", msg: "7 bytes, not a member header",
			build: func(t testing.TB) []byte { return concat(memberBase(t), []byte("garbage")) }},
		{name: "long trailing garbage", msg: "not a member with a TK size field",
			build: func(t testing.TB) []byte { return concat(memberBase(t), randomBytes(64, 11)) }},
		{name: "trailing zeros", msg: "not a member with a TK size field",
			build: func(t testing.TB) []byte { return concat(memberBase(t), make([]byte, 512)) }},
		{name: "TK member then a member without TK", msg: "not a member with a TK size field",
			build: func(t testing.TB) []byte { return concat(first(t), plainGzip(t, textLike(1000, 7))) }},
		{name: "TK member then a member with a name too", msg: "not a member with a TK size field",
			build: func(t testing.TB) []byte {
				return withMember(t, 1, func(m []byte) []byte { m[3] |= 0x08; return m })
			}},
		{name: "deflate data ends before the trailer", msg: "deflate stream ends 1 bytes before the trailer",
			build: func(t testing.TB) []byte {
				return concat(first(t), memberSpec{content: textLike(1000, 8), pad: []byte{0}}.build(t))
			}},
		{name: "a second deflate stream before the trailer", msg: "bytes before the trailer",
			build: func(t testing.TB) []byte {
				second := memberSpec{content: []byte("x")}.build(t)
				pad := second[memberHeader : len(second)-memberTrailer]
				return concat(first(t), memberSpec{content: textLike(1000, 9), pad: pad}.build(t))
			}},
		{name: "deflate data runs into the trailer", msg: "deflate: unexpected EOF",
			build: func(t testing.TB) []byte {
				return concat(first(t), memberSpec{content: textLike(1000, 10), cut: 1}.build(t))
			}},
	}
}

// TestGzipMembersBaseExtracts: the valid stream the hostile cases and the
// fuzz seeds break is itself accepted within the fuzz limits.
func TestGzipMembersBaseExtracts(t *testing.T) {
	blob := memberBase(t)
	if n := len(splitMembers(t, blob)); n != 2 {
		t.Fatalf("%d members, want 2", n)
	}
	dest := filepath.Join(tempDir(t), "dest")
	if _, _, err := archive.Extract(context.Background(), bytes.NewReader(blob), expectOf(blob), dest, fuzzLimits); err != nil {
		t.Fatal(err)
	}
}

// TestGzipMembersRefuseHostile reads each hostile stream through
// Decompress and through Extract: both must fail with ErrCorrupt, for the
// rule the case breaks.
func TestGzipMembersRefuseHostile(t *testing.T) {
	for _, tc := range hostileMembers() {
		t.Run(tc.name, func(t *testing.T) {
			blob := tc.build(t)
			out, c, err := decompressAll(t, blob)
			if err == nil {
				t.Fatalf("Decompress read %d bytes without error", len(out))
			}
			t.Logf("Decompress (%s): %v", c, err)
			if !errors.Is(err, archive.ErrCorrupt) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Decompress: %v; want ErrCorrupt saying %q", err, tc.msg)
			}
			dest := filepath.Join(tempDir(t), "dest")
			_, _, err = archive.Extract(context.Background(), bytes.NewReader(blob), expectOf(blob), dest, archive.Limits{})
			if !errors.Is(err, archive.ErrCorrupt) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Extract: %v; want ErrCorrupt saying %q", err, tc.msg)
			}
			if _, err := os.Lstat(dest); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("dest exists after a failed Extract (lstat: %v)", err)
			}
		})
	}
}

// TestGzipMembersSerialFallback: a gzip stream without the TK field, the
// driver's own before issue 17 or another tool's, is still read.
func TestGzipMembersSerialFallback(t *testing.T) {
	data := textLike(3*memberBlock+5, 12)
	for name, blob := range map[string][]byte{
		"pgzip":                 pgzipCompress(t, data),
		"compress/gzip":         plainGzip(t, data),
		"plain then TK members": concat(plainGzip(t, data[:100]), compress(t, data[100:], archive.Gzip)),
	} {
		t.Run(name, func(t *testing.T) {
			got, c, err := decompressAll(t, blob)
			if err != nil || c != archive.Gzip || !bytes.Equal(got, data) {
				t.Fatalf("Decompress: %d bytes, %q, %v; want the %d bytes written", len(got), c, err, len(data))
			}
		})
	}
}

// countingReader counts the bytes read from r.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// waitGoroutines waits until no more than n goroutines run.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestGzipMembersCloseEarly stops a consumer after one byte, and after an
// error: Close must stop every goroutine, read ahead only a bounded amount,
// and make later reads fail.
func TestGzipMembersCloseEarly(t *testing.T) {
	// Incompressible: each of the 40 members is about 1 MiB compressed.
	blob := compress(t, randomBytes(40*memberBlock, 13), archive.Gzip)
	for _, tc := range []struct {
		name string
		blob []byte
		read int
	}{
		{"after one byte", blob, 1},
		{"before reading", blob, 0},
		{"after 10 MiB", blob, 10 * memberBlock},
		{"after an error", concat(blob[:5*len(blob)/40], []byte("garbage")), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			src := &countingReader{r: bytes.NewReader(tc.blob)}
			rc, _, err := archive.Decompress(src)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.read < 0:
				if _, err := io.Copy(io.Discard, rc); !errors.Is(err, archive.ErrCorrupt) {
					t.Fatalf("read: %v, want ErrCorrupt", err)
				}
			case tc.read > 0:
				if _, err := io.ReadFull(rc, make([]byte, tc.read)); err != nil {
					t.Fatal(err)
				}
				// Let the goroutines run as far ahead as they may.
				time.Sleep(200 * time.Millisecond)
				workers := min(runtime.GOMAXPROCS(0), archive.MaxCompressors)
				// 2×workers queued, one being returned, one being read,
				// the bufio buffer, and member sizes slightly over 1 MiB.
				bound := int64(tc.read) + int64(2*workers+2)*(memberBlock+memberBlock/64) + 64<<10
				if n := src.n.Load(); n > bound {
					t.Errorf("read %d bytes of the source ahead of %d, want at most %d", n, tc.read, bound)
				}
			}
			if err := rc.Close(); err != nil {
				t.Fatal(err)
			}
			waitGoroutines(t, before)
			if n, err := rc.Read(make([]byte, 1)); n != 0 || err == nil || err == io.EOF {
				t.Errorf("Read after Close = %d, %v; want an error", n, err)
			}
			if err := rc.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

// gatedReader serves data, but the reads past its first open bytes wait
// until release is closed.
type gatedReader struct {
	data    []byte
	open    int
	release chan struct{}
	off     int
	reading atomic.Int32 // reads in progress
	reads   atomic.Int64 // bytes served
}

func (g *gatedReader) Read(p []byte) (int, error) {
	g.reading.Add(1)
	defer g.reading.Add(-1)
	if g.off >= g.open {
		<-g.release
	} else {
		p = p[:min(len(p), g.open-g.off)]
	}
	if g.off == len(g.data) {
		return 0, io.EOF
	}
	n := copy(p, g.data[g.off:])
	g.off += n
	g.reads.Add(int64(n))
	return n, nil
}

// TestGzipMembersCloseWaitsForSource: Extract hashes what Decompress left
// of the blob once Close returns, so Close must wait for a read of the
// source in progress, and nothing may read the source after it.
func TestGzipMembersCloseWaitsForSource(t *testing.T) {
	blob := compress(t, randomBytes(4*memberBlock, 14), archive.Gzip)
	first := len(splitMembers(t, blob)[0])
	src := &gatedReader{data: blob, open: first + 5, release: make(chan struct{})}
	rc, _, err := archive.Decompress(src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rc, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		rc.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while a read of the source was in progress")
	case <-time.After(100 * time.Millisecond):
	}
	close(src.release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return once the source read did")
	}
	if n := src.reading.Load(); n != 0 {
		t.Fatalf("%d reads of the source in progress after Close", n)
	}
	served := src.reads.Load()
	time.Sleep(50 * time.Millisecond)
	if n := src.reads.Load(); n != served {
		t.Errorf("the source was read after Close: %d bytes, then %d", served, n)
	}
}
