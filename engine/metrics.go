package engine

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// This file answers GET /metrics, in the Prometheus text exposition
// format, from the counters the request path keeps.

// metrics writes the Prometheus text exposition format. Labels are only
// config names (routes, providers, models) and fixed words, so their
// cardinality is bounded by the config.
func (e *Engine) metrics(ctx *fasthttp.RequestCtx, s *snapshot) {
	var b strings.Builder
	family := func(name, typ, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	histo := func(name, labels string, h *histogram) {
		counts, total, sum := h.snapshot()
		var cum int64
		for i, bound := range latencyBounds {
			cum += counts[i]
			fmt.Fprintf(&b, "%s_bucket{%sle=%q} %d\n", name, labels, strconv.FormatFloat(bound.Seconds(), 'g', -1, 64), cum)
		}
		fmt.Fprintf(&b, "%s_bucket{%sle=\"+Inf\"} %d\n", name, labels, total)
		fmt.Fprintf(&b, "%s_sum{%s} %g\n", name, strings.TrimSuffix(labels, ","), sum.Seconds())
		fmt.Fprintf(&b, "%s_count{%s} %d\n", name, strings.TrimSuffix(labels, ","), total)
	}
	routes := append([]*route{{cfg: nil, stats: s.defaultRoute}}, s.routes...)
	routeName := func(r *route) string {
		if r.cfg == nil {
			return "default"
		}
		return r.cfg.Name
	}

	family("gateway_requests_total", "counter", "Chat completion requests answered, by route and status class.")
	for _, r := range routes {
		for i := 1; i < len(r.stats.codes); i++ {
			if n := r.stats.codes[i].Load(); n > 0 {
				fmt.Fprintf(&b, "gateway_requests_total{route=%q,code=\"%dxx\"} %d\n", routeName(r), i, n)
			}
		}
	}
	family("gateway_request_duration_seconds", "histogram", "Time to answer a chat completion (to the first byte for streams), by route.")
	for _, r := range routes {
		histo("gateway_request_duration_seconds", fmt.Sprintf("route=%q,", routeName(r)), &r.stats.latency)
	}
	targets := s.targetsOf()
	family("gateway_upstream_attempts_total", "counter", "Upstream attempts by provider, model and outcome.")
	for _, t := range targets {
		l := fmt.Sprintf("provider=%q,model=%q", t.provider.name, t.model.Name)
		fmt.Fprintf(&b, "gateway_upstream_attempts_total{%s,outcome=\"success\"} %d\n", l, t.state.use.successes.Load())
		for i, name := range classNames {
			fmt.Fprintf(&b, "gateway_upstream_attempts_total{%s,outcome=%q} %d\n", l, name, t.state.use.errors[i].Load())
		}
	}
	family("gateway_upstream_fallback_wins_total", "counter", "Requests a target answered after other candidates failed.")
	for _, t := range targets {
		fmt.Fprintf(&b, "gateway_upstream_fallback_wins_total{provider=%q,model=%q} %d\n", t.provider.name, t.model.Name, t.state.use.fallbacks.Load())
	}
	family("gateway_upstream_ttfb_seconds", "histogram", "Time to the first byte of successful upstream attempts.")
	for _, t := range targets {
		histo("gateway_upstream_ttfb_seconds", fmt.Sprintf("provider=%q,model=%q,", t.provider.name, t.model.Name), &t.state.use.ttfb)
	}
	family("gateway_tokens_total", "counter", "Tokens the upstreams reported, by provider, model and kind.")
	for _, t := range targets {
		fmt.Fprintf(&b, "gateway_tokens_total{provider=%q,model=%q,kind=\"prompt\"} %d\n", t.provider.name, t.model.Name, t.state.use.prompt.Load())
		fmt.Fprintf(&b, "gateway_tokens_total{provider=%q,model=%q,kind=\"completion\"} %d\n", t.provider.name, t.model.Name, t.state.use.completion.Load())
	}
	family("gateway_circuit_breaker_state", "gauge", "Circuit breaker per provider and model: 0 closed, 1 open, 2 half-open.")
	now := nanotime()
	for _, t := range targets {
		v := map[string]int{"closed": 0, "open": 1, "half_open": 2}[t.state.breaker.State(now)]
		fmt.Fprintf(&b, "gateway_circuit_breaker_state{provider=%q,model=%q} %d\n", t.provider.name, t.model.Name, v)
	}
	family("gateway_keys_available", "gauge", "Provider keys routing would use now (not cooling down, not held out by a probe, not at a rate cap), per provider and model.")
	for _, t := range targets {
		n := 0
		for _, ks := range t.keys {
			if keyStateOf(t, ks, now).State == "healthy" {
				n++
			}
		}
		fmt.Fprintf(&b, "gateway_keys_available{provider=%q,model=%q} %d\n", t.provider.name, t.model.Name, n)
	}
	family("gateway_key_probe_state", "gauge", "Last probe of each provider key, by index: 0 none yet, 1 healthy, 2 rate_limited, 3 invalid, 4 error.")
	for _, k := range s.probes {
		fmt.Fprintf(&b, "gateway_key_probe_state{provider=%q,key=\"%d\"} %d\n", k.p.name, k.slot+1, k.state.result.Load())
	}
	family("gateway_probes_total", "counter", "Provider key probes made, by provider and result.")
	for i := 0; i < len(s.probes); {
		p := s.probes[i].p
		var counts [numProbeResults]int64
		for ; i < len(s.probes) && s.probes[i].p == p; i++ {
			for r := range counts {
				counts[r] += s.probes[i].state.counts[r].Load()
			}
		}
		for r := probeHealthy; r < numProbeResults; r++ {
			fmt.Fprintf(&b, "gateway_probes_total{provider=%q,result=%q} %d\n", p.name, probeNames[r], counts[r])
		}
	}
	family("gateway_passthrough_requests_total", "counter", "Passthrough answers by provider and status class.")
	provs := append([]string(nil), s.cfg.ProviderOrder...)
	sort.Strings(provs)
	for _, pn := range provs {
		p := s.providers[pn]
		for i := 1; i < len(p.stats.codes); i++ {
			if n := p.stats.codes[i].Load(); n > 0 {
				fmt.Fprintf(&b, "gateway_passthrough_requests_total{provider=%q,code=\"%dxx\"} %d\n", pn, i, n)
			}
		}
	}
	family("gateway_cache_requests_total", "counter", "Passthrough GETs answered from the cache (hit) or upstream (miss).")
	var hits, misses int64
	if e.cache != nil {
		hits, misses = e.cache.hits.Load(), e.cache.misses.Load()
	}
	fmt.Fprintf(&b, "gateway_cache_requests_total{result=\"hit\"} %d\ngateway_cache_requests_total{result=\"miss\"} %d\n", hits, misses)

	st := e.reloadStatus(s)
	family("gateway_config_last_reload_successful", "gauge", "Whether the last config reload succeeded.")
	fmt.Fprintf(&b, "gateway_config_last_reload_successful %d\n", boolInt(st.OK))
	family("gateway_config_last_reload_success_timestamp_seconds", "gauge", "When the config now serving was loaded.")
	fmt.Fprintf(&b, "gateway_config_last_reload_success_timestamp_seconds %d\n", s.cfg.LoadedAt.Unix())
	family("gateway_config_hash", "gauge", "The first 48 bits of the serving config's SHA-256.")
	h, _ := strconv.ParseUint(s.cfg.Checksum[:12], 16, 64)
	fmt.Fprintf(&b, "gateway_config_hash %d\n", h)
	family("gateway_uptime_seconds", "gauge", "Seconds since the gateway started.")
	fmt.Fprintf(&b, "gateway_uptime_seconds %d\n", int64(time.Since(e.started).Seconds()))
	ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
	ctx.SetBodyString(b.String())
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
