package engine

import (
	"net/url"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// explainYAML: a chain of a two-key provider and a one-key one, a breaker
// that opens after two failures, team-ml an admin and team-web not.
var explainYAML = fakeYAML([]fakeProv{{name: "p1", keys: []string{"P1_KEY", "P1_KEY_B"}}, {name: "p2"}}, `
models:
  auto: {targets: [p1/m, p2/m]}
routes:
  - {name: "beta users", match: 'headers["x-tier"] == "beta"', targets: [p2/m]}
circuit_breaker: {failures: 2, open_for: 1m}
auth:
  keys:
    - {name: team-ml, key: "${GW_ML}", admin: true}
    - {name: team-web, key: "${GW_WEB}"}
`)

// explained asks the server's /api/explain with the admin key.
func (g *fakeGateway) explained(query string) gjson.Result {
	g.t.Helper()
	r := g.do("GET", "/api/explain?"+query, "", "Authorization", "Bearer "+fakeEnv["GW_ML"])
	if r.status != 200 || !gjson.ValidBytes(r.body) {
		g.t.Fatalf("/api/explain?%s: %d %s", query, r.status, r.body)
	}
	return gjson.ParseBytes(r.body)
}

// TestLiveExplainAgreesWithTheNextRequest checks, as the upstream state
// changes under it (a success moving the key turn, failures cooling keys,
// a breaker opening), that what explain picks is what the next request
// calls: the same target (x-routed-via) and the same key (the request's
// own x-gateway-explain).
func TestLiveExplainAgreesWithTheNextRequest(t *testing.T) {
	n := newFakeNet(t)
	p1 := n.upstream("p1.test", fakeOK("one"))
	n.upstream("p2.test", fakeOK("two"))
	g := newFakeGateway(t, explainYAML, n)

	agree := func(step string) gjson.Result {
		t.Helper()
		x := g.explained("model=auto")
		if x.Get("status").Int() != 200 {
			t.Fatalf("%s: explain status %s:\n%s", step, x.Get("status").Raw, x.Get("text").Str)
		}
		pick := x.Get("candidates.#(pick==true)")
		label := pick.Get("target").Str
		if pick.Get("keys").Int() > 1 {
			label += " key " + pick.Get("key").String() + " of " + pick.Get("keys").String()
		}
		r := g.chat(`{"model":"auto","messages":[{"role":"user","content":"hi"}]}`, "X-Gateway-Debug", "1")
		if r.status != 200 {
			t.Fatalf("%s: chat %d %s", step, r.status, r.body)
		}
		if via := r.get("X-Routed-Via"); via != x.Get("pick").Str || via != pick.Get("target").Str {
			t.Errorf("%s: explain picked %s, the request went to %s\n%s", step, x.Get("pick").Str, via, x.Get("text").Str)
		}
		if h := r.get("X-Gateway-Explain"); !strings.Contains(h, "picked "+label) {
			t.Errorf("%s: explain picked %q, the request says %q", step, label, h)
		}
		return x
	}

	x := agree("fresh")
	if x.Get("route").Str != "default" || x.Get("group").Str != "auto" || x.Get("strategy").Str != "priority" ||
		x.Get("candidates.#").Int() != 3 || x.Get("model").Str != "auto" || !strings.Contains(x.Get("text").Str, "candidates, in the order") {
		t.Errorf("explain body: %s", x.Raw)
	}
	// The first success moved p1's key turn: key 2 goes first now.
	if x = agree("after a success"); x.Get("candidates.0.key").Int() != 2 {
		t.Errorf("after a success, the first candidate is %s, want p1's key 2", x.Get("candidates.0").Raw)
	}

	// p1 breaks: the next request fails on both its keys and lands on p2;
	// explain sees the cooldowns, then the breaker, and picks p2.
	p1.set(fakeBody(500, `{"error":{"message":"down"}}`))
	r := g.chat(`{"model":"auto","messages":[{"role":"user","content":"hi"}]}`, "X-Gateway-Debug", "1")
	if r.get("X-Routed-Via") != "p2/m" || !strings.Contains(r.get("X-Gateway-Explain"), "failed p1/m key 1 of 2: retryable; failed p1/m key 2 of 2: retryable") {
		t.Fatalf("with p1 failing: %d via %q, explain %q", r.status, r.get("X-Routed-Via"), r.get("X-Gateway-Explain"))
	}
	x = agree("p1 broken")
	if x.Get("pick").Str != "p2/m" || !strings.HasPrefix(x.Get("candidates.0.state").Str, "skipped: circuit breaker open until") ||
		x.Get("candidates.0.until").Str == "" || x.Get("candidates.0.pick").Exists() {
		t.Errorf("with p1's breaker open: %s", x.Raw)
	}
	hits := p1.hits()
	r = g.chat(`{"model":"auto","messages":[{"role":"user","content":"hi"}]}`, "X-Gateway-Debug", "1")
	if h := r.get("X-Gateway-Explain"); h != "route default -> group auto (priority); picked p2/m; skipped p1/m: breaker_open" {
		t.Errorf("x-gateway-explain = %q", h)
	}
	if p1.hits() != hits {
		t.Error("a request reached p1 while explain said it was skipped")
	}
	for _, k := range fakeProviderKeys() {
		if strings.Contains(r.header, k) || strings.Contains(x.Raw, k) {
			t.Fatal("a provider key leaked into explain or its header")
		}
	}
}

// TestLiveExplainParameters checks the query parameters: they reach the
// route rules as the CLI's flags do, and what cannot be read is a 400.
func TestLiveExplainParameters(t *testing.T) {
	n := newFakeNet(t)
	n.upstream("p1.test", fakeOK("one"))
	n.upstream("p2.test", fakeOK("two"))
	g := newFakeGateway(t, explainYAML, n)

	for _, h := range []string{"x-tier:beta", "X-Tier=beta", "x-tier: beta"} {
		x := g.explained("model=auto&key=team-web&header=" + url.QueryEscape(h))
		if x.Get("route").Str != "beta users" || x.Get("group").Str != "beta users" || x.Get("pick").Str != "p2/m" {
			t.Errorf("header=%s: %s", h, x.Raw)
		}
	}
	if x := g.explained("model=gpt-9"); x.Get("status").Int() != 404 || x.Get("pick").Exists() || x.Get("candidates.#").Int() != 0 ||
		!strings.Contains(x.Get("text").Str, "404 model_not_found") {
		t.Errorf("unknown model: %s", x.Raw)
	}
	if x := g.explained("model=auto&tokens=7&max_tokens=9&stream=1&tools=true&operation=chat"); !strings.Contains(x.Get("text").Str,
		`request: chat, model "auto", ~7 prompt tokens, 1 messages, stream true, tools true`) {
		t.Errorf("flags: %s", x.Get("text").Str)
	}
	admin := []string{"Authorization", "Bearer " + fakeEnv["GW_ML"]}
	for _, q := range []string{"", "model=auto&tokens=-1", "model=auto&tokens=1e9", "model=auto&stream=maybe",
		"model=auto&header=novalue", "model=auto&key=nobody", "model=auto&operation=telepathy"} {
		if r := g.do("GET", "/api/explain?"+q, "", admin...); r.status != 400 || gjson.GetBytes(r.body, "error.type").Str != "invalid_request_error" {
			t.Errorf("%q: %d %s", q, r.status, r.body)
		}
	}
	if r := g.do("POST", "/api/explain?model=auto", "", admin...); r.status != fasthttp.StatusMethodNotAllowed {
		t.Errorf("POST: %d", r.status)
	}
}

// TestLiveExplainIsForAdmins: another key gets 403 from /api/explain and
// never the x-gateway-explain header; an admin gets the header only when
// it asks.
func TestLiveExplainIsForAdmins(t *testing.T) {
	n := newFakeNet(t)
	n.upstream("p1.test", fakeOK("one"))
	n.upstream("p2.test", fakeOK("two"))
	g := newFakeGateway(t, explainYAML, n)
	web := []string{"Authorization", "Bearer " + fakeEnv["GW_WEB"]}
	if r := g.do("GET", "/api/explain?model=auto", "", web...); r.status != 403 || gjson.GetBytes(r.body, "error.type").Str != "permission_error" {
		t.Errorf("a key without admin: %d %s", r.status, r.body)
	}
	if r := g.do("GET", "/api/explain?model=auto", ""); r.status != 401 {
		t.Errorf("no key: %d %s", r.status, r.body)
	}
	body := `{"model":"auto","messages":[{"role":"user","content":"hi"}]}`
	if r := g.do("POST", "/v1/chat/completions", body, append(web, "X-Gateway-Debug", "1")...); r.status != 200 || r.has("X-Gateway-Explain") {
		t.Errorf("a key without admin got x-gateway-explain: %d %q", r.status, r.get("X-Gateway-Explain"))
	}
	if r := g.chat(body); r.has("X-Gateway-Explain") {
		t.Error("x-gateway-explain without x-gateway-debug")
	}
	if r := g.chat(body, "X-Gateway-Debug", "1"); !strings.HasPrefix(r.get("X-Gateway-Explain"), "route default -> group auto (priority); picked p1/m") {
		t.Errorf("admin: %q", r.get("X-Gateway-Explain"))
	}
}

// With auth off every caller counts as an admin.
func TestLiveExplainAuthOff(t *testing.T) {
	n := newFakeNet(t)
	n.upstream("p1.test", fakeOK("one"))
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}}, "models:\n  auto: {targets: [p1/m]}\n"), n)
	r := g.do("GET", "/api/explain?model=auto", "")
	if r.status != 200 || gjson.GetBytes(r.body, "pick").Str != "p1/m" || !strings.Contains(gjson.GetBytes(r.body, "text").Str, "key: auth is off") {
		t.Errorf("%d %s", r.status, r.body)
	}
	if r := g.chat(`{"model":"auto","messages":[{"role":"user","content":"hi"}]}`, "X-Gateway-Debug", "1"); r.get("X-Gateway-Explain") != "route default -> group auto (priority); picked p1/m" {
		t.Errorf("x-gateway-explain = %q", r.get("X-Gateway-Explain"))
	}
}
