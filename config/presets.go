package config

import (
	"net/url"
	"slices"
	"strings"
)

// Preset is a known provider that a provider's `type` may name instead of
// a bare protocol. It fills in what the file leaves out: the protocol
// (which also settles how the key is sent), the API root, and the caps the
// provider documents for its free tier.
type Preset struct {
	Name     string
	Protocol string
	// BaseURL is the API root; {account_id} in it is replaced by the
	// provider's account_id.
	BaseURL string
	// Limits are the documented free-tier caps, provider-wide because the
	// gateway cannot know every model's; zero where no reliable number is
	// published. They apply per (provider, model, key) like any limits.
	Limits Limits
	// LimitsFor, when set, confines Limits to the models whose upstream
	// name ends with it: OpenRouter caps only its ":free" variants, and
	// capping paid models would throttle paying accounts.
	LimitsFor string
	// StreamUsage, when set, is the stream_usage default, for servers that
	// reject stream_options.
	StreamUsage *bool
}

var noStreamUsage = false

// Presets lists the known providers: first the namesakes of the
// protocols, then the rest in the order the error for an unknown type
// gives them. The numbers are sourced in README's preset table.
var Presets = []Preset{
	{Name: "openai", Protocol: "openai", BaseURL: "https://api.openai.com/v1"},
	{Name: "anthropic", Protocol: "anthropic", BaseURL: "https://api.anthropic.com"},
	{Name: "gemini", Protocol: "gemini", BaseURL: "https://generativelanguage.googleapis.com/v1beta"},
	{Name: "cohere", Protocol: "cohere", BaseURL: "https://api.cohere.com", Limits: Limits{RPM: 20}},
	{Name: "groq", Protocol: "openai", BaseURL: "https://api.groq.com/openai/v1",
		Limits: Limits{RPM: 30, RPD: 1000, TPM: 6000, TPD: 100000}},
	{Name: "cerebras", Protocol: "openai", BaseURL: "https://api.cerebras.ai/v1",
		Limits: Limits{RPM: 5, TPM: 30000, TPD: 1000000}},
	{Name: "sambanova", Protocol: "openai", BaseURL: "https://api.sambanova.ai/v1",
		Limits: Limits{RPM: 20, RPD: 20, TPD: 200000}},
	{Name: "nvidia", Protocol: "openai", BaseURL: "https://integrate.api.nvidia.com/v1"},
	// Mistral answers 422 to any field it does not know, stream_options
	// included, and puts usage in a stream's last chunk unasked.
	{Name: "mistral", Protocol: "openai", BaseURL: "https://api.mistral.ai/v1", StreamUsage: &noStreamUsage},
	{Name: "openrouter", Protocol: "openai", BaseURL: "https://openrouter.ai/api/v1",
		Limits: Limits{RPM: 20, RPD: 50}, LimitsFor: ":free"},
	{Name: "huggingface", Protocol: "openai", BaseURL: "https://router.huggingface.co/v1"},
	{Name: "cloudflare", Protocol: "openai", BaseURL: "https://api.cloudflare.com/client/v4/accounts/{account_id}/ai/v1",
		Limits: Limits{RPM: 300}},
	{Name: "zhipu", Protocol: "openai", BaseURL: "https://open.bigmodel.cn/api/paas/v4"},
	{Name: "moonshot", Protocol: "openai", BaseURL: "https://api.moonshot.ai/v1"},
	{Name: "minimax", Protocol: "openai", BaseURL: "https://api.minimax.io/v1"},
	{Name: "deepseek", Protocol: "openai", BaseURL: "https://api.deepseek.com/v1"},
	{Name: "together", Protocol: "openai", BaseURL: "https://api.together.xyz/v1"},
	{Name: "fireworks", Protocol: "openai", BaseURL: "https://api.fireworks.ai/inference/v1", Limits: Limits{RPM: 10}},
	{Name: "xai", Protocol: "openai", BaseURL: "https://api.x.ai/v1"},
	{Name: "perplexity", Protocol: "openai", BaseURL: "https://api.perplexity.ai"},
	// Alibaba Cloud Model Studio (DashScope), international (Singapore);
	// mainland China is https://dashscope.aliyuncs.com/compatible-mode/v1,
	// with keys of its own.
	{Name: "aliyun", Protocol: "openai", BaseURL: "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"},
	// Local servers: no key needed.
	{Name: "ollama", Protocol: "openai", BaseURL: "http://localhost:11434/v1"},
	{Name: "vllm", Protocol: "openai", BaseURL: "http://localhost:8000/v1"},
	{Name: "lmstudio", Protocol: "openai", BaseURL: "http://localhost:1234/v1"},
}

const accountIDSlot = "{account_id}"

// LookupPreset returns the preset a type names, or nil.
func LookupPreset(name string) *Preset {
	for i := range Presets {
		if Presets[i].Name == name {
			return &Presets[i]
		}
	}
	return nil
}

// typeChoices words what a provider's type may be, for errors.
func typeChoices() string {
	var names []string
	for _, pr := range Presets {
		if !slices.Contains(Protocols, pr.Name) {
			names = append(names, pr.Name)
		}
	}
	return "one of the protocols " + strings.Join(Protocols, ", ") + ", or a preset: " + strings.Join(names, ", ")
}

// applyPreset fills what the file left out of a provider from its preset.
// It runs before the provider's own defaults, so a preset's choice (say,
// stream_usage off) is not mistaken for the file's.
func (p *parser) applyPreset(pv *Provider, pr *Preset) {
	pv.Protocol = pr.Protocol
	if pv.StreamUsage == nil && pr.StreamUsage != nil {
		v := *pr.StreamUsage
		pv.StreamUsage = &v
	}
	if pr.LimitsFor == "" {
		fillLimits(&pv.Limits, pr.Limits, setLimits(pv.Limits, p.mapKeys("providers", pv.Name, "limits")))
	}
}

// baseURL settles a provider's API root: the file's, else its preset's,
// with account_id put in. An account_id that nothing uses is an error: it
// was likely meant for another provider.
func (p *parser) baseURL(pv *Provider, pr *Preset, path string) {
	fromFile := pv.BaseURL != ""
	if !fromFile && pr != nil {
		pv.BaseURL = pr.BaseURL
	}
	needs := strings.Contains(pv.BaseURL, accountIDSlot)
	switch {
	case needs && pv.AccountID != "":
		pv.BaseURL = strings.ReplaceAll(pv.BaseURL, accountIDSlot, url.PathEscape(pv.AccountID))
	case needs && fromFile:
		p.errorf(path+".base_url", "holds %s but account_id is missing", accountIDSlot)
	case needs:
		// The slot stays; it parses as a URL, so this is the one error.
		p.errorf(path, "account_id is missing; the %s preset's base_url needs it (or give a base_url)", pr.Name)
	case pv.AccountID != "":
		p.errorf(path+".account_id", "is not used: base_url holds no %s", accountIDSlot)
	}
}

// presetModelLimits lays a preset's model-scoped caps under a model's own
// and its provider's: the file's settings at either level win.
func (p *parser) presetModelLimits(pv *Provider, pr *Preset, m *ProviderModel) {
	if pr == nil || pr.LimitsFor == "" || !strings.HasSuffix(m.Upstream, pr.LimitsFor) {
		return
	}
	set := setLimits(pv.Limits, p.mapKeys("providers", pv.Name, "limits"))
	set = append(set, setLimits(m.Limits, p.mapKeys("providers", pv.Name, "models", m.Name, "limits"))...)
	fillLimits(&m.Limits, pr.Limits, set)
}

// setLimits names the limits a file gives: every one written, zero
// included, since an explicit 0 lifts a preset's cap; and every non-zero
// one, which a YAML merge key sets without writing it.
func setLimits(l Limits, written []string) []string {
	set := slices.Clone(written)
	for _, f := range l.fields() {
		if *f.v != 0 {
			set = append(set, f.name)
		}
	}
	return set
}

// fillLimits copies into l each of preset's limits that set does not name.
func fillLimits(l *Limits, preset Limits, set []string) {
	from := preset.fields()
	for i, f := range l.fields() {
		if !slices.Contains(set, f.name) {
			*f.v = *from[i].v
		}
	}
}

type limitField struct {
	name string
	v    *int
}

func (l *Limits) fields() []limitField {
	return []limitField{{"rpm", &l.RPM}, {"rpd", &l.RPD}, {"tpm", &l.TPM}, {"tpd", &l.TPD}}
}
