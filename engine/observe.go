package engine

import (
	"encoding/json"
	"fmt"
	"gateway/adapters"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// This file answers GET /api/stats from the counters the request path
// keeps. Provider keys appear by index and state, never by
// value.

type statsBody struct {
	TotalRequests   int64                   `json:"totalRequests"`
	CacheHitRate    string                  `json:"cacheHitRate"`
	CachedKeys      int                     `json:"cachedKeys"`
	CacheHits       int64                   `json:"cacheHits"`
	CacheMisses     int64                   `json:"cacheMisses"`
	Uptime          string                  `json:"uptime"`
	UptimeSeconds   int64                   `json:"uptimeSeconds"`
	Targets         []string                `json:"targets"`
	CacheTTL        int64                   `json:"cacheTTL"`
	RateLimitMax    int                     `json:"rateLimitMax"`
	RateLimitWindow int64                   `json:"rateLimitWindow"`
	Config          configState             `json:"config"`
	Providers       map[string]providerBody `json:"providers"`
	Keys            map[string]usageBody    `json:"keys"`
	Routes          map[string]routeBody    `json:"routes"`
	StickySessions  int                     `json:"stickySessions"`
	// Window names the window the usage figures cover; empty: since
	// the start.
	Window string   `json:"window,omitempty"`
	Viewer viewerJS `json:"viewer"`
	Reload reloadJS `json:"reload"`
}

type usageBody struct {
	Requests         int64            `json:"requests"`
	Successes        int64            `json:"successes"`
	Errors           map[string]int64 `json:"errors,omitempty"`
	Fallbacks        int64            `json:"fallbacks,omitempty"`
	PromptTokens     int64            `json:"promptTokens"`
	CompletionTokens int64            `json:"completionTokens"`
}

type latencyJS struct {
	Count int64   `json:"count"`
	AvgMS float64 `json:"avgMs"`
	P50MS float64 `json:"p50Ms"`
	P99MS float64 `json:"p99Ms"`
}

type keyStateJS struct {
	Index int        `json:"index"`
	State string     `json:"state"`
	Until *time.Time `json:"until,omitempty"`
	// ProbedAt and Probe are when the key was last probed and what the
	// probe found, absent until a probe ran.
	ProbedAt *time.Time `json:"probedAt,omitempty"`
	Probe    string     `json:"probe,omitempty"`
}

type providerBody struct {
	usageBody
	Passthrough map[string]int64        `json:"passthrough,omitempty"`
	Models      map[string]modelStatsJS `json:"models"`
}

type modelStatsJS struct {
	usageBody
	Breaker string       `json:"breaker"`
	TTFB    latencyJS    `json:"ttfb"`
	Keys    []keyStateJS `json:"keys"`
}

type routeBody struct {
	Codes   map[string]int64 `json:"codes"`
	Latency latencyJS        `json:"latency"`
}

func latencyOf(t *tally) latencyJS {
	var n int64
	for _, c := range t.latency {
		n += c
	}
	l := latencyJS{Count: n}
	if n > 0 {
		l.AvgMS = float64(time.Duration(t.latencySum).Microseconds()) / 1000 / float64(n)
		l.P50MS = float64(quantileOf(&t.latency, n, 0.5).Microseconds()) / 1000
		l.P99MS = float64(quantileOf(&t.latency, n, 0.99).Microseconds()) / 1000
	}
	return l
}

// usageOf reports t, with its errors by class when classes is set.
func usageOf(t *tally, classes bool) usageBody {
	// A stream cut after the window's start may take back a success
	// counted before it.
	u := usageBody{Requests: t.requests, Successes: max(0, t.successes), Fallbacks: t.fallbacks,
		PromptTokens: t.prompt, CompletionTokens: t.completion}
	if classes {
		for i, n := range t.errors {
			if n > 0 {
				if u.Errors == nil {
					u.Errors = map[string]int64{}
				}
				u.Errors[adapters.Class(i).String()] = n
			}
		}
	}
	return u
}

func codesOf(t *tally) map[string]int64 {
	m := map[string]int64{}
	for i := 1; i < len(t.codes); i++ {
		if n := t.codes[i]; n > 0 {
			m[strconv.Itoa(i)+"xx"] = n
		}
	}
	return m
}

// keyStateOf names the state of one (provider, model, key) of t, in the
// order the request path weighs them (walker.inspect): a cooldown, then
// the last probe's verdict (invalid or error, held out until its next
// probe), then the caps: a key whose caps hold no room for one more
// request is rate_limited until they do, as much as one cooling down
// after a 429. The last probe's result and time come along whatever the
// state.
func keyStateOf(t *target, ks *keyState, now int64) keyStateJS {
	js := keyStateJS{State: "healthy"}
	if r := ks.probe.result.Load(); r != probeNone {
		probed := time.Unix(0, ks.probe.at.Load()).UTC()
		js.ProbedAt, js.Probe = &probed, probeNames[r]
	}
	until, reason, on := ks.until.Active(now)
	switch result := ks.probe.result.Load(); {
	case on && reason == coolRate:
		js.State = "rate_limited"
	case on && reason == coolAuth:
		js.State = "invalid"
	case on:
		js.State = "cooling_down"
	case result == probeInvalid || result == probeError:
		js.State, until = probeNames[result], ks.probe.next.Load()
	default:
		if lim := ks.limiter(); lim != nil && !t.caps.none() {
			if ok, at := lim.Check(now, t.caps, 1); !ok {
				js.State, until = "rate_limited", at
			}
		}
	}
	if js.State != "healthy" && until > now {
		end := time.Unix(0, until).UTC()
		js.Until = &end
	}
	return js
}

// targetsOf lists every target of the snapshot once, in provider order.
func (s *snapshot) targetsOf() []*target {
	var out []*target
	for _, pn := range s.cfg.ProviderOrder {
		pc := s.cfg.Providers[pn]
		for _, mn := range pc.ModelOrder {
			if g := s.groups[pn+"/"+mn]; g != nil && len(g.targets) == 1 {
				out = append(out, g.targets[0])
			}
		}
	}
	return out
}

// admin reports whether the caller may see what is not its own, such as
// other gateway keys' usage. With auth off (nil) every caller may.
func (gk *gatewayKey) admin() bool { return gk == nil || gk.cfg.Admin }

// stats answers /api/stats for key (nil with auth off), its usage figures
// since the start or over ?window. Only an admin key sees other gateway
// keys' usage and the last reload's errors; every key sees the providers'
// and models' figures and states.
func (e *Engine) stats(ctx *fasthttp.RequestCtx, s *snapshot, key *gatewayKey) {
	w, werr := windowParam(ctx)
	if werr != nil {
		werr.write(ctx)
		return
	}
	v := e.view(w)
	defer v.close()
	now := time.Now()
	up := now.Sub(e.started)
	all := v.gateway(e)
	b := statsBody{
		TotalRequests: all.requests, Uptime: humanUptime(up), UptimeSeconds: int64(up.Seconds()),
		Targets: append([]string{}, s.cfg.ProviderOrder...), CacheTTL: int64(s.cacheTTL.Seconds()),
		RateLimitMax: s.cfg.Auth.DefaultRPM, RateLimitWindow: time.Minute.Milliseconds(),
		Config:    configState{Checksum: s.cfg.Checksum, LoadedAt: s.cfg.LoadedAt.UTC()},
		Providers: map[string]providerBody{}, Keys: map[string]usageBody{}, Routes: map[string]routeBody{},
		CacheHitRate: "0.0%", StickySessions: e.sticky.Len(),
		Viewer: viewerOf(key), Reload: reloadOf(e.reloadStatus(s), key.admin(), s.red),
	}
	if w != nil {
		b.Window = w.name
	}
	if e.cache != nil {
		b.CacheHits, b.CacheMisses = e.cache.hits.Load(), e.cache.misses.Load()
		if total := b.CacheHits + b.CacheMisses; total > 0 {
			b.CacheHitRate = fmt.Sprintf("%.1f%%", float64(b.CacheHits)*100/float64(total))
		}
		b.CachedKeys, _ = e.cache.size()
	}
	for _, t := range s.targetsOf() {
		pb, ok := b.Providers[t.provider.name]
		if !ok {
			pass := v.of(t.provider.stats)
			pb = providerBody{Models: map[string]modelStatsJS{}, Passthrough: codesOf(&pass)}
		}
		use := v.of(&t.state.use)
		u := usageOf(&use, true)
		m := modelStatsJS{usageBody: u, Breaker: t.state.breaker.State(nanotime()), TTFB: latencyOf(&use)}
		for i, ks := range t.keys {
			k := keyStateOf(t, ks, nanotime())
			k.Index = i + 1
			m.Keys = append(m.Keys, k)
		}
		pb.Models[t.model.Name] = m
		pb.Requests += u.Requests
		pb.Successes += u.Successes
		pb.Fallbacks += u.Fallbacks
		pb.PromptTokens += u.PromptTokens
		pb.CompletionTokens += u.CompletionTokens
		for k, v := range u.Errors {
			if pb.Errors == nil {
				pb.Errors = map[string]int64{}
			}
			pb.Errors[k] += v
		}
		b.Providers[t.provider.name] = pb
	}
	for name, gk := range s.byName {
		if gk != key && !key.admin() {
			continue
		}
		use := v.of(gk.stats)
		u := usageOf(&use, false)
		u.Errors = codesOf(&use)
		delete(u.Errors, "2xx")
		b.Keys[name] = u
	}
	for name, r := range s.routeStates() {
		use := v.of(r)
		b.Routes[name] = routeBody{Codes: codesOf(&use), Latency: latencyOf(&use)}
	}
	out, _ := json.Marshal(b)
	ctx.SetContentTypeBytes(strJSON)
	ctx.SetBody(out)
}

func humanUptime(d time.Duration) string {
	days := int(d.Hours()) / 24
	h := int(d.Hours()) % 24
	m := int(d.Minutes()) % 60
	if days > 0 {
		return fmt.Sprintf("%dd %dh %dm", days, h, m)
	}
	if h > 0 {
		return fmt.Sprintf("%dh %dm", h, m)
	}
	return fmt.Sprintf("%dm %ds", m, int(d.Seconds())%60)
}
