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
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

var updateGolden = flag.Bool("update", false, "rewrite the expected sections of testdata golden files")

// geminiCreated is the clock the gemini tests pin "created" to.
var geminiCreated = time.Unix(1767225600, 0)

// geminiSeen is what the fake Gemini recorded of one request.
type geminiSeen struct {
	uri, apiKey, auth string
	body              []byte
}

// geminiFake is an in-process Gemini server whose answer a test sets.
type geminiFake struct {
	*upstream
	mu   sync.Mutex
	seen []geminiSeen
}

func newGeminiFake(t *testing.T, answer fasthttp.RequestHandler) *geminiFake {
	g := &geminiFake{}
	g.upstream = newUpstream(t, func(ctx *fasthttp.RequestCtx) {
		g.mu.Lock()
		g.seen = append(g.seen, geminiSeen{
			uri:    string(ctx.RequestURI()),
			apiKey: string(ctx.Request.Header.Peek("x-goog-api-key")),
			auth:   string(ctx.Request.Header.Peek("Authorization")),
			body:   bytes.Clone(ctx.PostBody()),
		})
		g.mu.Unlock()
		answer(ctx)
	})
	return g
}

func (g *geminiFake) last(t *testing.T) geminiSeen {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.seen) == 0 {
		t.Fatal("the fake Gemini got no request")
	}
	return g.seen[len(g.seen)-1]
}

// newTestGemini builds the gemini adapter for a provider with two keys
// whose upstream is u; extra is more provider YAML.
func newTestGemini(t *testing.T, u *geminiFake, extra string) Provider {
	t.Helper()
	yaml := `
providers:
  gem:
    type: gemini
    base_url: http://gemini.test/v1beta/
    keys: ["${K1}", "${K2}"]
    timeout: 5s
    headers: {X-Extra: extra-value}
` + extra + `
    models:
      m: {upstream: gemini-test}
      tuned: {upstream: tunedModels/mine}
`
	var ln *fasthttputil.InmemoryListener
	if u != nil {
		ln = u.ln
	}
	p := testProvider(t, yaml, "gem", "gemini.test:80", ln)
	p.(redacting).p.(*gemini).now = func() time.Time { return geminiCreated }
	return p
}

// geminiCall builds the call the engine would make for an OpenAI body.
func geminiCall(body []byte, upstream string, key int) *Call {
	m := gjson.GetBytes(body, "model")
	return &Call{
		Body: body, ModelStart: m.Index, ModelEnd: m.Index + len(m.Raw),
		Upstream: upstream, UpstreamJSON: []byte(`"` + upstream + `"`),
		Stream:        gjson.GetBytes(body, "stream").Bool(),
		ClientUsage:   gjson.GetBytes(body, "stream_options.include_usage").Bool(),
		StreamOptions: gjson.GetBytes(body, "stream_options").Exists(),
		Key:           key,
	}
}

// golden is a transcript file: a comment, then sections that each start
// with a "-- name --" line.
type golden struct {
	path     string
	comment  string
	names    []string
	sections map[string]string
}

func readGolden(t *testing.T, path string) *golden {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	g := &golden{path: path, sections: map[string]string{}}
	cur := ""
	var buf strings.Builder
	flush := func() {
		if cur == "" {
			g.comment = buf.String()
		} else {
			g.sections[cur] = buf.String()
		}
		buf.Reset()
	}
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if name, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "-- "); ok && strings.HasSuffix(name, " --") {
			flush()
			cur = strings.TrimSuffix(name, " --")
			g.names = append(g.names, cur)
			continue
		}
		buf.WriteString(line)
	}
	flush()
	return g
}

func (g *golden) set(name, value string) {
	if !slices.Contains(g.names, name) {
		g.names = append(g.names, name)
	}
	g.sections[name] = value
}

// goldenOrder is the order sections are written in: what goes up, then
// what comes back.
var goldenOrder = []string{"request.json", "history.json", "upstream-request.json", "upstream-response.json", "upstream-stream.sse", "response.json", "stream.sse", "assistant.json", "error"}

func (g *golden) write(t *testing.T) {
	t.Helper()
	slices.SortStableFunc(g.names, func(a, b string) int { return slices.Index(goldenOrder, a) - slices.Index(goldenOrder, b) })
	var b strings.Builder
	b.WriteString(g.comment)
	for _, n := range g.names {
		b.WriteString("-- " + n + " --\n")
		v := g.sections[n]
		b.WriteString(v)
		if !strings.HasSuffix(v, "\n") {
			b.WriteString("\n")
		}
	}
	if err := os.WriteFile(g.path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// sameJSON compares two JSON texts as values: key order does not count,
// array order does.
func sameJSON(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: got invalid JSON %q: %v", what, got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: the golden file holds invalid JSON: %v", what, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s differs\n got: %s\nwant: %s", what, compactJSON(got), compactJSON([]byte(want)))
	}
}

func indentJSON(b []byte) string {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return string(b)
	}
	return out.String() + "\n"
}

func compactJSON(b []byte) string {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return string(b)
	}
	return out.String()
}

// sseFrames splits SSE text into its frames' data payloads.
func sseFrames(s string) []string {
	var out []string
	for _, f := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n\n") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, strings.TrimPrefix(f, "data: "))
		}
	}
	return out
}

// failureText renders a stream's or call's end for a golden file.
func failureText(err error) string {
	var f *Failure
	switch {
	case errors.As(err, &f):
		return fmt.Sprintf("%s %d: %s", f.Class, f.Status, f.Msg)
	case err != nil:
		return err.Error()
	}
	return ""
}

// TestGeminiGolden replays every transcript in testdata/gemini: the OpenAI
// request must reach the fake Gemini as upstream-request.json, and its
// answer (upstream-response.json or upstream-stream.sse) must come back as
// response.json or stream.sse, ending as "error" says when it fails. Run
// with -update to rewrite the expected sections.
func TestGeminiGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/gemini/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			g := readGolden(t, path)
			reqJSON, ok := g.sections["request.json"]
			if !ok {
				t.Fatal("no request.json section")
			}
			_, streamed := g.sections["upstream-stream.sse"]
			fake := newGeminiFake(t, func(ctx *fasthttp.RequestCtx) {
				if streamed {
					ctx.SetContentType("text/event-stream")
					ctx.SetBodyString(strings.ReplaceAll(g.sections["upstream-stream.sse"], "\n", "\r\n"))
					return
				}
				ctx.SetContentType("application/json; charset=UTF-8")
				ctx.SetBodyString(g.sections["upstream-response.json"])
			})
			p := newTestGemini(t, fake, "")
			call := geminiCall([]byte(reqJSON), "gemini-test", 1)
			if call.Stream != streamed {
				t.Fatalf("request stream=%v but the upstream answer is streamed=%v", call.Stream, streamed)
			}
			var r Reply
			err := p.Chat(call, &r)
			seen := fake.last(t)
			wantURI := "/v1beta/models/gemini-test:generateContent"
			if streamed {
				wantURI = "/v1beta/models/gemini-test:streamGenerateContent?alt=sse"
			}
			if seen.uri != wantURI || seen.apiKey != testKey2 || seen.auth != "" {
				t.Errorf("upstream got %s with x-goog-api-key %q, Authorization %q; want %s with key 2 only", seen.uri, seen.apiKey, seen.auth, wantURI)
			}
			var frames []string
			if err == nil && streamed {
				defer r.Stream.Close()
				for range 1000 {
					var f []byte
					if f, err = r.Stream.Next(); err != nil {
						break
					}
					if !bytes.HasPrefix(f, []byte("data: ")) || !bytes.HasSuffix(f, []byte("\n\n")) || bytes.Count(f, []byte("\n")) != 2 {
						t.Errorf("frame %q is not one SSE data line", f)
					}
					frames = append(frames, string(f))
				}
				if err == io.EOF {
					err = nil
				}
			}
			end := failureText(err)
			if *updateGolden {
				g.set("upstream-request.json", indentJSON(seen.body))
				switch {
				case streamed:
					g.set("stream.sse", strings.Join(frames, ""))
				case err == nil:
					g.set("response.json", indentJSON(r.Body))
				}
				if end != "" {
					g.set("error", end+"\n")
				} else {
					delete(g.sections, "error")
					g.names = slices.DeleteFunc(g.names, func(n string) bool { return n == "error" })
				}
				g.write(t)
				return
			}
			sameJSON(t, "upstream request", seen.body, g.sections["upstream-request.json"])
			if want := strings.TrimSpace(g.sections["error"]); end != want {
				t.Errorf("ended with %q, want %q", end, want)
			}
			if streamed {
				want := sseFrames(g.sections["stream.sse"])
				if len(frames) != len(want) {
					t.Errorf("got %d frames, want %d:\n%s", len(frames), len(want), strings.Join(frames, ""))
				}
				for i := range min(len(frames), len(want)) {
					got := strings.TrimSuffix(strings.TrimPrefix(frames[i], "data: "), "\n\n")
					if want[i] == "[DONE]" || got == "[DONE]" {
						if got != want[i] {
							t.Errorf("frame %d = %s, want %s", i, got, want[i])
						}
						continue
					}
					sameJSON(t, fmt.Sprintf("frame %d", i), []byte(got), want[i])
				}
				if err == nil {
					checkUsage(t, r.Stream.Usage(), lastUsage(want))
				}
				return
			}
			if err == nil {
				sameJSON(t, "response", r.Body, g.sections["response.json"])
				checkUsage(t, r.Usage, gjson.Get(g.sections["response.json"], "usage"))
			}
		})
	}
}

// lastUsage finds the usage object the stream's frames report, if any.
func lastUsage(frames []string) gjson.Result {
	var u gjson.Result
	for _, f := range frames {
		if v := gjson.Get(f, "usage"); v.IsObject() {
			u = v
		}
	}
	return u
}

// checkUsage compares what the engine is told with the usage the client
// sees; with none shown, it only checks that a stream's known usage is
// consistent.
func checkUsage(t *testing.T, got Usage, want gjson.Result) {
	t.Helper()
	if !want.Exists() {
		return
	}
	if !got.Known || got.Prompt != int(want.Get("prompt_tokens").Int()) || got.Completion != int(want.Get("completion_tokens").Int()) {
		t.Errorf("Usage = %+v, want the reported %s", got, want.Raw)
	}
}

func TestGeminiEndpointsAndHeaders(t *testing.T) {
	answer := `{"candidates":[{"content":{"parts":[{"text":"ok"}]},"finishReason":"STOP"}]}`
	fake := newGeminiFake(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(answer)
	})
	p := newTestGemini(t, fake, "")
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	tests := []struct {
		upstream string
		key      int
		wantURI  string
		wantKey  string
	}{
		{"gemini-test", 0, "/v1beta/models/gemini-test:generateContent", testKey1},
		{"tunedModels/mine", 1, "/v1beta/tunedModels/mine:generateContent", testKey2},
		{"models/gemini-other", -1, "/v1beta/models/gemini-other:generateContent", ""},
		{"not-configured", 0, "/v1beta/models/not-configured:generateContent", testKey1},
	}
	for _, tt := range tests {
		var r Reply
		if err := p.Chat(geminiCall(body, tt.upstream, tt.key), &r); err != nil {
			t.Fatalf("%s: %v", tt.upstream, err)
		}
		seen := fake.last(t)
		if seen.uri != tt.wantURI || seen.apiKey != tt.wantKey {
			t.Errorf("%s key %d: upstream got %s with key %q, want %s with %q", tt.upstream, tt.key, seen.uri, seen.apiKey, tt.wantURI, tt.wantKey)
		}
		for _, k := range []string{testKey1, testKey2} {
			if strings.Contains(seen.uri, k) {
				t.Errorf("the key is in the URL %s", seen.uri)
			}
		}
		if got := gjson.GetBytes(r.Body, "choices.0.message.content").Str; got != "ok" {
			t.Errorf("%s: content %q", tt.upstream, got)
		}
	}
	for _, req := range fake.requests() {
		if req.extra != "extra-value" || req.contentType != "application/json" || req.method != "POST" {
			t.Errorf("upstream got %s, Content-Type %q, X-Extra %q", req.method, req.contentType, req.extra)
		}
	}
}

func TestGeminiFailures(t *testing.T) {
	keyInvalid := `{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT",` +
		`"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}`
	quota := `{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[` +
		`{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel"}]},` +
		`{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"34.5s"}]}}`
	tests := []struct {
		name       string
		status     int
		header     [2]string
		body       string
		class      Class
		retryAfter time.Duration
		msg        string
		// code is the relayed body's error.code; "" means no body.
		code string
	}{
		{name: "400 API key not valid", status: 400, body: keyInvalid, class: Auth, msg: "upstream rejected the provider key"},
		{name: "400 API key expired", status: 400, body: `{"error":{"code":400,"message":"API key expired. Please renew the API key.","status":"INVALID_ARGUMENT"}}`,
			class: Auth, msg: "upstream rejected the provider key"},
		{name: "400 location not supported", status: 400, body: `{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}`,
			class: Auth, msg: "upstream rejected the provider key"},
		{name: "403 permission denied quoting the key", status: 403, body: `{"error":{"code":403,"message":"Key ` + testKey1 + ` lacks permission","status":"PERMISSION_DENIED"}}`,
			class: Auth, msg: "upstream rejected the provider key"},
		{name: "401", status: 401, body: `{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}`,
			class: Auth, msg: "upstream rejected the provider key"},
		{name: "429 with RetryInfo", status: 429, body: quota, class: RateLimited, retryAfter: 34500 * time.Millisecond, msg: "You exceeded your current quota."},
		{name: "429 with Retry-After only", status: 429, header: [2]string{"Retry-After", "12"},
			body:  `{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}`,
			class: RateLimited, retryAfter: 12 * time.Second, msg: "Resource has been exhausted (e.g. check quota)."},
		{name: "429 RetryInfo wins over Retry-After", status: 429, header: [2]string{"Retry-After", "5"}, body: quota,
			class: RateLimited, retryAfter: 34500 * time.Millisecond, msg: "You exceeded your current quota."},
		{name: "500", status: 500, body: `{"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}}`,
			class: Retryable, msg: "An internal error has occurred."},
		{name: "503", status: 503, body: `{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}`,
			class: Retryable, msg: "The model is overloaded."},
		{name: "504", status: 504, body: `{"error":{"code":504,"message":"Deadline exceeded.","status":"DEADLINE_EXCEEDED"}}`,
			class: Retryable, msg: "Deadline exceeded."},
		{name: "404 model", status: 404, body: `{"error":{"code":404,"message":"models/gemini-test is not found for API version v1beta.","status":"NOT_FOUND"}}`,
			class: Retryable, msg: "models/gemini-test is not found for API version v1beta."},
		{name: "502 html", status: 502, body: `<html>bad gateway</html>`, class: Retryable, msg: "upstream error"},
		{name: "400 bad request relayed", status: 400, body: `{"error":{"code":400,"message":"Invalid value at 'generation_config.temperature'","status":"INVALID_ARGUMENT"}}`,
			class: BadRequest, msg: "Invalid value at 'generation_config.temperature'", code: "400"},
		{name: "400 echoing the key", status: 400, body: `{"error":{"code":400,"message":"bad request from ` + testKey1 + `","status":"INVALID_ARGUMENT"}}`,
			class: BadRequest, msg: "bad request from <secret>", code: "400"},
		{name: "400 in a list, as the stream endpoint sends", status: 400, body: `[{"error":{"code":400,"message":"* contents: must not be empty","status":"INVALID_ARGUMENT"}}]`,
			class: BadRequest, msg: "* contents: must not be empty", code: "400"},
		{name: "400 token count exceeded", status: 400,
			body:  `{"error":{"code":400,"message":"The input token count (1200293) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}`,
			class: ContextTooLong, msg: "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576).", code: "context_length_exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := newGeminiFake(t, func(ctx *fasthttp.RequestCtx) {
				if tt.header[0] != "" {
					ctx.Response.Header.Set(tt.header[0], tt.header[1])
				}
				ctx.SetStatusCode(tt.status)
				ctx.SetBodyString(tt.body)
			})
			p := newTestGemini(t, fake, "")
			for _, stream := range []bool{false, true} {
				body := `{"model":"m","messages":[{"role":"user","content":"hi"}]` + map[bool]string{true: `,"stream":true}`, false: `}`}[stream]
				var r Reply
				f := asTestFailure(t, p.Chat(geminiCall([]byte(body), "gemini-test", 0), &r))
				if f.Class != tt.class || f.Status != tt.status || f.RetryAfter != tt.retryAfter || f.Msg != tt.msg {
					t.Errorf("stream=%v: failure = %+v, want class %v status %d retry %v msg %q", stream, f, tt.class, tt.status, tt.retryAfter, tt.msg)
				}
				if r.Stream != nil || len(r.Body) != 0 {
					t.Errorf("stream=%v: a failed call filled the reply", stream)
				}
				for _, s := range []string{f.Msg, string(f.Body), f.Error()} {
					if strings.Contains(s, testKey1) || strings.Contains(s, testKey2) {
						t.Errorf("stream=%v: failure leaks the key: %q", stream, s)
					}
				}
				switch {
				case tt.code == "" && f.Body != nil:
					t.Errorf("stream=%v: Body = %s, want none", stream, f.Body)
				case tt.code != "":
					e := gjson.GetBytes(f.Body, "error")
					if e.Get("message").Str != tt.msg || e.Get("type").Str != "invalid_request_error" || e.Get("code").Str != tt.code {
						t.Errorf("stream=%v: Body = %s, want an OpenAI error with code %q", stream, f.Body, tt.code)
					}
				}
			}
		})
	}
}

func TestGeminiUnusableAnswersAreRetryable(t *testing.T) {
	for _, body := range []string{`<html>captive portal</html>`, `{"candidates":"x"}`, `{"usageMetadata":{"promptTokenCount":1}}`, `{"candidates":[]}`} {
		fake := newGeminiFake(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(body) })
		p := newTestGemini(t, fake, "")
		f := asTestFailure(t, p.Chat(geminiCall([]byte(`{"model":"m","messages":[]}`), "gemini-test", 0), &Reply{}))
		if f.Class != Retryable || f.Status != 200 {
			t.Errorf("%s: failure = %+v, want retryable 200", body, f)
		}
	}
	fake := newGeminiFake(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString(`{"error":{"code":503,"message":"busy ` + testKey1 + `","status":"UNAVAILABLE"}}`)
	})
	f := asTestFailure(t, newTestGemini(t, fake, "").Chat(geminiCall([]byte(`{"model":"m","messages":[]}`), "gemini-test", 0), &Reply{}))
	if f.Class != Retryable || f.Status != 503 || f.Msg != "busy <secret>" {
		t.Errorf("an error inside a 200: failure = %+v", f)
	}
}

func TestGeminiRejectsWhatItCannotTranslate(t *testing.T) {
	tests := []struct{ name, body, msg string }{
		{"not a chat request", `{"model":"m","messages":"hi"}`, "cannot translate the request for gemini"},
		{"unknown role", `{"model":"m","messages":[{"role":"narrator","content":"x"}]}`, `messages[0].role "narrator" is not supported`},
		{"audio part", `{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio"}]}]}`, `messages[0].content[0].type "input_audio" is not supported`},
		{"image without url", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":""}}]}]}`, "image_url.url is missing"},
		{"data URL not base64", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,abc"}}]}]}`, "must be base64"},
		{"arguments not an object", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}`,
			"messages[0].tool_calls[0].function.arguments must be a JSON object"},
		{"tool result without its call", `{"model":"m","messages":[{"role":"tool","tool_call_id":"nope","content":"x"}]}`, `tool_call_id "nope" matches no earlier tool call`},
		{"custom tool", `{"model":"m","messages":[],"tools":[{"type":"custom","function":{"name":"f"}}]}`, `tools[0].type "custom" is not supported`},
	}
	fake := newGeminiFake(t, func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(500) })
	p := newTestGemini(t, fake, "")
	for _, tt := range tests {
		f := asTestFailure(t, p.Chat(geminiCall([]byte(tt.body), "gemini-test", 0), &Reply{}))
		if f.Class != Unsupported || f.Status != 400 || !strings.Contains(f.Msg, tt.msg) {
			t.Errorf("%s: failure = %+v, want a 400 saying %q", tt.name, f, tt.msg)
		}
		if gjson.GetBytes(f.Body, "error.message").Str != f.Msg {
			t.Errorf("%s: Body = %s, want the OpenAI error shape", tt.name, f.Body)
		}
	}
	if n := len(fake.requests()); n != 0 {
		t.Errorf("%d requests reached the upstream; a request that cannot be translated must not", n)
	}
}

// geminiStreamOf runs a geminiStream over raw upstream bytes, fed one byte
// per read, the worst split.
func geminiStreamOf(in string, clientUsage bool) *geminiStream {
	return &geminiStream{up: openAIStream{sse: newSSEReader(&splitReader{data: []byte(in)})}, model: "gemini-test", created: 1, clientUsage: clientUsage}
}

// drain reads a stream to its end and returns its frames' payloads.
func drain(t *testing.T, s Stream) ([]string, error) {
	t.Helper()
	var got []string
	for range 1000 {
		f, err := s.Next()
		if err != nil {
			return got, err
		}
		got = append(got, strings.TrimSuffix(strings.TrimPrefix(string(f), "data: "), "\n\n"))
	}
	t.Fatal("the stream does not end")
	return nil, nil
}

func TestGeminiStreamEnds(t *testing.T) {
	text := `data: {"candidates":[{"content":{"parts":[{"text":"a"}]}}],"responseId":"r1"}` + "\n\n"
	stop := `data: {"candidates":[{"content":{"parts":[{"text":"b"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5},"responseId":"r1"}` + "\n\n"
	tests := []struct {
		name string
		in   string
		// want lists the delta contents or finish reasons of the frames,
		// "role" for the first, "usage" and "[DONE]".
		want []string
		// end is io.EOF, ErrStreamCut, or a *Failure's message.
		end any
	}{
		{"finish then EOF", text + stop, []string{"role", "a", "b", "stop", "[DONE]"}, io.EOF},
		{"finish without the last blank line", text + strings.TrimSuffix(stop, "\n\n"), []string{"role", "a", "b", "stop", "[DONE]"}, io.EOF},
		{"a [DONE] after the finish is the end", text + stop + "data: [DONE]\n\n", []string{"role", "a", "b", "stop", "[DONE]"}, io.EOF},
		{"late usage after the finish counts", text + stop + `data: {"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":9,"totalTokenCount":12}}` + "\n\n",
			[]string{"role", "a", "b", "stop", "[DONE]"}, io.EOF},
		{"content after the finish is dropped", stop + text, []string{"role", "b", "stop", "[DONE]"}, io.EOF},
		{"cut before the finish", text + text, []string{"role", "a", "a"}, ErrStreamCut},
		{"a [DONE] before the finish is a cut", text + "data: [DONE]\n\n", []string{"role", "a"}, ErrStreamCut},
		{"empty", "", nil, ErrStreamCut},
		{"only comments", ": ping\n\n: ping\n\n", nil, ErrStreamCut},
		{"comments between events", text + ": ping\n\n" + stop, []string{"role", "a", "b", "stop", "[DONE]"}, io.EOF},
		{"garbage first", "data: <html>\n\n", nil, "upstream sent a stream event that is not JSON"},
		{"garbage later", text + "data: {oops\n\n", []string{"role", "a"}, "upstream sent a stream event that is not JSON"},
		{"wrong shape", text + `data: {"candidates":"none"}` + "\n\n", []string{"role", "a"}, "upstream sent a stream event that is not a Gemini response"},
		{"error first", `data: {"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}` + "\n\n", nil, "upstream stream error: quota"},
		{"error later", text + `data: {"error":{"code":500,"message":"internal","status":"INTERNAL"}}` + "\n\n", []string{"role", "a"}, "upstream stream error: internal"},
		{"error after the finish changes nothing", text + stop + `data: {"error":{"code":500,"message":"late"}}` + "\n\n",
			[]string{"role", "a", "b", "stop", "[DONE]"}, io.EOF},
		{"prompt blocked", `data: {"promptFeedback":{"blockReason":"SAFETY"},"responseId":"r2"}` + "\n\n", []string{"role", "content_filter", "[DONE]"}, io.EOF},
		{"max tokens", strings.Replace(stop, "STOP", "MAX_TOKENS", 1), []string{"role", "b", "length", "[DONE]"}, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := geminiStreamOf(tt.in, false)
			defer s.up.sse.release()
			frames, err := drain(t, s)
			var got []string
			for _, f := range frames {
				d := gjson.Get(f, "choices.0.delta")
				switch {
				case f == "[DONE]":
					got = append(got, f)
				case d.Get("role").Str == "assistant":
					got = append(got, "role")
				case d.Get("content").Exists():
					got = append(got, d.Get("content").Str)
				default:
					got = append(got, gjson.Get(f, "choices.0.finish_reason").Str)
				}
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("frames = %q, want %q", got, tt.want)
			}
			switch want := tt.end.(type) {
			case string:
				if f := asTestFailure(t, err); f.Msg != want {
					t.Errorf("end = %+v, want %q", f, want)
				}
			case error:
				if err != want {
					t.Errorf("end = %v, want %v", err, want)
				}
			}
			if err == io.EOF {
				if _, again := s.Next(); again != io.EOF {
					t.Errorf("after the end Next gives %v", again)
				}
			}
		})
	}
}

func TestGeminiStreamUsage(t *testing.T) {
	in := `data: {"candidates":[{"content":{"parts":[{"text":"a"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"thoughtsTokenCount":4,"totalTokenCount":9}}` + "\n\n"
	for _, clientUsage := range []bool{false, true} {
		s := geminiStreamOf(in, clientUsage)
		frames, err := drain(t, s)
		s.up.sse.release()
		if err != io.EOF {
			t.Fatalf("end = %v", err)
		}
		// Without include_usage the engine still learns the counts.
		if u := s.Usage(); u != (Usage{Prompt: 3, Completion: 6, Known: true}) {
			t.Errorf("clientUsage=%v: Usage() = %+v", clientUsage, u)
		}
		hasUsage := gjson.Get(frames[len(frames)-2], "usage").IsObject()
		if hasUsage != clientUsage {
			t.Errorf("clientUsage=%v: usage chunk sent = %v (%q)", clientUsage, hasUsage, frames)
		}
	}
	s := geminiStreamOf(`data: {"candidates":[{"finishReason":"STOP"}]}`+"\n\n", true)
	defer s.up.sse.release()
	if _, err := drain(t, s); err != io.EOF || s.Usage().Known {
		t.Errorf("no usageMetadata: end %v, Usage() = %+v, want unknown", err, s.Usage())
	}
}

func TestGeminiStreamHidesTheKey(t *testing.T) {
	fake := newGeminiFake(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyString(`data: {"candidates":[{"content":{"parts":[{"text":"your key is ` + testKey1 + `"}]}}]}` + "\r\n\r\n" +
			`data: {"error":{"code":500,"message":"failed for ` + testKey1 + `"}}` + "\r\n\r\n")
	})
	p := newTestGemini(t, fake, "")
	var r Reply
	if err := p.Chat(geminiCall([]byte(`{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}`), "gemini-test", 0), &r); err != nil {
		t.Fatal(err)
	}
	defer r.Stream.Close()
	frames, err := drain(t, r.Stream)
	f := asTestFailure(t, err)
	for _, s := range append(frames, f.Msg) {
		if strings.Contains(s, testKey1) {
			t.Errorf("the key leaks: %s", s)
		}
	}
	if f.Msg != "upstream stream error: failed for <secret>" {
		t.Errorf("failure = %+v", f)
	}
}

func TestGeminiStreamWatchdog(t *testing.T) {
	first := `data: {"candidates":[{"content":{"parts":[{"text":"a"}]}}]}` + "\r\n\r\n"
	t.Run("idle", func(t *testing.T) {
		var fake *geminiFake
		fake = newGeminiFake(t, func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("text/event-stream")
			ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
				_, _ = w.WriteString(first)
				_ = w.Flush()
				<-fake.release
			})
		})
		p := newTestGemini(t, fake, "    idle_timeout: 150ms")
		var r Reply
		if err := p.Chat(geminiCall([]byte(`{"model":"m","stream":true,"messages":[]}`), "gemini-test", 0), &r); err != nil {
			t.Fatal(err)
		}
		defer r.Stream.Close()
		frames, err := drain(t, r.Stream)
		if len(frames) != 2 {
			t.Errorf("frames = %q, want the role and the text", frames)
		}
		if f := asTestFailure(t, err); f.Msg != "upstream stream went silent past idle_timeout" {
			t.Errorf("failure = %+v", f)
		}
	})
	t.Run("first byte", func(t *testing.T) {
		var fake *geminiFake
		fake = newGeminiFake(t, func(ctx *fasthttp.RequestCtx) { <-fake.release })
		p := newTestGemini(t, fake, "    first_byte_timeout: 150ms")
		err := p.Chat(geminiCall([]byte(`{"model":"m","stream":true,"messages":[]}`), "gemini-test", 0), &Reply{})
		if f := asTestFailure(t, err); f != errFirstByte {
			t.Errorf("failure = %+v, want the first-byte timeout", f)
		}
	})
}

func TestGeminiCallIDsAreStable(t *testing.T) {
	a := geminiCallID("r", 0, "f", []byte(`{"x":1}`))
	if a != geminiCallID("r", 0, "f", []byte(`{"x":1}`)) {
		t.Fatal("the same call got two ids")
	}
	for _, other := range []string{
		geminiCallID("r2", 0, "f", []byte(`{"x":1}`)),
		geminiCallID("r", 1, "f", []byte(`{"x":1}`)),
		geminiCallID("r", 0, "g", []byte(`{"x":1}`)),
		geminiCallID("r", 0, "f", []byte(`{"x":2}`)),
	} {
		if other == a {
			t.Errorf("two different calls share the id %s", a)
		}
	}
	if len(a) != len("call_")+16 || !strings.HasPrefix(a, "call_") {
		t.Errorf("id %q is not call_ and 16 hex digits", a)
	}
}

func FuzzGeminiStream(f *testing.F) {
	seeds := []string{
		"",
		`data: {"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}]}` + "\r\n\r\n",
		`data: {"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{"a":1}}},{"functionCall":{"name":"g"}}]}}]}` + "\n\n" +
			`data: {"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1}}` + "\n\n",
		`data: {"promptFeedback":{"blockReason":"OTHER"}}` + "\n\n",
		`data: {"error":{"code":503,"message":"overloaded"}}` + "\n\n",
		`data: {"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":[1]}}]},"finishReason":"MAX_TOKENS"}]}` + "\n\n",
		`data: {"candidates":[]}` + "\n\ndata: [DONE]\n\n",
		": ping\n\ndata: {}\n\n",
		"data: {\"candidates\":\ndata: [{\"finishReason\":\"SAFETY\"}]}\n\n",
		"data: nope\n\n",
	}
	for i, s := range seeds {
		f.Add([]byte(s), []byte{byte(i), 7}, i%2 == 0)
	}
	f.Fuzz(func(t *testing.T, data, sizes []byte, clientUsage bool) {
		s := &geminiStream{up: openAIStream{sse: newSSEReader(&splitReader{data: data, sizes: sizes})}, model: "m", clientUsage: clientUsage}
		defer s.up.sse.release()
		finished, done := false, false
		for i := 0; ; i++ {
			if i > 4*len(data)+4 {
				t.Fatalf("the stream gave %d frames from %d bytes", i, len(data))
			}
			frame, err := s.Next()
			if err == io.EOF {
				if !done {
					t.Fatal("a clean end without [DONE]")
				}
				return
			}
			if err != nil {
				var f *Failure
				if !errors.Is(err, ErrStreamCut) && !errors.As(err, &f) {
					t.Fatalf("stream error %T %v is neither ErrStreamCut nor a *Failure", err, err)
				}
				if done {
					t.Fatalf("an error %v after [DONE]", err)
				}
				return
			}
			if done {
				t.Fatalf("frame %q after [DONE]", frame)
			}
			payload, ok := bytes.CutPrefix(frame, []byte("data: "))
			if !ok || !bytes.HasSuffix(payload, []byte("\n\n")) || bytes.Count(frame, []byte("\n")) != 2 {
				t.Fatalf("frame %q is not one SSE data line", frame)
			}
			payload = bytes.TrimSuffix(payload, []byte("\n\n"))
			if string(payload) == "[DONE]" {
				if !finished {
					t.Fatal("[DONE] before a finish_reason")
				}
				done = true
				continue
			}
			var ch Chunk
			if err := json.Unmarshal(payload, &ch); err != nil || ch.Object != "chat.completion.chunk" {
				t.Fatalf("frame %q is not a chunk: %v", frame, err)
			}
			if finished && ch.Usage == nil {
				t.Fatalf("a chunk after the finish: %s", payload)
			}
			for _, c := range ch.Choices {
				if c.FinishReason != nil {
					finished = true
				}
				if c.Delta != nil {
					for _, tc := range c.Delta.ToolCalls {
						if tc.Index == nil || tc.ID == "" || !json.Valid([]byte(tc.Function.Arguments)) {
							t.Fatalf("tool call delta %+v lacks an index, id or JSON arguments", tc)
						}
					}
				}
			}
		}
	})
}

func FuzzGeminiRequest(f *testing.F) {
	for _, path := range must(filepath.Glob("testdata/gemini/*.txt")) {
		b := must(os.ReadFile(path))
		_, req, _ := strings.Cut(string(b), "-- request.json --\n")
		req, _, _ = strings.Cut(req, "\n-- ")
		f.Add([]byte(req))
	}
	f.Add([]byte(`{"messages":[],"tools":[{"function":{"name":"f","parameters":{"$ref":"#"}}}]}`))
	f.Add([]byte(`{"response_format":{"type":"json_schema","json_schema":{"schema":{"anyOf":[{"$ref":"#/$defs/a~1b"}],"$defs":{"a/b":{"items":{"$ref":"#/$defs/a~1b"}}}}}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, fail := geminiRequestBody(body)
		if fail != nil {
			if fail.Class != Unsupported || fail.Status != 400 || !json.Valid(fail.Body) {
				t.Fatalf("failure %+v is not a relayable 400", fail)
			}
			return
		}
		var req geminiRequest
		if err := json.Unmarshal(out, &req); err != nil {
			t.Fatalf("translated %q into invalid JSON %q: %v", body, out, err)
		}
		for i, c := range req.Contents {
			if len(c.Parts) == 0 || (c.Role != "user" && c.Role != "model") {
				t.Fatalf("content %d = %+v", i, c)
			}
			if i > 0 && req.Contents[i-1].Role == c.Role {
				t.Fatalf("contents %d and %d share role %s", i-1, i, c.Role)
			}
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
