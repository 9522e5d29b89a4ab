package engine

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/adapters"
)

// This file answers GET /metrics, in the Prometheus text exposition
// format, from the counters the request path keeps.

// exposition writes the Prometheus text format. Label values and HELP
// text are escaped as the format says (a backslash, a double quote in a
// label value, a newline), so no config name can break a scrape: Go's %q
// is not that escaping (it writes \t and \u00e9, which Prometheus
// rejects). The format's escaping is three rules; the library writer
// (expfmt) would need protobuf structs per sample and pull protobuf into
// the binary, so it is used by the tests, to parse, instead.
type exposition struct{ b strings.Builder }

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

func (x *exposition) family(name, typ, help string) {
	x.b.WriteString("# HELP " + name + " " + helpEscaper.Replace(help) + "\n# TYPE " + name + " " + typ + "\n")
}

// labels writes {k="v",...} of name, value pairs; nothing for none.
func (x *exposition) labels(kv []string) {
	if len(kv) == 0 {
		return
	}
	x.b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			x.b.WriteByte(',')
		}
		x.b.WriteString(kv[i] + `="`)
		labelEscaper.WriteString(&x.b, kv[i+1])
		x.b.WriteByte('"')
	}
	x.b.WriteByte('}')
}

// sample writes one sample of name with labels kv (name, value pairs).
func (x *exposition) sample(name string, v int64, kv ...string) {
	x.b.WriteString(name)
	x.labels(kv)
	x.b.WriteString(" " + strconv.FormatInt(v, 10) + "\n")
}

// histogram writes h as name's buckets, sum and count, in seconds.
func (x *exposition) histogram(name string, h *histogram, kv ...string) {
	counts, total, sum := h.snapshot()
	var cum int64
	le := append(kv[:len(kv):len(kv)], "le", "")
	for i, bound := range latencyBounds {
		cum += counts[i]
		le[len(le)-1] = strconv.FormatFloat(bound.Seconds(), 'g', -1, 64)
		x.sample(name+"_bucket", cum, le...)
	}
	le[len(le)-1] = "+Inf"
	x.sample(name+"_bucket", total, le...)
	x.b.WriteString(name + "_sum")
	x.labels(kv)
	x.b.WriteString(" " + strconv.FormatFloat(sum.Seconds(), 'g', -1, 64) + "\n")
	x.sample(name+"_count", total, kv...)
}

// metrics writes the Prometheus text exposition format. Labels are only
// config names (routes, providers, models) and fixed words, so their
// cardinality is bounded by the config.
func (e *Engine) metrics(ctx *fasthttp.RequestCtx, s *snapshot) {
	var x exposition
	routes := append([]*route{{cfg: nil, stats: s.defaultRoute}}, s.routes...)
	routeName := func(r *route) string {
		if r.cfg == nil {
			return "default"
		}
		return r.cfg.Name
	}

	x.family("gateway_requests_total", "counter", "Chat completion requests answered, by route and status class.")
	for _, r := range routes {
		for i := 1; i < len(r.stats.codes); i++ {
			if n := r.stats.codes[i].Load(); n > 0 {
				x.sample("gateway_requests_total", n, "route", routeName(r), "code", strconv.Itoa(i)+"xx")
			}
		}
	}
	x.family("gateway_request_duration_seconds", "histogram", "Time to answer a chat completion (to the first byte for streams), by route.")
	for _, r := range routes {
		x.histogram("gateway_request_duration_seconds", &r.stats.latency, "route", routeName(r))
	}
	targets := s.targetsOf()
	x.family("gateway_upstream_attempts_total", "counter", "Upstream attempts by provider, model and outcome.")
	for _, t := range targets {
		x.sample("gateway_upstream_attempts_total", t.state.use.successes.Load(), "provider", t.provider.name, "model", t.model.Name, "outcome", "success")
		for i := range t.state.use.errors {
			x.sample("gateway_upstream_attempts_total", t.state.use.errors[i].Load(), "provider", t.provider.name, "model", t.model.Name,
				"outcome", adapters.Class(i).String())
		}
	}
	x.family("gateway_upstream_fallback_wins_total", "counter", "Requests a target answered after other candidates failed.")
	for _, t := range targets {
		x.sample("gateway_upstream_fallback_wins_total", t.state.use.fallbacks.Load(), "provider", t.provider.name, "model", t.model.Name)
	}
	x.family("gateway_upstream_ttfb_seconds", "histogram", "Time to the first byte of successful upstream attempts.")
	for _, t := range targets {
		x.histogram("gateway_upstream_ttfb_seconds", &t.state.use.latency, "provider", t.provider.name, "model", t.model.Name)
	}
	x.family("gateway_tokens_total", "counter", "Tokens the upstreams reported, by provider, model and kind.")
	for _, t := range targets {
		x.sample("gateway_tokens_total", t.state.use.prompt.Load(), "provider", t.provider.name, "model", t.model.Name, "kind", "prompt")
		x.sample("gateway_tokens_total", t.state.use.completion.Load(), "provider", t.provider.name, "model", t.model.Name, "kind", "completion")
	}
	x.family("gateway_circuit_breaker_state", "gauge", "Circuit breaker per provider and model: 0 closed, 1 open, 2 half-open.")
	now := nanotime()
	for _, t := range targets {
		v := map[string]int64{"closed": 0, "open": 1, "half_open": 2}[t.state.breaker.State(now)]
		x.sample("gateway_circuit_breaker_state", v, "provider", t.provider.name, "model", t.model.Name)
	}
	x.family("gateway_keys_available", "gauge", "Provider keys routing would use now (not cooling down, not held out by a probe, not at a rate cap), per provider and model.")
	for _, t := range targets {
		var n int64
		for _, ks := range t.keys {
			if keyStateOf(t, ks, now).State == "healthy" {
				n++
			}
		}
		x.sample("gateway_keys_available", n, "provider", t.provider.name, "model", t.model.Name)
	}
	x.family("gateway_key_probe_state", "gauge", "Last probe of each provider key, by index: 0 none yet, 1 healthy, 2 rate_limited, 3 invalid, 4 error.")
	for _, k := range s.probes {
		x.sample("gateway_key_probe_state", int64(k.state.result.Load()), "provider", k.p.name, "key", strconv.Itoa(k.slot+1))
	}
	x.family("gateway_probes_total", "counter", "Provider key probes made, by provider and result.")
	for i := 0; i < len(s.probes); {
		p := s.probes[i].p
		var counts [numProbeResults]int64
		for ; i < len(s.probes) && s.probes[i].p == p; i++ {
			for r := range counts {
				counts[r] += s.probes[i].state.counts[r].Load()
			}
		}
		for r := probeHealthy; r < numProbeResults; r++ {
			x.sample("gateway_probes_total", counts[r], "provider", p.name, "result", probeNames[r])
		}
	}
	x.family("gateway_passthrough_requests_total", "counter", "Passthrough answers by provider and status class.")
	provs := append([]string(nil), s.cfg.ProviderOrder...)
	sort.Strings(provs)
	for _, pn := range provs {
		p := s.providers[pn]
		for i := 1; i < len(p.stats.codes); i++ {
			if n := p.stats.codes[i].Load(); n > 0 {
				x.sample("gateway_passthrough_requests_total", n, "provider", pn, "code", strconv.Itoa(i)+"xx")
			}
		}
	}
	x.family("gateway_cache_requests_total", "counter", "Passthrough GETs answered from the cache (hit) or upstream (miss).")
	var hits, misses int64
	if e.cache != nil {
		hits, misses = e.cache.hits.Load(), e.cache.misses.Load()
	}
	x.sample("gateway_cache_requests_total", hits, "result", "hit")
	x.sample("gateway_cache_requests_total", misses, "result", "miss")

	x.family("gateway_state_backend_up", "gauge", "Whether the shared state backend (Redis) answers: 0 while this replica counts alone or refuses; always 1 for memory.")
	x.sample("gateway_state_backend_up", boolInt(e.shared == nil || e.shared.up.Load()))

	st := e.reloadStatus(s)
	x.family("gateway_config_last_reload_successful", "gauge", "Whether the last config reload succeeded.")
	x.sample("gateway_config_last_reload_successful", boolInt(st.OK))
	x.family("gateway_config_last_reload_success_timestamp_seconds", "gauge", "When the config now serving was loaded.")
	x.sample("gateway_config_last_reload_success_timestamp_seconds", s.cfg.LoadedAt.Unix())
	x.family("gateway_config_hash", "gauge", "The first 48 bits of the serving config's SHA-256.")
	h, _ := strconv.ParseInt(s.cfg.Checksum[:12], 16, 64)
	x.sample("gateway_config_hash", h)
	x.family("gateway_uptime_seconds", "gauge", "Seconds since the gateway started.")
	x.sample("gateway_uptime_seconds", int64(time.Since(e.started).Seconds()))
	ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
	ctx.SetBodyString(x.b.String())
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
