package config_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/expr-lang/expr"
	"gopkg.in/yaml.v3"

	"gateway/config"
)

// testEnv is the whole environment the testdata files see.
var testEnv = map[string]string{
	"GROQ_KEY_1":     "gsk-test-1",
	"GROQ_KEY_2":     "gsk-test-2",
	"OPENAI_KEY":     "sk-test-openai",
	"ANTHROPIC_KEY":  "sk-ant-test",
	"CEREBRAS_KEY":   "csk-test",
	"GW_KEY_TEAM_ML": "gw-team-ml",
	"GW_KEY_CI":      "gw-ci",
	"GW_KEY_TEST":    "test", // sha256 9f86d081...0a08, as in the sha256: testdata keys
	"EMPTY_KEY":      "",
}

func lookup(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

func testOptions() config.Options {
	return config.Options{LookupEnv: lookup(testEnv), Dir: "testdata"}
}

func sha(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// errorLines gives every message of a load error, one per config.Error.
func errorLines(t *testing.T, err error) []string {
	t.Helper()
	var es config.Errors
	if !errors.As(err, &es) {
		t.Fatalf("error is a %T, want config.Errors: %v", err, err)
	}
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Error()
	}
	return out
}

// wantErrors reads the `# want: ...` lines that open a bad file.
func wantErrors(data []byte) []string {
	var want []string
	for _, line := range strings.Split(string(data), "\n") {
		msg, ok := strings.CutPrefix(line, "# want: ")
		if !ok {
			break
		}
		want = append(want, msg)
	}
	return want
}

func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/*.bad.yaml files (err %v)", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			want := wantErrors(data)
			if len(want) == 0 {
				t.Fatalf("%s has no leading '# want: <error>' lines", file)
			}
			cfg, err := config.Load(file, testOptions())
			if err == nil {
				t.Fatalf("Load(%s) succeeded, want errors:\n  %s", file, strings.Join(want, "\n  "))
			}
			if cfg != nil {
				t.Errorf("Load(%s) returned a config along with its error", file)
			}
			got := errorLines(t, err)
			if !slices.Equal(got, want) {
				t.Errorf("Load(%s) errors:\n got:\n  %s\n want:\n  %s", file, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
			if err.Error() != strings.Join(want, "\n") {
				t.Errorf("Errors.Error() = %q, want the messages one per line", err.Error())
			}
		})
	}
}

// goodChecks holds what each good file must compile to, beyond loading.
var goodChecks = map[string]func(t *testing.T, cfg *config.Config){
	"minimal.good.yaml":    checkDefaults,
	"full.good.yaml":       checkFull,
	"optional.good.yaml":   checkOptional,
	"sha256_key.good.yaml": checkSHA256Key,
	"aliases.good.yaml":    checkAliases,
	"health.good.yaml":     checkHealth,
}

func TestGoodConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/*.good.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/*.good.yaml files (err %v)", err)
	}
	for name := range goodChecks {
		if !slices.Contains(files, filepath.Join("testdata", name)) {
			t.Errorf("goodChecks names testdata/%s, which does not exist", name)
		}
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			before := time.Now()
			cfg, err := config.Load(file, testOptions())
			if err != nil {
				t.Fatalf("Load(%s):\n%v", file, err)
			}
			if cfg == nil {
				t.Fatalf("Load(%s) returned neither a config nor an error", file)
			}
			sum := sha256.Sum256(data)
			if want := hex.EncodeToString(sum[:]); cfg.Checksum != want {
				t.Errorf("Checksum = %q, want the hex sha256 of the file, %q", cfg.Checksum, want)
			}
			if cfg.LoadedAt.Before(before) || cfg.LoadedAt.After(time.Now()) {
				t.Errorf("LoadedAt = %v, want the time of the load", cfg.LoadedAt)
			}
			if check := goodChecks[filepath.Base(file)]; check != nil {
				check(t, cfg)
			}
		})
	}
}

func chainNames(chain []config.Target) []string {
	out := make([]string, len(chain))
	for i, tg := range chain {
		out[i] = tg.String()
	}
	return out
}

func revealAll(keys []config.Secret) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Reveal()
	}
	return out
}

func checkDefaults(t *testing.T, cfg *config.Config) {
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"Listen", cfg.Listen, "127.0.0.1:8080"},
		{"MaxBody", cfg.MaxBody, config.ByteSize(16 << 20)},
		{"ClientWriteTimeout", cfg.ClientWriteTimeout.D(), 30 * time.Second},
		{"Auth.DefaultRPM", cfg.Auth.DefaultRPM, 60},
		{"len(Auth.Keys)", len(cfg.Auth.Keys), 0},
		{"Failover.MaxAttempts", cfg.Failover.MaxAttempts, 5},
		{"Failover.Cooldown", cfg.Failover.Cooldown.D(), 60 * time.Second},
		{"CircuitBreaker.Failures", cfg.CircuitBreaker.Failures, 5},
		{"CircuitBreaker.OpenFor", cfg.CircuitBreaker.OpenFor.D(), 30 * time.Second},
		{"Sticky.TTL", cfg.Sticky.TTL.D(), 30 * time.Minute},
		{"Health.Every", cfg.Health.Every(), 5 * time.Minute},
		{"mock.Health.Every", cfg.Providers["mock"].Health.Every(), 5 * time.Minute},
		{"mock.Probe", cfg.Providers["mock"].Probe, config.ProbeChat},
		{"Cache.TTL != nil", cfg.Cache.TTL != nil, true},
		{"Cache.MaxBytes", cfg.Cache.MaxBytes, config.ByteSize(64 << 20)},
		{"ProviderOrder", cfg.ProviderOrder, []string{"mock"}},
		{"len(GroupOrder)", len(cfg.GroupOrder), 0},
		{"len(Routes)", len(cfg.Routes), 0},
		{"Warnings", cfg.Warnings, []string(nil)},
		{"CORS", cfg.CORS == nil, true},
		{"Region", cfg.Region, ""},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.what, c.got, c.want)
		}
	}
	if cfg.Cache.TTL != nil && cfg.Cache.TTL.D() != 300*time.Second {
		t.Errorf("Cache.TTL = %v, want 300s", cfg.Cache.TTL.D())
	}
	mock := cfg.Providers["mock"]
	if mock == nil {
		t.Fatal("provider mock is missing")
	}
	if mock.Name != "mock" || mock.Timeout.D() != 300*time.Second || mock.BaseURL != "" {
		t.Errorf("mock = {Name %q, Timeout %v, BaseURL %q}, want {mock, 5m0s, \"\"}", mock.Name, mock.Timeout.D(), mock.BaseURL)
	}
	if echo := mock.Models["echo"]; echo == nil || echo.Name != "echo" || echo.Upstream != "echo" {
		t.Errorf("mock model echo = %+v, want Name and Upstream both echo", echo)
	}
	if !slices.Equal(mock.ModelOrder, []string{"echo"}) {
		t.Errorf("mock.ModelOrder = %q, want [echo]", mock.ModelOrder)
	}
}

// checkHealth: a provider's health block overrides the top level's
// interval (an empty one inherits it), and the probe defaults by
// protocol to the model list, whose caps are the first chat model's.
func checkHealth(t *testing.T, cfg *config.Config) {
	p := cfg.Providers
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"Health.Every", cfg.Health.Every(), 2 * time.Minute},
		{"groq.Health.Every", p["groq"].Health.Every(), 2 * time.Minute},
		{"groq.Probe", p["groq"].Probe, config.ProbeModels},
		{"groq.ProbeModel", p["groq"].ProbeModel.Name, "llama-8b"},
		{"quiet.Health.Every", p["quiet"].Health.Every(), time.Duration(0)},
		{"quiet.Probe", p["quiet"].Probe, config.ProbeChat},
		{"inherit.Health.Every", p["inherit"].Health.Every(), 2 * time.Minute},
		{"inherit.Probe", p["inherit"].Probe, config.ProbeModels},
		{"mock.Probe", p["mock"].Probe, config.ProbeChat},
		{"mock.ProbeModel", p["mock"].ProbeModel.Name, "echo"},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.what, c.got, c.want)
		}
	}
}

func checkFull(t *testing.T, cfg *config.Config) {
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"Listen", cfg.Listen, "127.0.0.1:9090"},
		{"MaxBody", cfg.MaxBody, config.ByteSize(8 << 20)},
		{"ClientWriteTimeout", cfg.ClientWriteTimeout.D(), 10 * time.Second},
		{"Auth.DefaultRPM", cfg.Auth.DefaultRPM, 90},
		{"ProviderOrder", cfg.ProviderOrder, []string{"groq", "openai", "mock"}},
		{"GroupOrder", cfg.GroupOrder, []string{"auto", "fast"}},
		{"Failover", cfg.Failover, config.Failover{MaxAttempts: 3, Cooldown: config.Duration(10 * time.Second), AuthCooldown: config.Duration(time.Hour), AuthRecheck: config.Duration(2 * time.Minute)}},
		{"CircuitBreaker", cfg.CircuitBreaker, config.CircuitBreaker{Failures: 2, OpenFor: config.Duration(time.Minute)}},
		{"Sticky.TTL", cfg.Sticky.TTL.D(), time.Hour},
		{"Cache.MaxBytes", cfg.Cache.MaxBytes, config.ByteSize(1000 * 1000 * 1000)},
		{"Warnings", cfg.Warnings, []string(nil)},
		{"Region", cfg.Region, "eu-west-1"},
		{"CORS", *cfg.CORS, config.CORS{Origins: []string{"https://app.example.com", "http://localhost:5173"},
			Headers: []string{"X-Stainless-Lang"}, MaxAge: config.Duration(10 * time.Minute)}},
		{"Description", cfg.Models["fast"].Description, "Fast and cheap"},
		// Quotes and backslashes are allowed in a route name; /metrics
		// escapes them.
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.what, c.got, c.want)
		}
	}
	// ttl: 0s is "do not cache", not "use the default".
	if cfg.Cache.TTL == nil || *cfg.Cache.TTL != 0 {
		t.Errorf("Cache.TTL = %v, want an explicit 0", cfg.Cache.TTL)
	}

	groq, openai := cfg.Providers["groq"], cfg.Providers["openai"]
	if groq == nil || openai == nil {
		t.Fatalf("providers groq and openai must be present, have %v", cfg.ProviderOrder)
	}
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"groq.Name", groq.Name, "groq"},
		{"groq.Type", groq.Type, "openai"},
		{"groq.BaseURL (trailing / trimmed)", groq.BaseURL, "https://api.groq.com/openai/v1"},
		{"groq.Timeout", groq.Timeout.D(), 30 * time.Second},
		{"groq.IdleConnTimeout", groq.IdleConnTimeout.D(), 2 * time.Second},
		{"groq.MaxResponseBody", groq.MaxResponseBody, config.ByteSize(2 << 20)},
		{"groq.Keys", revealAll(groq.Keys), []string{"gsk-test-1", "gsk-test-2"}},
		{"groq.Keys[0].Ref", groq.Keys[0].Ref(), "${GROQ_KEY_1}"},
		{"groq.Headers", groq.Headers, map[string]string{"X-Title": "gateway-test"}},
		{"groq.Limits", groq.Limits, config.Limits{RPM: 30, RPD: 14400, TPM: 6000, TPD: 500000}},
		{"groq.ModelOrder", groq.ModelOrder, []string{"llama-70b", "llama-8b"}},
		{"groq llama-70b upstream", groq.Models["llama-70b"].Upstream, "llama-3.3-70b-versatile"},
		{"groq llama-70b limits", groq.Models["llama-70b"].Limits, config.Limits{TPM: 12000}},
		{"groq llama-8b upstream", groq.Models["llama-8b"].Upstream, "llama-3.1-8b-instant"},
		{"openai.BaseURL (default)", openai.BaseURL, "https://api.openai.com/v1"},
		{"openai.Timeout (default)", openai.Timeout.D(), 300 * time.Second},
		{"openai.IdleConnTimeout (default)", openai.IdleConnTimeout.D(), 4 * time.Second},
		{"openai.MaxResponseBody (default)", openai.MaxResponseBody, config.ByteSize(8 << 20)},
		{"openai.Keys", revealAll(openai.Keys), []string{"sk-test-openai"}},
		{"openai.ModelOrder", openai.ModelOrder, []string{"gpt-4o-mini", "gpt-4o"}},
		{"openai gpt-4o upstream (defaults to the name)", openai.Models["gpt-4o"].Upstream, "gpt-4o"},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.what, c.got, c.want)
		}
	}

	auto, fast := cfg.Models["auto"], cfg.Models["fast"]
	if auto == nil || fast == nil {
		t.Fatalf("groups auto and fast must be present, have %v", cfg.GroupOrder)
	}
	if got, want := chainNames(auto.Chain), []string{"groq/llama-70b", "openai/gpt-4o-mini", "mock/echo"}; !slices.Equal(got, want) {
		t.Errorf("auto.Chain = %q, want %q", got, want)
	}
	if auto.Chain[0].Provider != groq || auto.Chain[0].Model != groq.Models["llama-70b"] {
		t.Errorf("auto.Chain[0] does not point at the loaded groq provider and its llama-70b model")
	}
	if got, want := chainNames(fast.Chain), []string{"groq/llama-8b", "groq/llama-70b"}; !slices.Equal(got, want) {
		t.Errorf("fast.Chain = %q, want %q", got, want)
	}
	if auto.Name != "auto" || auto.Strategy != "priority" || fast.Strategy != "priority" {
		t.Errorf("groups = {%q %q} {%q %q}, want named, with strategy priority", auto.Name, auto.Strategy, fast.Name, fast.Strategy)
	}

	routes := []struct {
		name  string
		group *config.Group
		chain []string
		uses  config.EnvUses
	}{
		{"long-prompts", auto, nil, config.EnvUses{}},
		// key.metadata is the key's, not the request body's: no Metadata use.
		{"ml-team-tools", nil, []string{"openai/gpt-4o", "groq/llama-70b"}, config.EnvUses{}},
		{"gold-tier", fast, nil, config.EnvUses{Headers: true}},
		{"tagged", nil, []string{"mock/echo"}, config.EnvUses{Metadata: true}},
		// Quotes and backslashes are allowed in a route name; /metrics
		// escapes them.
		{`quoted "tier" \ one`, auto, nil, config.EnvUses{}},
	}
	if len(cfg.Routes) != len(routes) {
		t.Fatalf("len(Routes) = %d, want %d", len(cfg.Routes), len(routes))
	}
	for i, want := range routes {
		r := cfg.Routes[i]
		if r.Name != want.name {
			t.Errorf("Routes[%d].Name = %q, want %q", i, r.Name, want.name)
			continue
		}
		if r.Program == nil {
			t.Errorf("route %s: Program is nil, want the compiled match", r.Name)
		}
		if r.Uses != want.uses {
			t.Errorf("route %s (%s): Uses = %+v, want %+v", r.Name, r.Match, r.Uses, want.uses)
		}
		if r.Group == nil {
			t.Errorf("route %s: Group is nil", r.Name)
			continue
		}
		if want.group != nil && r.Group != want.group {
			t.Errorf("route %s: Group = %p (%s), want the group %s itself", r.Name, r.Group, r.Group.Name, want.group.Name)
		}
		if want.chain != nil {
			if got := chainNames(r.Group.Chain); !slices.Equal(got, want.chain) {
				t.Errorf("route %s: Chain = %q, want %q", r.Name, got, want.chain)
			}
			if r.Group.Name != r.Name || r.Group.Strategy != "priority" {
				t.Errorf("route %s: own group is {%q, %q}, want named after the route, strategy priority", r.Name, r.Group.Name, r.Group.Strategy)
			}
		}
	}

	if len(cfg.Auth.Keys) != 2 {
		t.Fatalf("len(Auth.Keys) = %d, want 2", len(cfg.Auth.Keys))
	}
	ml, ci := cfg.Auth.Keys[0], cfg.Auth.Keys[1]
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"team-ml.Name", ml.Name, "team-ml"},
		{"team-ml.RPM", ml.RPM, 120},
		{"team-ml.Hash", ml.Hash, sha("gw-team-ml")},
		{"team-ml.Key.Reveal", ml.Key.Reveal(), "gw-team-ml"},
		{"team-ml.Allowed", ml.Allowed, map[string]bool{"auto": true, "fast": true}},
		{"team-ml.Expires", ml.Expires, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"team-ml.Metadata", ml.Metadata, map[string]string{"team": "ml"}},
		{"team-ml.Proxy", *ml.Proxy, false},
		{"team-ml.Admin", ml.Admin, false},
		{"ci.Proxy (default)", *ci.Proxy, true},
		{"ci.Admin", ci.Admin, true},
		{"ci.RPM (inherits default_rpm)", ci.RPM, 90},
		{"ci.Hash", ci.Hash, sha("gw-ci")},
		{"ci.Allowed (no list: every model)", ci.Allowed, map[string]bool(nil)},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.what, c.got, c.want)
		}
	}
}

func checkOptional(t *testing.T, cfg *config.Config) {
	if _, ok := cfg.Providers["groq"]; ok {
		t.Errorf("optional provider groq, whose only key is unset, was not left out")
	}
	if want := []string{"cerebras", "mock"}; !slices.Equal(cfg.ProviderOrder, want) {
		t.Errorf("ProviderOrder = %q, want %q", cfg.ProviderOrder, want)
	}
	if c := cfg.Providers["cerebras"]; c == nil {
		t.Errorf("optional provider cerebras, with one key set, was left out")
	} else if got := revealAll(c.Keys); !slices.Equal(got, []string{"csk-test"}) {
		t.Errorf("cerebras keys = %q, want only the one that is set", got)
	}
	wantWarnings := []string{
		"providers.groq.keys[0]: skipped because environment variable UNSET_GROQ_KEY is not set (the provider is optional)",
		"providers.groq: left out: none of its keys is set (the provider is optional)",
		"providers.cerebras.keys[0]: skipped because environment variable UNSET_CEREBRAS_KEY is not set (the provider is optional)",
		`models.groq-only: every target's provider was left out; requests for "groq-only" will find no provider`,
	}
	if !slices.Equal(cfg.Warnings, wantWarnings) {
		t.Errorf("Warnings:\n got:\n  %s\n want:\n  %s", strings.Join(cfg.Warnings, "\n  "), strings.Join(wantWarnings, "\n  "))
	}
	for _, c := range []struct {
		what  string
		group *config.Group
		want  []string
	}{
		{"models.auto", cfg.Models["auto"], []string{"cerebras/llama-70b", "mock/echo"}},
		{"models.groq-only", cfg.Models["groq-only"], []string{}},
		{"routes[0]", cfg.Routes[0].Group, []string{"mock/echo"}},
	} {
		if c.group == nil {
			t.Errorf("%s: no group", c.what)
			continue
		}
		if got := chainNames(c.group.Chain); !slices.Equal(got, c.want) {
			t.Errorf("%s chain = %q, want %q (targets of the left-out groq dropped)", c.what, got, c.want)
		}
	}
	if k := cfg.Auth.Keys[0]; !k.Allowed["groq/llama-70b"] || !k.Allowed["llama-70b"] {
		t.Errorf("key allow-list = %v, want it to keep names of a left-out provider", k.Allowed)
	}
}

func checkSHA256Key(t *testing.T, cfg *config.Config) {
	if got := cfg.Auth.Keys[0].Hash; got != sha("test") {
		t.Errorf("sha256: key Hash = %x, want the digest written in the file", got)
	}
	if got := cfg.Auth.Keys[0].Key.Reveal(); got != "" {
		t.Errorf("sha256: key Reveal() = %q, want empty: only the digest is known", got)
	}
	if got := cfg.Auth.Keys[1].Hash; got != sha("gw-team-ml") {
		t.Errorf("env key Hash = %x, want sha256 of GW_KEY_TEAM_ML", got)
	}
	for _, k := range cfg.Auth.Keys {
		if k.RPM != 60 || k.Allowed != nil {
			t.Errorf("key %s: RPM %d, Allowed %v; want the default_rpm default, 60, and every model", k.Name, k.RPM, k.Allowed)
		}
	}
}

func checkAliases(t *testing.T, cfg *config.Config) {
	if want := []string{"mock", "mock2", "mock3"}; !slices.Equal(cfg.ProviderOrder, want) {
		t.Errorf("ProviderOrder = %q, want %q", cfg.ProviderOrder, want)
	}
	for _, name := range cfg.ProviderOrder {
		pv := cfg.Providers[name]
		if pv.Name != name || !slices.Equal(pv.ModelOrder, []string{"echo", "chat"}) {
			t.Errorf("provider %s: Name %q, ModelOrder %q; want its own name and [echo chat] through the alias", name, pv.Name, pv.ModelOrder)
		}
		if m := pv.Models["echo"]; m == nil || m.Name != "echo" || m.Upstream != "echo" {
			t.Errorf("provider %s: model echo = %+v, want Name and Upstream echo", name, m)
		}
	}
	if got, want := chainNames(cfg.Models["auto"].Chain), []string{"mock2/echo", "mock3/chat", "mock/echo"}; !slices.Equal(got, want) {
		t.Errorf("auto.Chain = %q, want %q", got, want)
	}
	// A section that sets some fields keeps the defaults of the others.
	if cfg.Failover.MaxAttempts != 5 || cfg.Failover.Cooldown.D() != 5*time.Second {
		t.Errorf("Failover = %+v, want max_attempts 5 (default) and cooldown 5s", cfg.Failover)
	}
	if cfg.CircuitBreaker.Failures != 5 || cfg.CircuitBreaker.OpenFor.D() != 10*time.Second {
		t.Errorf("CircuitBreaker = %+v, want failures 5 (default) and open_for 10s", cfg.CircuitBreaker)
	}
	if cfg.Sticky.TTL.D() != 30*time.Minute {
		t.Errorf("Sticky.TTL = %v after `sticky: ~`, want the default 30m", cfg.Sticky.TTL.D())
	}
}

// TestParseWithoutFile covers inputs a testdata file cannot hold.
func TestParseWithoutFile(t *testing.T) {
	for _, c := range []struct{ name, data, want string }{
		{"no bytes", "", "the file is empty"},
		{"blank lines", "\n\n  \n", "the file is empty"},
		{"null document", "~\n", "the file must be a mapping of settings (line 1)"},
		{"scalar document", "hello", "the file must be a mapping of settings (line 1)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(c.data), testOptions())
			if err == nil || cfg != nil {
				t.Fatalf("Parse(%q) = %v, %v; want error %q", c.data, cfg, err, c.want)
			}
			if got := errorLines(t, err); !slices.Equal(got, []string{c.want}) {
				t.Errorf("Parse(%q) errors = %q, want [%q]", c.data, got, c.want)
			}
		})
	}
}

// TestKeyFiles reads keys from files, relative to Options.Dir or absolute.
func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"provider": "  sk-from-file\n",
		"gateway":  "gw-from-file\n",
		"blank":    " \n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good := fmt.Sprintf(`
auth:
  keys: [{name: a, key: "file:gateway"}]
providers:
  p:
    type: openai
    keys: [file:provider, "file:%s"]
    models: {m: {}}
`, filepath.Join(dir, "provider"))
	cfg, err := config.Parse([]byte(good), config.Options{LookupEnv: lookup(nil), Dir: dir})
	if err != nil {
		t.Fatalf("Parse with key files in %s:\n%v", dir, err)
	}
	if got := revealAll(cfg.Providers["p"].Keys); !slices.Equal(got, []string{"sk-from-file", "sk-from-file"}) {
		t.Errorf("provider keys from files = %q, want the trimmed contents twice", got)
	}
	if got := cfg.Auth.Keys[0].Hash; got != sha("gw-from-file") {
		t.Errorf("gateway key from file: Hash = %x, want sha256 of the trimmed contents", got)
	}

	blank := "providers:\n  p:\n    type: openai\n    keys: [file:blank]\n    models: {m: {}}\n"
	_, err = config.Parse([]byte(blank), config.Options{LookupEnv: lookup(nil), Dir: dir})
	want := fmt.Sprintf("providers.p.keys[0]: key file %s is empty (line 4)", filepath.Join(dir, "blank"))
	if err == nil {
		t.Fatalf("Parse with a blank key file succeeded, want %q", want)
	}
	if got := errorLines(t, err); !slices.Equal(got, []string{want}) {
		t.Errorf("blank key file: errors = %q, want [%q]", got, want)
	}

	// An optional provider tolerates a missing or blank file like an unset variable.
	optional := "providers:\n  p:\n    type: openai\n    optional: true\n    keys: [file:blank, file:missing]\n    models: {m: {}}\n  mock: {type: mock, models: {echo: {}}}\n"
	cfg, err = config.Parse([]byte(optional), config.Options{LookupEnv: lookup(nil), Dir: dir})
	if err != nil {
		t.Fatalf("optional provider with unusable key files: %v", err)
	}
	if _, ok := cfg.Providers["p"]; ok || !slices.Equal(cfg.ProviderOrder, []string{"mock"}) {
		t.Errorf("optional provider with unusable key files was kept: ProviderOrder %q", cfg.ProviderOrder)
	}
}

// TestSkipSecrets checks references by form only, as `gateway validate` does.
func TestSkipSecrets(t *testing.T) {
	data := []byte(`
auth:
  keys:
    - {name: a, key: "${UNSET_GW}"}
    - {name: b, key: "${UNSET_GW}"}
providers:
  p:
    type: openai
    keys: ["${UNSET_P}", "file:/nonexistent/key"]
    models: {m: {}}
`)
	opt := config.Options{LookupEnv: lookup(nil), SkipSecrets: true}
	cfg, err := config.Parse(data, opt)
	if err != nil {
		t.Fatalf("SkipSecrets: unset references must pass a form check:\n%v", err)
	}
	if got := len(cfg.Providers["p"].Keys); got != 2 {
		t.Errorf("SkipSecrets: provider p has %d keys, want both kept", got)
	}

	literal := []byte("providers:\n  p:\n    type: openai\n    keys: [sk-literal]\n    models: {m: {}}\n")
	want := "providers.p.keys[0]: key must be a reference: ${ENV_VAR}, file:/path or enc:v1:...; a literal key does not belong in the file (line 4)"
	_, err = config.Parse(literal, opt)
	if err == nil {
		t.Fatalf("SkipSecrets: a literal key passed, want %q", want)
	}
	if got := errorLines(t, err); !slices.Equal(got, []string{want}) {
		t.Errorf("SkipSecrets: errors = %q, want [%q]", got, want)
	}
}

// TestRouteMatch runs the compiled match programs the way the engine does.
func TestRouteMatch(t *testing.T) {
	cfg, err := config.Load("testdata/full.good.yaml", testOptions())
	if err != nil {
		t.Fatal(err)
	}
	routes := map[string]*config.Route{}
	for _, r := range cfg.Routes {
		routes[r.Name] = r
	}
	ml := config.KeyEnv{Name: "team-ml", Metadata: map[string]string{"team": "ml"}}
	for _, c := range []struct {
		route string
		env   config.RequestEnv
		want  bool
	}{
		{"long-prompts", config.RequestEnv{Tokens: 30001}, true},
		{"long-prompts", config.RequestEnv{Tokens: 30000}, false},
		{"ml-team-tools", config.RequestEnv{Key: ml, Tools: true}, true},
		{"ml-team-tools", config.RequestEnv{Key: ml}, false},
		{"ml-team-tools", config.RequestEnv{Key: config.KeyEnv{Name: "ci", Metadata: map[string]string{"team": "ci"}}, Tools: true}, false},
		{"ml-team-tools", config.RequestEnv{Tools: true}, false}, // auth off: no key metadata at all
		{"gold-tier", config.RequestEnv{Headers: map[string]string{"x-tier": "gold"}}, true},
		{"gold-tier", config.RequestEnv{Headers: map[string]string{"x-tier": "silver"}}, false},
		{"gold-tier", config.RequestEnv{}, false},
		{"tagged", config.RequestEnv{Metadata: map[string]any{"project": "alpha"}}, true},
		{"tagged", config.RequestEnv{Metadata: map[string]any{"project": 7}}, false},
	} {
		r := routes[c.route]
		if r == nil || r.Program == nil {
			t.Fatalf("route %s is missing or not compiled", c.route)
		}
		out, err := expr.Run(r.Program, &c.env)
		if err != nil {
			t.Errorf("route %s (%s) with %+v: run error %v", c.route, r.Match, c.env, err)
			continue
		}
		if got, ok := out.(bool); !ok || got != c.want {
			t.Errorf("route %s (%s) with %+v = %#v, want %v", c.route, r.Match, c.env, out, c.want)
		}
	}
}

// TestSecretsNeverPrint proves habit 10: a Secret shows `<secret>` or its
// reference wherever a config ends up.
func TestSecretsNeverPrint(t *testing.T) {
	const providerKey, gatewayKey = "sk-live-SECRET-123", "gw-live-SECRET-456"
	env := map[string]string{"P_KEY": providerKey, "GW_KEY": gatewayKey}
	opt := config.Options{LookupEnv: lookup(env)}
	const good = `
auth:
  keys:
    - name: k
      key: ${GW_KEY}
providers:
  p:
    type: openai
    keys: ["${P_KEY}"]
    models: {m: {}}
models:
  auto: {targets: [p/m]}
routes:
  - {name: r, match: 'tools', model: auto}
`
	cfg, err := config.Parse([]byte(good), opt)
	if err != nil {
		t.Fatal(err)
	}
	prov := cfg.Providers["p"]
	secret := prov.Keys[0]
	if secret.Reveal() != providerKey || cfg.Auth.Keys[0].Key.Reveal() != gatewayKey {
		t.Fatalf("Reveal() = %q, %q; want the values of P_KEY and GW_KEY", secret.Reveal(), cfg.Auth.Keys[0].Key.Reveal())
	}

	outputs := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		for what, v := range map[string]any{
			"Secret": secret, "*Secret": &secret, "Provider": *prov, "*Provider": prov,
			"*Key": cfg.Auth.Keys[0], "Config": *cfg, "*Config": cfg,
		} {
			outputs[fmt.Sprintf("fmt %s of %s", verb, what)] = fmt.Sprintf(verb, v)
		}
	}
	outputs["fmt.Sprint of []Secret"] = fmt.Sprint(prov.Keys)
	y, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatalf("yaml.Marshal(cfg): %v", err)
	}
	outputs["yaml.Marshal of *Config"] = string(y)
	for what, v := range map[string]any{"Secret": secret, "*Provider": prov, "*Key": cfg.Auth.Keys[0]} {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%s): %v", what, err)
		}
		outputs["json.Marshal of "+what] = string(j)
	}
	var text, js bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&text, nil), slog.NewJSONHandler(&js, nil)} {
		slog.New(h).Info("loaded", "secret", secret, "provider", prov, "key", cfg.Auth.Keys[0])
	}
	slog.New(slog.NewTextHandler(&text, nil)).Info("loaded", "config", cfg)
	outputs["slog text"], outputs["slog JSON"] = text.String(), js.String()

	// A file whose secrets are set but that fails for other reasons: the
	// error text names references and paths, never values.
	const bad = `
auth:
  keys:
    - {name: k, key: "${GW_KEY}"}
    - {name: k2, key: "${GW_KEY}"}
providers:
  p:
    type: openai
    base_url: nowhere
    keys: ["${P_KEY}", sk-live-LITERAL-789]
    models: {m: {}}
`
	if _, err := config.Parse([]byte(bad), opt); err == nil {
		t.Errorf("the bad file loaded")
	} else {
		outputs["load error"] = err.Error()
		outputs["load error %+v"] = fmt.Sprintf("%+v", err)
	}

	if !strings.Contains(outputs["fmt %v of Secret"], "<secret>") {
		t.Errorf("%%v of a Secret = %q, want <secret>", outputs["fmt %v of Secret"])
	}
	for what, out := range outputs {
		for _, value := range []string{providerKey, gatewayKey, "sk-live-LITERAL-789"} {
			for _, form := range []string{value, hex.EncodeToString([]byte(value)), strings.ToUpper(hex.EncodeToString([]byte(value)))} {
				if strings.Contains(out, form) {
					t.Errorf("%s shows the secret %q:\n%s", what, value, out)
				}
			}
		}
	}
}

// TestShippedConfigs loads the files the repository ships, with no
// environment at all.
func TestShippedConfigs(t *testing.T) {
	noEnv := lookup(nil)
	t.Run("gateway.yaml", func(t *testing.T) {
		cfg, err := config.Load("../gateway.yaml", config.Options{LookupEnv: noEnv})
		if err != nil {
			t.Fatalf("../gateway.yaml must load with no variable set:\n%v", err)
		}
		if cfg.Providers["mock"] == nil {
			t.Fatalf("../gateway.yaml: no mock provider; providers %q", cfg.ProviderOrder)
		}
		auto := cfg.Models["auto"]
		if auto == nil || len(auto.Chain) == 0 {
			t.Fatalf("../gateway.yaml: group auto is missing or has an empty chain")
		}
		if last := auto.Chain[len(auto.Chain)-1]; last.Provider.Name != "mock" {
			t.Errorf("../gateway.yaml: auto chain %q does not end at mock", chainNames(auto.Chain))
		}
	})

	if _, err := os.Stat("../examples"); errors.Is(err, os.ErrNotExist) {
		return
	}
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("../examples exists but holds no *.yaml file")
	}
	// With no secret at hand, a reference may be unset but nothing else
	// may be wrong.
	unset := regexp.MustCompile(`^\S+: (environment variable \w+ is not set|key file \S+ does not exist) \(line \d+\)$`)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			if _, err := config.Load(file, config.Options{LookupEnv: noEnv, SkipSecrets: true}); err != nil {
				t.Errorf("gateway validate %s:\n%v", file, err)
			}
			_, err := config.Load(file, config.Options{LookupEnv: noEnv})
			if err == nil {
				return
			}
			for _, line := range errorLines(t, err) {
				if !unset.MatchString(line) {
					t.Errorf("%s with no secrets set: %s", file, line)
				}
			}
		})
	}
}
