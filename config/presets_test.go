package config_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"gateway/config"
)

// presetWant is what each preset must resolve to, written out so that a
// change to a preset shows up here as well as in README's table.
var presetWant = map[string]struct {
	protocol, baseURL string
	limits            config.Limits
	streamUsage       bool
}{
	"openai":      {"openai", "https://api.openai.com/v1", config.Limits{}, true},
	"anthropic":   {"anthropic", "https://api.anthropic.com", config.Limits{}, true},
	"gemini":      {"gemini", "https://generativelanguage.googleapis.com/v1beta", config.Limits{}, true},
	"cohere":      {"cohere", "https://api.cohere.com", config.Limits{RPM: 20}, true},
	"groq":        {"openai", "https://api.groq.com/openai/v1", config.Limits{RPM: 30, RPD: 1000, TPM: 6000, TPD: 100000}, true},
	"cerebras":    {"openai", "https://api.cerebras.ai/v1", config.Limits{RPM: 5, TPM: 30000, TPD: 1000000}, true},
	"sambanova":   {"openai", "https://api.sambanova.ai/v1", config.Limits{RPM: 20, RPD: 20, TPD: 200000}, true},
	"nvidia":      {"openai", "https://integrate.api.nvidia.com/v1", config.Limits{}, true},
	"mistral":     {"openai", "https://api.mistral.ai/v1", config.Limits{}, false},
	"openrouter":  {"openai", "https://openrouter.ai/api/v1", config.Limits{}, true}, // caps only :free models
	"huggingface": {"openai", "https://router.huggingface.co/v1", config.Limits{}, true},
	"cloudflare":  {"openai", "https://api.cloudflare.com/client/v4/accounts/acct/ai/v1", config.Limits{RPM: 300}, true},
	"zhipu":       {"openai", "https://open.bigmodel.cn/api/paas/v4", config.Limits{}, true},
	"moonshot":    {"openai", "https://api.moonshot.ai/v1", config.Limits{}, true},
	"minimax":     {"openai", "https://api.minimax.io/v1", config.Limits{}, true},
	"deepseek":    {"openai", "https://api.deepseek.com/v1", config.Limits{}, true},
	"together":    {"openai", "https://api.together.xyz/v1", config.Limits{}, true},
	"fireworks":   {"openai", "https://api.fireworks.ai/inference/v1", config.Limits{RPM: 10}, true},
	"xai":         {"openai", "https://api.x.ai/v1", config.Limits{}, true},
	"perplexity":  {"openai", "https://api.perplexity.ai", config.Limits{}, true},
	"aliyun":      {"openai", "https://dashscope-intl.aliyuncs.com/compatible-mode/v1", config.Limits{}, true},
	"ollama":      {"openai", "http://localhost:11434/v1", config.Limits{}, true},
	"vllm":        {"openai", "http://localhost:8000/v1", config.Limits{}, true},
	"lmstudio":    {"openai", "http://localhost:1234/v1", config.Limits{}, true},
}

func TestPresetsResolve(t *testing.T) {
	for _, pr := range config.Presets {
		if _, ok := presetWant[pr.Name]; !ok {
			t.Errorf("preset %s has no row in presetWant", pr.Name)
		}
	}
	for name, want := range presetWant {
		t.Run(name, func(t *testing.T) {
			if config.LookupPreset(name) == nil {
				t.Fatalf("LookupPreset(%q) = nil", name)
			}
			// An account_id is given to every preset that takes one.
			account := ""
			if strings.Contains(config.LookupPreset(name).BaseURL, "{account_id}") {
				account = "    account_id: acct\n"
			}
			data := fmt.Sprintf("providers:\n  p:\n    type: %s\n%s    models: {m: {}}\n", name, account)
			cfg, err := config.Parse([]byte(data), testOptions())
			if err != nil {
				t.Fatalf("Parse:\n%s\n%v", data, err)
			}
			pv := cfg.Providers["p"]
			for _, c := range []struct {
				what      string
				got, want any
			}{
				{"Type", pv.Type, name},
				{"Protocol", pv.Protocol, want.protocol},
				{"BaseURL", pv.BaseURL, want.baseURL},
				{"Limits", pv.Limits, want.limits},
				{"StreamUsage", *pv.StreamUsage, want.streamUsage},
			} {
				if c.got != c.want {
					t.Errorf("%s = %#v, want %#v", c.what, c.got, c.want)
				}
			}
		})
	}
}

func TestPresetProtocols(t *testing.T) {
	seen := map[string]bool{}
	for _, pr := range config.Presets {
		if !slices.Contains(config.Protocols, pr.Protocol) {
			t.Errorf("preset %s: protocol %q is not in Protocols %q", pr.Name, pr.Protocol, config.Protocols)
		}
		if seen[pr.Name] {
			t.Errorf("preset %s is listed twice", pr.Name)
		}
		seen[pr.Name] = true
	}
	// mock is built in; every other protocol has its namesake preset,
	// which is where its default base_url lives.
	for _, proto := range config.Protocols {
		if pr := config.LookupPreset(proto); proto != "mock" && (pr == nil || pr.Protocol != proto) {
			t.Errorf("protocol %s has no namesake preset speaking it", proto)
		}
	}
	if config.LookupPreset("mock") != nil {
		t.Errorf("mock is a protocol, not a preset")
	}
}

func TestPresetOverrides(t *testing.T) {
	cfg, err := config.Load("testdata/presets.good.yaml", testOptions())
	if err != nil {
		t.Fatal(err)
	}
	groqFree := config.Limits{RPM: 30, RPD: 1000, TPM: 6000, TPD: 100000}
	// limits gives each of a target's caps: its provider's with its
	// model's laid over them, as a chain resolves them.
	limits := func(provider, model string) config.Limits {
		pv := cfg.Providers[provider]
		return config.Overlay(pv.Limits, pv.Models[model].Limits)
	}
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"groq limits (the preset's)", limits("groq", "llama-70b"), groqFree},
		{"groq-paid provider limits", cfg.Providers["groq-paid"].Limits, config.Limits{RPM: 1000, TPM: 6000, TPD: 100000}},
		{"groq-paid llama-8b limits", limits("groq-paid", "llama-8b"), config.Limits{RPM: 1000, TPM: 6000, TPD: 500000}},
		{"groq-aliased limits", cfg.Providers["groq-aliased"].Limits, config.Limits{RPM: 1000, TPM: 6000, TPD: 100000}},
		{"groq-proxy base_url (trailing / trimmed)", cfg.Providers["groq-proxy"].BaseURL, "https://proxy.example/groq/v1"},
		{"groq-proxy protocol", cfg.Providers["groq-proxy"].Protocol, "openai"},
		{"groq-proxy limits", cfg.Providers["groq-proxy"].Limits, groqFree},
		{"mistral stream_usage", *cfg.Providers["mistral"].StreamUsage, false},
		{"mistral-usage stream_usage", *cfg.Providers["mistral-usage"].StreamUsage, true},
		{"openrouter provider limits", cfg.Providers["openrouter"].Limits, config.Limits{TPM: 5000}},
		{"openrouter llama-free limits", limits("openrouter", "llama-free"), config.Limits{RPM: 20, RPD: 50, TPM: 5000}},
		{"openrouter r1-free limits", limits("openrouter", "r1-free"), config.Limits{RPM: 20, RPD: 1000, TPM: 5000}},
		{"openrouter sonnet limits", limits("openrouter", "sonnet"), config.Limits{TPM: 5000}},
		{"workers-ai base_url", cfg.Providers["workers-ai"].BaseURL, "https://api.cloudflare.com/client/v4/accounts/0123456789abcdef0123456789abcdef/ai/v1"},
		{"workers-ai limits", cfg.Providers["workers-ai"].Limits, config.Limits{RPM: 300}},
		{"workers-proxy base_url", cfg.Providers["workers-proxy"].BaseURL, "http://localhost:9000/v1"},
		{"aliyun-cn base_url", cfg.Providers["aliyun-cn"].BaseURL, "https://dashscope.aliyuncs.com/compatible-mode/v1"},
		{"aliyun-cn protocol", cfg.Providers["aliyun-cn"].Protocol, "openai"},
		{"ollama base_url", cfg.Providers["ollama"].BaseURL, "http://localhost:11434/v1"},
		{"ollama keys", len(cfg.Providers["ollama"].Keys), 0},
		{"openai base_url", cfg.Providers["openai"].BaseURL, "https://api.openai.com/v1"},
		{"openai limits", cfg.Providers["openai"].Limits, config.Limits{}},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#v, want %#v", c.what, c.got, c.want)
		}
	}
	// The chain carries the same merged caps the engine enforces.
	t.Run("chain", func(t *testing.T) {
		data := "providers:\n  groq:\n    type: groq\n    limits: {tpm: 12000}\n    models: {llama: {}}\nmodels:\n  auto: {targets: [groq/llama]}\n"
		cfg, err := config.Parse([]byte(data), testOptions())
		if err != nil {
			t.Fatal(err)
		}
		if got, want := cfg.Models["auto"].Chain[0].Limits, (config.Limits{RPM: 30, RPD: 1000, TPM: 12000, TPD: 100000}); got != want {
			t.Errorf("chain target limits = %+v, want %+v", got, want)
		}
	})
}

func TestPresetAccountID(t *testing.T) {
	for _, c := range []struct{ name, data, want string }{
		{"substituted and escaped",
			"providers:\n  cf:\n    type: cloudflare\n    account_id: a/b c\n    models: {m: {}}\n",
			"https://api.cloudflare.com/client/v4/accounts/a%2Fb%20c/ai/v1"},
		{"into a base_url of the file's",
			"providers:\n  cf:\n    type: cloudflare\n    account_id: acct\n    base_url: https://gateway.ai.cloudflare.com/v1/{account_id}/gw/workers-ai/v1\n    models: {m: {}}\n",
			"https://gateway.ai.cloudflare.com/v1/acct/gw/workers-ai/v1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(c.data), testOptions())
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Providers["cf"].BaseURL; got != c.want {
				t.Errorf("BaseURL = %q, want %q", got, c.want)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		data := "providers:\n  mock: {type: mock, models: {echo: {}}}\n  workers-ai:\n    type: cloudflare\n    keys: [\"${OPENAI_KEY}\"]\n    models: {m: {}}\n"
		_, err := config.Parse([]byte(data), testOptions())
		want := []string{"providers.workers-ai: account_id is missing; the cloudflare preset's base_url needs it (or give a base_url) (line 3)"}
		if err == nil {
			t.Fatalf("Parse succeeded, want %q", want)
		}
		if got := errorLines(t, err); !slices.Equal(got, want) {
			t.Errorf("errors = %q, want %q", got, want)
		}
	})
}

func TestUnknownTypeListsPresets(t *testing.T) {
	_, err := config.Parse([]byte("providers:\n  p:\n    type: groqq\n    models: {m: {}}\n"), testOptions())
	if err == nil {
		t.Fatal("Parse succeeded for type groqq")
	}
	msg := errorLines(t, err)[0]
	if !strings.HasPrefix(msg, `providers.p.type: unknown type "groqq"; one of the protocols openai, anthropic, gemini, cohere, mock, or a preset: groq, `) {
		t.Errorf("message = %q, want the protocols, then the presets", msg)
	}
	for _, pr := range config.Presets {
		if !strings.Contains(msg, " "+pr.Name+",") && !strings.Contains(msg, " "+pr.Name+" ") {
			t.Errorf("message does not name preset %s: %q", pr.Name, msg)
		}
	}
}
