package engine

import (
	"bytes"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// prFake is an OpenAI-compatible upstream whose model list answers
// status (0: the connection is cut) and whose chat answers a completion,
// counting each apart: a probe must never be a chat call, nor a skipped
// key get one.
type prFake struct {
	status              atomic.Int32
	modelHits, chatHits atomic.Int32
	// models, when set, serves the model list instead.
	models func(ctx *fasthttp.RequestCtx)
}

func prStart(n *fakeNet, name string) *prFake {
	f := &prFake{}
	f.status.Store(200)
	n.upstream(name+".test", func(ctx *fasthttp.RequestCtx, _ int) {
		if string(ctx.Path()) != "/v1/models" {
			f.chatHits.Add(1)
			fakeOK(name)(ctx, 0)
			return
		}
		f.modelHits.Add(1)
		if f.models != nil {
			f.models(ctx)
			return
		}
		switch st := int(f.status.Load()); st {
		case 0:
			fakeClose(ctx, 0)
		case 200:
			ctx.SetBodyString(`{"object":"list","data":[{"id":"m"}]}`)
		default:
			ctx.Response.Header.Set("Retry-After", "60")
			fakeBody(st, `{"error":{"message":"not with this key","type":"x"}}`)(ctx, 0)
		}
	})
	return f
}

// prProvider renders one fake provider, with extra lines in its block.
func prProvider(name string, keys []string, extra ...string) string {
	refs := make([]string, len(keys))
	for i, k := range keys {
		refs[i] = `"${` + k + `}"`
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  %s:\n    type: openai\n    base_url: http://%s.test/v1\n    keys: [%s]\n    timeout: 5s\n", name, name, strings.Join(refs, ", "))
	for _, e := range extra {
		b.WriteString("    " + e + "\n")
	}
	b.WriteString("    models:\n      m: {upstream: " + name + "-up}\n")
	return b.String()
}

// prYAML is p1 and p2 (each with its own key) behind auto, and rest.
func prYAML(p1, p2 []string, rest string) string {
	return "providers:\n" + prProvider("p1", []string{"P1_KEY"}, p1...) + prProvider("p2", []string{"P2_KEY"}, p2...) +
		"models:\n  auto: {targets: [p1/m, p2/m]}\n" + rest
}

// prKey reads one key's entry of /api/stats.
func prKey(g *fakeGateway, provider string, i int) gjson.Result {
	return gjson.GetBytes(g.get("/api/stats").body, fmt.Sprintf("providers.%s.models.m.keys.%d", provider, i))
}

// prProbe returns the probe of the key at slot of provider in the engine's
// current snapshot.
func prProbe(e *Engine, provider string, slot int) *probeKey {
	for _, k := range e.snap.Load().probes {
		if k.p.name == provider && k.slot == slot {
			return k
		}
	}
	return nil
}

// A key whose probe finds it broken is skipped by the next request
// without a call to it, and shown so in /api/stats, explain and
// /metrics; the state outlives a reload; the moment a probe finds it
// working again, the next request uses it.
func TestProbedKeyIsSkippedUntilItWorks(t *testing.T) {
	for _, tt := range []struct {
		name   string
		status int32
		probe  string
		state  string
		metric string
	}{
		{"401", 401, "invalid", "invalid", "3"},
		{"500", 500, "error", "error", "4"},
		{"cut", 0, "error", "error", "4"},
		// A 429 with its reset cools the key like a live 429 would.
		{"429", 429, "rate_limited", "rate_limited", "2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := newFakeNet(t)
			p1, _ := prStart(n, "p1"), prStart(n, "p2")
			p1.status.Store(tt.status)
			yaml := prYAML(nil, nil, "health: {interval: 20ms}\n")
			g, _ := obGateway(t, yaml, n)
			rtEventually(t, "both keys to be probed", func() bool {
				return prKey(g, "p1", 0).Get("probe").Str == tt.probe && prKey(g, "p2", 0).Get("probe").Str == "healthy"
			})
			k := prKey(g, "p1", 0)
			if k.Get("state").Str != tt.state || k.Get("index").Int() != 1 || k.Get("probedAt").Str == "" || k.Get("until").Str == "" {
				t.Errorf("p1 key %s, want state %s with index, probedAt and until", k.Raw, tt.state)
			}
			if r := g.chat(fakeAsk); r.status != 200 || r.get("X-Routed-Via") != "p2/m" || p1.chatHits.Load() != 0 {
				t.Fatalf("status %d via %q, %d chat calls to p1: want p2 and none", r.status, r.get("X-Routed-Via"), p1.chatHits.Load())
			}
			// Alone, the held-out key's provider answers why.
			if tt.status != 429 {
				r := g.do("POST", "/v1/chat/completions", `{"model":"p1/m","messages":[{"role":"user","content":"hi"}]}`)
				if r.status != 503 || !strings.Contains(string(r.body), "held out by its last health probe") {
					t.Errorf("p1/m alone: %d %s, want 503 naming the probe", r.status, r.body)
				}
			}
			ex, err := g.eng.Explain(ExplainRequest{Model: "auto"})
			if err != nil || !strings.Contains(ex.Text, "p1/m") ||
				tt.status != 429 && !strings.Contains(ex.Text, "held out by its last probe: "+tt.probe) {
				t.Errorf("explain (%v): %+v", err, ex)
			}
			if m := g.get("/metrics").body; !bytes.Contains(m, []byte(`gateway_key_probe_state{provider="p1",key="1"} `+tt.metric+"\n")) ||
				!bytes.Contains(m, []byte(`gateway_probes_total{provider="p1",result="`+tt.probe+`"} `)) ||
				!bytes.Contains(m, []byte(`gateway_key_probe_state{provider="p2",key="1"} 1`)) {
				t.Errorf("metrics lack p1's probe %s:\n%s", tt.probe, m)
			}
			// A reload keeps what the probes found.
			if err := g.eng.Swap(pxConfig(t, yaml)); err != nil {
				t.Fatal(err)
			}
			if s := prKey(g, "p1", 0).Get("state").Str; s != tt.state {
				t.Errorf("state %q after a reload, want %q", s, tt.state)
			}
			if tt.status == 429 {
				return // cooling until the upstream's reset; the rest is the others'
			}
			p1.status.Store(200)
			rtEventually(t, "the key to return", func() bool { return prKey(g, "p1", 0).Get("state").Str == "healthy" })
			if r := g.chat(fakeAsk); r.status != 200 || r.get("X-Routed-Via") != "p1/m" {
				t.Errorf("after a healthy probe: status %d via %q", r.status, r.get("X-Routed-Via"))
			}
			if strings.Contains(g.log.String(), "SECRET") {
				t.Errorf("a key in the log:\n%s", g.log.String())
			}
		})
	}
}

// An upstream that serves no model list (a 404 to GET /models, as many
// self-hosted servers answer) leaves its key in service: the probe could
// not check it, which says nothing against it. Before, the key was held
// out as "error" and the whole provider with it.
func TestProbeWithoutModelListKeepsKey(t *testing.T) {
	n := newFakeNet(t)
	p1, _ := prStart(n, "p1"), prStart(n, "p2")
	p1.status.Store(404)
	g, _ := obGateway(t, prYAML(nil, nil, "health: {interval: 20ms}\n"), n)
	rtEventually(t, "p1's key to be probed twice", func() bool { return p1.modelHits.Load() >= 2 })
	k := prKey(g, "p1", 0)
	if k.Get("state").Str != "healthy" || k.Get("probe").Exists() {
		t.Errorf("p1 key %s, want healthy with no probe verdict", k.Raw)
	}
	if r := g.chat(fakeAsk); r.status != 200 || r.get("X-Routed-Via") != "p1/m" {
		t.Errorf("status %d via %q, want p1, whose key the probe could not check", r.status, r.get("X-Routed-Via"))
	}
	if m := g.get("/metrics").body; !bytes.Contains(m, []byte(`gateway_key_probe_state{provider="p1",key="1"} 0`+"\n")) {
		t.Errorf("p1's probe state in /metrics, want 0 (none):\n%s", m)
	}
	warned := 0
	for line := range strings.Lines(g.log.String()) {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "probe=unchecked") && strings.Contains(line, "probe: chat can") {
			warned++
		}
	}
	if log := g.log.String(); warned != 1 {
		t.Errorf("want one warning suggesting probe: chat, got:\n%s", log)
	}
}

// A key refused with a 401 by a request is probed again after
// auth_recheck, without spending tokens, probes on or off, and returns as
// soon as the upstream accepts it: not after the whole hour. With
// auth_recheck 0s and the probes' interval far off, nothing checks it.
func TestRefusedKeyReturnsWhenItWorks(t *testing.T) {
	for _, tt := range []struct {
		name    string
		recheck string
		health  string
		checks  bool
	}{
		{"rechecked", "20ms", "5m", true},
		{"rechecked with probes off", "20ms", "0s", true},
		{"rechecks off", "0s", "5m", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var works atomic.Bool
			var checks atomic.Int32
			n := newFakeNet(t)
			n.upstream("p1.test", func(ctx *fasthttp.RequestCtx, _ int) {
				if string(ctx.Path()) == "/v1/models" {
					checks.Add(1)
					if works.Load() {
						ctx.SetBodyString(`{"object":"list","data":[]}`)
						return
					}
				} else if works.Load() {
					fakeOK("p1 again")(ctx, 0)
					return
				}
				ctx.SetStatusCode(401)
				ctx.SetBodyString(`{"error":{"message":"invalid api key","type":"invalid_request_error","code":"invalid_api_key"}}`)
			})
			n.upstream("p2.test", fakeOK("p2"))
			g, _ := obGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}},
				"models:\n  auto: {targets: [p1/m, p2/m]}\nfailover: {auth_cooldown: 1h, auth_recheck: "+tt.recheck+"}\n"+
					"health: {interval: "+tt.health+"}\n"), n)
			if r := g.chat(fakeAsk); r.status != 200 || r.get("X-Routed-Via") != "p2/m" {
				t.Fatalf("status %d via %q", r.status, r.get("X-Routed-Via"))
			}
			state := func() string { return prKey(g, "p1", 0).Get("state").Str }
			if s := state(); s != "invalid" {
				t.Fatalf("state %q after a 401", s)
			}
			if !tt.checks {
				time.Sleep(100 * time.Millisecond)
				if checks.Load() != 0 || state() != "invalid" {
					t.Errorf("auth_recheck 0s: %d checks, state %q", checks.Load(), state())
				}
				return
			}
			// Refused checks go on, every auth_recheck.
			rtEventually(t, "two refused checks", func() bool { return checks.Load() >= 2 })
			if s := state(); s != "invalid" {
				t.Errorf("state %q while the checks are refused", s)
			}
			works.Store(true)
			rtEventually(t, "the key to return", func() bool { return state() == "healthy" })
			if r := g.chat(fakeAsk); r.status != 200 || r.get("X-Routed-Via") != "p1/m" {
				t.Errorf("after the key works: status %d via %q", r.status, r.get("X-Routed-Via"))
			}
		})
	}
}

// A probe counts against its key's caps, and none is made while they are
// spent: two probes fill rpm 2, the next waits for the window to free,
// and requests go elsewhere meanwhile. A chat probe counts its tokens.
func TestProbeCountsAgainstCaps(t *testing.T) {
	n := newFakeNet(t)
	p1, _ := prStart(n, "p1"), prStart(n, "p2")
	g, _ := obGateway(t, prYAML([]string{"limits: {rpm: 2}"}, nil, "health: {interval: 10ms}\n"), n)
	rtEventually(t, "two probes", func() bool { return p1.modelHits.Load() >= 2 })
	k := prProbe(g.eng, "p1", 0)
	// The third is put off until the minute window frees.
	rtEventually(t, "the probe put off", func() bool { return k.state.next.Load() > nanotime()+int64(30*time.Second) })
	if h := p1.modelHits.Load(); h != 2 {
		t.Errorf("%d probes within rpm 2", h)
	}
	if s := prKey(g, "p1", 0).Get("state").Str; s != "rate_limited" {
		t.Errorf("state %q with the caps spent by probes", s)
	}
	if r := g.chat(fakeAsk); r.get("X-Routed-Via") != "p2/m" || p1.chatHits.Load() != 0 {
		t.Errorf("via %q with p1's caps spent by probes", r.get("X-Routed-Via"))
	}

	// probe: chat spends a request and the tokens the answer reports.
	n2 := newFakeNet(t)
	c1, _ := prStart(n2, "p1"), prStart(n2, "p2")
	g2, _ := obGateway(t, prYAML([]string{"probe: chat", "limits: {rpm: 1, tpm: 1000}"}, nil, "health: {interval: 10ms}\n"), n2)
	rtEventually(t, "a chat probe", func() bool { return prKey(g2, "p1", 0).Get("probe").Str == "healthy" })
	ck := prProbe(g2.eng, "p1", 0)
	if reqs, toks := ck.target.limiter(0).Used(nanotime()); reqs != 1 || toks != 7 || c1.chatHits.Load() != 1 || c1.modelHits.Load() != 0 {
		t.Errorf("after a chat probe: %d requests %d tokens counted, %d chat and %d model-list calls; want 1, 7 (its usage), 1, 0",
			reqs, toks, c1.chatHits.Load(), c1.modelHits.Load())
	}
}

// Probes of one key never overlap, however short the interval, while
// two keys are probed side by side.
func TestProbeOneAtATimePerKey(t *testing.T) {
	n := newFakeNet(t)
	p1, _ := prStart(n, "p1"), prStart(n, "p2")
	var mu sync.Mutex
	inflight, most := map[string]int{}, map[string]int{}
	p1.models = func(ctx *fasthttp.RequestCtx) {
		key := string(ctx.Request.Header.Peek("Authorization"))
		mu.Lock()
		inflight[key]++
		most[key] = max(most[key], inflight[key])
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // twenty intervals
		mu.Lock()
		inflight[key]--
		mu.Unlock()
		ctx.SetBodyString(`{"data":[]}`)
	}
	yaml := "providers:\n" + prProvider("p1", []string{"P1_KEY", "P1_KEY_B"}) + prProvider("p2", []string{"P2_KEY"}) +
		"models:\n  auto: {targets: [p1/m, p2/m]}\nhealth: {interval: 1ms}\n"
	obGateway(t, yaml, n)
	rtEventually(t, "six probes", func() bool { return p1.modelHits.Load() >= 6 })
	mu.Lock()
	defer mu.Unlock()
	if len(most) != 2 || most["Bearer "+fakeEnv["P1_KEY"]] != 1 || most["Bearer "+fakeEnv["P1_KEY_B"]] != 1 {
		t.Errorf("most probes at once per key: %v, want 1 for each of the two keys", slices.Collect(maps.Values(most)))
	}
}

// health.interval 0s turns a provider's probes off, the top level's or
// its own.
func TestProbesOff(t *testing.T) {
	n := newFakeNet(t)
	p1, p2 := prStart(n, "p1"), prStart(n, "p2")
	g, _ := obGateway(t, prYAML([]string{"health: {interval: 0s}"}, nil, "health: {interval: 2ms}\n"), n)
	rtEventually(t, "p2's probes", func() bool { return p2.modelHits.Load() >= 5 })
	if h := p1.modelHits.Load(); h != 0 {
		t.Errorf("p1 (interval 0s) probed %d times", h)
	}
	if k := prKey(g, "p1", 0); k.Get("probe").Exists() || k.Get("probedAt").Exists() {
		t.Errorf("p1 key %s: want no probe fields", k.Raw)
	}
	if err := g.eng.Swap(pxConfig(t, prYAML(nil, nil, "health: {interval: 0s}\n"))); err != nil {
		t.Fatal(err)
	}
	// Once the prober has let go of p2's key, with no probe begun before
	// the swap still running, nothing probes it.
	k := prProbe(g.eng, "p2", 0)
	rtEventually(t, "p2's probes to stop", func() bool { return k.state.next.Load() == 0 && !k.state.busy.Load() })
	before := p2.modelHits.Load()
	time.Sleep(30 * time.Millisecond) // fifteen of the old intervals
	if h := p2.modelHits.Load(); h != before || p1.modelHits.Load() != 0 {
		t.Errorf("with health.interval 0s: p2 %d more probes, p1 %d", h-before, p1.modelHits.Load())
	}
}

// prGoroutines counts the goroutines running fn.
func prGoroutines(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("engine.(*Engine)."+fn+"("))
}

// The keys probed follow each reload, through the one prober the engine
// owns: a provider removed is no longer probed, one added is, and no
// goroutine is left behind, by reloads or by Close.
func TestProbesFollowReloads(t *testing.T) {
	n := newFakeNet(t)
	p1, p2 := prStart(n, "p1"), prStart(n, "p2")
	only := func(name string) string {
		return "providers:\n" + prProvider(name, []string{strings.ToUpper(name) + "_KEY"}) + "health: {interval: 2ms}\n"
	}
	// Engines other tests left open have probers of their own; this test
	// runs alone (not parallel), so it counts from them.
	loops, probes := prGoroutines("probeLoop"), prGoroutines("probe")
	eng, err := New(pxConfig(t, only("p1")), Options{Dial: n.dial})
	if err != nil {
		t.Fatal(err)
	}
	rtEventually(t, "p1's probes", func() bool { return p1.modelHits.Load() >= 2 })
	old := prProbe(eng, "p1", 0)
	for range 20 {
		if err := eng.Swap(pxConfig(t, only("p2"))); err != nil {
			eng.Close()
			t.Fatal(err)
		}
	}
	rtEventually(t, "p2's probes, and p1's last to end", func() bool { return p2.modelHits.Load() >= 2 && !old.state.busy.Load() })
	before := p1.modelHits.Load()
	start := p2.modelHits.Load()
	rtEventually(t, "more of p2's probes", func() bool { return p2.modelHits.Load() >= start+5 })
	if h := p1.modelHits.Load(); h != before {
		t.Errorf("p1, reloaded away, probed %d more times", h-before)
	}
	if n := prGoroutines("probeLoop") - loops; n != 1 {
		t.Errorf("%d probers after 20 reloads, want 1", n)
	}
	eng.Close()
	// Close returns once the prober said it is done, a moment before its
	// goroutine is gone.
	rtEventually(t, "no prober and no probe left after Close", func() bool {
		return prGoroutines("probeLoop")-loops == 0 && prGoroutines("probe")-probes <= 0
	})
}

// The built-in mock answers its probe in process, healthy, so the root
// config's out-of-the-box gateway logs no probe failure.
func TestProbeMock(t *testing.T) {
	g, _ := obGateway(t, "providers:\n  mock:\n    type: mock\n    models: {echo: {}}\nhealth: {interval: 2ms}\n", newFakeNet(t))
	rtEventually(t, "a mock probe", func() bool {
		return gjson.GetBytes(g.get("/api/stats").body, "providers.mock.models.echo.keys.0.probe").Str == "healthy"
	})
	for _, l := range strings.Split(g.log.String(), "\n") {
		if strings.Contains(l, "probe") && !strings.Contains(l, "level=DEBUG") {
			t.Errorf("a probe logged above debug: %s", l)
		}
	}
}
