package engine

import (
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/adapters"
	"gateway/config"
)

// This file serves the analytics: /api/stats over a window, with who is
// asking and the last reload, and GET /api/stats/series for the charts.

// windowParam reads ?window: nil when absent, an error when not a window
// served.
func windowParam(ctx *fasthttp.RequestCtx) (*span, *apiError) {
	args := ctx.QueryArgs()
	if !args.Has("window") {
		return nil, nil
	}
	if w := spanNamed(string(args.Peek("window"))); w != nil {
		return w, nil
	}
	return nil, badRequest("window", "invalid_window", "window must be one of 1h, 24h, 7d, 30d")
}

// timed is a state with usage since the start and over time.
type timed interface {
	load() tally
	timeline() *series
}

func (c *counters) timeline() *series { return c.series.Load() }

// view reads usage since the start (no window) or over a window, with the
// analytics locked until close.
type view struct {
	w *span
	a *analytics
}

func (e *Engine) view(w *span) *view {
	a := e.states.analytics
	if w != nil {
		a.tick()
		a.mu.Lock()
	}
	return &view{w: w, a: a}
}

func (v *view) close() {
	if v.w != nil {
		v.a.mu.Unlock()
	}
}

func (v *view) of(x timed) tally {
	if v.w == nil {
		return x.load()
	}
	return x.timeline().sum(v.w)
}

// gateway is the whole gateway's usage; since the start, only the number
// of requests is kept.
func (v *view) gateway(e *Engine) tally {
	if v.w == nil {
		return tally{requests: e.requests.Load()}
	}
	return v.a.all.sum(v.w)
}

type viewerJS struct {
	Key   string `json:"key"`
	Admin bool   `json:"admin"`
}

func viewerOf(key *gatewayKey) viewerJS {
	v := viewerJS{Admin: key.admin()}
	if key != nil {
		v.Key = key.cfg.Name
	}
	return v
}

type reloadJS struct {
	OK       bool      `json:"ok"`
	At       time.Time `json:"at"`
	Checksum string    `json:"checksum"`
	// Errors name files and lines: admins only.
	Errors     *[]string `json:"errors,omitempty"`
	ErrorCount int       `json:"errorCount"`
}

// reloadOf reports st, its errors to an admin only, and with any provider
// key of the config serving replaced, should an error quote one.
func reloadOf(st config.ReloadStatus, admin bool, red *adapters.Redactor) reloadJS {
	r := reloadJS{OK: st.OK, At: st.At.UTC(), Checksum: st.Checksum, ErrorCount: len(st.Errors)}
	if admin {
		errs := make([]string, len(st.Errors))
		for i, e := range st.Errors {
			errs[i] = red.String(e)
		}
		r.Errors = &errs
	}
	return r
}

// routeStates maps each route's name, and "default", to its state.
func (s *snapshot) routeStates() map[string]*routeState {
	m := map[string]*routeState{"default": s.defaultRoute}
	for _, r := range s.routes {
		m[r.cfg.Name] = r.stats
	}
	return m
}

// eachTimeline calls f with the series of every target the config
// declares, gateway key, route and provider.
func (s *snapshot) eachTimeline(f func(*atomic.Pointer[series])) {
	for _, t := range s.targetsOf() {
		f(&t.state.use.series)
	}
	for _, gk := range s.byName {
		f(&gk.stats.use.series)
	}
	for _, r := range s.routeStates() {
		f(&r.series)
	}
	for _, p := range s.providers {
		f(&p.stats.series)
	}
}

// timeOnce gives each state of s that has no series one. A state kept
// from the config before keeps its own, so usage over time outlives a
// reload as the counters do.
func (s *snapshot) timeOnce(a *analytics) {
	s.eachTimeline(func(p *atomic.Pointer[series]) {
		if p.Load() == nil {
			p.Store(a.newSeries())
		}
	})
}

// timelines lists the series of s.
func (s *snapshot) timelines() []*series {
	var out []*series
	s.eachTimeline(func(p *atomic.Pointer[series]) { out = append(out, p.Load()) })
	return out
}

type pointJS struct {
	T                int64   `json:"t"`
	Requests         int64   `json:"requests"`
	Errors           int64   `json:"errors"`
	Fallbacks        int64   `json:"fallbacks"`
	PromptTokens     int64   `json:"promptTokens"`
	CompletionTokens int64   `json:"completionTokens"`
	P50MS            float64 `json:"p50Ms"`
	P99MS            float64 `json:"p99Ms"`
}

type seriesJS struct {
	Window      string    `json:"window"`
	StepSeconds int64     `json:"stepSeconds"`
	Points      []pointJS `json:"points"`
}

// series answers GET /api/stats/series?window= (1h when absent): the
// whole gateway's traffic for an admin, else the key's own, one point a
// step, oldest first, empty steps included.
func (e *Engine) series(ctx *fasthttp.RequestCtx, key *gatewayKey) {
	w, err := windowParam(ctx)
	if err != nil {
		err.write(ctx)
		return
	}
	if w == nil {
		w = &spans[0]
	}
	v := e.view(w)
	src := v.a.all
	if !key.admin() {
		src = key.stats.timeline()
	}
	tallies := src.points(w)
	out := seriesJS{Window: w.name, StepSeconds: int64(w.step / time.Second), Points: make([]pointJS, len(tallies))}
	for k := range tallies {
		t := &tallies[k]
		l := latencyOf(t)
		out.Points[k] = pointJS{T: v.a.startOf(w, k), Requests: t.requests, Errors: t.codes[4] + t.codes[5],
			Fallbacks: t.fallbacks, PromptTokens: t.prompt, CompletionTokens: t.completion, P50MS: l.P50MS, P99MS: l.P99MS}
	}
	v.close()
	b, _ := json.Marshal(out)
	ctx.SetContentTypeBytes(strJSON)
	ctx.SetBody(b)
}
