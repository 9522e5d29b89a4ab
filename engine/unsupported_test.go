package engine

import (
	"testing"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// A refusal that belongs to the target (a retired model, a parameter this
// provider does not take) moves on to the next candidate without cooling
// the key; only when every candidate refuses does the client get the 400.
func TestTargetRefusalsMoveOn(t *testing.T) {
	decommissioned := fakeBody(400, `{"error":{"message":"The model `+"`llama3-70b-8192`"+` has been decommissioned and is no longer supported.","type":"invalid_request_error","code":"model_decommissioned"}}`)
	unsupported := fakeBody(400, `{"error":{"message":"Unsupported parameter: 'max_tokens' is not supported with this model.","type":"invalid_request_error","param":"max_tokens","code":"unsupported_parameter"}}`)
	clientFault := fakeBody(400, `{"error":{"message":"messages[0].content is required","type":"invalid_request_error","code":"invalid_value"}}`)
	notCompletion := fakeBody(200, `{"error":{"message":"overloaded"}}`)
	for _, tt := range []struct {
		name   string
		p1     func(*fasthttp.RequestCtx, int)
		status int
		via    string
	}{
		{"decommissioned", decommissioned, 200, "p2/m"},
		{"unsupported parameter", unsupported, 200, "p2/m"},
		{"200 that is no completion", notCompletion, 200, "p2/m"},
		{"the client's own fault stops", clientFault, 400, "p1/m"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := newFakeNet(t)
			n.upstream("p1.test", tt.p1)
			p2 := n.upstream("p2.test", fakeOK("p2"))
			g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}}, "models:\n  auto: {targets: [p1/m, p2/m]}\n"), n)
			r := g.chat(fakeAsk)
			if r.status != tt.status || r.get("X-Routed-Via") != tt.via {
				t.Fatalf("status %d via %q, want %d via %s: %s", r.status, r.get("X-Routed-Via"), tt.status, tt.via, r.body)
			}
			if tt.status == 400 && p2.hits() != 0 {
				t.Error("a client's fault went on to the next candidate")
			}
			if tt.status == 200 && tt.name != "200 that is no completion" {
				if _, _, on := rtKey(t, g, "auto", "p1/m").until.Active(nanotime()); on {
					t.Error("a target refusal cooled the key")
				}
				// /api/stats files the refusal under its class's name.
				stats := g.do("GET", "/api/stats", "")
				if n := gjson.GetBytes(stats.body, "providers.p1.models.m.errors.unsupported").Int(); n != 1 {
					t.Errorf("/api/stats counts %d unsupported errors for p1/m, want 1: %s", n, stats.body)
				}
			}
		})
	}
	t.Run("every candidate refuses", func(t *testing.T) {
		n := newFakeNet(t)
		n.upstream("p1.test", decommissioned)
		n.upstream("p2.test", unsupported)
		g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}}, "models:\n  auto: {targets: [p1/m, p2/m]}\n"), n)
		fakeCheckError(t, g.chat(fakeAsk), 400, "invalid_request_error", "unsupported_parameter", "max_tokens")
	})
}

// Routes see the operation a request asks for.
func TestRoutesMatchOperation(t *testing.T) {
	n := newFakeNet(t)
	n.upstream("p1.test", fakeOK("p1"))
	n.upstream("p2.test", fakeOK("p2"))
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}}, `models:
  auto: {targets: [p1/m]}
routes:
  - {name: chats, match: 'operation == "chat" && model == "auto"', targets: [p2/m]}
`), n)
	if r := g.chat(fakeAsk); r.status != 200 || r.get("X-Routed-Via") != "p2/m" || r.get("X-Gateway-Route") != "chats" {
		t.Errorf("status %d via %q route %q", r.status, r.get("X-Routed-Via"), r.get("X-Gateway-Route"))
	}
}
