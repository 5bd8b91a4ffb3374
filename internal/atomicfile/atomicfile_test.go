package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteJSON(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	for _, durable := range []Sync{BestEffort, Durable} {
		want := map[string]any{"durable": bool(durable)}
		if err := WriteJSON(p, want, 0o600, durable); err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := ReadJSON(p, &got); err != nil || got["durable"] != bool(durable) {
			t.Fatalf("ReadJSON = %v, %v", got, err)
		}
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", st.Mode().Perm())
		}
	}
	// A value that cannot be encoded leaves the old content and no
	// temporary file.
	if err := WriteJSON(p, func() {}, 0o600, Durable); err == nil {
		t.Fatal("encoding a func succeeded")
	}
	if err := Write(filepath.Join(dir, "missing", "x.json"), []byte("{}"), 0o600, true); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "state.json" {
		t.Errorf("directory holds %v, want only state.json", entries)
	}
	if !IsTemp(".state.json.tmp-123") || IsTemp("state.json") {
		t.Error("IsTemp disagrees with the names Write uses")
	}
}
