package credentials

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

func dockerConfig(registry, user, pass string) string {
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	return fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, registry, auth)
}

func TestFromPublishSecrets(t *testing.T) {
	tests := []struct {
		name     string
		secrets  map[string]string
		wantErr  bool
		registry string
		wantUser string // "" means anonymous
	}{
		{"no secret", nil, false, "reg.example.com", ""},
		{"dockerconfigjson", map[string]string{".dockerconfigjson": dockerConfig("reg.example.com", "alice", "s3cret")}, false, "reg.example.com", "alice"},
		{"other registry is anonymous", map[string]string{".dockerconfigjson": dockerConfig("reg.example.com", "alice", "s3cret")}, false, "other.example.com", ""},
		{"dockercfg", map[string]string{".dockercfg": `{"reg.example.com":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("bob:pw")) + `"}}`}, false, "reg.example.com", "bob"},
		{"malformed json", map[string]string{".dockerconfigjson": "{"}, true, "", ""},
		{"opaque secret", map[string]string{"username": "u", "password": "p"}, true, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, err := FromPublishSecrets(tt.secrets)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v, want ErrInvalid", err)
				}
				if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "\"p\"") {
					t.Errorf("error leaks a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			kc, err := snap.Keychain(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			reg, _ := name.NewRegistry(tt.registry)
			a, err := kc.Resolve(reg)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := a.Authorization()
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantUser == "" && a != authn.Anonymous && *cfg != (authn.AuthConfig{}) {
				t.Errorf("want anonymous, got %+v", cfg)
			}
			if tt.wantUser != "" && cfg.Username != tt.wantUser {
				t.Errorf("user = %q, want %q", cfg.Username, tt.wantUser)
			}
			if s := fmt.Sprint(snap); strings.Contains(s, "s3cret") || strings.Contains(s, "auth") {
				t.Errorf("String shows secret data: %s", s)
			}
		})
	}
}
