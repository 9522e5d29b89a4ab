package engine

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// puAnswers are upstream answers in each protocol's shape, with the usage
// they report. Decoys (usage in content, nested objects) must not count.
var puAnswers = []struct {
	name, contentType, body string
	prompt, completion      int64
}{
	{"openai", "application/json",
		`{"id":"c","choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":1}"}}],"usage":{"prompt_tokens":20,"completion_tokens":15,"total_tokens":35}}`,
		20, 15},
	{"anthropic", "application/json",
		`{"type":"message","content":[{"type":"tool_use","input":{"usage":{"input_tokens":1,"output_tokens":1}}}],"usage":{"input_tokens":20,"output_tokens":15}}`,
		20, 15},
	{"gemini", "application/json; charset=UTF-8",
		`{"candidates":[{"content":{"parts":[{"text":"hi"}]}}],"usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":15,"totalTokenCount":35}}`,
		20, 15},
	{"gemini thinking counts as output", "application/json",
		`{"candidates":[],"usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":5,"thoughtsTokenCount":10,"totalTokenCount":35}}`,
		20, 15},
	{"cohere", "application/json",
		`{"id":"c","message":{"role":"assistant"},"usage":{"billed_units":{"input_tokens":3,"output_tokens":4},"tokens":{"input_tokens":20,"output_tokens":15}}}`,
		20, 15},
	{"openai stream", "text/event-stream",
		fakeChunk(0) + fakeChunk(1) + `data: {"id":"s","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":15,"total_tokens":35}}` + "\n\n" + fakeDone,
		20, 15},
	{"anthropic stream", "text/event-stream",
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":20,\"output_tokens\":1}}}\n\n" +
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"usage\"}}\n\n" +
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n" +
			"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
		20, 15},
	{"gemini stream", "text/event-stream",
		"data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":20,\"candidatesTokenCount\":5}}\r\n\r\n" +
			"data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":20,\"candidatesTokenCount\":15}}\r\n\r\n",
		20, 15},
	{"cohere stream", "text/event-stream",
		"event: content-delta\ndata: {\"type\":\"content-delta\",\"delta\":{\"message\":{\"content\":{\"text\":\"hi\"}}}}\n\n" +
			"event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\",\"usage\":{\"billed_units\":{\"input_tokens\":3,\"output_tokens\":4},\"tokens\":{\"input_tokens\":20,\"output_tokens\":15}}}}\n\n",
		20, 15},
	{"responses stream", "text/event-stream",
		"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"usage\":{\"input_tokens\":20,\"output_tokens\":15,\"total_tokens\":35}}}\n\n",
		20, 15},
	{"no usage", "application/json", `{"object":"list","data":[{"id":"usage"}]}`, 0, 0},
	{"usage not an object", "application/json", `{"usage":"lots","data":[]}`, 0, 0},
	{"not JSON", "audio/mpeg", `{"usage":{"prompt_tokens":20,"completion_tokens":15}}`, 0, 0},
	{"negative", "application/json", `{"usage":{"prompt_tokens":-20,"completion_tokens":-15}}`, 0, 0},
	{"huge", "application/json",
		`{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":1e300,"total_tokens":18446744073709551616}}`,
		maxReportedTokens, maxReportedTokens},
}

func TestPassUsageAcrossReads(t *testing.T) {
	// However the answer is cut into reads, the meter finds the same
	// usage.
	for _, a := range puAnswers {
		cuts := []func(string) []string{
			func(s string) []string { return []string{s} },
			func(s string) []string { return strings.Split(s, "") },
		}
		for i := range a.body {
			cuts = append(cuts, func(s string) []string { return []string{s[:i], s[i:]} })
		}
		for c, cut := range cuts {
			u := &passUsage{}
			u.start([]byte(a.contentType))
			for _, part := range cut(a.body) {
				u.feed([]byte(part))
			}
			if u.prompt != a.prompt || u.completion() != a.completion {
				t.Errorf("%s, cut %d: prompt %d, completion %d; want %d, %d", a.name, c, u.prompt, u.completion(), a.prompt, a.completion)
				break
			}
		}
	}
}

func TestPassUsageSurvivesBombs(t *testing.T) {
	// A hostile upstream's deep or long answers cost a scan, never a
	// crash or an unbounded buffer.
	tests := []struct{ name, contentType, body string }{
		{"deep JSON", "application/json", `{"usage":` + strings.Repeat("[", 1<<20)},
		{"deep usage", "application/json", `{"usage":` + strings.Repeat(`{"usage":`, 1<<18)},
		{"deep event", "text/event-stream", "data: {\"usage\":" + strings.Repeat(`{"usage":`, 1<<18) + "\n\n"},
		{"endless line", "text/event-stream", "data: {\"usage\":" + strings.Repeat("x", 4<<20)},
	}
	for _, tt := range tests {
		u := &passUsage{}
		u.start([]byte(tt.contentType))
		for b := []byte(tt.body); len(b) > 0; {
			n := min(len(b), 4096)
			u.feed(b[:n])
			b = b[n:]
		}
		if cap(u.line) > maxUsageLine || cap(u.obj) > maxUsageObject {
			t.Errorf("%s: buffers grew to %d and %d bytes", tt.name, cap(u.line), cap(u.obj))
		}
		if u.prompt != 0 || u.completion() != 0 {
			t.Errorf("%s: counted %d, %d", tt.name, u.prompt, u.completion())
		}
	}
}

func TestProxyChargesReportedUsage(t *testing.T) {
	// Key limited has tpm 10: an answer that reports 35 tokens spends
	// its minute, so its next request is refused before it is sent.
	for _, a := range puAnswers {
		t.Run(a.name, func(t *testing.T) {
			n := newFakeNet(t)
			up := n.upstream("p1.test", func(ctx *fasthttp.RequestCtx, _ int) {
				if strings.HasPrefix(a.contentType, "text/event-stream") {
					// One flush per event, the usage line cut in two.
					frames := strings.SplitAfter(a.body, "\n\n")
					if i := strings.Index(a.body, "usage"); i > 0 {
						frames = []string{a.body[:i+2], a.body[i+2:]}
					}
					fakeStream(frames...)(ctx, 0)
					ctx.SetContentType(a.contentType)
					return
				}
				ctx.SetContentType(a.contentType)
				ctx.SetBodyString(a.body)
			})
			g := newFakeGateway(t, ppYAML(), n)
			lim := []string{"Authorization", "Bearer " + fakeEnv["GW_LIM"]}
			ask := `{"model":"m-up","stream":true}`
			r := g.do("POST", "/proxy/p1/v1/chat/completions", ask, lim...)
			if r.status != 200 || string(r.body) != a.body {
				t.Fatalf("%d %q, want the upstream's answer unchanged", r.status, r.body)
			}
			stats := func() (int64, int64) {
				s := g.do("GET", "/api/stats", "", lim...).body
				return gjson.GetBytes(s, "keys.limited.promptTokens").Int(), gjson.GetBytes(s, "keys.limited.completionTokens").Int()
			}
			if a.prompt+a.completion == 0 {
				// Nothing reported, nothing charged: the next request goes.
				if r := g.do("POST", "/proxy/p1/v1/chat/completions", ask, lim...); r.status != 200 {
					t.Fatalf("second request: %d %s", r.status, r.body)
				}
				if p, c := stats(); p != 0 || c != 0 {
					t.Errorf("key stats show %d, %d tokens", p, c)
				}
				return
			}
			// The answer is settled when the server is done with it.
			obEventually(t, "the key's stats show the usage", func() bool {
				p, c := stats()
				return p == a.prompt && c == a.completion
			})
			r = g.do("POST", "/proxy/p1/v1/chat/completions", ask, lim...)
			fakeCheckError(t, r, 429, "rate_limit_error", "rate_limit_exceeded", "")
			if ra, err := strconv.Atoi(r.get("Retry-After")); err != nil || ra < 1 || ra > 61 {
				t.Errorf("Retry-After = %q", r.get("Retry-After"))
			}
			if up.hits() != 1 {
				t.Errorf("upstream hits = %d, want 1", up.hits())
			}
			// A key's chat is refused too: one window for both.
			chat := g.do("POST", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, lim...)
			fakeCheckError(t, chat, 429, "rate_limit_error", "rate_limit_exceeded", "")
		})
	}
}

func TestProxyRefundsWithoutUsage(t *testing.T) {
	// The token held back to refuse a spent window is given back when the
	// answer reports no usage, so plain passthrough calls never wear out
	// a token cap.
	n := newFakeNet(t)
	n.upstream("p1.test", ppOK)
	g := newFakeGateway(t, ppYAML(), n)
	lim := []string{"Authorization", "Bearer " + fakeEnv["GW_LIM"]}
	for i := range 12 {
		if r := g.do("POST", "/proxy/p1/v1/chat/completions", `{"model":"m-up"}`, lim...); r.status != 200 {
			t.Fatalf("POST %d: %d %s", i, r.status, r.body)
		}
	}
	key := g.eng.snap.Load().byName["limited"]
	obEventually(t, "the key's whole tpm free again", func() bool {
		ok, _ := key.lim.Check(time.Now().UnixNano(), key.caps, 10)
		return ok
	})
}
