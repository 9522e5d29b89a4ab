package engine

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

const nativeYAML = `
providers:
  p1:
    type: openai
    base_url: http://p1.test/v1
    keys: ["${P1_KEY}"]
    responses: native
    models: {m: {upstream: p1-up}}
  p2:
    type: openai
    base_url: http://p2.test/v1
    keys: ["${P2_KEY}"]
    models: {m: {upstream: p2-up}}
models:
  auto: {targets: [p1/m, p2/m]}
`

const upstreamResponse = `{"id":"resp_up1","object":"response","created_at":1,"status":"completed","model":"p1-up","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"native","annotations":[]}]}],"usage":{"input_tokens":5,"output_tokens":1,"total_tokens":6}}`

// A provider with responses: native gets the client's Responses body with
// only the model patched and answers as it is, streams included; a
// previous_response_id the gateway did not store goes to it; and when it
// fails, a translating target serves.
func TestResponsesNative(t *testing.T) {
	n := newFakeNet(t)
	p1 := n.upstream("p1.test", func(ctx *fasthttp.RequestCtx, _ int) {
		if gjson.GetBytes(ctx.PostBody(), "stream").Bool() {
			fakeStream("event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_up2\"}}\n\n",
				"event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":1,\"response\":"+upstreamResponse+"}\n\n")(ctx, 0)
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(upstreamResponse)
	})
	p2 := n.upstream("p2.test", fakeOK("translated"))
	g := newFakeGateway(t, nativeYAML, n)

	r := g.do("POST", "/v1/responses", `{"model":"auto","input":"hi","reasoning":{"effort":"low"}}`)
	if r.status != 200 || string(r.body) != upstreamResponse || r.get("X-Routed-Via") != "p1/m" {
		t.Fatalf("native: %d via %q: %s", r.status, r.get("X-Routed-Via"), r.body)
	}
	seen := p1.requests()[0]
	if !strings.HasSuffix(seen.uri, "/v1/responses") || string(seen.body) != `{"model":"p1-up","input":"hi","reasoning":{"effort":"low"}}` {
		t.Errorf("native upstream saw %s %s", seen.uri, seen.body)
	}
	r = g.do("POST", "/v1/responses", `{"model":"auto","input":"hi","stream":true}`)
	if r.status != 200 || !strings.Contains(string(r.body), "event: response.completed") || strings.Contains(string(r.body), "[DONE]") {
		t.Errorf("native stream: %d %s", r.status, r.body)
	}
	// The upstream's own id: only the native target can continue it.
	r = g.do("POST", "/v1/responses", `{"model":"auto","input":"more","previous_response_id":"resp_up1"}`)
	if r.status != 200 || r.get("X-Routed-Via") != "p1/m" || gjson.GetBytes(p1.requests()[2].body, "previous_response_id").Str != "resp_up1" {
		t.Errorf("continuing an upstream's response: %d via %q", r.status, r.get("X-Routed-Via"))
	}
	if p2.hits() != 0 {
		t.Errorf("the translating target was called %d times", p2.hits())
	}
	// When the native target fails, the translating one serves.
	p1.set(fakeBody(503, `{"error":{"message":"down"}}`))
	r = g.do("POST", "/v1/responses", `{"model":"auto","input":"hi"}`)
	if r.status != 200 || r.get("X-Routed-Via") != "p2/m" || gjson.GetBytes(r.body, "object").Str != "response" ||
		!strings.Contains(gjson.GetBytes(r.body, "output.0.content.0.text").Str, "translated") {
		t.Errorf("failover to translation: %d via %q: %s", r.status, r.get("X-Routed-Via"), r.body)
	}
}
