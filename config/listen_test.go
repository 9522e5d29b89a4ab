package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestListenOverride checks that Options.Listen replaces the file's
// listen and is held to the auth rule, with an error that blames no line
// of the file.
func TestListenOverride(t *testing.T) {
	const file = "listen: \"127.0.0.1:9000\"\nproviders:\n  m: {type: mock, models: {e: {}}}\n"
	cfg, err := Parse([]byte(file), Options{Listen: "127.0.0.2:7000"})
	if err != nil || cfg.Listen != "127.0.0.2:7000" {
		t.Fatalf("Parse = %v, %v; want listen 127.0.0.2:7000", cfg, err)
	}
	_, err = Parse([]byte(file), Options{Listen: "0.0.0.0:8080"})
	es, ok := err.(Errors)
	if !ok || len(es) != 1 || es[0].Line != 0 || es[0].Path != "listen (from -listen or GATEWAY_LISTEN)" ||
		!strings.Contains(es[0].Msg, `"0.0.0.0:8080" is reachable from other machines and auth is off`) {
		t.Fatalf("auth off on 0.0.0.0: %#v", err)
	}
	if _, err := Parse([]byte(file+"auth: {anonymous: true}\n"), Options{Listen: "0.0.0.0:8080"}); err != nil {
		t.Fatalf("auth.anonymous: %v", err)
	}
	_, err = Parse([]byte(file), Options{Listen: "8080"})
	if err == nil || !strings.Contains(err.Error(), `listen (from -listen or GATEWAY_LISTEN): want host:port such as 127.0.0.1:8080, got "8080"`) {
		t.Fatalf("a port alone: %v", err)
	}
}

// TestListenOf checks that the listen address is found in a file whose
// other settings are wrong, as a health check of a gateway serving its last
// good file needs.
func TestListenOf(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name, path, want, err string
	}{
		{"the file's", write("a.yaml", "listen: \"0.0.0.0:9000\"\nproviders: {p: {type: nope}}\nunknown: 1\n"), "0.0.0.0:9000", ""},
		{"the default", write("b.yaml", "providers: {}\n"), "127.0.0.1:8080", ""},
		{"no file", filepath.Join(dir, "none.yaml"), "", "reading config"},
		{"not YAML", write("c.yaml", "listen: [\n"), "", "reading listen from"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ListenOf(c.path)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("ListenOf = %q, %v; want an error with %q", got, err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("ListenOf = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}
