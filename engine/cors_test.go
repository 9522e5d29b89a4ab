package engine

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func corsGateway(t *testing.T, cors string) *fakeGateway {
	n := newFakeNet(t)
	n.upstream("p1.test", func(ctx *fasthttp.RequestCtx, hit int) {
		// An upstream's own CORS answer must never reach the client.
		ctx.Response.Header.Set("Access-Control-Allow-Origin", "*")
		fakeOK("one")(ctx, hit)
	})
	return newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}}, `
models:
  auto: {targets: [p1/m]}
auth:
  keys:
    - {name: team-ml, key: "${GW_ML}"}
`+cors), n)
}

const corsChat = `{"model":"auto","messages":[{"role":"user","content":"hi"}]}`

func TestCORSPreflightAndAnswers(t *testing.T) {
	g := corsGateway(t, "cors: {origins: [\"https://app.example.com\"], headers: [X-Stainless-Lang], max_age: 5m}\n")
	app := "https://app.example.com"

	r := g.do("OPTIONS", "/v1/chat/completions", "", "Origin", app, "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "authorization, content-type, x-stainless-lang")
	if r.status != 204 || r.get("Access-Control-Allow-Origin") != app || r.get("Vary") != "Origin" ||
		r.get("Access-Control-Max-Age") != "300" || !strings.Contains(r.get("Access-Control-Allow-Methods"), "POST") || len(r.body) != 0 {
		t.Errorf("preflight: %d\n%s", r.status, r.header)
	}
	for _, h := range []string{"authorization", "content-type", "x-api-key", "x-request-id", "anthropic-version", "x-gateway-debug", "x-stainless-lang"} {
		if !strings.Contains(r.get("Access-Control-Allow-Headers"), h) {
			t.Errorf("preflight does not allow %s: %q", h, r.get("Access-Control-Allow-Headers"))
		}
	}

	// The answer itself, success or error, is readable by the app.
	for _, c := range []struct {
		name   string
		status int
		hdrs   []string
	}{
		{"answer", 200, []string{"Authorization", "Bearer " + fakeEnv["GW_ML"]}},
		{"error", 401, nil},
	} {
		r := g.do("POST", "/v1/chat/completions", corsChat, append(c.hdrs, "Origin", app)...)
		if r.status != c.status || r.get("Access-Control-Allow-Origin") != app || r.get("Vary") != "Origin" {
			t.Errorf("%s: %d\n%s", c.name, r.status, r.header)
		}
		for _, h := range []string{"x-routed-via", "x-fallback-attempts", "x-request-id", "x-gateway-route", "x-ratelimit-remaining", "x-gateway-explain"} {
			if !strings.Contains(r.get("Access-Control-Expose-Headers"), h) {
				t.Errorf("%s: %s not exposed: %q", c.name, h, r.get("Access-Control-Expose-Headers"))
			}
		}
	}

	// Another origin gets no CORS header: its preflight is refused, with
	// a reason for whoever reads it, and its request answered as if CORS
	// were off (the browser then keeps the answer from the page).
	r = g.do("OPTIONS", "/v1/chat/completions", "", "Origin", "https://evil.example", "Access-Control-Request-Method", "POST")
	if r.status != 403 || strings.Contains(strings.ToLower(r.header), "access-control-") || !strings.Contains(string(r.body), "origin_not_allowed") {
		t.Errorf("preflight from another origin: %d\n%s%s", r.status, r.header, r.body)
	}
	r = g.do("POST", "/v1/chat/completions", corsChat, "Origin", "https://evil.example", "Authorization", "Bearer "+fakeEnv["GW_ML"])
	if r.status != 200 || strings.Contains(strings.ToLower(r.header), "access-control-") {
		t.Errorf("request from another origin: %d\n%s", r.status, r.header)
	}
	// Without Origin, OPTIONS is what it was.
	if r := g.do("OPTIONS", "/v1/chat/completions", ""); r.status != 405 {
		t.Errorf("OPTIONS without Origin: %d", r.status)
	}
	// The passthrough answers with the gateway's CORS, not the upstream's.
	r = g.do("GET", "/proxy/p1/models", "", "Origin", "https://evil.example", "Authorization", "Bearer "+fakeEnv["GW_ML"])
	if r.status != 200 || r.has("Access-Control-Allow-Origin") {
		t.Errorf("passthrough relayed the upstream's CORS: %d\n%s", r.status, r.header)
	}
}

func TestCORSAnyOrigin(t *testing.T) {
	g := corsGateway(t, "cors: {origins: [\"*\"]}\n")
	r := g.do("OPTIONS", "/v1/models", "", "Origin", "http://localhost:5173", "Access-Control-Request-Method", "GET")
	if r.status != 204 || r.get("Access-Control-Allow-Origin") != "http://localhost:5173" || r.get("Access-Control-Max-Age") != "600" {
		t.Errorf("preflight: %d\n%s", r.status, r.header)
	}
}

// Without a cors: block nothing changes: OPTIONS is 405, no CORS header.
func TestCORSOff(t *testing.T) {
	g := corsGateway(t, "")
	r := g.do("OPTIONS", "/v1/chat/completions", "", "Origin", "https://app.example.com", "Access-Control-Request-Method", "POST")
	if r.status != 405 || strings.Contains(strings.ToLower(r.header), "access-control-") {
		t.Errorf("preflight with cors off: %d\n%s", r.status, r.header)
	}
	r = g.do("GET", "/proxy/p1/models", "", "Origin", "https://app.example.com", "Authorization", "Bearer "+fakeEnv["GW_ML"])
	if r.status != 200 || r.has("Access-Control-Allow-Origin") {
		t.Errorf("passthrough with cors off: %d\n%s", r.status, r.header)
	}
}
