package engine

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/config"
)

// lmUpstream answers GET /v1/models with ids and chat with its model name.
func lmUpstream(n *fakeNet, host string, status int, ids ...string) *fakeUpstream {
	return n.upstream(host, func(ctx *fasthttp.RequestCtx, _ int) {
		if ctx.IsGet() {
			ctx.SetStatusCode(status)
			var b strings.Builder
			b.WriteString(`{"object":"list","data":[`)
			for i, id := range ids {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(`{"id":"` + id + `","object":"model","owned_by":"x"}`)
			}
			b.WriteString(`]}`)
			ctx.SetBodyString(b.String())
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(fakeCompletion(gjson.GetBytes(ctx.PostBody(), "model").Str, "ok"))
	})
}

const lmConfig = `providers:
  p1:
    type: openai
    base_url: http://p1.test/v1
    keys: ["${P1_KEY}"]
    list_models: true
    models:
      m: {upstream: p1-up}
models:
  auto: {targets: [p1/m]}
`

func TestListModelsAddsUpstreamModels(t *testing.T) {
	n := newFakeNet(t)
	up := lmUpstream(n, "p1.test", 200, "gpt-x", "vendor/model-y", "p1-up")
	g := newFakeGateway(t, lmConfig, n)

	list := g.get("/v1/models")
	var ids []string
	for _, r := range gjson.GetBytes(list.body, "data.#.id").Array() {
		ids = append(ids, r.Str)
	}
	if got := strings.Join(ids, ","); got != "auto,m,gpt-x,vendor/model-y,p1-up" {
		t.Errorf("/v1/models ids = %s", got)
	}
	seen := up.requests()[0]
	if seen.auth != "Bearer "+fakeEnv["P1_KEY"] {
		t.Errorf("the list was fetched with Authorization %q", seen.auth)
	}

	for _, model := range []string{"gpt-x", "p1/vendor/model-y"} {
		r := g.chat(`{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`)
		if r.status != 200 {
			t.Fatalf("%s: status %d: %s", model, r.status, r.body)
		}
		want := strings.TrimPrefix(model, "p1/")
		if via := r.get("X-Routed-Via"); via != "p1/"+want {
			t.Errorf("%s: x-routed-via = %q", model, via)
		}
		if got := gjson.GetBytes(up.requests()[len(up.requests())-1].body, "model").Str; got != want {
			t.Errorf("%s: upstream got model %q", model, got)
		}
	}

	// A reload that keeps the provider as it was does not fetch again.
	before := up.hits()
	cfg, err := config.Parse([]byte(lmConfig+"failover: {max_attempts: 2}\n"), config.Options{LookupEnv: func(k string) (string, bool) { return fakeEnv[k], true }})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.eng.Swap(cfg); err != nil {
		t.Fatal(err)
	}
	if up.hits() != before {
		t.Errorf("the reload fetched the list again")
	}
	if r := g.chat(`{"model":"gpt-x","messages":[{"role":"user","content":"hi"}]}`); r.status != 200 {
		t.Errorf("after the reload gpt-x answers %d", r.status)
	}
}

func TestListModelsFailureKeepsDeclaredModels(t *testing.T) {
	n := newFakeNet(t)
	lmUpstream(n, "p1.test", 500)
	g := newFakeGateway(t, lmConfig, n)
	if r := g.chat(`{"model":"auto","messages":[{"role":"user","content":"hi"}]}`); r.status != 200 {
		t.Fatalf("declared model: status %d", r.status)
	}
	if r := g.chat(`{"model":"gpt-x","messages":[{"role":"user","content":"hi"}]}`); r.status != 404 {
		t.Errorf("unlisted model: status %d, want 404", r.status)
	}
	if !strings.Contains(g.log.String(), "list_models failed") {
		t.Errorf("the failed fetch was not logged:\n%s", g.log.String())
	}
	if strings.Contains(g.log.String(), fakeEnv["P1_KEY"]) {
		t.Error("the log holds the provider key")
	}
}

// A model group's description shows in /v1/models, and the region in
// /health.
func TestDescriptionAndRegion(t *testing.T) {
	n := newFakeNet(t)
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}}, `
region: eu-west-1
models:
  fast: {description: "Fast: small and cheap", targets: [p1/m]}
  auto: {targets: [p1/m]}
`), n)
	body := g.get("/v1/models").body
	if d := gjson.GetBytes(body, `data.#(id=="fast").description`).Str; d != "Fast: small and cheap" {
		t.Errorf("fast's description %q:\n%s", d, body)
	}
	for _, id := range []string{"auto", "m"} {
		if gjson.GetBytes(body, `data.#(id=="`+id+`").description`).Exists() {
			t.Errorf("%s has a description it was not given:\n%s", id, body)
		}
	}
	if r := gjson.GetBytes(g.get("/health").body, "region").Str; r != "eu-west-1" {
		t.Errorf("health region %q", r)
	}
}
