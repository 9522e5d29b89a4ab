package engine

import (
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/tidwall/gjson"

	"gateway/adapters"
	"gateway/config"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ ns atomic.Int64 }

// anT0 starts a day, so every tier's bucket starts with it too.
var anT0 = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(anT0.UnixNano())
	return c
}

func (c *fakeClock) now() int64          { return c.ns.Load() }
func (c *fakeClock) time() time.Time     { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) set(d time.Duration) { c.ns.Store(anT0.Add(d).UnixNano()) }

// anRequests sums the requests of s over the span named w.
func anRequests(a *analytics, s *series, w string) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return s.sum(spanNamed(w)).requests
}

func TestSeriesAcrossWindowBoundaries(t *testing.T) {
	clk := newFakeClock()
	a := newAnalytics(clk.now)
	s := a.newSeries()
	record := func(at time.Duration, n int) {
		clk.set(at)
		a.tick()
		for range n {
			s.at().answered(200, 30*time.Millisecond, false)
			s.at().tokens(adapters.Usage{Prompt: 5, Completion: 2, Known: true})
		}
	}
	record(30*time.Second, 1)          // minute 0
	record(time.Minute+time.Second, 2) // minute 1

	// Still unfolded: the coarse spans add the minute buckets.
	for _, w := range []string{"1h", "24h", "7d", "30d"} {
		if got := anRequests(a, s, w); got != 3 {
			t.Errorf("at 1m01s, %s: %d requests, want 3", w, got)
		}
	}
	// Folded once the minute is two behind: counted once, not twice.
	tests := []struct {
		at   time.Duration
		want map[string]int64
	}{
		{3 * time.Minute, map[string]int64{"1h": 3, "24h": 3, "7d": 3, "30d": 3}},
		{59*time.Minute + 59*time.Second, map[string]int64{"1h": 3, "24h": 3}},
		{60 * time.Minute, map[string]int64{"1h": 2, "24h": 3}}, // minute 0 left the hour
		{61 * time.Minute, map[string]int64{"1h": 0, "24h": 3}},
		{24*time.Hour - time.Second, map[string]int64{"1h": 0, "24h": 3, "7d": 3}},
		{24 * time.Hour, map[string]int64{"24h": 0, "7d": 3, "30d": 3}},
		{7*24*time.Hour - time.Second, map[string]int64{"7d": 3}},
		{7 * 24 * time.Hour, map[string]int64{"7d": 0, "30d": 3}},
		{30*24*time.Hour - time.Second, map[string]int64{"30d": 3}},
		{30 * 24 * time.Hour, map[string]int64{"1h": 0, "24h": 0, "7d": 0, "30d": 0}},
	}
	for _, tt := range tests {
		clk.set(tt.at)
		a.tick()
		for w, want := range tt.want {
			if got := anRequests(a, s, w); got != want {
				t.Errorf("at %v, %s: %d requests, want %d", tt.at, w, got, want)
			}
		}
	}

	// The minute ring is reused: an hour and more later, a minute's slot
	// holds only its own.
	record(30*24*time.Hour+64*time.Minute, 4)
	if got := anRequests(a, s, "1h"); got != 4 {
		t.Errorf("after the ring wrapped: %d requests in the hour, want 4", got)
	}
}

// The answers a bucket or a key counts, and their successes (below
// 300), whatever the status, an odd one included, in the minute and once
// folded into the tiers; the attempts of a target beside them. A stream
// cut after it started stays a request and is no success.
func TestAnswersCountedByStatus(t *testing.T) {
	statuses := []int{200, 201, 101, 404, 503, 42, 0, -1, 600, 999, 299, 300}
	const wantReq, wantOK = 12, 7 // 200 201 101 42 0 -1 299
	clk := newFakeClock()
	a := newAnalytics(clk.now)
	s, target := a.newSeries(), a.newSeries()
	var k keyStats
	k.use.series.Store(a.newSeries())
	for _, st := range statuses {
		s.at().answered(st, time.Millisecond, false)
		k.answered(st, time.Millisecond, false)
	}
	var c counters
	c.series.Store(target)
	c.won(time.Millisecond, false)
	c.won(time.Millisecond, false)
	c.failed(adapters.Retryable)
	c.interrupted(adapters.Retryable)
	k.use.interrupted(adapters.Retryable)
	check := func(when, what string, got tally, req, ok int64) {
		t.Helper()
		if got.requests != req || got.successes != ok {
			t.Errorf("%s, %s: %d requests, %d successes; want %d, %d", when, what, got.requests, got.successes, req, ok)
		}
	}
	check("since the start", "key", k.load(), wantReq, wantOK-1)
	check("since the start", "target", c.load(), 3, 1)
	clk.set(3 * time.Minute)
	for range 2 {
		a.mu.Lock()
		check("1h", "series", s.sum(&spans[0]), wantReq, wantOK)
		check("24h", "series", s.sum(&spans[1]), wantReq, wantOK)
		check("24h", "key series", k.timeline().sum(&spans[1]), wantReq, wantOK-1)
		check("24h", "target series", target.sum(&spans[1]), 3, 1)
		a.mu.Unlock()
		a.tick() // folds the minute
	}
}

func TestSeriesPointsAreEveryStepOldestFirst(t *testing.T) {
	clk := newFakeClock()
	a := newAnalytics(clk.now)
	s := a.newSeries()
	clk.set(5*time.Hour + 7*time.Minute)
	a.tick()
	s.at().answered(500, 40*time.Millisecond, false)
	s.at().answered(200, 3*time.Second, true)
	for _, w := range spans {
		a.mu.Lock()
		pts := s.points(&w)
		a.mu.Unlock()
		if len(pts) != w.points {
			t.Fatalf("%s: %d points, want %d", w.name, len(pts), w.points)
		}
		step := int64(w.step / time.Second)
		last := clk.time().Unix() / step * step
		for k := range pts {
			if got, want := a.startOf(&w, k), last-int64(len(pts)-1-k)*step; got != want {
				t.Fatalf("%s: point %d starts at %d, want %d", w.name, k, got, want)
			}
		}
		for k, p := range pts[:len(pts)-1] {
			if p.requests != 0 {
				t.Errorf("%s: point %d has %d requests, want only the last one filled", w.name, k, p.requests)
			}
		}
		p := pts[len(pts)-1]
		if p.requests != 2 || p.codes[5] != 1 || p.fallbacks != 1 {
			t.Errorf("%s: last point %+v", w.name, p)
		}
		if l := latencyOf(&p); l.P50MS != 50 || l.P99MS != 5000 {
			t.Errorf("%s: p50 %v p99 %v, want 50 and 5000", w.name, l.P50MS, l.P99MS)
		}
	}
}

// anGateway is the scripted observe gateway on an injected clock.
func anGateway(t *testing.T, opt Options) (*fakeGateway, *fakeClock) {
	n := newFakeNet(t)
	n.upstream("p1.test", obUpstream("p1-f", "p1-x"))
	n.upstream("p2.test", obUpstream("p2-x"))
	clk := newFakeClock()
	opt.Clock = clk.time
	g := newFakeGatewayWith(t, obYAML(""), n, opt)
	return g, clk
}

func anWeb() []string { return []string{"Authorization", "Bearer " + fakeEnv["GW_WEB"]} }

func TestStatsWindowWithInjectedClock(t *testing.T) {
	g, clk := anGateway(t, Options{})
	obScript(t, g)
	check := func(path string, want map[string]string) {
		t.Helper()
		r := g.get(path)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		for p, w := range want {
			if got := gjson.GetBytes(r.body, p).Raw; got != w {
				t.Errorf("%s: %s = %s, want %s", path, p, got, w)
			}
		}
	}
	all := map[string]string{
		"totalRequests": "5", "providers.p1.models.m.requests": "1", "providers.p2.models.f.fallbacks": "1",
		"providers.p2.models.f.promptTokens": "5", "providers.p1.models.x.errors.retryable": "1",
		"providers.p1.passthrough.2xx": "1", "routes.default.latency.count": "3", "keys.team-ml.requests": "5",
		"keys.team-ml.errors.5xx": "1", "providers.p2.models.m.ttfb.count": "0",
	}
	check("/api/stats?window=1h", merge(all, map[string]string{"window": `"1h"`}))
	check("/api/stats", merge(all, map[string]string{"window": ""}))

	clk.set(2 * time.Hour)
	g.eng.states.analytics.tick()
	check("/api/stats?window=1h", map[string]string{
		"totalRequests": "0", "providers.p1.models.m.requests": "0", "providers.p1.passthrough": "",
		"routes.default.latency.count": "0", "keys.team-ml.requests": "0",
		// States are now, whatever the window.
		"providers.p1.models.f.breaker": `"open"`,
	})
	check("/api/stats?window=24h", merge(all, map[string]string{"window": `"24h"`}))
	check("/api/stats", all)

	// The series outlive a reload that keeps their names.
	if err := g.eng.Swap(g.cfg); err != nil {
		t.Fatal(err)
	}
	check("/api/stats?window=7d", all)
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func TestStatsRefuseAnUnknownWindow(t *testing.T) {
	g, _ := anGateway(t, Options{})
	for _, path := range []string{"/api/stats?window=bogus", "/api/stats?window=", "/api/stats/series?window=2h", "/api/stats/series?window=1H"} {
		fakeCheckError(t, g.get(path), 400, "invalid_request_error", "invalid_window", "window")
	}
}

func TestSeriesShowOwnTrafficToOthers(t *testing.T) {
	g, clk := anGateway(t, Options{})
	obScript(t, g)
	clk.set(10 * time.Minute)
	g.eng.states.analytics.tick()
	if r := g.do("POST", "/v1/chat/completions", obChat("ok"), anWeb()...); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	sums := func(r *fakeResponse) (requests, errors, fallbacks, prompt int64) {
		t.Helper()
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		pts := gjson.GetBytes(r.body, "points").Array()
		if len(pts) != 60 || gjson.GetBytes(r.body, "stepSeconds").Int() != 60 || gjson.GetBytes(r.body, "window").Str != "1h" {
			t.Fatalf("not the 1h series: %s", r.body)
		}
		for k, p := range pts {
			if k > 0 && p.Get("t").Int() != pts[k-1].Get("t").Int()+60 {
				t.Fatalf("point %d at %d after %d", k, p.Get("t").Int(), pts[k-1].Get("t").Int())
			}
			requests += p.Get("requests").Int()
			errors += p.Get("errors").Int()
			fallbacks += p.Get("fallbacks").Int()
			prompt += p.Get("promptTokens").Int()
		}
		if last := pts[len(pts)-1]; last.Get("t").Int() != anT0.Add(10*time.Minute).Unix() {
			t.Errorf("the last point starts at %d, want the current minute", last.Get("t").Int())
		}
		return requests, errors, fallbacks, prompt
	}
	// The admin sees all: the script's 5 and the other key's one.
	if r, e, f, p := sums(g.get("/api/stats/series")); r != 6 || e != 1 || f != 1 || p != 15 {
		t.Errorf("admin: requests %d errors %d fallbacks %d prompt %d, want 6 1 1 15", r, e, f, p)
	}
	if r, e, f, p := sums(g.do("GET", "/api/stats/series?window=1h", "", anWeb()...)); r != 1 || e != 0 || f != 0 || p != 5 {
		t.Errorf("another key: requests %d errors %d fallbacks %d prompt %d, want its own 1 0 0 5", r, e, f, p)
	}
	r := g.do("GET", "/api/stats/series?window=30d", "", anWeb()...)
	if n := len(gjson.GetBytes(r.body, "points").Array()); n != 120 || gjson.GetBytes(r.body, "stepSeconds").Int() != 21600 {
		t.Errorf("30d: %d points of %d s", n, gjson.GetBytes(r.body, "stepSeconds").Int())
	}
}

func TestRequestsListOwnLinesNewestFirst(t *testing.T) {
	g, _ := anGateway(t, Options{})
	obScript(t, g)
	if r := g.do("POST", "/v1/chat/completions", `{"model":"ok","stream":true,"messages":[{"role":"user","content":"hi"}]}`, anWeb()...); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	long := strings.Repeat("é", 100) // 200 bytes: kept cut, on a rune boundary
	g.chat(obChat(long))

	r := g.get("/api/requests")
	list := gjson.GetBytes(r.body, "requests").Array()
	if r.status != 200 || len(list) != 7 {
		t.Fatalf("admin: %d, %d lines: %s", r.status, len(list), r.body)
	}
	for path, want := range map[string]string{
		"requests.0.status": "404", "requests.0.error": `"Not Found"`, "requests.0.key": `"team-ml"`,
		"requests.1.key": `"team-web"`, "requests.1.stream": "true", "requests.1.via": `"p1/m"`, "requests.1.status": "200",
		"requests.2.route": `"passthrough"`, "requests.2.via": `"p1"`,
		"requests.4.model": `"bad"`, "requests.4.status": "500", "requests.4.error": `"retryable"`, "requests.4.fallbacks": "2",
		"requests.5.model": `"fb"`, "requests.5.via": `"p2/f"`, "requests.5.fallbacks": "1", "requests.5.promptTokens": "5",
		"requests.5.completionTokens": "2", "requests.5.route": `"default"`,
		"requests.6.model": `"ok"`, "requests.6.error": "",
	} {
		if got := gjson.GetBytes(r.body, path).Raw; got != want {
			t.Errorf("%s = %s, want %s", path, got, want)
		}
	}
	if m := list[0].Get("model").Str; len(m) != textMax || m != long[:textMax] {
		t.Errorf("a long model name is kept as %q", m)
	}
	for i, l := range list {
		if !strings.HasPrefix(l.Get("id").Str, "req_") || l.Get("ts").Time().IsZero() || !l.Get("latencyMs").Exists() {
			t.Errorf("line %d: %s", i, l.Raw)
		}
		if i > 0 && l.Get("ts").Time().After(list[i-1].Get("ts").Time()) {
			t.Errorf("line %d is newer than the one before", i)
		}
	}

	web := g.do("GET", "/api/requests?limit=200", "", anWeb()...)
	if n := len(gjson.GetBytes(web.body, "requests").Array()); n != 1 || gjson.GetBytes(web.body, "requests.0.key").Str != "team-web" {
		t.Errorf("another key sees: %s", web.body)
	}
	if n := len(gjson.GetBytes(g.get("/api/requests?limit=2").body, "requests").Array()); n != 2 {
		t.Errorf("limit=2 listed %d", n)
	}
	for _, bad := range []string{"0", "-1", "x"} {
		fakeCheckError(t, g.get("/api/requests?limit="+bad), 400, "invalid_request_error", "invalid_limit", "limit")
	}
}

func TestRequestsRingKeepsTheLast(t *testing.T) {
	var r recentRing
	for i := range recentSize + 50 {
		e := recentEntry{status: int32(i), key: "k" + strconv.Itoa(i%2)}
		r.add(&e)
	}
	all := r.list("", true, recentSize)
	if len(all) != recentSize || all[0].Status != recentSize+49 || all[recentSize-1].Status != 50 {
		t.Errorf("%d lines, from %d to %d", len(all), all[0].Status, all[len(all)-1].Status)
	}
	own := r.list("k1", false, recentSize)
	if len(own) != recentSize/2 || own[0].Status != recentSize+49 {
		t.Errorf("own: %d lines, first %d", len(own), own[0].Status)
	}
	if n := testing.AllocsPerRun(100, func() {
		e := recentEntry{status: 200}
		e.id.set("req_0123456789")
		r.add(&e)
	}); n != 0 {
		t.Errorf("adding a line allocates %v times", n)
	}
}

func TestStatsTellTheViewerAndReloadErrorsToAdminsOnly(t *testing.T) {
	status := config.ReloadStatus{At: anT0, OK: false, Checksum: "abc",
		Errors: []string{"gateway.yaml:3: providers.p1.keys: bad value " + fakeEnv["P1_KEY"]}}
	g, _ := anGateway(t, Options{Status: func() config.ReloadStatus { return status }})
	admin := g.get("/api/stats")
	for path, want := range map[string]string{
		"viewer.key": `"team-ml"`, "viewer.admin": "true", "reload.ok": "false", "reload.checksum": `"abc"`,
		"reload.at": `"2025-03-01T00:00:00Z"`, "reload.errorCount": "1",
		"reload.errors.0": `gateway.yaml:3: providers.p1.keys: bad value <secret>`,
	} {
		got := gjson.GetBytes(admin.body, path)
		if got.Type == gjson.String && got.Str == want {
			continue
		}
		if got.Raw != want {
			t.Errorf("admin: %s = %s, want %s", path, got, want)
		}
	}
	web := g.do("GET", "/api/stats", "", anWeb()...)
	for path, want := range map[string]string{
		"viewer.key": `"team-web"`, "viewer.admin": "false", "reload.ok": "false", "reload.errorCount": "1", "reload.errors": "",
	} {
		if got := gjson.GetBytes(web.body, path).Raw; got != want {
			t.Errorf("another key: %s = %s, want %s", path, got, want)
		}
	}
	if strings.Contains(string(web.body), "gateway.yaml") {
		t.Errorf("another key sees the reload errors: %s", web.body)
	}
}

func TestStatsWithAuthOffShowAnAdminViewer(t *testing.T) {
	g := newFakeGateway(t, pxOne(""), newFakeNet(t))
	r := g.get("/api/stats")
	if got := gjson.GetBytes(r.body, "viewer").Raw; got != `{"key":"","admin":true}` {
		t.Errorf("viewer %s", got)
	}
	if got := gjson.GetBytes(r.body, "reload.errors").Raw; got != "[]" {
		t.Errorf("reload.errors %s, want [] for an admin", got)
	}
}

// TestSeriesMemoryBound pins the bound README states: 128 KiB a series,
// whatever the traffic, for 30 days.
func TestSeriesMemoryBound(t *testing.T) {
	var slots uintptr
	for _, w := range spans[1:] {
		slots += uintptr(w.points)
	}
	if n := unsafe.Sizeof(series{}) + slots*unsafe.Sizeof(slot{}); n > 128<<10 {
		t.Errorf("a series takes %d bytes, over the 128 KiB README states", n)
	}
	if n := unsafe.Sizeof(recentRing{}); n > 80<<10 {
		t.Errorf("the requests ring takes %d bytes, over the 80 KiB README states", n)
	}
}

// BenchmarkAnalyticsRecord is what analytics add to one chat request:
// the answer counted for the gateway, its route and key, the winning
// attempt for its target, the tokens for all four, and the request
// remembered for /api/requests.
func BenchmarkAnalyticsRecord(b *testing.B) {
	a := newAnalytics(nanotime)
	var target, key counters
	var route answers
	target.series.Store(a.newSeries())
	key.series.Store(a.newSeries())
	route.series.Store(a.newSeries())
	var ring recentRing
	u := adapters.Usage{Prompt: 9, Completion: 7, Known: true}
	l := accessLine{id: "req_0123456789abcdef01234567", key: "bench", route: "tools", via: "up/m", model: "auto", status: 200}
	b.ReportAllocs()
	for b.Loop() {
		target.won(3*time.Millisecond, false)
		target.tokens(u)
		key.series.Load().at().answered(200, 4*time.Millisecond, false)
		key.tokens(u)
		route.answered(200, 4*time.Millisecond, false)
		route.series.Load().at().tokens(u)
		a.all.at().answered(200, 4*time.Millisecond, false)
		a.all.at().tokens(u)
		ring.record(&l, time.Now())
	}
}
