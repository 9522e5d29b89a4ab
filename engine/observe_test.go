package engine

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"gateway/config"
)

// obGateway is newFakeGateway with the access log captured too, as JSON
// lines the way main sets it up.
func obGateway(t *testing.T, yaml string, n *fakeNet) (*fakeGateway, *fakeLog) {
	t.Helper()
	cfg := pxConfig(t, yaml)
	g := &fakeGateway{t: t, cfg: cfg, log: &fakeLog{}}
	if len(cfg.Auth.Keys) > 0 {
		g.key = fakeEnv["GW_ML"]
	}
	access := &fakeLog{}
	var err error
	g.eng, err = New(cfg, Options{
		Logger:    slog.New(slog.NewTextHandler(g.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		AccessLog: access,
		Dial:      n.dial,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln := fasthttputil.NewInmemoryListener()
	srv := g.eng.Server()
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	g.ln = ln
	g.client = &fasthttp.HostClient{Addr: "gw.test", Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	t.Cleanup(func() {
		g.client.CloseIdleConnections()
		_ = ln.Close()
		<-done
		g.eng.Close()
	})
	return g, access
}

// obLines decodes the JSON lines of a log.
func obLines(t *testing.T, g *fakeGateway, l *fakeLog) []map[string]any {
	t.Helper()
	// The access log is buffered; take what was written so far.
	g.eng.access.flush()

	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("access log line %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// obYAML is the config of the scripted run: two providers, three groups
// whose chains fail in different ways, a breaker that opens at the first
// failure, and two gateway keys, team-ml an admin.
func obYAML(rest string) string {
	models := func(p string) map[string]string {
		return map[string]string{"m": p + "-m", "f": p + "-f", "x": p + "-x"}
	}
	return fakeYAML([]fakeProv{{name: "p1", models: models("p1")}, {name: "p2", models: models("p2")}}, `auth:
  default_rpm: 100
  keys:
    - {name: team-ml, key: "${GW_ML}", admin: true}
    - {name: team-web, key: "${GW_WEB}"}
models:
  ok: {targets: [p1/m, p2/m]}
  fb: {targets: [p1/f, p2/f]}
  bad: {targets: [p1/x, p2/x]}
circuit_breaker: {failures: 1, open_for: 30s}
cache: {ttl: 120s}
`+rest)
}

// obUpstream serves the scripted run for provider p: chat models named in
// fail answer 500, quoting the key they were sent as some upstreams do;
// the others succeed with 5 prompt and 2 completion tokens; a GET lists
// models.
func obUpstream(fail ...string) func(*fasthttp.RequestCtx, int) {
	return func(ctx *fasthttp.RequestCtx, hit int) {
		if ctx.IsGet() {
			pxModels(ctx, hit)
			return
		}
		if slices.Contains(fail, gjson.GetBytes(ctx.PostBody(), "model").Str) {
			key := strings.TrimPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer ")
			fakeBody(500, `{"error":{"message":"overloaded; key `+key+` will be retried"}}`)(ctx, hit)
			return
		}
		fakeOK("fine")(ctx, hit)
	}
}

const obAsk = `{"model":"%s","messages":[{"role":"user","content":"hi"}]}`

func obChat(model string) string { return strings.Replace(obAsk, "%s", model, 1) }

// obScript runs the scripted sequence: a success, a fallback from a 500 to
// the next target, a request every candidate fails, and a passthrough GET
// that misses then hits. It returns every response.
func obScript(t *testing.T, g *fakeGateway) []*fakeResponse {
	t.Helper()
	steps := []struct {
		run    func() *fakeResponse
		status int
		check  func(*fakeResponse) bool
	}{
		{func() *fakeResponse { return g.chat(obChat("ok")) }, 200,
			func(r *fakeResponse) bool { return r.get("X-Routed-Via") == "p1/m" && !r.has("X-Fallback-Attempts") }},
		{func() *fakeResponse { return g.chat(obChat("fb")) }, 200,
			func(r *fakeResponse) bool {
				return r.get("X-Routed-Via") == "p2/f" && r.get("X-Fallback-Attempts") == "1"
			}},
		{func() *fakeResponse { return g.chat(obChat("bad")) }, 500,
			func(r *fakeResponse) bool { return gjson.GetBytes(r.body, "error.code").Str == "all_candidates_failed" }},
		{func() *fakeResponse { return g.get("/proxy/p1/v1/models") }, 200,
			func(r *fakeResponse) bool { return r.get("X-Cache") == "MISS" }},
		{func() *fakeResponse { return g.get("/proxy/p1/v1/models") }, 200,
			func(r *fakeResponse) bool { return r.get("X-Cache") == "HIT" }},
	}
	var out []*fakeResponse
	for i, s := range steps {
		r := s.run()
		if r.status != s.status || !s.check(r) {
			t.Fatalf("step %d: status %d (want %d)\n%s\n%s", i, r.status, s.status, r.header, r.body)
		}
		out = append(out, r)
	}
	return out
}

// obScripted starts the scripted run's gateway and upstreams and runs it.
func obScripted(t *testing.T) (*fakeGateway, *fakeLog, []*fakeResponse) {
	n := newFakeNet(t)
	n.upstream("p1.test", obUpstream("p1-f", "p1-x"))
	n.upstream("p2.test", obUpstream("p2-x"))
	g, access := obGateway(t, obYAML(""), n)
	return g, access, obScript(t, g)
}

func TestStatsNeedsAGatewayKey(t *testing.T) {
	n := newFakeNet(t)
	g := newFakeGateway(t, obYAML(""), n)
	r := g.do("GET", "/api/stats", "")
	fakeCheckError(t, r, 401, "authentication_error", "missing_api_key", "")
	r = g.do("GET", "/api/stats", "", "Authorization", "Bearer "+fakeEnv["P1_KEY"])
	fakeCheckError(t, r, 401, "authentication_error", "invalid_api_key", "")
	for _, hdrs := range [][]string{{"Authorization", "Bearer " + g.key}, {"X-Api-Key", fakeEnv["GW_WEB"]}} {
		if r := g.do("GET", "/api/stats", "", hdrs...); r.status != 200 || !gjson.ValidBytes(r.body) {
			t.Errorf("with a key: %d %s", r.status, r.body)
		}
	}
	if r := g.do("GET", "/metrics", ""); r.status != 200 {
		t.Errorf("/metrics: %d", r.status)
	}

	open := newFakeGateway(t, pxOne(""), n)
	if r := open.do("GET", "/api/stats", ""); r.status != 200 {
		t.Errorf("auth off: %d %s", r.status, r.body)
	}
}

func TestStatsShowOtherKeysOnlyToAdmins(t *testing.T) {
	g, _, _ := obScripted(t)
	tests := []struct {
		name, key string
		keys      []string
	}{
		{"admin", "GW_ML", []string{"team-ml", "team-web"}},
		{"not an admin", "GW_WEB", []string{"team-web"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := g.do("GET", "/api/stats", "", "Authorization", "Bearer "+fakeEnv[tt.key])
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.body)
			}
			var keys []string
			gjson.GetBytes(r.body, "keys").ForEach(func(k, _ gjson.Result) bool {
				keys = append(keys, k.Str)
				return true
			})
			slices.Sort(keys)
			if !slices.Equal(keys, tt.keys) {
				t.Errorf("keys %q, want %q", keys, tt.keys)
			}
			// Every key sees the providers' and models' figures and states.
			for path, want := range map[string]string{
				"providers.p1.models.m.requests":     "1",
				"providers.p1.models.f.breaker":      `"open"`,
				"providers.p1.models.f.keys.0.state": `"cooling_down"`,
				"providers.p2.models.f.promptTokens": "5",
				"routes.default.latency.count":       "3",
				"totalRequests":                      "5",
			} {
				if got := gjson.GetBytes(r.body, path).Raw; got != want {
					t.Errorf("%s = %s, want %s", path, got, want)
				}
			}
		})
	}
}

func TestStatsTellTheTruth(t *testing.T) {
	g, _, _ := obScripted(t)
	before := time.Now()
	r := g.get("/api/stats")
	if r.status != 200 || r.get("Content-Type") != "application/json" {
		t.Fatalf("%d %s %s", r.status, r.get("Content-Type"), r.body)
	}
	body := r.body
	want := []struct {
		path string
		want any // int64, string; nil for absent
	}{
		// Three chat completions; passthrough and /api/stats are not
		// counted.
		{"totalRequests", int64(5)}, // 3 chat + 2 passthrough
		{"cacheHits", int64(1)},
		{"cacheMisses", int64(1)},
		{"cacheHitRate", "50.0%"},
		{"cachedKeys", int64(1)},
		{"cacheTTL", int64(120)},
		{"rateLimitMax", int64(100)},
		{"rateLimitWindow", int64(60000)},
		{"targets", `["p1","p2"]`},
		{"config.checksum", g.cfg.Checksum},

		{"providers.p1.models.m.requests", int64(1)},
		{"providers.p1.models.m.successes", int64(1)},
		{"providers.p1.models.m.errors", nil},
		{"providers.p1.models.m.fallbacks", nil},
		{"providers.p1.models.m.promptTokens", int64(5)},
		{"providers.p1.models.m.completionTokens", int64(2)},
		{"providers.p1.models.m.breaker", "closed"},
		{"providers.p1.models.m.ttfb.count", int64(1)},

		{"providers.p1.models.f.requests", int64(1)},
		{"providers.p1.models.f.successes", int64(0)},
		{"providers.p1.models.f.errors", `{"retryable":1}`},
		{"providers.p1.models.f.promptTokens", int64(0)},
		{"providers.p1.models.f.breaker", "open"},
		{"providers.p1.models.f.ttfb.count", int64(0)},

		{"providers.p2.models.f.requests", int64(1)},
		{"providers.p2.models.f.successes", int64(1)},
		{"providers.p2.models.f.errors", nil},
		{"providers.p2.models.f.fallbacks", int64(1)},
		{"providers.p2.models.f.promptTokens", int64(5)},
		{"providers.p2.models.f.completionTokens", int64(2)},
		{"providers.p2.models.f.breaker", "closed"},

		{"providers.p1.models.x.requests", int64(1)},
		{"providers.p1.models.x.errors.retryable", int64(1)},
		{"providers.p1.models.x.successes", int64(0)},
		{"providers.p2.models.x.requests", int64(1)},
		{"providers.p2.models.x.errors.retryable", int64(1)},
		{"providers.p2.models.x.breaker", "open"},

		{"providers.p2.models.m.requests", int64(0)},
		{"providers.p2.models.m.breaker", "closed"},

		// A provider sums its models.
		{"providers.p1.requests", int64(3)},
		{"providers.p1.successes", int64(1)},
		{"providers.p1.errors", `{"retryable":2}`},
		{"providers.p1.promptTokens", int64(5)},
		{"providers.p1.passthrough", `{"2xx":1}`},
		{"providers.p2.requests", int64(2)},
		{"providers.p2.fallbacks", int64(1)},
		{"providers.p2.passthrough", nil},

		{"keys.team-ml.requests", int64(5)},
		{"keys.team-ml.successes", int64(4)},
		{"keys.team-ml.errors", `{"5xx":1}`},
		{"keys.team-ml.promptTokens", int64(10)},
		{"keys.team-ml.completionTokens", int64(4)},
		{"keys.team-web.requests", int64(0)},
		{"keys.team-web.successes", int64(0)},

		{"routes.default.codes", `{"2xx":2,"5xx":1}`},
		{"routes.default.latency.count", int64(3)},
	}
	for _, w := range want {
		got := gjson.GetBytes(body, w.path)
		switch v := w.want.(type) {
		case nil:
			if got.Exists() {
				t.Errorf("%s = %s, want it absent", w.path, got.Raw)
			}
		case int64:
			if !got.Exists() || got.Type != gjson.Number || got.Int() != v {
				t.Errorf("%s = %s, want %d", w.path, got.Raw, v)
			}
		case string:
			s := got.String()
			if got.IsObject() || got.IsArray() {
				s = got.Raw
			}
			if !got.Exists() || s != v {
				t.Errorf("%s = %s, want %s", w.path, got.Raw, v)
			}
		}
	}

	// Provider keys appear by index and state only.
	cooling := map[string]bool{"p1/f": true, "p1/x": true, "p2/x": true}
	for _, pm := range []string{"p1/m", "p1/f", "p1/x", "p2/m", "p2/f", "p2/x"} {
		p, m, _ := strings.Cut(pm, "/")
		keys := gjson.GetBytes(body, "providers."+p+".models."+m+".keys").Array()
		if len(keys) != 1 || keys[0].Get("index").Int() != 1 {
			t.Errorf("%s keys = %v", pm, keys)
			continue
		}
		k := keys[0]
		if !cooling[pm] {
			if k.Get("state").Str != "healthy" || k.Get("until").Exists() {
				t.Errorf("%s key = %s, want healthy", pm, k.Raw)
			}
			continue
		}
		until, err := time.Parse(time.RFC3339Nano, k.Get("until").Str)
		// failover.cooldown is 60s by default, from the failed attempt.
		if k.Get("state").Str != "cooling_down" || err != nil ||
			until.After(before.Add(time.Minute)) || until.Before(before.Add(time.Minute-fakeDeadline)) {
			t.Errorf("%s key = %s, want cooling_down until about a minute from now", pm, k.Raw)
		}
	}
	if u := gjson.GetBytes(body, "uptimeSeconds"); u.Type != gjson.Number || u.Int() < 0 {
		t.Errorf("uptimeSeconds = %s", u.Raw)
	}

	// Stats count what was served, not what was asked about them: a
	// second look sees the same numbers (time aside).
	again := g.get("/api/stats").body
	for _, p := range []string{"totalRequests", "cacheHits", "cacheMisses", "providers.p1.requests", "keys.team-ml.requests"} {
		if gjson.GetBytes(again, p).Raw != gjson.GetBytes(body, p).Raw {
			t.Errorf("%s changed from %s to %s by reading the stats", p, gjson.GetBytes(body, p).Raw, gjson.GetBytes(again, p).Raw)
		}
	}
}

// obParse parses a Prometheus text exposition strictly.
func obParse(t *testing.T, text []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, text)
	}
	return fams
}

// obValue is the value of the sample of family name whose labels are
// exactly labels ("k=v" pairs); ok is false when there is none.
func obValue(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	want := map[string]string{}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		want[k] = v
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, lp := range m.GetLabel() {
			if v, ok := want[lp.GetName()]; !ok || v != lp.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

func TestMetricsTellTheTruth(t *testing.T) {
	g, _, responses := obScripted(t)
	r := g.do("GET", "/metrics", "")
	if r.status != 200 || !strings.HasPrefix(r.get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("%d %q", r.status, r.get("Content-Type"))
	}
	fams := obParse(t, r.body)

	types := map[string]dto.MetricType{
		"gateway_requests_total":                               dto.MetricType_COUNTER,
		"gateway_request_duration_seconds":                     dto.MetricType_HISTOGRAM,
		"gateway_upstream_attempts_total":                      dto.MetricType_COUNTER,
		"gateway_upstream_fallback_wins_total":                 dto.MetricType_COUNTER,
		"gateway_upstream_ttfb_seconds":                        dto.MetricType_HISTOGRAM,
		"gateway_tokens_total":                                 dto.MetricType_COUNTER,
		"gateway_circuit_breaker_state":                        dto.MetricType_GAUGE,
		"gateway_keys_available":                               dto.MetricType_GAUGE,
		"gateway_passthrough_requests_total":                   dto.MetricType_COUNTER,
		"gateway_cache_requests_total":                         dto.MetricType_COUNTER,
		"gateway_config_last_reload_successful":                dto.MetricType_GAUGE,
		"gateway_config_last_reload_success_timestamp_seconds": dto.MetricType_GAUGE,
		"gateway_config_hash":                                  dto.MetricType_GAUGE,
		"gateway_uptime_seconds":                               dto.MetricType_GAUGE,
	}
	for name, typ := range types {
		if f := fams[name]; f == nil || f.GetType() != typ || f.GetHelp() == "" {
			t.Errorf("family %s: %v, want type %v with help", name, f, typ)
		}
	}

	hash, _ := strconv.ParseUint(g.cfg.Checksum[:12], 16, 64)
	want := []struct {
		name   string
		labels []string
		value  float64
	}{
		{"gateway_requests_total", []string{"route=default", "code=2xx"}, 2},
		{"gateway_requests_total", []string{"route=default", "code=5xx"}, 1},
		{"gateway_request_duration_seconds", []string{"route=default"}, 3},

		{"gateway_upstream_attempts_total", []string{"provider=p1", "model=m", "outcome=success"}, 1},
		{"gateway_upstream_attempts_total", []string{"provider=p1", "model=m", "outcome=retryable"}, 0},
		{"gateway_upstream_attempts_total", []string{"provider=p1", "model=f", "outcome=success"}, 0},
		{"gateway_upstream_attempts_total", []string{"provider=p1", "model=f", "outcome=retryable"}, 1},
		{"gateway_upstream_attempts_total", []string{"provider=p2", "model=f", "outcome=success"}, 1},
		{"gateway_upstream_attempts_total", []string{"provider=p1", "model=x", "outcome=retryable"}, 1},
		{"gateway_upstream_attempts_total", []string{"provider=p2", "model=x", "outcome=retryable"}, 1},
		{"gateway_upstream_attempts_total", []string{"provider=p2", "model=x", "outcome=rate_limited"}, 0},
		{"gateway_upstream_attempts_total", []string{"provider=p2", "model=m", "outcome=success"}, 0},

		{"gateway_upstream_fallback_wins_total", []string{"provider=p2", "model=f"}, 1},
		{"gateway_upstream_fallback_wins_total", []string{"provider=p1", "model=m"}, 0},
		{"gateway_upstream_ttfb_seconds", []string{"provider=p1", "model=m"}, 1},
		{"gateway_upstream_ttfb_seconds", []string{"provider=p2", "model=f"}, 1},
		{"gateway_upstream_ttfb_seconds", []string{"provider=p1", "model=f"}, 0},

		{"gateway_tokens_total", []string{"provider=p1", "model=m", "kind=prompt"}, 5},
		{"gateway_tokens_total", []string{"provider=p1", "model=m", "kind=completion"}, 2},
		{"gateway_tokens_total", []string{"provider=p2", "model=f", "kind=prompt"}, 5},
		{"gateway_tokens_total", []string{"provider=p2", "model=f", "kind=completion"}, 2},
		{"gateway_tokens_total", []string{"provider=p1", "model=f", "kind=prompt"}, 0},

		{"gateway_circuit_breaker_state", []string{"provider=p1", "model=m"}, 0},
		{"gateway_circuit_breaker_state", []string{"provider=p1", "model=f"}, 1},
		{"gateway_circuit_breaker_state", []string{"provider=p1", "model=x"}, 1},
		{"gateway_circuit_breaker_state", []string{"provider=p2", "model=x"}, 1},
		{"gateway_circuit_breaker_state", []string{"provider=p2", "model=f"}, 0},
		{"gateway_keys_available", []string{"provider=p1", "model=m"}, 1},
		{"gateway_keys_available", []string{"provider=p1", "model=f"}, 0},
		{"gateway_keys_available", []string{"provider=p2", "model=f"}, 1},

		{"gateway_passthrough_requests_total", []string{"provider=p1", "code=2xx"}, 1},
		{"gateway_cache_requests_total", []string{"result=hit"}, 1},
		{"gateway_cache_requests_total", []string{"result=miss"}, 1},

		{"gateway_config_last_reload_successful", nil, 1},
		{"gateway_config_last_reload_success_timestamp_seconds", nil, float64(g.cfg.LoadedAt.Unix())},
		{"gateway_config_hash", nil, float64(hash)},
	}
	for _, w := range want {
		if got, ok := obValue(fams, w.name, w.labels...); !ok || got != w.value {
			t.Errorf("%s%v = %v (present: %v), want %v", w.name, w.labels, got, ok, w.value)
		}
	}
	for _, absent := range [][]string{
		{"gateway_requests_total", "route=default", "code=4xx"},
		{"gateway_passthrough_requests_total", "provider=p2", "code=2xx"},
	} {
		if v, ok := obValue(fams, absent[0], absent[1:]...); ok {
			t.Errorf("%v = %v, want no sample", absent, v)
		}
	}
	// Histograms: cumulative buckets in order, +Inf last and equal to the
	// count, a sum that is no less than zero.
	for _, name := range []string{"gateway_request_duration_seconds", "gateway_upstream_ttfb_seconds"} {
		for _, m := range fams[name].GetMetric() {
			h := m.GetHistogram()
			bs := h.GetBucket()
			if len(bs) == 0 || !math.IsInf(bs[len(bs)-1].GetUpperBound(), 1) {
				t.Errorf("%s %v: no +Inf bucket", name, m.GetLabel())
				continue
			}
			for i := 1; i < len(bs); i++ {
				if bs[i].GetUpperBound() <= bs[i-1].GetUpperBound() || bs[i].GetCumulativeCount() < bs[i-1].GetCumulativeCount() {
					t.Errorf("%s %v: bucket %d (%v: %d) after (%v: %d)", name, m.GetLabel(), i,
						bs[i].GetUpperBound(), bs[i].GetCumulativeCount(), bs[i-1].GetUpperBound(), bs[i-1].GetCumulativeCount())
				}
			}
			if bs[len(bs)-1].GetCumulativeCount() != h.GetSampleCount() || h.GetSampleSum() < 0 ||
				(h.GetSampleCount() == 0) != (h.GetSampleSum() == 0) {
				t.Errorf("%s %v: +Inf %d, count %d, sum %v", name, m.GetLabel(), bs[len(bs)-1].GetCumulativeCount(), h.GetSampleCount(), h.GetSampleSum())
			}
		}
	}

	// Labels are config names and fixed words: never a request id, a key
	// value or a gateway key's name.
	var ids []string
	for _, r := range responses {
		ids = append(ids, r.get("X-Request-Id"))
	}
	allowed := map[string]bool{"route": true, "code": true, "provider": true, "model": true, "outcome": true, "kind": true, "result": true, "le": true, "key": true}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				v := lp.GetValue()
				if !allowed[lp.GetName()] {
					t.Errorf("%s has label %s=%q", name, lp.GetName(), v)
				}
				// A provider key is a label by its index only.
				if n, err := strconv.Atoi(v); lp.GetName() == "key" && (err != nil || n < 1 || n > 9) {
					t.Errorf("%s has label key=%q, want a key's index", name, v)
				}
				if slices.Contains(ids, v) || strings.HasPrefix(v, "req_") || strings.HasPrefix(v, "team-") ||
					slices.Contains(append(fakeProviderKeys(), fakeEnv["GW_ML"]), v) {
					t.Errorf("%s has label value %s=%q", name, lp.GetName(), v)
				}
			}
		}
	}
}

func mustValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	v, ok := obValue(fams, name, labels...)
	if !ok {
		t.Fatalf("no %s%v", name, labels)
	}
	return v
}

func TestMetricsBeforeAnyRequest(t *testing.T) {
	// Families with no samples yet still parse; counters start at 0.
	n := newFakeNet(t)
	g := newFakeGateway(t, obYAML(""), n)
	fams := obParse(t, g.do("GET", "/metrics", "").body)
	if v := mustValue(t, fams, "gateway_cache_requests_total", "result=hit"); v != 0 {
		t.Errorf("cache hits %v", v)
	}
	if v := mustValue(t, fams, "gateway_request_duration_seconds", "route=default"); v != 0 {
		t.Errorf("duration count %v", v)
	}
	if fams["gateway_requests_total"] != nil {
		t.Errorf("requests before any: %v", fams["gateway_requests_total"])
	}
}

func TestMetricsFollowTheConfig(t *testing.T) {
	// The reload gauges say what the reloader reports, and the hash is
	// the serving config's.
	status := config.ReloadStatus{OK: false, At: time.Now(), Errors: []string{"gateway.yaml:3: bad"}}
	cfg := pxConfig(t, obYAML(""))
	e, err := New(cfg, Options{Status: func() config.ReloadStatus { return status }})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	scrape := func() map[string]*dto.MetricFamily {
		var ctx fasthttp.RequestCtx
		e.metrics(&ctx, e.snap.Load())
		return obParse(t, ctx.Response.Body())
	}
	hashOf := func(c *config.Config) float64 {
		h, _ := strconv.ParseUint(c.Checksum[:12], 16, 64)
		return float64(h)
	}
	fams := scrape()
	if v := mustValue(t, fams, "gateway_config_last_reload_successful"); v != 0 {
		t.Errorf("last_reload_successful = %v after a failed reload", v)
	}
	if v := mustValue(t, fams, "gateway_config_hash"); v != hashOf(cfg) {
		t.Errorf("config_hash = %v, want %v", v, hashOf(cfg))
	}
	next := pxConfig(t, obYAML("# edited\n"))
	if err := e.Swap(next); err != nil {
		t.Fatal(err)
	}
	status = config.ReloadStatus{OK: true, At: time.Now(), Checksum: next.Checksum}
	fams = scrape()
	if v := mustValue(t, fams, "gateway_config_last_reload_successful"); v != 1 {
		t.Errorf("last_reload_successful = %v after a good reload", v)
	}
	if v := mustValue(t, fams, "gateway_config_hash"); v != hashOf(next) || hashOf(next) == hashOf(cfg) {
		t.Errorf("config_hash = %v, want %v (was %v)", v, hashOf(next), hashOf(cfg))
	}
}

func TestObserveLeaksNoSecret(t *testing.T) {
	// Every upstream error of the script quotes the provider key it got;
	// the passthrough adds a key-quoting error and an unreachable provider.
	n := newFakeNet(t)
	n.upstream("p1.test", obUpstream("p1-f", "p1-x"))
	n.upstream("p2.test", obUpstream("p2-x"))
	p3 := `  p3:
    type: openai
    base_url: http://p3.test/v1
    keys: ["${P3_KEY}"]
    models: {m: {}}
`
	yaml := strings.Replace(obYAML(""), "auth:\n", p3+"auth:\n", 1)
	g, access := obGateway(t, yaml, n)
	responses := obScript(t, g)
	extra := []*fakeResponse{
		g.do("POST", "/proxy/p1/v1/chat/completions", obChat("p1-f"), "Authorization", "Bearer "+g.key),
		g.do("GET", "/proxy/p3/v1/models", "", "Authorization", "Bearer "+g.key),
		g.chat(obChat("ok"), "Authorization", "Bearer "+fakeEnv["P1_KEY"]),
		g.do("GET", "/api/stats", "", "X-Api-Key", fakeEnv["P2_KEY"]),
		g.get("/api/stats"),
		g.get("/metrics"),
		g.get("/health"),
		g.get("/v1/models"),
	}
	if extra[0].status != 500 || !strings.Contains(string(extra[0].body), "key <secret> will") {
		t.Errorf("passthrough of an error quoting the key: %d %s", extra[0].status, extra[0].body)
	}
	if extra[1].status != 502 {
		t.Errorf("unreachable provider: %d %s", extra[1].status, extra[1].body)
	}
	if extra[2].status != 401 || extra[3].status != 401 {
		t.Errorf("a provider key as a gateway key: %d, %d", extra[2].status, extra[3].status)
	}
	if !strings.Contains(g.log.String(), "upstream attempt failed") || !strings.Contains(g.log.String(), "passthrough failed") {
		t.Fatalf("the script logged no failure:\n%s", g.log.String())
	}
	obEventually(t, "three access log lines", func() bool { return strings.Count(access.String(), "\n") >= 3 })
	places := map[string]string{"diagnostic log": g.log.String(), "access log": access.String()}
	for i, r := range append(responses, extra...) {
		places["response "+strconv.Itoa(i)] = r.header + "\n" + string(r.body)
	}
	for _, secret := range append(fakeProviderKeys(), fakeEnv["GW_ML"], fakeEnv["GW_WEB"]) {
		for where, text := range places {
			if strings.Contains(text, secret) {
				t.Errorf("%s leaks %q:\n%s", where, secret, text)
			}
		}
	}
}

// obEventually polls cond until it holds, failing the test at the deadline.
func obEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(fakeDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// obLine finds the access log line with request id id.
func obLine(lines []map[string]any, id string) map[string]any {
	for _, l := range lines {
		if l["request_id"] == id {
			return l
		}
	}
	return nil
}

func TestAccessLogOneLinePerRequest(t *testing.T) {
	g, access, responses := obScripted(t)
	lines := obLines(t, g, access)
	if len(lines) != 5 {
		t.Fatalf("%d access log lines, want one per chat and passthrough request:\n%s", len(lines), access.String())
	}
	pass := 0
	for _, l := range lines {
		if l["route"] == "passthrough" {
			pass++
			if l["routed_via"] != "p1" || l["method"] != "GET" || (l["cache"] != "HIT" && l["cache"] != "MISS") {
				t.Errorf("passthrough line %v", l)
			}
		}
	}
	if pass != 2 {
		t.Errorf("%d passthrough lines, want 2", pass)
	}
	want := []map[string]any{
		{"key": "team-ml", "route": "default", "routed_via": "p1/m", "attempts": "p1/m#1:ok", "status": 200.0,
			"prompt_tokens": 5.0, "completion_tokens": 2.0, "stream": false, "method": "POST", "path": "/v1/chat/completions", "msg": "request"},
		{"key": "team-ml", "route": "default", "routed_via": "p2/f", "attempts": "p1/f#1:500 retryable p2/f#1:ok", "status": 200.0,
			"prompt_tokens": 5.0, "completion_tokens": 2.0, "stream": false},
		{"key": "team-ml", "route": "default", "routed_via": "", "attempts": "p1/x#1:500 retryable p2/x#1:500 retryable", "status": 500.0,
			"prompt_tokens": 0.0, "completion_tokens": 0.0},
	}
	for i, w := range want {
		id := responses[i].get("X-Request-Id")
		l := obLine(lines, id)
		if l == nil {
			t.Errorf("no access log line for request %d (%s):\n%s", i, id, access.String())
			continue
		}
		for k, v := range w {
			if l[k] != v {
				t.Errorf("request %d: %s = %#v, want %#v", i, k, l[k], v)
			}
		}
		lat, ok1 := l["latency_ms"].(float64)
		ttfb, ok2 := l["ttfb_ms"].(float64)
		if !ok1 || !ok2 || lat <= 0 || ttfb < 0 || ttfb > lat || (w["status"] == 200.0 && ttfb == 0) {
			t.Errorf("request %d: latency_ms %v, ttfb_ms %v", i, l["latency_ms"], l["ttfb_ms"])
		}
	}
	// Stats requests write no access line; nor does a request refused
	// before it is a chat.
	g.get("/api/stats")
	g.do("POST", "/v1/chat/completions", obChat("ok"))
	if n := len(obLines(t, g, access)); n != 5 {
		t.Errorf("%d lines after non-chat requests", n)
	}
}

func TestAccessLogStreamLineAtTheEnd(t *testing.T) {
	usage := `data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1700000000,"model":"up","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}` + "\n\n"
	gate := make(chan struct{})
	n := newFakeNet(t)
	var up *fakeUpstream
	up = n.upstream("p1.test", pxGated(&up, []chan struct{}{gate}, fakeChunk(0), fakeChunk(1)+fakeFinish+usage+fakeDone))
	g, access := obGateway(t, fakeYAML([]fakeProv{{name: "p1", streamUsage: true}}, pxAuth+"models:\n  auto: {targets: [p1/m]}\n"), n)

	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://gw.test/v1/chat/completions")
	req.Header.SetMethod("POST")
	req.Header.Set("Authorization", "Bearer "+g.key)
	req.Header.Set("X-Request-Id", "stream-1")
	req.SetBodyString(fakeAskStream)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	resp.StreamBody = true
	if err := g.client.DoTimeout(req, resp, fakeDeadline); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.CloseBodyStream() }()
	br := bufio.NewReader(resp.BodyStream())
	first := make([]byte, len(fakeChunk(0)))
	if _, err := io.ReadFull(br, first); err != nil || string(first) != fakeChunk(0) {
		t.Fatalf("first frame %q, %v", first, err)
	}
	// The stream is open: its line is not written yet.
	if s := access.String(); s != "" {
		t.Errorf("access line before the stream ended: %s", s)
	}
	close(gate)
	rest, err := io.ReadAll(br)
	if err != nil || !strings.HasSuffix(string(rest), fakeDone) {
		t.Fatalf("rest %q, %v", rest, err)
	}
	obEventually(t, "the stream's access line", func() bool { return access.String() != "" })
	lines := obLines(t, g, access)
	if len(lines) != 1 {
		t.Fatalf("lines: %v", lines)
	}
	l := lines[0]
	for k, v := range map[string]any{"request_id": "stream-1", "key": "team-ml", "routed_via": "p1/m", "attempts": "p1/m#1:ok",
		"status": 200.0, "stream": true, "prompt_tokens": 11.0, "completion_tokens": 7.0} {
		if l[k] != v {
			t.Errorf("%s = %#v, want %#v", k, l[k], v)
		}
	}
	if lat, ttfb := l["latency_ms"].(float64), l["ttfb_ms"].(float64); ttfb <= 0 || lat < ttfb {
		t.Errorf("latency_ms %v, ttfb_ms %v: a stream's latency runs to its end", lat, ttfb)
	}
	// The tokens reached the stats too.
	st := g.get("/api/stats").body
	if p, c := gjson.GetBytes(st, "providers.p1.models.m.promptTokens").Int(), gjson.GetBytes(st, "keys.team-ml.completionTokens").Int(); p != 11 || c != 7 {
		t.Errorf("stats tokens %d, %d", p, c)
	}
}

func TestAccessLogOff(t *testing.T) {
	n := newFakeNet(t)
	n.upstream("p1.test", fakeOK("fine"))
	base := pxOne("models:\n  auto: {targets: [p1/m]}\n")
	g, access := obGateway(t, base+"log: {access: false}\n", n)
	count := func() int {
		g.eng.access.flush()
		return strings.Count(access.String(), "\n")
	}
	// A non-stream line is buffered before the answer leaves, so a count
	// after a flush is final.
	ask := func(want int) {
		t.Helper()
		if r := g.chat(fakeAsk); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if count() != want {
			t.Fatalf("%d access lines, want %d:\n%s", count(), want, access.String())
		}
	}
	ask(0)
	for _, step := range []struct {
		yaml string
		want int
	}{{base, 1}, {base + "log: {access: false}\n", 1}, {base + "log: {access: true}\n", 2}} {
		if err := g.eng.Swap(pxConfig(t, step.yaml)); err != nil {
			t.Fatal(err)
		}
		ask(step.want)
	}
	// A stream served while the log is off writes nothing at its end.
	if err := g.eng.Swap(pxConfig(t, base+"log: {access: false}\n")); err != nil {
		t.Fatal(err)
	}
	if r := g.chat(fakeAskStream); r.status != 200 || string(r.body) != fakeOKStreamBody {
		t.Fatalf("%d %q", r.status, r.body)
	}
	if err := g.eng.Swap(pxConfig(t, base)); err != nil {
		t.Fatal(err)
	}
	ask(3)
	if lines := obLines(t, g, access); len(lines) != 3 || lines[2]["stream"] != false {
		t.Errorf("lines: %v", lines)
	}
}

// TestAccessLogBoundsTokenCounts: an upstream's absurd usage (negative,
// or past what any request uses) shows bounded in the access log and in
// /api/requests, as it is settled, never wrapped to a negative count.
func TestAccessLogBoundsTokenCounts(t *testing.T) {
	n := newFakeNet(t)
	n.upstream("p1.test", func(ctx *fasthttp.RequestCtx, _ int) {
		if strings.Contains(string(ctx.PostBody()), `"stream":true`) {
			ctx.SetContentType("text/event-stream")
			ctx.SetBodyString(fakeChunk(0) + fakeFinish + `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"up","choices":[],"usage":{"prompt_tokens":-5,"completion_tokens":1e23,"total_tokens":1}}` + "\n\n" + fakeDone)
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"id":"c","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":-5,"completion_tokens":1e23,"total_tokens":1}}`)
	})
	g, access := obGateway(t, fakeYAML([]fakeProv{{name: "p1"}}, "models:\n  auto: {targets: [p1/m]}\n"), n)
	for _, ask := range []string{fakeAsk, fakeAskStream} {
		r := g.chat(ask)
		if r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
		l := obLine(obLines(t, g, access), r.get("X-Request-Id"))
		if l == nil || l["prompt_tokens"] != 0.0 || l["completion_tokens"] != float64(1<<32) {
			t.Errorf("%s: access log line %v: want prompt_tokens 0, completion_tokens 2^32", ask, l)
		}
	}
	recent := string(g.get("/api/requests").body)
	if strings.Count(recent, `"promptTokens":0,"completionTokens":4294967296`) != 2 {
		t.Errorf("/api/requests: %s", recent)
	}
}
