package command

import (
	"strings"
	"testing"
)

func TestByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  string
	}{
		{in: "0", want: 0},
		{in: "1048576", want: 1 << 20},
		{in: "512Ki", want: 512 << 10},
		{in: "10Gi", want: 10 << 30},
		{in: "10G", want: 10_000_000_000},
		{in: "1Ti", want: 1 << 40},
		{in: "10GB", err: "want a size"},
		{in: "-1", err: "want a size"},
		{in: "", err: "want a size"},
		{in: "9Ei", err: "out of range"},
	} {
		var b ByteSize
		err := b.Set(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("Set(%q) = %v, want an error with %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || int64(b) != tc.want):
			t.Errorf("Set(%q) = %d, %v; want %d", tc.in, b, err, tc.want)
		}
	}
	b := ByteSize(10 << 30)
	if got := b.String(); got != "10Gi" {
		t.Errorf("String() = %q, want 10Gi", got)
	}
}
