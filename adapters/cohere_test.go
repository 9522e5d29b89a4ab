package adapters

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// cohCreated is the clock of every test adapter, so goldens can say
// "created" exactly.
var cohCreated = time.Unix(1700000000, 0)

const cohUpstream = "command-a-03-2025"

// newTestCohere builds the cohere adapter for a provider with two keys at
// http://co.test, served by u (nil: every dial fails). extra is more YAML
// for the provider, indented by four spaces.
func newTestCohere(t *testing.T, u *upstream, extra string) Provider {
	t.Helper()
	yaml := `
providers:
  co:
    type: cohere
    base_url: http://co.test/
    keys: ["${K1}", "${K2}"]
    headers: {X-Extra: extra-value}
` + extra + `
    models:
      m: {upstream: ` + cohUpstream + `}
`
	var ln *fasthttputil.InmemoryListener
	if u != nil {
		ln = u.ln
	}
	p := testProvider(t, yaml, "co", "co.test:80", ln)
	p.(redacting).p.(*cohere).now = func() time.Time { return cohCreated }
	return p
}

func cohCall(body string, key int) *Call {
	return &Call{Body: []byte(body), Upstream: cohUpstream, UpstreamJSON: []byte(`"` + cohUpstream + `"`),
		Stream: gjson.Get(body, "stream").Bool(), Key: key}
}

// cohJSON answers every request with a JSON body.
func cohJSON(status int, body string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(status)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(body)
	}
}

// cohSSE answers every request with an event stream, flushed event by
// event as Cohere sends it.
func cohSSE(body string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for _, ev := range strings.SplitAfter(body, "\n\n") {
				_, _ = w.WriteString(ev)
				_ = w.Flush()
			}
		})
	}
}

// cohDrain reads a stream to its end: the frames, and how it ended.
func cohDrain(t *testing.T, s Stream) ([]string, error) {
	t.Helper()
	var frames []string
	for range 1000 {
		f, err := s.Next()
		if err != nil {
			return frames, err
		}
		frames = append(frames, string(f))
	}
	t.Fatal("stream does not end")
	return nil, nil
}

// cohEnd names how a stream ended, as goldens write it.
func cohEnd(err error) string {
	var f *Failure
	switch {
	case err == io.EOF:
		return ""
	case errors.Is(err, ErrStreamCut):
		return "stream cut"
	case errors.As(err, &f):
		return f.Class.String() + ": " + f.Msg
	}
	return "unexpected " + err.Error()
}

// cohSameJSON compares two JSON texts as values: key order and spacing
// are irrelevant, array order is not.
func cohSameJSON(got, want []byte) bool {
	var g, w any
	if json.Unmarshal(got, &g) != nil || json.Unmarshal(want, &w) != nil {
		return false
	}
	return reflect.DeepEqual(g, w)
}

// cohGolden is one testdata/cohere transcript: optional "# " lines (notes,
// and the include_usage switch), the input, a line of dashes, the
// expected output.
type cohGolden struct {
	in, want     string
	includeUsage bool
}

func cohReadGolden(t *testing.T, path string) cohGolden {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var g cohGolden
	text := string(raw)
	for strings.HasPrefix(text, "# ") {
		line, rest, _ := strings.Cut(text, "\n")
		g.includeUsage = g.includeUsage || line == "# include_usage"
		text = rest
	}
	in, want, ok := strings.Cut(text, "\n----------\n")
	if !ok {
		t.Fatalf("%s: no ---------- line between input and expected output", path)
	}
	g.in, g.want = in, want
	return g
}

// TestCohereGolden runs every transcript in testdata/cohere through the
// adapter and an in-memory Cohere:
//
//   - *.request.txt: the client's OpenAI request, then the body Cohere gets
//   - *.response.txt: Cohere's reply, then the client's OpenAI completion
//   - *.stream.txt: Cohere's event stream, then the client's SSE frames and,
//     if it fails, "error: <class>: <message>" or "error: stream cut"
func TestCohereGolden(t *testing.T) {
	paths, err := filepath.Glob("testdata/cohere/*.txt")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no goldens: %v", err)
	}
	for _, path := range paths {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			g := cohReadGolden(t, path)
			switch {
			case strings.HasSuffix(name, ".request.txt"):
				cohGoldenRequest(t, g)
			case strings.HasSuffix(name, ".response.txt"):
				cohGoldenResponse(t, g)
			case strings.HasSuffix(name, ".stream.txt"):
				cohGoldenStream(t, g)
			default:
				t.Fatalf("%s: not a .request, .response or .stream golden", name)
			}
		})
	}
}

func cohGoldenRequest(t *testing.T, g cohGolden) {
	u := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if gjson.GetBytes(ctx.PostBody(), "stream").Bool() {
			cohSSE("event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\"}}\n\n")(ctx)
			return
		}
		cohJSON(200, `{"id":"r","finish_reason":"COMPLETE","message":{"role":"assistant","content":[{"type":"text","text":"ok"}]}}`)(ctx)
	})
	co := newTestCohere(t, u, "")
	call := cohCall(g.in, 0)
	var r Reply
	if err := co.Chat(call, &r); err != nil {
		t.Fatal(err)
	}
	if r.Stream != nil {
		_, _ = cohDrain(t, r.Stream)
		r.Stream.Close()
	}
	seen := u.requests()
	if len(seen) != 1 {
		t.Fatalf("upstream got %d requests", len(seen))
	}
	if seen[0].method != "POST" || seen[0].uri != "/v2/chat" || seen[0].auth != "Bearer "+testKey1 {
		t.Errorf("upstream got %s %s with Authorization %q", seen[0].method, seen[0].uri, seen[0].auth)
	}
	if !cohSameJSON(seen[0].body, []byte(g.want)) {
		t.Errorf("upstream body:\n%s\nwant:\n%s", seen[0].body, g.want)
	}
}

func cohGoldenResponse(t *testing.T, g cohGolden) {
	u := newUpstream(t, cohJSON(200, g.in))
	co := newTestCohere(t, u, "")
	r := Reply{Body: []byte("left over from an earlier call")}
	if err := co.Chat(cohCall(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`, 1), &r); err != nil {
		t.Fatal(err)
	}
	if !cohSameJSON(r.Body, []byte(g.want)) {
		t.Errorf("reply:\n%s\nwant:\n%s", r.Body, g.want)
	}
	cohCheckUsage(t, r.Usage, gjson.Get(g.want, "usage"))
}

// cohCheckUsage compares what the engine is told with the usage object
// the client sees.
func cohCheckUsage(t *testing.T, got Usage, want gjson.Result) {
	t.Helper()
	w := Usage{Prompt: int(want.Get("prompt_tokens").Int()), Completion: int(want.Get("completion_tokens").Int()), Known: want.Exists()}
	if got != w {
		t.Errorf("usage = %+v, want %+v", got, w)
	}
}

func cohGoldenStream(t *testing.T, g cohGolden) {
	u := newUpstream(t, cohSSE(g.in))
	co := newTestCohere(t, u, "")
	call := cohCall(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`, 0)
	call.ClientUsage, call.StreamOptions = g.includeUsage, g.includeUsage
	var r Reply
	if err := co.Chat(call, &r); err != nil {
		t.Fatal(err)
	}
	defer r.Stream.Close()
	frames, err := cohDrain(t, r.Stream)
	var want []string
	wantEnd := ""
	for _, f := range strings.Split(strings.TrimSpace(g.want), "\n\n") {
		if e, ok := strings.CutPrefix(f, "error: "); ok {
			wantEnd = e
			continue
		}
		want = append(want, f)
	}
	for i := range max(len(frames), len(want)) {
		switch {
		case i >= len(frames):
			t.Errorf("frame %d missing, want %s", i, want[i])
		case i >= len(want):
			t.Errorf("frame %d = %q, want none", i, frames[i])
		default:
			got, ok := strings.CutSuffix(frames[i], "\n\n")
			gd, _ := strings.CutPrefix(got, "data: ")
			wd, _ := strings.CutPrefix(want[i], "data: ")
			if !ok || !strings.HasPrefix(got, "data: ") || (gd != wd && !cohSameJSON([]byte(gd), []byte(wd))) {
				t.Errorf("frame %d:\n%q\nwant:\n%s", i, frames[i], want[i])
			}
		}
	}
	if end := cohEnd(err); end != wantEnd {
		t.Errorf("stream ended with %q, want %q", end, wantEnd)
	}
	if wantEnd == "" {
		if _, err := r.Stream.Next(); err != io.EOF {
			t.Errorf("after the end: %v, want io.EOF", err)
		}
	}
	if g.includeUsage {
		last := want[len(want)-2]
		cohCheckUsage(t, r.Stream.Usage(), gjson.Get(strings.TrimPrefix(last, "data: "), "usage"))
	}
}

func TestCohereSendsKeyHeadersAndAccept(t *testing.T) {
	u := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if gjson.GetBytes(ctx.PostBody(), "stream").Bool() {
			cohSSE("event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\"}}\n\n")(ctx)
			return
		}
		cohJSON(200, `{"id":"r","finish_reason":"COMPLETE","message":{"role":"assistant","content":[]}}`)(ctx)
	})
	co := newTestCohere(t, u, "")
	for key, want := range []string{testKey1, testKey2} {
		for _, stream := range []bool{false, true} {
			body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
			if stream {
				body = `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`
			}
			var r Reply
			if err := co.Chat(cohCall(body, key), &r); err != nil {
				t.Fatal(err)
			}
			if r.Stream != nil {
				_, _ = cohDrain(t, r.Stream)
				r.Stream.Close()
			}
		}
		for _, got := range u.requests()[2*key:] {
			if got.auth != "Bearer "+want || got.contentType != "application/json" || got.extra != "extra-value" {
				t.Errorf("key %d: Authorization %q, Content-Type %q, X-Extra %q", key, got.auth, got.contentType, got.extra)
			}
		}
	}
}

func TestCohereRejectsUntranslatableRequests(t *testing.T) {
	tests := []struct{ name, body, msg string }{
		{"not a chat request", `{"model":"m","messages":{"role":"user"}}`, "invalid chat request"},
		{"unknown role", `{"model":"m","messages":[{"role":"function","name":"f","content":"x"}]}`, `messages[0]: role "function" is not supported`},
		{"audio part", `{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio"}]}]}`, `messages[0]: content part type "input_audio" is not supported`},
		{"image without url", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, "messages[0]: an image_url part needs image_url.url"},
		{"tool result without id", `{"model":"m","messages":[{"role":"tool","content":"x"}]}`, "messages[0]: a tool message needs tool_call_id"},
		{"named tool missing", `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"a"}}],"tool_choice":{"type":"function","function":{"name":"b"}}}`,
			`tool_choice names function "b", which is not in tools`},
		{"custom tool", `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"custom","function":{"name":"a"}}]}`, `tools[0]: tool type "custom" is not supported`},
	}
	u := newUpstream(t, cohJSON(500, `{"message":"should not be called"}`))
	co := newTestCohere(t, u, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := asTestFailure(t, co.Chat(cohCall(tt.body, 0), &Reply{}))
			if f.Class != Unsupported || f.Status != 400 || !strings.HasPrefix(f.Msg, tt.msg) {
				t.Errorf("failure = %+v, want bad_request 400 %q", f, tt.msg)
			}
			if gjson.GetBytes(f.Body, "error.message").Str != f.Msg || gjson.GetBytes(f.Body, "error.type").Str != "invalid_request_error" {
				t.Errorf("body = %s", f.Body)
			}
		})
	}
	if n := len(u.requests()); n != 0 {
		t.Errorf("upstream got %d requests", n)
	}
}

func TestCohereFailures(t *testing.T) {
	long := `{"message":"too many tokens: size limit exceeded by 11326 tokens. Try using shorter or fewer inputs, or setting prompt_truncation='AUTO'."}`
	tests := []struct {
		name       string
		status     int
		header     [2]string
		body       string
		class      Class
		retryAfter time.Duration
		msg        string
		// relay is the error.message of the body relayed to the client;
		// "" relays none.
		relay, code string
	}{
		{name: "401 quoting the key", status: 401, body: `{"message":"invalid api token ` + testKey1 + `"}`, class: Auth, msg: "upstream rejected the provider key"},
		{name: "403", status: 403, body: `{"message":"forbidden for sk-test-FIRST"}`, class: Auth, msg: "upstream rejected the provider key"},
		{name: "402 payment required", status: 402, body: `{"message":"Please add a payment method"}`, class: Auth, msg: "upstream rejected the provider key"},
		{name: "429 with Retry-After", status: 429, header: [2]string{"Retry-After", "12"}, body: `{"message":"You are using a Trial key, which is limited to 20 API calls / minute."}`,
			class: RateLimited, retryAfter: 12 * time.Second, msg: "You are using a Trial key, which is limited to 20 API calls / minute."},
		{name: "429 without Retry-After", status: 429, body: `{"message":"slow down"}`, class: RateLimited, msg: "slow down"},
		{name: "500", status: 500, body: `{"id":"e1","message":"internal server error"}`, class: Retryable, msg: "internal server error"},
		{name: "503 html", status: 503, body: `<html>unavailable</html>`, class: Retryable, msg: "upstream error"},
		{name: "504 echoing the key", status: 504, body: `{"message":"timeout for ` + testKey1 + `"}`, class: Retryable, msg: "timeout for <secret>"},
		{name: "404 model", status: 404, body: `{"message":"model 'command-x' not found, make sure the correct model ID was used"}`, class: Retryable,
			msg: "model 'command-x' not found, make sure the correct model ID was used"},
		{name: "499 cancelled upstream", status: 499, body: `{"message":"request cancelled"}`, class: Retryable, msg: "request cancelled"},
		{name: "400 relayed", status: 400, body: `{"id":"e2","message":"invalid request: cannot specify both frequency_penalty and presence_penalty."}`,
			class: BadRequest, msg: "invalid request: cannot specify both frequency_penalty and presence_penalty.",
			relay: "invalid request: cannot specify both frequency_penalty and presence_penalty.", code: "400"},
		{name: "422 relayed", status: 422, body: `{"message":"invalid role"}`, class: BadRequest, msg: "invalid role", relay: "invalid role", code: "422"},
		{name: "400 echoing the key", status: 400, body: `{"message":"bad key ` + testKey1 + `"}`, class: BadRequest, msg: "bad key <secret>", relay: "bad key <secret>", code: "400"},
		{name: "400 without a message", status: 400, body: `{}`, class: BadRequest, msg: "upstream error", relay: "upstream rejected the request", code: "400"},
		{name: "400 too many tokens", status: 400, body: long, class: ContextTooLong, msg: gjson.Get(long, "message").Str,
			relay: gjson.Get(long, "message").Str, code: "context_length_exceeded"},
		{name: "400 prompt too long for the model", status: 400,
			body:  `{"message":"too many tokens: total number of tokens in the prompt cannot exceed 4081 - received 4292. Try using a shorter prompt."}`,
			class: ContextTooLong, msg: "too many tokens: total number of tokens in the prompt cannot exceed 4081 - received 4292. Try using a shorter prompt.",
			relay: "too many tokens: total number of tokens in the prompt cannot exceed 4081 - received 4292. Try using a shorter prompt.", code: "context_length_exceeded"},
		{name: "422 context length", status: 422, body: `{"message":"input exceeds the context length"}`, class: ContextTooLong,
			msg: "input exceeds the context length", relay: "input exceeds the context length", code: "context_length_exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
				if tt.header[0] != "" {
					ctx.Response.Header.Set(tt.header[0], tt.header[1])
				}
				cohJSON(tt.status, tt.body)(ctx)
			})
			co := newTestCohere(t, u, "")
			for _, stream := range []bool{false, true} {
				body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
				if stream {
					body = `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`
				}
				f := asTestFailure(t, co.Chat(cohCall(body, 0), &Reply{}))
				if f.Class != tt.class || f.Status != tt.status || f.RetryAfter != tt.retryAfter || f.Msg != tt.msg {
					t.Errorf("stream %v: failure = %+v, want %v %d retry %v %q", stream, f, tt.class, tt.status, tt.retryAfter, tt.msg)
				}
				if strings.Contains(f.Msg, testKey1) || bytes.Contains(f.Body, []byte(testKey1)) || bytes.Contains(f.Body, []byte("sk-test")) {
					t.Errorf("the key leaked: %+v %s", f, f.Body)
				}
				if tt.relay == "" {
					if f.Body != nil {
						t.Errorf("body = %s, want none", f.Body)
					}
					continue
				}
				if m := gjson.GetBytes(f.Body, "error.message").Str; m != tt.relay {
					t.Errorf("relayed message = %q, want %q", m, tt.relay)
				}
				if c := gjson.GetBytes(f.Body, "error.code").Str; c != tt.code || gjson.GetBytes(f.Body, "error.type").Str != "invalid_request_error" {
					t.Errorf("relayed body = %s, want code %q", f.Body, tt.code)
				}
			}
		})
	}
}

func TestCohereReplyFailures(t *testing.T) {
	tests := []struct{ name, body, msg string }{
		{"not JSON", `<html>ok</html>`, "upstream sent a body that is not JSON"},
		{"no message", `{"id":"x","finish_reason":"COMPLETE"}`, "upstream sent a reply without a message"},
		{"generation error", `{"id":"x","finish_reason":"ERROR","message":{"role":"assistant","content":[]}}`, "upstream generation failed (ERROR)"},
		{"generation timeout", `{"id":"x","finish_reason":"TIMEOUT","message":{"role":"assistant","content":[{"type":"text","text":"par"}]}}`, "upstream generation failed (TIMEOUT)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			co := newTestCohere(t, newUpstream(t, cohJSON(200, tt.body)), "")
			f := asTestFailure(t, co.Chat(cohCall(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`, 0), &Reply{}))
			if f.Class != Retryable || f.Msg != tt.msg {
				t.Errorf("failure = %+v, want retryable %q", f, tt.msg)
			}
		})
	}
}

func TestCohereTransportFailure(t *testing.T) {
	co := newTestCohere(t, nil, "")
	f := asTestFailure(t, co.Chat(cohCall(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`, 0), &Reply{}))
	if f.Class != Retryable || f.Status != 0 || !strings.Contains(f.Msg, "connection refused") {
		t.Errorf("failure = %+v", f)
	}
}

func TestCohereFinish(t *testing.T) {
	tests := []struct {
		reason, finish string
		failed         bool
	}{
		{"COMPLETE", "stop", false},
		{"STOP_SEQUENCE", "stop", false},
		{"MAX_TOKENS", "length", false},
		{"TOOL_CALL", "tool_calls", false},
		{"ERROR_TOXIC", "content_filter", false},
		{"ERROR", "", true},
		{"TIMEOUT", "", true},
		{"", "stop", false},
		{"SOMETHING_NEW", "stop", false},
	}
	for _, tt := range tests {
		if finish, failed := cohereFinish(tt.reason); finish != tt.finish || failed != tt.failed {
			t.Errorf("cohereFinish(%q) = %q, %v, want %q, %v", tt.reason, finish, failed, tt.finish, tt.failed)
		}
	}
}

// cohStreamOf runs a cohereStream over raw upstream bytes, fed one byte
// per read, the worst split.
func cohStreamOf(in string, usage bool) *cohereStream {
	s := newCohereStream(&splitReader{data: []byte(in)}, cohUpstream, cohCreated.Unix(), usage)
	s.redactWith(testRedactor)
	return s
}

func TestCohereStreamLogic(t *testing.T) {
	start := `{"id":"s1","type":"message-start","delta":{"message":{"role":"assistant"}}}`
	end := `{"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"tokens":{"input_tokens":5,"output_tokens":2}}}}`
	ev := func(data ...string) string {
		var b strings.Builder
		for _, d := range data {
			b.WriteString("data: " + d + "\n\n")
		}
		return b.String()
	}
	tests := []struct {
		name string
		in   string
		// content is the text the frames carry; end as cohEnd says.
		content, end string
		frames       int
	}{
		{"no event lines, type in data", ev(start, `{"type":"content-delta","delta":{"message":{"content":{"text":"hi"}}}}`, end), "hi", "", 4},
		{"event lines only", "event: message-start\ndata: {\"id\":\"s1\"}\n\nevent: content-delta\ndata: {\"delta\":{\"message\":{\"content\":{\"text\":\"hi\"}}}}\n\nevent: message-end\ndata: {\"delta\":{\"finish_reason\":\"COMPLETE\"}}\n\n",
			"hi", "", 4},
		{"no message-start still opens with the role", ev(`{"type":"content-delta","delta":{"message":{"content":{"text":"hi"}}}}`, end), "hi", "", 4},
		{"only message-end", ev(end), "", "", 3},
		{"CRLF lines", strings.ReplaceAll(ev(start, end), "\n", "\r\n"), "", "", 3},
		{"empty", "", "", "stream cut", 0},
		{"only a comment", ": ping\n\n", "", "stream cut", 0},
		{"[DONE] before message-end", ev(start, `{"type":"content-delta","delta":{"message":{"content":{"text":"hi"}}}}`) + "data: [DONE]\n\n", "hi", "stream cut", 2},
		{"garbage first", "data: <html>\n\n", "", "retryable: upstream sent a stream event that is not JSON", 0},
		{"garbage after text", ev(start, `{"type":"content-delta","delta":{"message":{"content":{"text":"hi"}}}}`) + "data: {oops\n\n", "hi",
			"retryable: upstream sent a stream event that is not JSON", 2},
		{"error detail with the key", ev(start, `{"type":"message-end","delta":{"finish_reason":"ERROR","error":"bad key `+testKey1+`"}}`), "",
			"retryable: upstream generation failed (ERROR): bad key <secret>", 0},
		{"text with the key", ev(start, `{"type":"content-delta","delta":{"message":{"content":{"text":"`+testKey1+`"}}}}`, end), "<secret>", "", 4},
		{"unknown events are skipped", ev(start, `{"type":"citation-start","index":0}`, `{"type":"debug"}`, `{"type":"brand-new"}`, end), "", "", 3},
		{"tool delta before any start is dropped", ev(start, `{"type":"tool-call-delta","index":0,"delta":{"message":{"tool_calls":{"function":{"arguments":"{}"}}}}}`, end), "", "", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := cohStreamOf(tt.in, false)
			defer s.Close()
			frames, err := cohDrain(t, s)
			var content strings.Builder
			id := ""
			for i, f := range frames {
				data, ok := strings.CutPrefix(strings.TrimSuffix(f, "\n\n"), "data: ")
				if !ok || !strings.HasSuffix(f, "\n\n") {
					t.Fatalf("frame %q is not one data frame", f)
				}
				if data == "[DONE]" {
					continue
				}
				if !gjson.Valid(data) {
					t.Fatalf("frame %q is not JSON", f)
				}
				if i == 0 && gjson.Get(data, "choices.0.delta.role").Str != "assistant" {
					t.Errorf("first frame %s has no role", data)
				}
				if i > 0 && gjson.Get(data, "id").Str != id {
					t.Errorf("frame %d id %q, first was %q", i, gjson.Get(data, "id").Str, id)
				}
				id = gjson.Get(data, "id").Str
				content.WriteString(gjson.Get(data, "choices.0.delta.content").Str)
			}
			if content.String() != tt.content || cohEnd(err) != tt.end || len(frames) != tt.frames {
				t.Errorf("content %q, end %q, %d frames %q; want %q, %q, %d", content.String(), cohEnd(err), len(frames), frames, tt.content, tt.end, tt.frames)
			}
			if _, again := s.Next(); cohEnd(again) != tt.end {
				t.Errorf("after the end: %v, want %q again", again, tt.end)
			}
		})
	}
}

func TestCohereStreamUsageWithoutChunk(t *testing.T) {
	s := cohStreamOf("data: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\",\"usage\":{\"billed_units\":{\"input_tokens\":3,\"output_tokens\":4}}}}\n\n", false)
	defer s.Close()
	frames, err := cohDrain(t, s)
	if err != io.EOF || len(frames) != 3 || strings.Contains(strings.Join(frames, ""), "usage") {
		t.Errorf("frames %q, end %v; want role, finish and [DONE] without usage", frames, err)
	}
	if u := s.Usage(); u != (Usage{Prompt: 3, Completion: 4, Known: true}) {
		t.Errorf("usage = %+v", u)
	}
}

func TestCohereStreamReadErrors(t *testing.T) {
	start := "data: {\"id\":\"s1\",\"type\":\"message-start\"}\n\ndata: {\"type\":\"content-delta\",\"delta\":{\"message\":{\"content\":{\"text\":\"a\"}}}}\n\n"
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"timeout", timeoutErr{}, "retryable: upstream stream timed out"},
		{"fasthttp timeout", fasthttp.ErrTimeout, "retryable: upstream stream timed out"},
		{"cut", io.ErrUnexpectedEOF, "stream cut"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newCohereStream(io.MultiReader(strings.NewReader(start), errReader{tt.err}), cohUpstream, 1, false)
			defer s.Close()
			frames, err := cohDrain(t, s)
			if len(frames) != 2 || cohEnd(err) != tt.want {
				t.Errorf("frames %q, end %q; want 2 frames, %q", frames, cohEnd(err), tt.want)
			}
		})
	}
	t.Run("frame too large", func(t *testing.T) {
		s := newCohereStream(strings.NewReader("data: "+strings.Repeat("x", maxFrame)+"\n\n"), cohUpstream, 1, false)
		defer s.Close()
		if _, err := s.Next(); cohEnd(err) != "retryable: "+errFrameTooLarge.Error() {
			t.Errorf("end = %v", err)
		}
	})
}

func TestCohereStreamAfterClose(t *testing.T) {
	s := cohStreamOf("data: {\"type\":\"message-start\"}\n\n", false)
	s.Close()
	s.Close()
	if _, err := s.Next(); err == nil || err == io.EOF {
		t.Errorf("Next after Close = %v, want an error", err)
	}
}

// TestCohereStreamWatchdog proves the deadlines through HTTP: an upstream
// that sends nothing fails the first_byte wait, one that stops after
// message-start fails the idle wait, and both fail before any frame, so
// the engine can still fail over.
func TestCohereStreamWatchdog(t *testing.T) {
	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	t.Run("first byte", func(t *testing.T) {
		var u *upstream
		u = newUpstream(t, func(ctx *fasthttp.RequestCtx) { <-u.release })
		co := newTestCohere(t, u, "    timeout: 30s\n    first_byte_timeout: 50ms\n    idle_timeout: 30s")
		err := co.Chat(cohCall(body, 0), &Reply{})
		if f := asTestFailure(t, err); f != errFirstByte {
			t.Errorf("failure = %+v, want first_byte", f)
		}
	})
	t.Run("idle", func(t *testing.T) {
		var u *upstream
		u = newUpstream(t, func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("text/event-stream")
			ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
				_, _ = w.WriteString("event: message-start\ndata: {\"id\":\"s\",\"type\":\"message-start\"}\n\n")
				_ = w.Flush()
				<-u.release
			})
		})
		co := newTestCohere(t, u, "    timeout: 30s\n    first_byte_timeout: 30s\n    idle_timeout: 50ms")
		var r Reply
		if err := co.Chat(cohCall(body, 0), &r); err != nil {
			t.Fatal(err)
		}
		defer r.Stream.Close()
		_, err := r.Stream.Next()
		if cohEnd(err) != "retryable: upstream stream went silent past idle_timeout" {
			t.Errorf("end = %v", err)
		}
	})
}

func FuzzCohereStream(f *testing.F) {
	paths, _ := filepath.Glob("testdata/cohere/*.stream.txt")
	for i, path := range paths {
		raw, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		in, _, _ := strings.Cut(string(raw), "\n----------\n")
		f.Add([]byte(in), []byte{byte(i), 7, 200}, i%2 == 0)
	}
	for _, s := range []string{
		"",
		"data: {}\n\n",
		"data: [DONE]\n\n",
		"event: message-end\ndata: {\"delta\":{\"finish_reason\":\"ERROR\"}}\n\n",
		"data: {\"type\":\"tool-call-start\",\"index\":3,\"delta\":{\"message\":{\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":{\"x\":1}}}]}}}\n\ndata: {\"type\":\"tool-call-delta\",\"index\":9,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"}\"}}}}}\n\n",
		"data: {\"type\":\"message-end\"}\r\n\r\ndata: {\"type\":\"message-end\"}\r\n\r\n",
		"data: {\"type\":\"content-delta\",\"delta\":{\"message\":{\"content\":{\"text\":5}}}}\n\n",
		"data: {\"type\":\r\ndata: \"message-start\"}\n\n",
	} {
		f.Add([]byte(s), []byte{3, 250}, true)
	}
	f.Fuzz(func(t *testing.T, data, sizes []byte, usage bool) {
		s := newCohereStream(&splitReader{data: data, sizes: sizes}, cohUpstream, 1, usage)
		s.redactWith(NewRedactor([]string{"sk-fuzz-key"}))
		defer s.Close()
		id, last := "", ""
		calls := -1
		for i := 0; ; i++ {
			if i > len(data)+4 {
				t.Fatalf("%d frames from %d bytes", i, len(data))
			}
			frame, err := s.Next()
			if err != nil {
				var fl *Failure
				switch {
				case err == io.EOF:
					if last != "data: [DONE]\n\n" {
						t.Fatalf("clean end after %q, not [DONE]", last)
					}
				case errors.Is(err, ErrStreamCut), errors.As(err, &fl):
				default:
					t.Fatalf("stream error %T %v is neither ErrStreamCut nor a *Failure", err, err)
				}
				// The same failure, redacted again.
				if _, again := s.Next(); again == nil || again.Error() != err.Error() {
					t.Fatalf("after the end: %v, then %v", err, again)
				}
				return
			}
			last = string(frame)
			payload, ok := strings.CutPrefix(last, "data: ")
			if !ok || !strings.HasSuffix(payload, "\n\n") || strings.Count(payload, "\n") != 2 {
				t.Fatalf("frame %q is not one data line", last)
			}
			payload = strings.TrimSuffix(payload, "\n\n")
			if payload == "[DONE]" {
				continue
			}
			if !gjson.Valid(payload) || strings.Contains(payload, "sk-fuzz-key") {
				t.Fatalf("frame %q is not JSON, or shows the key", last)
			}
			c := gjson.Parse(payload)
			if i == 0 {
				id = c.Get("id").Str
				if c.Get("choices.0.delta.role").Str != "assistant" {
					t.Fatalf("first frame %s has no role", payload)
				}
			} else if c.Get("id").Str != id {
				t.Fatalf("frame id %q, first was %q", c.Get("id").Str, id)
			}
			for _, tc := range c.Get("choices.0.delta.tool_calls").Array() {
				n := int(tc.Get("index").Int())
				if tc.Get("type").Exists() {
					if n != calls+1 {
						t.Fatalf("call %d started after %d", n, calls)
					}
					calls = n
				} else if n > calls || n < 0 {
					t.Fatalf("delta for call %d of %d", n, calls+1)
				}
			}
		}
	})
}
