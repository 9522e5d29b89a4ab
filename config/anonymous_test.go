package config_test

import (
	"slices"
	"strings"
	"testing"

	"gateway/config"
)

// TestAnonymousListen checks the rule that keeps a gateway without keys
// off the network unless the file says it means it.
func TestAnonymousListen(t *testing.T) {
	const providers = "providers:\n  mock: {type: mock, models: {echo: {}}}\n"
	const keys = "auth:\n  keys: [{name: a, key: \"${GW_KEY_CI}\"}]\n"
	refused := func(listen string) string {
		return `listen: "` + listen + `" is reachable from other machines and auth is off (no auth.keys): ` +
			"anyone who can reach the port can spend the provider keys; add gateway keys under auth.keys, " +
			"listen on 127.0.0.1, or set auth.anonymous: true to serve without keys on purpose (line 1)"
	}
	for _, c := range []struct {
		name, head string
		want       []string // errors; none: the file loads
		listen     string   // the effective address, when it loads
	}{
		{"no listen: loopback by default", "", nil, "127.0.0.1:8080"},
		{"127.0.0.1", "listen: 127.0.0.1:8080\n", nil, "127.0.0.1:8080"},
		{"anywhere in 127/8", "listen: 127.1.2.3:80\n", nil, "127.1.2.3:80"},
		{"::1", "listen: \"[::1]:8080\"\n", nil, "[::1]:8080"},
		{"localhost", "listen: localhost:8080\n", nil, "localhost:8080"},
		{"empty host", "listen: \":8080\"\n", []string{refused(":8080")}, ""},
		{"0.0.0.0", "listen: 0.0.0.0:8080\n", []string{refused("0.0.0.0:8080")}, ""},
		{"[::]", "listen: \"[::]:8080\"\n", []string{refused("[::]:8080")}, ""},
		{"a LAN address", "listen: 10.0.0.5:8080\n", []string{refused("10.0.0.5:8080")}, ""},
		{"a host name", "listen: localhost.example.com:8080\n", []string{refused("localhost.example.com:8080")}, ""},
		{"no port", "listen: \"8080\"\n", []string{`listen: want host:port such as 127.0.0.1:8080, got "8080" (line 1)`}, ""},
		{"anonymous on purpose", "listen: \":8080\"\nauth: {anonymous: true, anonymous_rpm: 30}\n", nil, ":8080"},
		{"keys present", "listen: \":8080\"\n" + keys, nil, ":8080"},
		{"negative anonymous_rpm", "auth: {anonymous_rpm: -1}\n", []string{"auth.anonymous_rpm: must not be negative, got -1 (line 1)"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(c.head+providers), testOptions())
			if c.want == nil {
				if err != nil {
					t.Fatalf("Parse:\n%v", err)
				}
				if cfg.Listen != c.listen {
					t.Errorf("Listen = %q, want %q", cfg.Listen, c.listen)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse succeeded, want %q", c.want)
			}
			if got := errorLines(t, err); !slices.Equal(got, c.want) {
				t.Errorf("errors:\n got  %q\n want %q", got, c.want)
			}
		})
	}
}

// TestAnonymousWithKeysWarns checks that the anonymous settings, inert
// when keys are set, say so rather than let the operator think anonymous
// callers still get in.
func TestAnonymousWithKeysWarns(t *testing.T) {
	cfg, err := config.Parse([]byte("auth:\n  anonymous: true\n  anonymous_rpm: 5\n  keys: [{name: a, key: \"${GW_KEY_CI}\"}]\n"+
		"providers:\n  mock: {type: mock, models: {echo: {}}}\n"), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "auth.anonymous") || !strings.Contains(cfg.Warnings[0], "ignored") {
		t.Errorf("Warnings = %q, want one saying auth.anonymous* is ignored with keys set", cfg.Warnings)
	}
	if cfg.Auth.AnonymousRPM != 5 || !cfg.Auth.Anonymous {
		t.Errorf("Auth = %+v, want the settings as written", cfg.Auth)
	}
}
