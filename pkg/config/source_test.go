package config

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
)

type namespaces map[string]map[string]string

func (n namespaces) NamespaceConfig(_ context.Context, ns string) (map[string]string, error) {
	if ns == "broken" {
		return nil, errors.New("cache not synced")
	}
	return n[ns], nil
}

func TestSourceLevels(t *testing.T) {
	cluster := t.TempDir()
	for k, v := range map[string]string{KeyRepository: "reg.example/cluster", KeyCompression: "zstd"} {
		if err := os.WriteFile(filepath.Join(cluster, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := Source{Cluster: Dir(cluster), Namespaces: namespaces{
		"team-a": {KeyRepository: "reg.example/team-a", KeyMaxArtifactBytes: "1Mi"},
		"team-b": {KeyCompression: "lz4"},
	}}
	tests := []struct {
		name, namespace string
		annotations     map[string]string
		wantRepo        string
		wantMax         int64
		wantErrLevel    Level
		wantErrKey      string
	}{
		{name: "cluster only", namespace: "other", wantRepo: "reg.example/cluster", wantMax: DefaultMaxArtifactBytes},
		{name: "namespace overrides cluster", namespace: "team-a", wantRepo: "reg.example/team-a", wantMax: 1 << 20},
		{name: "annotation overrides both", namespace: "team-a",
			annotations: map[string]string{AnnotationRepository: "reg.example/run", "unrelated": "x"},
			wantRepo:    "reg.example/run", wantMax: 1 << 20},
		{name: "invalid namespace value", namespace: "team-b", wantRepo: "reg.example/cluster", wantMax: DefaultMaxArtifactBytes,
			wantErrLevel: LevelNamespace, wantErrKey: KeyCompression},
		{name: "invalid annotation", namespace: "team-a", annotations: map[string]string{AnnotationRepository: "Not A Repo"},
			wantRepo: "reg.example/team-a", wantMax: 1 << 20, wantErrLevel: LevelAnnotation, wantErrKey: KeyRepository},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := s.Config(t.Context(), tt.namespace, tt.annotations)
			if c.Repository != tt.wantRepo || c.MaxArtifactBytes != tt.wantMax || c.Compression != archive.Zstd {
				t.Errorf("config = %+v", c)
			}
			var ke *KeyError
			switch {
			case tt.wantErrKey == "" && err != nil:
				t.Errorf("err = %v", err)
			case tt.wantErrKey != "" && (!errors.As(err, &ke) || ke.Level != tt.wantErrLevel || ke.Key != tt.wantErrKey):
				t.Errorf("err = %v, want %s at the %s", err, tt.wantErrKey, tt.wantErrLevel)
			}
		})
	}
	if _, err := s.Config(t.Context(), "broken", nil); err == nil {
		t.Error("an unreadable namespace level resolved")
	}
}
