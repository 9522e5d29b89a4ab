package engine

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// A stream the upstream cuts after it started is a failure of its target:
// in /api/stats, /metrics, the access log and for its breaker, not the
// success its first frame looked like.
func TestStreamCutCountsAsFailure(t *testing.T) {
	n := newFakeNet(t)
	c0 := fakeChunk(0)
	p1 := n.upstream("p1.test", fakeRaw(fakeSSEHead+fakeChunked(c0)))
	n.upstream("p2.test", fakeOK("p2"))
	g, access := obGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}},
		"models:\n  auto: {targets: [p1/m, p2/m]}\ncircuit_breaker: {failures: 1, open_for: 1m}\n"), n)
	r := g.chat(fakeAskStream)
	if r.status != 200 || !strings.Contains(string(r.body), "stream_interrupted") {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	stats := g.get("/api/stats")
	m := gjson.GetBytes(stats.body, "providers.p1.models.m")
	if m.Get("successes").Int() != 0 || m.Get("errors.retryable").Int() != 1 {
		t.Errorf("p1/m stats after a cut stream: %s", m.Raw)
	}
	if b := m.Get("breaker").Str; b != "open" {
		t.Errorf("breaker %q after a cut with failures: 1, want open", b)
	}
	metrics := string(g.get("/metrics").body)
	for _, want := range []string{
		`gateway_upstream_attempts_total{provider="p1",model="m",outcome="success"} 0`,
		`gateway_upstream_attempts_total{provider="p1",model="m",outcome="retryable"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	lines := obLines(t, g, access)
	if len(lines) != 1 || lines[0]["error"] != "stream_interrupted" || lines[0]["model"] != "auto" ||
		!strings.HasSuffix(lines[0]["attempts"].(string), "p1/m#1:cut") {
		t.Errorf("access log: %v", lines)
	}
	// The breaker sends the next request elsewhere.
	if r := g.chat(fakeAskStream); r.status != 200 || r.get("X-Routed-Via") != "p2/m" || p1.hits() != 1 {
		t.Errorf("after the cut: status %d via %q, p1 hits %d", r.status, r.get("X-Routed-Via"), p1.hits())
	}
}

// A key with no room left under its caps is rate_limited, not healthy.
func TestKeyAtItsCapShowsRateLimited(t *testing.T) {
	n := newFakeNet(t)
	n.upstream("p1.test", fakeOK("ok"))
	g, _ := obGateway(t, rtYAML([]fakeProv{{name: "p1"}}, map[string]string{"p1": "limits: {rpm: 1}"},
		"models:\n  auto: {targets: [p1/m]}\n"), n)
	state := func() gjson.Result {
		return gjson.GetBytes(g.get("/api/stats").body, "providers.p1.models.m.keys.0")
	}
	if s := state().Get("state").Str; s != "healthy" {
		t.Fatalf("fresh key %q", s)
	}
	if r := g.chat(fakeAsk); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	if k := state(); k.Get("state").Str != "rate_limited" || !k.Get("until").Exists() {
		t.Errorf("key at its rpm cap: %s", k.Raw)
	}
	if !strings.Contains(string(g.get("/metrics").body), `gateway_keys_available{provider="p1",model="m"} 0`) {
		t.Error("metrics count a capped key as available")
	}
}
