package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestServeOverrides checks that serving and validate take -listen and
// GATEWAY_LISTEN, and -config and GATEWAY_CONFIG, flag first: each case
// is refused at load, so the message shows which value was used.
func TestServeOverrides(t *testing.T) {
	authOff := writeConfig(t, "listen: \"127.0.0.1:8080\"\nproviders:\n  m: {type: mock, models: {e: {}}}\n")
	anonymous := writeConfig(t, "providers:\n  m: {type: mock, models: {e: {}}}\nauth: {anonymous: true}\n")
	missing := func(name string) string { return filepath.Join(t.TempDir(), name) }
	envMissing, flagMissing := missing("from-env.yaml"), missing("from-flag.yaml")
	const refused = `listen (from -listen or GATEWAY_LISTEN): "0.0.0.0:0" is reachable from other machines and auth is off`
	for _, c := range []struct {
		name           string
		listen, config string // the environment
		args           []string
		code           int
		want, notWant  string
	}{
		{"-listen", "", "", []string{"-config", authOff, "-listen", "0.0.0.0:0"}, 1, refused, "(line"},
		{"GATEWAY_LISTEN", "0.0.0.0:0", "", []string{"-config", authOff}, 1, refused, ""},
		{"-listen beats GATEWAY_LISTEN", "0.0.0.0:0", "", []string{"-config", authOff, "-listen", "nowhere"}, 1,
			`want host:port such as 127.0.0.1:8080, got "nowhere"`, "0.0.0.0"},
		{"GATEWAY_CONFIG", "", envMissing, nil, 1, "loading " + envMissing, ""},
		{"-config beats GATEWAY_CONFIG", "", envMissing, []string{"-config", flagMissing}, 1, "loading " + flagMissing, envMissing},
		{"validate -listen", "", "", []string{"validate", "-listen", "0.0.0.0:0", authOff}, 1, refused, ""},
		{"validate with GATEWAY_LISTEN", "0.0.0.0:0", "", []string{"validate", authOff}, 1, refused, ""},
		{"validate: anonymous on purpose", "0.0.0.0:0", "", []string{"validate", anonymous}, 0, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(envListen, c.listen)
			t.Setenv(envConfig, c.config)
			code, _, errOut := runs(t, c.args...)
			if code != c.code || !strings.Contains(errOut, c.want) || c.notWant != "" && strings.Contains(errOut, c.notWant) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d with %q and without %q", code, errOut, c.code, c.want, c.notWant)
			}
		})
	}
}
