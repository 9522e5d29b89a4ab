package adapters

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

var anthUpdate = flag.Bool("anthropic.update", false, "rewrite the expected sections of testdata/anthropic/*.txt")

// anthCreated is the "created" of every golden reply.
const anthCreated = 1767225600

// anthGolden is one transcript: a comment, then sections that each start
// with a "-- name --" line. Inputs are "openai request", "anthropic
// response" and "anthropic stream"; each has its expected output.
type anthGolden struct {
	comment string
	names   []string
	secs    map[string]string
	changed bool
}

func anthReadGolden(t *testing.T, path string) *anthGolden {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	g := &anthGolden{secs: map[string]string{}}
	name, started := "", false
	var cur strings.Builder
	flush := func() {
		if !started {
			g.comment = cur.String()
		} else {
			g.names = append(g.names, name)
			g.secs[name] = cur.String()
		}
		cur.Reset()
	}
	for line := range strings.SplitAfterSeq(string(b), "\n") {
		if h, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "-- "); ok && strings.HasSuffix(h, " --") {
			flush()
			name, started = strings.TrimSuffix(h, " --"), true
			continue
		}
		cur.WriteString(line)
	}
	flush()
	return g
}

func (g *anthGolden) write(t *testing.T, path string) {
	var b strings.Builder
	b.WriteString(g.comment)
	for _, n := range g.names {
		b.WriteString("-- " + n + " --\n")
		b.WriteString(g.secs[n])
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// set records an actual output, for -anthropic.update.
func (g *anthGolden) set(name, v string) {
	if _, ok := g.secs[name]; !ok {
		g.names = append(g.names, name)
	}
	if g.secs[name] != v {
		g.secs[name], g.changed = v, true
	}
}

// checkJSON compares JSON semantically: field order and spacing aside.
func (g *anthGolden) checkJSON(t *testing.T, name string, got []byte) {
	t.Helper()
	if *anthUpdate {
		var v bytes.Buffer
		if err := json.Indent(&v, got, "", "  "); err != nil {
			t.Fatalf("%s: %v in %s", name, err, got)
		}
		if !anthJSONEqual(t, []byte(g.secs[name]), got) {
			g.set(name, v.String()+"\n")
		}
		return
	}
	want, ok := g.secs[name]
	if !ok {
		t.Fatalf("no %q section", name)
	}
	if !anthJSONEqual(t, []byte(want), got) {
		t.Errorf("%s:\n got %s\nwant %s", name, got, want)
	}
}

// checkExact compares byte for byte: the SSE frames the adapter builds.
func (g *anthGolden) checkExact(t *testing.T, name, got string) {
	t.Helper()
	if *anthUpdate {
		g.set(name, got)
		return
	}
	want, ok := g.secs[name]
	if !ok {
		t.Fatalf("no %q section", name)
	}
	if got != want {
		t.Errorf("%s:\n got %q\nwant %q", name, got, want)
	}
}

func anthJSONEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		if *anthUpdate {
			return false
		}
		t.Fatalf("expected JSON: %v in %s", err, a)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("actual JSON: %v in %s", err, b)
	}
	return reflect.DeepEqual(va, vb)
}

// anthCall is a Call for an OpenAI request body, as the engine fills it.
func anthCall(body string, key int) *Call {
	c := testCall(body, gjson.Get(body, "stream").Bool(), key)
	c.Upstream, c.UpstreamJSON = "claude-test", []byte(`"claude-test"`)
	c.ClientUsage = gjson.Get(body, "stream_options.include_usage").Bool()
	c.StreamOptions = gjson.Get(body, "stream_options").Exists()
	return c
}

// anthDrain reads a stream to its end and tells how it ended.
func anthDrain(t *testing.T, s Stream) (frames []string, end string) {
	t.Helper()
	for range 10000 {
		f, err := s.Next()
		if err != nil {
			return frames, anthEnd(err)
		}
		frames = append(frames, string(f))
	}
	t.Fatal("the stream does not end")
	return nil, ""
}

func anthEnd(err error) string {
	var f *Failure
	switch {
	case err == io.EOF:
		return "EOF"
	case errors.Is(err, ErrStreamCut):
		return "cut"
	case errors.As(err, &f):
		return f.Class.String() + ": " + f.Msg
	}
	return "error: " + err.Error()
}

func anthUsageLine(u Usage) string {
	return fmt.Sprintf("prompt=%d completion=%d\n", u.Prompt, u.Completion)
}

func TestAnthropicGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/anthropic/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/anthropic/*.txt (err %v)", err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			g := anthReadGolden(t, path)
			clientUsage := false
			if req, ok := g.secs["openai request"]; ok {
				c := anthCall(req, 0)
				clientUsage = c.ClientUsage
				body, f := anthropicRequestOf(c, 1024)
				if f != nil {
					t.Fatalf("translating: %v", f)
				}
				g.checkJSON(t, "anthropic request", body)
			}
			if resp, ok := g.secs["anthropic response"]; ok {
				out, u, f := anthropicReply([]byte("stale"), []byte(resp), anthCreated)
				if f != nil {
					t.Fatalf("translating the reply: %v", f)
				}
				if !bytes.HasPrefix(out, []byte("stale")) {
					t.Fatalf("reply does not append to dst: %s", out)
				}
				g.checkJSON(t, "openai response", out[len("stale"):])
				if _, ok := g.secs["usage"]; ok {
					g.checkExact(t, "usage", anthUsageLine(u))
				}
			}
			if in, ok := g.secs["anthropic stream"]; ok {
				s := newAnthropicStream(&splitReader{data: []byte(in)}, clientUsage, anthCreated)
				frames, end := anthDrain(t, s)
				u := s.Usage()
				s.Close()
				g.checkExact(t, "openai stream", strings.Join(frames, ""))
				g.checkExact(t, "stream end", end+"\n")
				if _, ok := g.secs["usage"]; ok {
					g.checkExact(t, "usage", anthUsageLine(u))
				}
				for _, f := range frames {
					d, _ := frameData([]byte(f), nil)
					if string(d) != "[DONE]" && gjson.GetBytes(d, "id").Str != gjson.GetBytes([]byte(frames[0][6:]), "id").Str {
						t.Errorf("frame %s does not share the stream's id", f)
					}
				}
			}
			if *anthUpdate && g.changed {
				g.write(t, path)
			}
		})
	}
}

// anthUpstream is an in-process Anthropic server for the adapter: it
// records the headers that carry the key and version.
type anthUpstream struct {
	*upstream
	mu      sync.Mutex
	apiKeys []string
	version []string
	beta    []string
}

func (u *anthUpstream) headers() (keys, versions, betas []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.apiKeys...), append([]string(nil), u.version...), append([]string(nil), u.beta...)
}

func newAnthUpstream(t *testing.T, answer fasthttp.RequestHandler) *anthUpstream {
	a := &anthUpstream{}
	a.upstream = newUpstream(t, func(ctx *fasthttp.RequestCtx) {
		a.mu.Lock()
		a.apiKeys = append(a.apiKeys, string(ctx.Request.Header.Peek("x-api-key")))
		a.version = append(a.version, string(ctx.Request.Header.Peek("anthropic-version")))
		a.beta = append(a.beta, string(ctx.Request.Header.Peek("anthropic-beta")))
		a.mu.Unlock()
		answer(ctx)
	})
	return a
}

// newTestAnthropic builds the anthropic adapter for a provider with two
// keys whose upstream is u (nil: every dial fails); extra is more YAML
// for the provider.
func newTestAnthropic(t *testing.T, u *anthUpstream, baseURL, extra string) Provider {
	t.Helper()
	yaml := `
providers:
  claude:
    type: anthropic
    base_url: ` + baseURL + `
    keys: ["${K1}", "${K2}"]
    default_max_tokens: 2048
    headers: {X-Extra: extra-value, anthropic-beta: tools-test}
` + extra + `
    models:
      m: {upstream: claude-test}
`
	var ln *fasthttputil.InmemoryListener
	if u != nil {
		ln = u.ln
	}
	p := testProvider(t, yaml, "claude", "up.test:80", ln)
	p.(redacting).p.(*anthropic).now = func() time.Time { return time.Unix(anthCreated, 0) }
	return p
}

const anthTextReply = `{"id":"msg_1","type":"message","role":"assistant","model":"claude-test","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":1}}`

func TestAnthropicSendsTranslatedRequest(t *testing.T) {
	for _, base := range []string{"http://up.test", "http://up.test/v1/"} {
		t.Run(base, func(t *testing.T) {
			u := newAnthUpstream(t, func(ctx *fasthttp.RequestCtx) {
				ctx.SetContentType("application/json")
				ctx.SetBodyString(anthTextReply)
			})
			p := newTestAnthropic(t, u, base, "")
			body := `{"model":"m","messages":[{"role":"user","content":"héllo <b>"}]}`
			for key, want := range []string{testKey1, testKey2} {
				r := Reply{Body: []byte("old reply")}
				if err := p.Chat(anthCall(body, key), &r); err != nil {
					t.Fatal(err)
				}
				if !anthJSONEqual(t, r.Body, []byte(`{"id":"msg_1","object":"chat.completion","created":1767225600,"model":"claude-test",
					"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],
					"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`)) {
					t.Errorf("reply = %s", r.Body)
				}
				if r.Usage != (Usage{Prompt: 5, Completion: 1, Known: true}) {
					t.Errorf("usage = %+v", r.Usage)
				}
				got := u.requests()[key]
				if got.method != "POST" || got.uri != "/v1/messages" {
					t.Errorf("upstream got %s %s, want POST /v1/messages", got.method, got.uri)
				}
				if !anthJSONEqual(t, got.body, []byte(`{"model":"claude-test","max_tokens":2048,"messages":[{"role":"user","content":[{"type":"text","text":"héllo <b>"}]}]}`)) {
					t.Errorf("upstream got body %s", got.body)
				}
				if got.auth != "" || got.contentType != "application/json" || got.extra != "extra-value" {
					t.Errorf("upstream got Authorization %q, Content-Type %q, X-Extra %q", got.auth, got.contentType, got.extra)
				}
				keys, versions, betas := u.headers()
				if keys[key] != want || versions[key] != "2023-06-01" || betas[key] != "tools-test" {
					t.Errorf("upstream got x-api-key %q (want key %d), anthropic-version %q, anthropic-beta %q", keys[key], key+1, versions[key], betas[key])
				}
			}
		})
	}
}

func TestAnthropicTranslate(t *testing.T) {
	tests := []struct {
		name, body string
		// want holds gjson paths of the upstream request and their JSON.
		want map[string]string
	}{
		{"default max_tokens", `{"messages":[{"role":"user","content":"x"}]}`, map[string]string{"max_tokens": "1024"}},
		{"max_tokens", `{"max_tokens":7,"messages":[{"role":"user","content":"x"}]}`, map[string]string{"max_tokens": "7"}},
		{"tool_choice auto", `{"tool_choice":"auto","tools":[{"type":"function","function":{"name":"f"}}],"messages":[]}`,
			map[string]string{"tool_choice": `{"type":"auto"}`}},
		{"tool_choice none", `{"tool_choice":"none","tools":[{"type":"function","function":{"name":"f"}}],"messages":[]}`,
			map[string]string{"tool_choice": `{"type":"none"}`}},
		{"tool_choice null", `{"tool_choice":null,"messages":[]}`, map[string]string{"tool_choice": ``}},
		{"parallel_tool_calls false keeps none", `{"tool_choice":"none","parallel_tool_calls":false,"tools":[{"function":{"name":"f","parameters":null}}],"messages":[]}`,
			map[string]string{"tool_choice": `{"type":"none"}`, "tools": `[{"name":"f","input_schema":{"type":"object"}}]`}},
		{"parallel_tool_calls false with required", `{"tool_choice":"required","parallel_tool_calls":false,"tools":[{"function":{"name":"f"}}],"messages":[]}`,
			map[string]string{"tool_choice": `{"type":"any","disable_parallel_tool_use":true}`}},
		{"parallel_tool_calls without tools", `{"parallel_tool_calls":false,"messages":[]}`, map[string]string{"tool_choice": ``}},
		{"user without metadata", `{"user":"u1","metadata":{"other":"x"},"messages":[]}`, map[string]string{"metadata": `{"user_id":"u1"}`}},
		{"stop list", `{"stop":["a","b"],"messages":[]}`, map[string]string{"stop_sequences": `["a","b"]`}},
		{"empty tool arguments", `{"messages":[{"role":"assistant","tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":""}}]}]}`,
			map[string]string{"messages.0.content": `[{"type":"tool_use","id":"t","name":"f","input":{}}]`}},
		{"assistant text and a call", `{"messages":[{"role":"assistant","content":"ok","tool_calls":[{"id":"t","function":{"name":"f","arguments":"{\"a\": [1, 2]}"}}]}]}`,
			map[string]string{"messages.0.content": `[{"type":"text","text":"ok"},{"type":"tool_use","id":"t","name":"f","input":{"a":[1,2]}}]`}},
		{"empty tool result", `{"messages":[{"role":"tool","tool_call_id":"t","content":null}]}`,
			map[string]string{"messages": `[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t"}]}]`}},
		{"only empty turns", `{"messages":[{"role":"user","content":""}]}`, map[string]string{"messages": `[]`, "system": ``}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, f := anthropicRequestOf(anthCall(tt.body, 0), 1024)
			if f != nil {
				t.Fatal(f)
			}
			for path, want := range tt.want {
				got := gjson.GetBytes(body, path)
				if want == "" {
					if got.Exists() {
						t.Errorf("%s = %s, want none", path, got.Raw)
					}
					continue
				}
				if !anthJSONEqual(t, []byte(got.Raw), []byte(want)) {
					t.Errorf("%s = %s, want %s", path, got.Raw, want)
				}
			}
		})
	}
}

func TestAnthropicTranslateRejects(t *testing.T) {
	tests := []struct{ name, body, msg string }{
		{"invalid arguments", `{"messages":[{"role":"assistant","tool_calls":[{"id":"t","function":{"name":"f","arguments":"{\"a\":"}}]}]}`,
			"messages[0].tool_calls[0].function.arguments: not a JSON object"},
		{"arguments not an object", `{"messages":[{"role":"assistant","tool_calls":[{"id":"t","function":{"name":"f","arguments":"[1]"}}]}]}`,
			"messages[0].tool_calls[0].function.arguments: not a JSON object"},
		{"role", `{"messages":[{"role":"function","content":"x"}]}`, `messages[0].role: "function" is not supported by anthropic`},
		{"audio", `{"messages":[{"role":"user","content":[{"type":"input_audio"}]}]}`,
			`messages[0].content[0]: part type "input_audio" is not supported by anthropic here`},
		{"assistant image", `{"messages":[{"role":"assistant","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`,
			`messages[0].content[0]: part type "image_url" is not supported by anthropic here`},
		{"system image", `{"messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`,
			`messages[0].content[0]: a system message may hold only text, not "image_url"`},
		{"data URL not base64", `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,abc"}}]}]}`,
			"messages[0].content[0].image_url.url: a data: URL must read data:<media type>;base64,<data>"},
		{"ftp image", `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x/y.png"}}]}]}`,
			"messages[0].content[0].image_url.url: want an https:// or a data: URL"},
		{"image without url", `{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, "messages[0].content[0].image_url.url: missing"},
		{"tool_choice", `{"tool_choice":"sometimes","messages":[]}`,
			`tool_choice: want "auto", "none", "required" or {"type":"function","function":{"name":...}}, got "sometimes"`},
		{"tool type", `{"tools":[{"type":"code_interpreter"}],"messages":[]}`, `tools[0].type: "code_interpreter" is not supported by anthropic`},
		{"content type", `{"messages":[{"role":"user","content":3}]}`,
			"reading the request to translate it for anthropic: content must be a string or a list of parts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, f := anthropicRequestOf(anthCall(tt.body, 0), 1024)
			if f == nil {
				t.Fatal("accepted")
			}
			if f.Class != Unsupported || f.Status != 400 || f.Msg != tt.msg {
				t.Errorf("failure = %v %d %q, want bad_request 400 %q", f.Class, f.Status, f.Msg, tt.msg)
			}
			if gjson.GetBytes(f.Body, "error.message").Str != tt.msg || gjson.GetBytes(f.Body, "error.type").Str != "invalid_request_error" {
				t.Errorf("body = %s", f.Body)
			}
		})
	}
	t.Run("never reaches the upstream", func(t *testing.T) {
		p := newTestAnthropic(t, nil, "http://up.test", "")
		f := asTestFailure(t, p.Chat(anthCall(tests[0].body, 0), &Reply{}))
		if f.Class != Unsupported {
			t.Errorf("failure = %+v", f)
		}
	})
}

func TestAnthropicFailureClasses(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	in30 := now.Add(30 * time.Second).Format(time.RFC3339)
	in90 := now.Add(90 * time.Second).Format(time.RFC3339)
	past := now.Add(-time.Minute).Format(time.RFC3339)
	errJSON := func(typ, msg string) string {
		return `{"type":"error","error":{"type":"` + typ + `","message":"` + msg + `"},"request_id":"req_1"}`
	}
	tests := []struct {
		name       string
		status     int
		headers    map[string]string
		body       string
		class      Class
		retryAfter time.Duration
		msg        string
		// relay is the OpenAI error body's type, when one is relayed.
		relay string
	}{
		{name: "401 quoting the key", status: 401, body: errJSON("authentication_error", "invalid x-api-key "+testKey1),
			class: Auth, msg: "upstream rejected the provider key"},
		{name: "403", status: 403, body: errJSON("permission_error", "key sk-test-FIRST-01... may not use this model"),
			class: Auth, msg: "upstream rejected the provider key"},
		{name: "429 retry-after", status: 429, headers: map[string]string{"Retry-After": "12"}, body: errJSON("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
			class: RateLimited, retryAfter: 12 * time.Second, msg: "Number of request tokens has exceeded your per-minute rate limit"},
		{name: "429 exhausted reset", status: 429, headers: map[string]string{
			"Anthropic-Ratelimit-Requests-Remaining": "0", "Anthropic-Ratelimit-Requests-Reset": in30,
			"Anthropic-Ratelimit-Tokens-Remaining": "900", "Anthropic-Ratelimit-Tokens-Reset": in90,
		}, body: errJSON("rate_limit_error", "slow down"), class: RateLimited, retryAfter: 30 * time.Second, msg: "slow down"},
		{name: "429 first reset", status: 429, headers: map[string]string{
			"Anthropic-Ratelimit-Input-Tokens-Remaining": "10", "Anthropic-Ratelimit-Input-Tokens-Reset": in90,
			"Anthropic-Ratelimit-Output-Tokens-Remaining": "10", "Anthropic-Ratelimit-Output-Tokens-Reset": in30,
		}, body: errJSON("rate_limit_error", "slow down"), class: RateLimited, retryAfter: 30 * time.Second, msg: "slow down"},
		{name: "429 past reset", status: 429, headers: map[string]string{"Anthropic-Ratelimit-Requests-Reset": past},
			body: errJSON("rate_limit_error", "slow down"), class: RateLimited, msg: "slow down"},
		{name: "429 exhausted, reset unreadable", status: 429, headers: map[string]string{"Anthropic-Ratelimit-Tokens-Remaining": "0", "Anthropic-Ratelimit-Tokens-Reset": "soon"},
			body: errJSON("rate_limit_error", "slow down"), class: RateLimited, retryAfter: time.Minute, msg: "slow down"},
		{name: "529 overloaded", status: 529, body: errJSON("overloaded_error", "Overloaded"), class: Retryable, msg: "Overloaded"},
		{name: "500", status: 500, body: errJSON("api_error", "Internal server error"), class: Retryable, msg: "Internal server error"},
		{name: "503 html", status: 503, body: "<html>unavailable</html>", class: Retryable, msg: "upstream error"},
		{name: "500 echoing the key", status: 500, body: errJSON("api_error", "boom for "+testKey1), class: Retryable, msg: "boom for <secret>"},
		{name: "404 model", status: 404, body: errJSON("not_found_error", "model: claude-nope"), class: Retryable, msg: "model: claude-nope"},
		{name: "400", status: 400, body: errJSON("invalid_request_error", "messages: roles must alternate"),
			class: BadRequest, msg: "messages: roles must alternate", relay: "invalid_request_error"},
		{name: "400 prompt too long", status: 400, body: errJSON("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
			class: ContextTooLong, msg: "prompt is too long: 210000 tokens > 200000 maximum", relay: "invalid_request_error"},
		{name: "400 context limit", status: 400, body: errJSON("invalid_request_error", "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000"),
			class: ContextTooLong, msg: "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000", relay: "invalid_request_error"},
		{name: "400 echoing the key", status: 400, body: errJSON("invalid_request_error", "key "+testKey1+" sent a bad request"),
			class: BadRequest, msg: "key <secret> sent a bad request", relay: "invalid_request_error"},
		{name: "413", status: 413, body: errJSON("request_too_large", "Request exceeds the maximum allowed number of bytes."),
			class: BadRequest, msg: "Request exceeds the maximum allowed number of bytes.", relay: "request_too_large"},
		{name: "400 without error object", status: 400, body: `bad`, class: BadRequest, msg: "upstream error", relay: "invalid_request_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h fasthttp.ResponseHeader
			for k, v := range tt.headers {
				h.Set(k, v)
			}
			f := testRedacted(anthropicFailure(tt.status, &h, []byte(tt.body), now))
			if f.Class != tt.class || f.Status != tt.status || f.RetryAfter != tt.retryAfter || f.Msg != tt.msg {
				t.Errorf("failure = %v %d %v %q, want %v %d %v %q", f.Class, f.Status, f.RetryAfter, f.Msg, tt.class, tt.status, tt.retryAfter, tt.msg)
			}
			for _, s := range []string{f.Msg, string(f.Body), f.Error()} {
				if strings.Contains(s, testKey1) {
					t.Errorf("failure leaks the key: %q", s)
				}
			}
			if tt.relay == "" {
				if f.Body != nil {
					t.Errorf("body = %s, want none", f.Body)
				}
				return
			}
			if typ := gjson.GetBytes(f.Body, "error.type").Str; typ != tt.relay || !gjson.GetBytes(f.Body, "error.message").Exists() {
				t.Errorf("body = %s, want an OpenAI error of type %s", f.Body, tt.relay)
			}
		})
	}
}

func TestAnthropicFailuresThroughHTTP(t *testing.T) {
	tests := []struct {
		status int
		body   string
		class  Class
	}{
		{401, `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key ` + testKey1 + `"}}`, Auth},
		{429, `{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`, RateLimited},
		{529, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, Retryable},
		{400, `{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 1 tokens > 0 maximum"}}`, ContextTooLong},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			u := newAnthUpstream(t, func(ctx *fasthttp.RequestCtx) {
				ctx.Response.Header.Set("Retry-After", "3")
				ctx.SetStatusCode(tt.status)
				ctx.SetBodyString(tt.body)
			})
			p := newTestAnthropic(t, u, "http://up.test", "")
			for _, stream := range []bool{false, true} {
				var r Reply
				body := `{"model":"m","messages":[{"role":"user","content":"x"}],"stream":` + fmt.Sprint(stream) + `}`
				f := asTestFailure(t, p.Chat(anthCall(body, 0), &r))
				if f.Class != tt.class || f.Status != tt.status {
					t.Errorf("stream=%v: failure = %+v, want %v %d", stream, f, tt.class, tt.status)
				}
				if r.Stream != nil || len(r.Body) != 0 {
					t.Errorf("stream=%v: a failed call filled the reply", stream)
				}
				if strings.Contains(f.Msg+string(f.Body), testKey1) {
					t.Errorf("stream=%v: failure leaks the key", stream)
				}
			}
		})
	}
}

func TestAnthropicExhausted(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		headers map[string]string
		want    time.Duration
	}{
		{"none", nil, 0},
		{"remaining", map[string]string{"Anthropic-Ratelimit-Requests-Remaining": "7", "Anthropic-Ratelimit-Requests-Reset": "2026-03-01T12:00:30Z"}, 0},
		{"requests spent", map[string]string{"Anthropic-Ratelimit-Requests-Remaining": "0", "Anthropic-Ratelimit-Requests-Reset": "2026-03-01T12:00:30Z"}, 30 * time.Second},
		{"tokens spent, later", map[string]string{
			"Anthropic-Ratelimit-Requests-Remaining": "0", "Anthropic-Ratelimit-Requests-Reset": "2026-03-01T12:00:30Z",
			"Anthropic-Ratelimit-Tokens-Remaining": "0", "Anthropic-Ratelimit-Tokens-Reset": "2026-03-01T13:02:00+01:00",
		}, 2 * time.Minute},
		{"output tokens spent, offset", map[string]string{"Anthropic-Ratelimit-Output-Tokens-Remaining": "0", "Anthropic-Ratelimit-Output-Tokens-Reset": "2026-03-01T13:00:45+01:00"}, 45 * time.Second},
		{"spent, no reset", map[string]string{"Anthropic-Ratelimit-Input-Tokens-Remaining": "0"}, time.Minute},
		{"spent, reset passed", map[string]string{"Anthropic-Ratelimit-Tokens-Remaining": "0", "Anthropic-Ratelimit-Tokens-Reset": "2026-03-01T11:00:00Z"}, time.Minute},
	}
	for _, tt := range tests {
		var h fasthttp.ResponseHeader
		for k, v := range tt.headers {
			h.Set(k, v)
		}
		if got := anthropicExhausted(&h, now); got != tt.want {
			t.Errorf("%s: exhausted = %v, want %v", tt.name, got, tt.want)
		}
	}

	u := newAnthUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("anthropic-ratelimit-tokens-remaining", "0")
		ctx.Response.Header.Set("anthropic-ratelimit-tokens-reset", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
		ctx.SetBodyString(anthTextReply)
	})
	p := newTestAnthropic(t, u, "http://up.test", "")
	var r Reply
	if err := p.Chat(anthCall(`{"model":"m","messages":[]}`, 0), &r); err != nil {
		t.Fatal(err)
	}
	if r.Exhausted < 58*time.Minute || r.Exhausted > time.Hour {
		t.Errorf("exhausted = %v, want about an hour", r.Exhausted)
	}
}

func TestAnthropicReplyGarbage(t *testing.T) {
	for name, body := range map[string]string{
		"html":  "<html>captive portal</html>",
		"array": "[1,2]",
		"error": `{"type":"error","error":{"type":"api_error","message":"oops ` + testKey1 + `"}}`,
	} {
		_, _, f := anthropicReply(nil, []byte(body), anthCreated)
		f = testRedacted(f)
		if f == nil || f.Class != Retryable || strings.Contains(f.Msg, testKey1) {
			t.Errorf("%s: failure = %+v, want a retryable one without the key", name, f)
		}
	}
	u := newAnthUpstream(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("<html>captive portal</html>") })
	p := newTestAnthropic(t, u, "http://up.test", "")
	f := asTestFailure(t, p.Chat(anthCall(`{"model":"m","messages":[]}`, 0), &Reply{}))
	if f.Class != Retryable || f.Status != 200 {
		t.Errorf("failure = %+v, want retryable 200", f)
	}
}

func TestAnthropicToolArgumentsAreCompact(t *testing.T) {
	out, _, f := anthropicReply(nil, []byte(`{"id":"m","type":"message","model":"x","content":[
		{"type":"tool_use","id":"a","name":"f","input":{ "q" : [1, 2] }},
		{"type":"tool_use","id":"b","name":"g"}],"stop_reason":"tool_use"}`), anthCreated)
	if f != nil {
		t.Fatal(f)
	}
	calls := gjson.GetBytes(out, "choices.0.message.tool_calls")
	if calls.Get("0.function.arguments").Str != `{"q":[1,2]}` || calls.Get("1.function.arguments").Str != `{}` {
		t.Errorf("tool_calls = %s", calls.Raw)
	}
	if gjson.GetBytes(out, "choices.0.message.content").Exists() || gjson.GetBytes(out, "usage").Exists() {
		t.Errorf("reply = %s, want no content and no usage", out)
	}
}

// anthEvents builds an Anthropic SSE body from (event, data) pairs.
func anthEvents(pairs ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		b.WriteString("event: " + pairs[i] + "\ndata: " + pairs[i+1] + "\n\n")
	}
	return b.String()
}

const (
	anthStart = `{"type":"message_start","message":{"id":"msg_s","type":"message","role":"assistant","content":[],"model":"claude-test","usage":{"input_tokens":3,"output_tokens":1}}}`
	anthText  = `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}`
	anthDelta = `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}`
	anthStop  = `{"type":"message_stop"}`
)

func TestAnthropicStreamLogic(t *testing.T) {
	role := `data: {"id":"msg_s","object":"chat.completion.chunk","created":1767225600,"model":"claude-test","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n"
	text := `data: {"id":"msg_s","object":"chat.completion.chunk","created":1767225600,"model":"claude-test","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}` + "\n\n"
	stop := `data: {"id":"msg_s","object":"chat.completion.chunk","created":1767225600,"model":"claude-test","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n"
	done := "data: [DONE]\n\n"
	overloaded := `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`
	tests := []struct {
		name   string
		in     string
		frames []string
		end    string
	}{
		{"complete", anthEvents("message_start", anthStart, "content_block_delta", anthText, "message_delta", anthDelta, "message_stop", anthStop),
			[]string{role, text, stop, done}, "EOF"},
		{"no message_delta still finishes", anthEvents("message_start", anthStart, "content_block_delta", anthText, "message_stop", anthStop),
			[]string{role, text, stop, done}, "EOF"},
		{"type without event lines", "data: " + anthStart + "\n\ndata: " + anthText + "\n\ndata: " + anthStop + "\n\n",
			[]string{role, text, stop, done}, "EOF"},
		{"comments and unknown events", ": hi\n\n" + anthEvents("message_start", anthStart, "future_event", `{"type":"future_event"}`, "content_block_delta", anthText, "message_stop", anthStop),
			[]string{role, text, stop, done}, "EOF"},
		{"cut before message_stop", anthEvents("message_start", anthStart, "content_block_delta", anthText, "message_delta", anthDelta),
			[]string{role, text, stop}, "cut"},
		{"cut after message_start", anthEvents("message_start", anthStart), nil, "cut"},
		{"empty", "", nil, "cut"},
		{"overloaded first", anthEvents("error", overloaded), nil, "retryable: upstream stream error (overloaded_error): Overloaded"},
		{"overloaded after message_start fails over", anthEvents("message_start", anthStart, "ping", `{"type":"ping"}`, "error", overloaded),
			nil, "retryable: upstream stream error (overloaded_error): Overloaded"},
		{"rate limited first", anthEvents("message_start", anthStart, "error", `{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}`),
			nil, "rate_limited: upstream stream error (rate_limit_error): slow"},
		{"error with the key", anthEvents("message_start", anthStart, "content_block_delta", anthText, "error", `{"type":"error","error":{"type":"api_error","message":"bad `+testKey1+`"}}`),
			[]string{role, text}, "retryable: upstream stream error (api_error): bad <secret>"},
		{"garbage", anthEvents("message_start", "<html>"), nil, "retryable: upstream sent a stream event that is not JSON"},
		{"garbage later", anthEvents("message_start", anthStart, "content_block_delta", anthText, "content_block_delta", "{oops"),
			[]string{role, text}, "retryable: upstream sent a stream event that is not JSON"},
		{"content before message_start", anthEvents("content_block_delta", anthText), nil, "retryable: upstream stream sent content_block_delta before message_start"},
		{"delta for an unknown tool", anthEvents("message_start", anthStart, "content_block_delta", `{"type":"content_block_delta","index":4,"delta":{"type":"input_json_delta","partial_json":"{}"}}`, "message_stop", anthStop),
			[]string{role, stop, done}, "EOF"},
		{"events after message_stop are not read", anthEvents("message_start", anthStart, "message_stop", anthStop, "error", overloaded),
			[]string{role, stop, done}, "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newAnthropicStream(&splitReader{data: []byte(tt.in)}, false, anthCreated)
			s.redactWith(testRedactor)
			defer s.Close()
			frames, end := anthDrain(t, s)
			if strings.Join(frames, "|") != strings.Join(tt.frames, "|") {
				t.Errorf("frames = %q, want %q", frames, tt.frames)
			}
			if end != tt.end {
				t.Errorf("end = %q, want %q", end, tt.end)
			}
			if _, err := s.Next(); tt.end == "EOF" && err != io.EOF {
				t.Errorf("after the end: %v", err)
			}
		})
	}
}

func TestAnthropicStreamReadErrors(t *testing.T) {
	start := anthEvents("message_start", anthStart, "content_block_delta", anthText)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"timeout", timeoutErr{}, "retryable: upstream stream timed out"},
		{"fasthttp timeout", fasthttp.ErrTimeout, "retryable: upstream stream timed out"},
		{"cut", io.ErrUnexpectedEOF, "cut"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newAnthropicStream(io.MultiReader(strings.NewReader(start), errReader{tt.err}), false, anthCreated)
			defer s.Close()
			frames, end := anthDrain(t, s)
			if len(frames) != 2 || end != tt.want {
				t.Errorf("%d frames, end %q; want 2, %q", len(frames), end, tt.want)
			}
		})
	}
	t.Run("frame too large", func(t *testing.T) {
		s := newAnthropicStream(strings.NewReader("data: "+strings.Repeat("x", maxFrame)+"\n\n"), false, anthCreated)
		defer s.Close()
		if _, end := anthDrain(t, s); !strings.HasPrefix(end, "retryable: upstream sent an SSE frame over") {
			t.Errorf("end = %q", end)
		}
	})
	t.Run("close twice", func(t *testing.T) {
		s := newAnthropicStream(strings.NewReader(start), false, anthCreated)
		s.Close()
		s.Close()
		if _, err := s.Next(); err == nil {
			t.Error("Next after Close gave a frame")
		}
	})
}

// anthStreamServer answers with the given SSE events, then, if hold is
// set, stays silent until the test ends.
func anthStreamServer(t *testing.T, body string, hold bool) *anthUpstream {
	var u *anthUpstream
	u = newAnthUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			_, _ = w.WriteString(body)
			_ = w.Flush()
			if hold {
				<-u.release
			}
		})
	})
	return u
}

func TestAnthropicStreamThroughHTTP(t *testing.T) {
	body := anthEvents("message_start", anthStart, "content_block_delta", anthText, "message_delta", anthDelta, "message_stop", anthStop)
	u := anthStreamServer(t, body, false)
	p := newTestAnthropic(t, u, "http://up.test", "")
	var r Reply
	if err := p.Chat(anthCall(`{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}`, 1), &r); err != nil {
		t.Fatal(err)
	}
	frames, end := anthDrain(t, r.Stream)
	r.Stream.Close()
	r.Stream.Close()
	if len(frames) != 5 || end != "EOF" || frames[4] != "data: [DONE]\n\n" {
		t.Fatalf("frames %q, end %q", frames, end)
	}
	if u := gjson.Get(frames[3][6:], "usage"); u.Get("prompt_tokens").Int() != 3 || u.Get("completion_tokens").Int() != 2 || gjson.Get(frames[3][6:], "choices.#").Int() != 0 {
		t.Errorf("usage chunk = %s", frames[3])
	}
	if got := r.Stream.Usage(); got != (Usage{Prompt: 3, Completion: 2, Known: true}) {
		t.Errorf("usage = %+v", got)
	}
	if got := gjson.GetBytes(u.requests()[0].body, "stream"); !got.Bool() {
		t.Errorf("upstream request without stream: true: %s", u.requests()[0].body)
	}
	if keys, _, _ := u.headers(); keys[0] != testKey2 {
		t.Errorf("x-api-key = %q, want key 2", keys[0])
	}
}

func TestAnthropicStreamIdleTimeout(t *testing.T) {
	u := anthStreamServer(t, anthEvents("message_start", anthStart, "content_block_delta", anthText), true)
	p := newTestAnthropic(t, u, "http://up.test", "    first_byte_timeout: 5s\n    idle_timeout: 100ms")
	var r Reply
	if err := p.Chat(anthCall(`{"model":"m","stream":true,"messages":[]}`, 0), &r); err != nil {
		t.Fatal(err)
	}
	defer r.Stream.Close()
	frames, end := anthDrain(t, r.Stream)
	if len(frames) != 2 || end != "retryable: upstream stream went silent past idle_timeout" {
		t.Errorf("frames %q, end %q", frames, end)
	}
}

func TestAnthropicStreamFirstByteTimeout(t *testing.T) {
	u := anthStreamServer(t, ": nothing yet\n\n", true)
	p := newTestAnthropic(t, u, "http://up.test", "    first_byte_timeout: 100ms")
	var r Reply
	if err := p.Chat(anthCall(`{"model":"m","stream":true,"messages":[]}`, 0), &r); err != nil {
		// A busy machine may not see even the headers in time.
		if err != error(errFirstByte) {
			t.Fatal(err)
		}
		return
	}
	defer r.Stream.Close()
	if _, err := r.Stream.Next(); err != errFirstByte {
		t.Errorf("err = %v, want errFirstByte", err)
	}
}

func FuzzAnthropicStream(f *testing.F) {
	files, _ := filepath.Glob("testdata/anthropic/*.txt")
	for i, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		if _, rest, ok := strings.Cut(string(b), "-- anthropic stream --\n"); ok {
			in, _, _ := strings.Cut(rest, "\n-- ")
			f.Add([]byte(in), []byte{byte(i), 7, 200}, i%2 == 0)
		}
	}
	for i, s := range []string{
		"",
		anthEvents("message_start", anthStart, "message_stop", anthStop),
		anthEvents("message_start", anthStart, "content_block_start", `{"type":"content_block_start","index":9,"content_block":{"type":"tool_use","id":"t","name":"f"}}`,
			"content_block_delta", `{"type":"content_block_delta","index":9,"delta":{"type":"input_json_delta","partial_json":"{"}}`, "message_stop", anthStop),
		"data: {\"type\":\"message_start\"}\n\ndata: {\"type\":\"message_stop\"}",
		"event: error\ndata: {}\n\n",
		"event: message_start\ndata: {\"message\":{\"usage\":{\"input_tokens\":-5}}}\n\nevent: message_delta\ndata: 1\n\n",
		"data: [\n\n",
	} {
		f.Add([]byte(s), []byte{byte(i), 3, 250}, i%2 == 1)
	}
	f.Fuzz(func(t *testing.T, data, sizes []byte, usage bool) {
		s := newAnthropicStream(&splitReader{data: data, sizes: sizes}, usage, anthCreated)
		defer s.Close()
		var last string
		id := ""
		for i := 0; ; i++ {
			// An event yields at most three frames (finish, usage,
			// [DONE]), and takes more than three bytes.
			if i > len(data)+3 {
				t.Fatalf("%d frames from %d bytes", i, len(data))
			}
			frame, err := s.Next()
			if err == io.EOF {
				if last != "data: [DONE]\n\n" {
					t.Fatalf("clean end after %q, not [DONE]", last)
				}
				if _, err := s.Next(); err != io.EOF {
					t.Fatalf("after the end: %v", err)
				}
				return
			}
			if err != nil {
				var f *Failure
				if !errors.Is(err, ErrStreamCut) && !errors.As(err, &f) {
					t.Fatalf("stream error %T %v is neither ErrStreamCut nor a *Failure", err, err)
				}
				return
			}
			last = string(frame)
			d, ok := frameData(frame, nil)
			if !ok || !strings.HasSuffix(last, "\n\n") {
				t.Fatalf("frame %q is not one SSE data frame", frame)
			}
			if string(d) == "[DONE]" {
				continue
			}
			var c Chunk
			if err := json.Unmarshal(d, &c); err != nil || c.Object != "chat.completion.chunk" {
				t.Fatalf("frame %q is not a chunk: %v", frame, err)
			}
			if i == 0 {
				id = c.ID
			} else if c.ID != id {
				t.Fatalf("chunk id %q after %q", c.ID, id)
			}
		}
	})
}
