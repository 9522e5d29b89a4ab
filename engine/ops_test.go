package engine

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// opsYAML: p1 and p2 are OpenAI-compatible, each with a chat model m and
// an embedding model e; p3 is Anthropic, chat only.
const opsYAML = `
providers:
  p1:
    type: openai
    base_url: http://p1.test/v1
    keys: ["${P1_KEY}"]
    models: {m: {upstream: p1-chat}, e: {upstream: p1-embed, operations: [embeddings]}}
  p2:
    type: openai
    base_url: http://p2.test/v1
    keys: ["${P2_KEY}"]
    models: {m: {upstream: p2-chat}, e: {upstream: p2-embed, operations: [embeddings]}}
  p3:
    type: anthropic
    base_url: http://p3.test
    keys: ["${P3_KEY}"]
    models: {m: {upstream: p3-chat}}
models:
  embed: {targets: [p3/m, p1/m, p1/e, p2/e]}
  text: {targets: [p3/m, p1/m, p2/m]}
  chatonly: {targets: [p3/m, p1/m]}
`

const fakeEmbeddings = `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"p2-embed","usage":{"prompt_tokens":3,"total_tokens":3}}`

const fakeTextCompletion = `{"id":"cmpl-1","object":"text_completion","created":1700000000,"model":"p2-chat","choices":[{"text":" world","index":0,"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}`

func TestOperationsFailOverAndSkip(t *testing.T) {
	for _, tt := range []struct {
		name, path, body string
		answer           string
		via, upPath      string
	}{
		{"embeddings", "/v1/embeddings", `{"model":"embed","input":"hello"}`, fakeEmbeddings, "p2/e", "/v1/embeddings"},
		{"completions", "/v1/completions", `{"model":"text","prompt":"hello","max_tokens":5}`, fakeTextCompletion, "p2/m", "/v1/completions"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := newFakeNet(t)
			p1 := n.upstream("p1.test", fakeBody(503, `{"error":{"message":"overloaded"}}`))
			p2 := n.upstream("p2.test", func(ctx *fasthttp.RequestCtx, _ int) {
				ctx.SetContentType("application/json")
				ctx.SetBodyString(tt.answer)
			})
			p3 := n.upstream("p3.test", fakeOK("never"))
			g := newFakeGateway(t, opsYAML, n)
			r := g.do("POST", tt.path, tt.body)
			if r.status != 200 || r.get("X-Routed-Via") != tt.via || string(r.body) != tt.answer {
				t.Fatalf("status %d via %q: %s", r.status, r.get("X-Routed-Via"), r.body)
			}
			if r.get("X-Fallback-Attempts") != "1" {
				t.Errorf("x-fallback-attempts %q, want 1 (p1 failed; targets that cannot serve are skipped, not tried)", r.get("X-Fallback-Attempts"))
			}
			if p3.hits() != 0 {
				t.Error("an Anthropic target was called for an operation its protocol lacks")
			}
			if p1.hits() != 1 {
				t.Errorf("p1 hits %d, want 1", p1.hits())
			}
			seen := p2.requests()[0]
			if !strings.HasSuffix(seen.uri, tt.upPath) || gjson.GetBytes(seen.body, "model").Str != "p2-"+map[string]string{"embeddings": "embed", "completions": "chat"}[tt.name] {
				t.Errorf("upstream saw %s %s", seen.uri, seen.body)
			}
		})
	}
}

func TestOperationNoTargetServes(t *testing.T) {
	n := newFakeNet(t)
	p1 := n.upstream("p1.test", fakeOK("never"))
	g := newFakeGateway(t, opsYAML, n)
	fakeCheckError(t, g.do("POST", "/v1/embeddings", `{"model":"chatonly","input":"x"}`), 400, "invalid_request_error", "unsupported_operation", "")
	if p1.hits() != 0 {
		t.Error("a chat-only model was called for embeddings")
	}
	fakeCheckError(t, g.do("POST", "/v1/embeddings", `{"model":"embed"}`), 400, "invalid_request_error", "missing_field", "input")
	fakeCheckError(t, g.do("POST", "/v1/embeddings", `{"model":"embed","input":"a","INPUT":"b"}`), 400, "invalid_request_error", "ambiguous_field", "input")
}

func TestCompletionsStream(t *testing.T) {
	n := newFakeNet(t)
	chunk := `data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"p1-chat","choices":[{"text":"hi","index":0,"logprobs":null,"finish_reason":null}]}` + "\n\n"
	last := `data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"p1-chat","choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}]}` + "\n\n"
	n.upstream("p1.test", fakeStream(chunk, last, "data: [DONE]\n\n"))
	g := newFakeGateway(t, opsYAML, n)
	r := g.do("POST", "/v1/completions", `{"model":"p1/m","prompt":"x","stream":true}`)
	if r.status != 200 || r.get("Content-Type") != "text/event-stream" || !strings.HasSuffix(string(r.body), "data: [DONE]\n\n") || !strings.Contains(string(r.body), `"text":"hi"`) {
		t.Errorf("status %d %q: %s", r.status, r.get("Content-Type"), r.body)
	}
}

// /v1/models says which operations each name serves.
func TestModelsListOperations(t *testing.T) {
	g := newFakeGateway(t, opsYAML, newFakeNet(t))
	body := g.get("/v1/models").body
	for name, want := range map[string]string{
		"embed": `["chat","responses","messages","embeddings","completions"]`, "chatonly": `["chat","responses","messages","completions"]`, "text": `["chat","responses","messages","completions"]`,
	} {
		if got := gjson.GetBytes(body, `data.#(id=="`+name+`").operations`).Raw; got != want {
			t.Errorf("%s operations %s, want %s", name, got, want)
		}
	}
}

// explain says which targets cannot serve the operation, and what the
// server would answer when none can.
func TestExplainOperation(t *testing.T) {
	g := newFakeGateway(t, opsYAML, newFakeNet(t))
	x, err := g.eng.Explain(ExplainRequest{Model: "embed", Operation: "embeddings", Tokens: 10})
	if err != nil || x.Status != 200 {
		t.Fatalf("explain %+v err %v", x, err)
	}
	for _, want := range []string{"request: embeddings", "p3/m", "skipped: does not serve this operation (embeddings)", "p1/e", "eligible"} {
		if !strings.Contains(x.Text, want) {
			t.Errorf("explain lacks %q:\n%s", want, x.Text)
		}
	}
	if x, _ := g.eng.Explain(ExplainRequest{Model: "chatonly", Operation: "embeddings"}); x.Status != 400 || !strings.Contains(x.Text, "unsupported_operation") {
		t.Errorf("status %d:\n%s", x.Status, x.Text)
	}
	if _, err := g.eng.Explain(ExplainRequest{Model: "embed", Operation: "telepathy"}); err == nil {
		t.Error("an unknown operation was explained")
	}
}

// Usage the provider did not report is estimated, and the access log says
// so: Gemini's embeddings report none.
func TestEstimatedUsageIsLabelled(t *testing.T) {
	n := newFakeNet(t)
	n.upstream("g.test", func(ctx *fasthttp.RequestCtx, _ int) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"embeddings":[{"values":[0.5,0.25]}]}`)
	})
	g, access := obGateway(t, `
providers:
  g: {type: gemini, base_url: "http://g.test/v1beta", keys: ["${P1_KEY}"], models: {e: {upstream: text-embedding-004, operations: [embeddings]}}}
`, n)
	if r := g.do("POST", "/v1/embeddings", `{"model":"g/e","input":"hello world, twelve"}`); r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	lines := obLines(t, g, access)
	if len(lines) != 1 || lines[0]["usage_estimated"] != true || lines[0]["prompt_tokens"].(float64) == 0 || lines[0]["model"] != "g/e" {
		t.Errorf("access log: %v", lines)
	}
}
