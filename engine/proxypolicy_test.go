package engine

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// ppYAML has two providers that share the model name m under different
// upstream names, a group on p2, and keys the passthrough's policy treats
// differently. The cache is off, so every request the policy lets
// through reaches an upstream.
func ppYAML() string {
	return fakeYAML([]fakeProv{
		{name: "p1", models: map[string]string{"m": "m-up", "big": "gpt-5-expensive"}},
		{name: "p2", models: map[string]string{"m": "m-up2", "other": "o-up", "gem": "gemini-pro"}},
	}, `models:
  auto: {targets: [p2/other]}
cache: {ttl: 0s}
routes:
  - {name: to-auto, match: 'tools', model: auto}
auth:
  keys:
    - {name: team-ml, key: "${GW_ML}"}
    - {name: limited, key: "${GW_LIM}", models: [m], tpm: 10}
    - {name: team-web, key: "${GW_WEB}", models: [auto, p1/big, p2/gem]}
    - {name: no-proxy, key: "${GW_OFF}", proxy: false}
`)
}

// ppOK answers every request 200 with a small JSON body.
func ppOK(ctx *fasthttp.RequestCtx, _ int) {
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"ok":true}`)
}

func TestProxyKeyPolicy(t *testing.T) {
	deep := `{"model":"m-up","x":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`
	tests := []struct {
		name               string
		key                string // fakeEnv name
		method, path, body string
		status             int
		code, param        string // for an error
		named              string // a part of the error's message
	}{
		{"proxy false refuses a GET", "GW_OFF", "GET", "/proxy/p1/v1/models", "", 403, "proxy_not_allowed", "", "proxy: false"},
		{"proxy false refuses a POST", "GW_OFF", "POST", "/proxy/p1/v1/chat/completions", `{"model":"m-up"}`, 403, "proxy_not_allowed", "", ""},
		{"proxy false refuses an unknown provider too", "GW_OFF", "GET", "/proxy/nope/x", "", 403, "proxy_not_allowed", "", ""},

		{"allowed upstream", "GW_LIM", "POST", "/proxy/p1/v1/chat/completions", `{"model":"m-up","messages":[]}`, 200, "", "", ""},
		{"allowed upstream on the other provider", "GW_LIM", "POST", "/proxy/p2/v1/chat/completions", `{"model":"m-up2"}`, 200, "", "", ""},
		{"allowed upstream, escaped key", "GW_LIM", "POST", "/proxy/p1/v1/chat/completions", `{"mod\u0065l":"m-up"}`, 200, "", "", ""},
		{"nested model is not looked at", "GW_LIM", "POST", "/proxy/p1/v1/chat/completions", `{"x":{"model":"gpt-5-expensive"},"model":"m-up"}`, 200, "", "", ""},
		{"PUT with an allowed model", "GW_LIM", "PUT", "/proxy/p1/v1/x", `{"model":"m-up"}`, 200, "", "", ""},
		{"another model", "GW_LIM", "POST", "/proxy/p1/v1/chat/completions", `{"model":"gpt-5-expensive","max_tokens":100000}`, 403, "model_not_allowed", "model", "gpt-5-expensive"},
		{"the gateway's name is not the upstream's", "GW_LIM", "POST", "/proxy/p1/v1/chat/completions", `{"model":"m"}`, 403, "model_not_allowed", "model", "\"m\""},
		{"another provider's upstream", "GW_LIM", "POST", "/proxy/p2/v1/chat/completions", `{"model":"m-up"}`, 403, "model_not_allowed", "model", "m-up"},
		{"no model on POST", "GW_LIM", "POST", "/proxy/p1/v1/files", `{"purpose":"batch"}`, 403, "model_not_allowed", "model", "names no model"},
		{"empty POST", "GW_LIM", "POST", "/proxy/p1/v1/batches", ``, 403, "model_not_allowed", "model", ""},
		{"no model on PATCH", "GW_LIM", "PATCH", "/proxy/p1/v1/x", `{"x":1}`, 403, "model_not_allowed", "model", ""},
		{"not JSON", "GW_LIM", "POST", "/proxy/p1/v1/audio/transcriptions", `--boundary model=m-up`, 403, "model_not_allowed", "model", ""},
		{"invalid JSON", "GW_LIM", "POST", "/proxy/p1/v1/chat/completions", `{"model":"m-up",}`, 403, "model_not_allowed", "model", ""},
		{"not an object", "GW_LIM", "POST", "/proxy/p1/v1/chat/completions", `[{"model":"m-up"}]`, 403, "model_not_allowed", "model", ""},
		{"nested too deep", "GW_LIM", "POST", "/proxy/p1/v1/chat/completions", deep, 403, "model_not_allowed", "model", ""},
		{"model not a string", "GW_LIM", "POST", "/proxy/p1/v1/chat/completions", `{"model":["m-up"]}`, 400, "invalid_type", "model", ""},
		{"duplicate model", "GW_LIM", "POST", "/proxy/p1/v1/chat/completions", `{"model":"m-up","model":"gpt-5-expensive"}`, 400, "duplicate_field", "model", "more than once"},
		{"case variant", "GW_LIM", "POST", "/proxy/p1/v1/chat/completions", `{"model":"m-up","MODEL":"gpt-5-expensive"}`, 400, "ambiguous_field", "model", ""},
		{"case variant alone", "GW_LIM", "POST", "/proxy/p1/v1/chat/completions", `{"Model":"m-up"}`, 400, "ambiguous_field", "model", ""},
		{"escaped case variant", "GW_LIM", "POST", "/proxy/p1/v1/chat/completions", `{"model":"m-up","mode\u004c":"x"}`, 400, "ambiguous_field", "model", ""},
		{"GET with no body", "GW_LIM", "GET", "/proxy/p1/v1/models", "", 200, "", "", ""},
		{"DELETE with no body", "GW_LIM", "DELETE", "/proxy/p1/v1/files/file-1", "", 200, "", "", ""},
		{"GET with a body is judged", "GW_LIM", "GET", "/proxy/p1/v1/x", `{"model":"gpt-5-expensive"}`, 403, "model_not_allowed", "model", "gpt-5-expensive"},
		{"a model in the path must be allowed too", "GW_WEB", "POST", "/proxy/p2/v1beta/models/gemini-ultra:generateContent", `{"model":"gemini-pro"}`, 403, "model_not_allowed", "model", "gemini-ultra"},
		{"allowed model in the path", "GW_WEB", "POST", "/proxy/p2/v1beta/models/gemini-pro:generateContent", `{"model":"gemini-pro"}`, 200, "", "", ""},
		{"DELETE of a model", "GW_LIM", "DELETE", "/proxy/p1/v1/models/ft-expensive", "", 403, "model_not_allowed", "model", "ft-expensive"},

		{"group's upstream", "GW_WEB", "POST", "/proxy/p2/v1/chat/completions", `{"model":"o-up"}`, 200, "", "", ""},
		{"provider/model's upstream", "GW_WEB", "POST", "/proxy/p1/v1/chat/completions", `{"model":"gpt-5-expensive"}`, 200, "", "", ""},
		{"outside its names", "GW_WEB", "POST", "/proxy/p1/v1/chat/completions", `{"model":"m-up"}`, 403, "model_not_allowed", "model", "m-up"},

		{"unrestricted: any model", "GW_ML", "POST", "/proxy/p1/v1/chat/completions", `{"model":"gpt-5-expensive","max_tokens":100000}`, 200, "", "", ""},
		{"unrestricted: no model", "GW_ML", "POST", "/proxy/p1/v1/files", `not json`, 200, "", "", ""},
		{"unrestricted: duplicates are the upstream's business", "GW_ML", "POST", "/proxy/p1/v1/x", `{"model":"a","MODEL":"b"}`, 200, "", "", ""},
	}
	n := newFakeNet(t)
	up1 := n.upstream("p1.test", ppOK)
	up2 := n.upstream("p2.test", ppOK)
	g := newFakeGateway(t, ppYAML(), n)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := up1.hits() + up2.hits()
			r := g.do(tt.method, tt.path, tt.body, "Authorization", "Bearer "+fakeEnv[tt.key])
			reached := up1.hits() + up2.hits() - before
			if tt.status == 200 {
				if r.status != 200 || reached != 1 {
					t.Fatalf("%d %s, upstream reached %d times; want the upstream's 200", r.status, r.body, reached)
				}
				return
			}
			typ := "permission_error"
			if tt.status == 400 {
				typ = "invalid_request_error"
			}
			msg := fakeCheckError(t, r, tt.status, typ, tt.code, tt.param)
			if reached != 0 {
				t.Errorf("a refused request reached the upstream")
			}
			if !strings.Contains(msg, tt.named) {
				t.Errorf("message %q does not say %q", msg, tt.named)
			}
			if tt.key != "GW_OFF" && r.get("X-Ratelimit-Limit") == "" {
				t.Errorf("a refusal without the key's rate headers:\n%s", r.header)
			}
		})
	}
}

func TestProxyPolicyFollowsReload(t *testing.T) {
	// The allowed upstream names are built with each snapshot: a reload
	// that changes a model's upstream changes what the key may send.
	n := newFakeNet(t)
	n.upstream("p1.test", ppOK)
	n.upstream("p2.test", ppOK)
	g := newFakeGateway(t, ppYAML(), n)
	lim := []string{"Authorization", "Bearer " + fakeEnv["GW_LIM"]}
	if r := g.do("POST", "/proxy/p1/v1/chat/completions", `{"model":"m-up"}`, lim...); r.status != 200 {
		t.Fatalf("before: %d %s", r.status, r.body)
	}
	if err := g.eng.Swap(pxConfig(t, strings.Replace(ppYAML(), "m-up", "m-new", 1))); err != nil {
		t.Fatal(err)
	}
	if r := g.do("POST", "/proxy/p1/v1/chat/completions", `{"model":"m-up"}`, lim...); r.status != 403 {
		t.Errorf("the old upstream after the reload: %d %s", r.status, r.body)
	}
	if r := g.do("POST", "/proxy/p1/v1/chat/completions", `{"model":"m-new"}`, lim...); r.status != 200 {
		t.Errorf("the new upstream after the reload: %d %s", r.status, r.body)
	}
}
