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

// TestFor: an output keeps only the credentials of the repository it is
// pushed to, and they still authenticate to it.
func TestFor(t *testing.T) {
	ctx := t.Context()
	two := `{"auths":{"reg.example.com":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("alice:a")) + `"},` +
		`"reg.example.com/team-b":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("bob:b")) + `"},` +
		`"other.example.com":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("carol:c")) + `"}}}`
	snap, err := FromPublishSecrets(map[string]string{".dockerconfigjson": two})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ repo, wantUser string }{
		{"reg.example.com/team-a/artifacts", "alice"},
		{"reg.example.com/team-b/artifacts", "bob"},
		{"third.example.com/x", ""},
	} {
		repo, _ := name.NewRepository(tc.repo)
		narrow, err := snap.For(ctx, repo)
		if err != nil {
			t.Fatal(err)
		}
		if tc.wantUser == "" {
			if len(narrow.Secrets) != 0 {
				t.Errorf("%s: %d secrets for anonymous access", tc.repo, len(narrow.Secrets))
			}
			continue
		}
		if n := strings.Count(string(narrow.Secrets[0].Data[".dockerconfigjson"]), `"auth"`); len(narrow.Secrets) != 1 || n != 1 {
			t.Errorf("%s: %d secrets, %d entries; want one", tc.repo, len(narrow.Secrets), n)
		}
		kc, err := narrow.Keychain(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := user(t, kc, repo); got != tc.wantUser {
			t.Errorf("%s: narrowed credentials authenticate as %q, want %q", tc.repo, got, tc.wantUser)
		}
		other, _ := name.NewRepository("other.example.com/x")
		if got := user(t, kc, other); got != "" {
			t.Errorf("%s: narrowed credentials still hold another registry's (%q)", tc.repo, got)
		}
	}

	a, _ := name.NewRepository("reg.example.com/team-a/artifacts")
	b, _ := name.NewRepository("reg.example.com/team-b/artifacts")
	fa, _ := snap.Fingerprint(ctx, a)
	fa2, _ := snap.Fingerprint(ctx, a)
	fb, _ := snap.Fingerprint(ctx, b)
	none, _ := Snapshot{}.Fingerprint(ctx, a)
	if fa == "" || fa != fa2 || fa == fb || none != "" || strings.Contains(fa, "alice") {
		t.Errorf("fingerprints: %q %q %q %q", fa, fa2, fb, none)
	}
}

func user(t *testing.T, kc authn.Keychain, repo name.Repository) string {
	t.Helper()
	auth, err := kc.Resolve(repo)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := auth.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Username
}
