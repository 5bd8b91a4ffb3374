package unixsock

import "testing"

func TestPath(t *testing.T) {
	for _, tc := range []struct {
		endpoint, want string
		ok             bool
	}{
		{"unix:///run/csi/csi.sock", "/run/csi/csi.sock", true},
		{"/run/csi/csi.sock", "/run/csi/csi.sock", true},
		{"unix:///run//csi/../csi.sock", "/run/csi.sock", true},
		{"unix://csi.sock", "", false},
		{"csi.sock", "", false},
		{"", "", false},
		{"unix://", "", false},
		{"tcp://0.0.0.0:10000", "", false},
		{"http:///run/csi.sock", "", false},
	} {
		got, err := Path(tc.endpoint)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("Path(%q) = %q, %v; want %q, ok=%v", tc.endpoint, got, err, tc.want, tc.ok)
		}
	}
}
