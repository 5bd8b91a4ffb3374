package chunked

import (
	"bytes"
	"io"
	"testing"
)

// TestBlobRelease: a Blob's buffers go back once it is released and every
// reader closed, in either order, and only once however often Release or
// Close is called; a reader reads the whole pack even after Release.
func TestBlobRelease(t *testing.T) {
	blob := func() Blob {
		var bufs []*[]byte
		for _, s := range []string{"ab", "", "cde"} {
			b := buffers.get(len(s))
			*b = append(*b, s...)
			bufs = append(bufs, b)
		}
		return newBlob("sha256:x", 5, bufs)
	}
	b := blob()
	r1, r2 := b.Reader(), b.Reader()
	b.Release()
	b.Release()
	if got, err := io.ReadAll(r1); err != nil || !bytes.Equal(got, []byte("abcde")) {
		t.Fatalf("read after Release: %q, %v", got, err)
	}
	r1.Close()
	r1.Close()
	if n := b.refs.n.Load(); n != 1 {
		t.Fatalf("%d holders left, want the open reader's", n)
	}
	r2.Close()
	if n := b.refs.n.Load(); n != 0 {
		t.Fatalf("%d holders left, want none", n)
	}
	if _, err := r2.Read(make([]byte, 1)); err == nil {
		t.Error("read of a closed reader succeeded")
	}

	b = blob()
	r := b.Reader()
	r.Close()
	if n := b.refs.n.Load(); n != 1 {
		t.Fatalf("%d holders left before Release, want 1", n)
	}
	b.Release()
	if n := b.refs.n.Load(); n != 0 {
		t.Fatalf("%d holders left, want none", n)
	}

	var zero Blob // a Blob made by hand holds nothing to hand back
	zero.Chunks = [][]byte{[]byte("x")}
	if got, _ := io.ReadAll(zero.Reader()); string(got) != "x" {
		t.Errorf("zero Blob read %q", got)
	}
	zero.Release()
}
