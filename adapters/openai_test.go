package adapters

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"gateway/config"
)

const (
	testKey1 = "sk-test-FIRST-0123456789abcdef"
	testKey2 = "sk-test-SECOND-fedcba9876543210"
)

// seenRequest is what the fake upstream recorded of one request.
type seenRequest struct {
	method, uri, auth, contentType, extra string
	body                                  []byte
}

// upstream is an in-process OpenAI server whose answer a test sets.
type upstream struct {
	t      *testing.T
	ln     *fasthttputil.InmemoryListener
	mu     sync.Mutex
	seen   []seenRequest
	answer fasthttp.RequestHandler
	// release unblocks handlers that hang.
	release chan struct{}
}

func newUpstream(t *testing.T, answer fasthttp.RequestHandler) *upstream {
	u := &upstream{t: t, ln: fasthttputil.NewInmemoryListener(), answer: answer, release: make(chan struct{})}
	srv := &fasthttp.Server{Logger: quietLogger{}, Handler: func(ctx *fasthttp.RequestCtx) {
		u.mu.Lock()
		u.seen = append(u.seen, seenRequest{
			method:      string(ctx.Method()),
			uri:         string(ctx.RequestURI()),
			auth:        string(ctx.Request.Header.Peek("Authorization")),
			contentType: string(ctx.Request.Header.ContentType()),
			extra:       string(ctx.Request.Header.Peek("X-Extra")),
			body:        bytes.Clone(ctx.PostBody()),
		})
		u.mu.Unlock()
		u.answer(ctx)
	}}
	done := make(chan struct{})
	go func() { _ = srv.Serve(u.ln); close(done) }()
	t.Cleanup(func() {
		close(u.release)
		_ = u.ln.Close()
		<-done
	})
	return u
}

// quietLogger drops fasthttp's logs of connections the tests cut on purpose.
type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

func (u *upstream) requests() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenRequest(nil), u.seen...)
}

// newTestOpenAI builds the openai adapter for a provider with two keys
// whose upstream is u (nil: every dial fails).
func newTestOpenAI(t *testing.T, u *upstream, timeout string) Provider {
	t.Helper()
	yaml := `
providers:
  up:
    type: openai
    base_url: http://up.test/v1/
    keys: ["${K1}", "${K2}"]
    timeout: ` + timeout + `
    headers: {X-Extra: extra-value}
    models:
      m: {upstream: "up-model-\u00e9"}
`
	var ln *fasthttputil.InmemoryListener
	if u != nil {
		ln = u.ln
	}
	p := testProvider(t, yaml, "up", "up.test:80", ln)
	return p
}

func testCall(body string, stream bool, key int) *Call {
	b := []byte(body)
	m := gjson.GetBytes(b, "model")
	return &Call{
		Body: b, ModelStart: m.Index, ModelEnd: m.Index + len(m.Raw),
		Upstream: "up-model-é", UpstreamJSON: []byte(`"up-model-é"`),
		Stream: stream, Key: key,
	}
}

func asTestFailure(t *testing.T, err error) *Failure {
	t.Helper()
	var f *Failure
	if !errors.As(err, &f) {
		t.Fatalf("err = %T %v, want a *Failure", err, err)
	}
	return f
}

func TestOpenAISendsPatchedBodyAndKey(t *testing.T) {
	reply := `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"up-model-é","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}`
	u := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(reply)
	})
	p := newTestOpenAI(t, u, "5s")
	body := `{ "z":1, "model" : "m", "messages":[{"role":"user","content":"héllo"}], "extra":{"k":[1,2]} }`
	for key, want := range []string{testKey1, testKey2} {
		var r Reply
		if err := p.Chat(testCall(body, false, key), &r); err != nil {
			t.Fatal(err)
		}
		if string(r.Body) != reply {
			t.Errorf("reply = %s, want %s", r.Body, reply)
		}
		got := u.requests()[key]
		wantBody := `{ "z":1, "model" : "up-model-é", "messages":[{"role":"user","content":"héllo"}], "extra":{"k":[1,2]} }`
		if string(got.body) != wantBody {
			t.Errorf("upstream got body %s, want %s", got.body, wantBody)
		}
		if got.method != "POST" || got.uri != "/v1/chat/completions" {
			t.Errorf("upstream got %s %s, want POST /v1/chat/completions", got.method, got.uri)
		}
		if got.auth != "Bearer "+want {
			t.Errorf("upstream got Authorization %q, want key %d", got.auth, key+1)
		}
		if got.contentType != "application/json" || got.extra != "extra-value" {
			t.Errorf("upstream got Content-Type %q, X-Extra %q", got.contentType, got.extra)
		}
	}
}

func TestOpenAIFailures(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		header     [2]string
		body       string
		class      Class
		retryAfter time.Duration
		msg        string
		relayBody  bool
	}{
		{name: "401 quoting the key", status: 401, body: `{"error":{"message":"Incorrect API key provided: ` + testKey1 + `","type":"invalid_request_error","code":"invalid_api_key"}}`,
			class: Auth, msg: "upstream rejected the provider key"},
		{name: "403 quoting part of the key", status: 403, body: `{"error":{"message":"key sk-test-FIRST-0123... is not allowed"}}`,
			class: Auth, msg: "upstream rejected the provider key"},
		{name: "429 with seconds", status: 429, header: [2]string{"Retry-After", "7"}, body: `{"error":{"message":"Rate limit reached"}}`,
			class: RateLimited, retryAfter: 7 * time.Second, msg: "Rate limit reached"},
		{name: "429 without Retry-After", status: 429, body: `{"error":{"message":"slow down"}}`, class: RateLimited, msg: "slow down"},
		{name: "500 with message", status: 500, body: `{"error":{"message":"internal error"}}`, class: Retryable, msg: "internal error"},
		{name: "503 with top-level message", status: 503, body: `{"message":"overloaded"}`, class: Retryable, msg: "overloaded"},
		{name: "502 html", status: 502, body: `<html>bad gateway</html>`, class: Retryable, msg: "upstream error"},
		{name: "500 echoing the key", status: 500, body: `{"error":{"message":"boom for ` + testKey1 + `"}}`, class: Retryable, msg: "boom for <secret>"},
		{name: "404 model", status: 404, body: `{"error":{"message":"model not found"}}`, class: Retryable, msg: "model not found"},
		{name: "400 relayed", status: 400, body: `{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature","code":null}}`,
			class: BadRequest, msg: "bad temperature", relayBody: true},
		{name: "400 echoing the key", status: 400, body: `{"error":{"message":"key ` + testKey1 + ` sent a bad request"}}`,
			class: BadRequest, msg: "key <secret> sent a bad request", relayBody: true},
		{name: "422 without error object", status: 422, body: `{"detail":"nope"}`, class: BadRequest, msg: "upstream error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
				if tt.header[0] != "" {
					ctx.Response.Header.Set(tt.header[0], tt.header[1])
				}
				ctx.SetStatusCode(tt.status)
				ctx.SetBodyString(tt.body)
			})
			p := newTestOpenAI(t, u, "5s")
			for _, stream := range []bool{false, true} {
				var r Reply
				err := p.Chat(testCall(`{"model":"m","messages":[]}`, stream, 0), &r)
				f := asTestFailure(t, err)
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
				if tt.relayBody {
					if !gjson.ValidBytes(f.Body) || !gjson.GetBytes(f.Body, "error").IsObject() {
						t.Errorf("stream=%v: Body = %q, want the upstream's error object", stream, f.Body)
					}
					if !strings.Contains(tt.body, testKey1) && string(f.Body) != tt.body {
						t.Errorf("stream=%v: Body = %s, want it as sent: %s", stream, f.Body, tt.body)
					}
				} else if f.Body != nil {
					t.Errorf("stream=%v: Body = %q, want none", stream, f.Body)
				}
			}
		})
	}
}

func TestOpenAINonJSONSuccessIsRetryable(t *testing.T) {
	u := newUpstream(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("<html>captive portal</html>") })
	p := newTestOpenAI(t, u, "5s")
	f := asTestFailure(t, p.Chat(testCall(`{"model":"m"}`, false, 0), &Reply{}))
	if f.Class != Retryable || f.Status != 200 {
		t.Errorf("failure = %+v, want retryable 200", f)
	}
}

func TestOpenAITransportFailures(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		var u *upstream
		u = newUpstream(t, func(*fasthttp.RequestCtx) { <-u.release })
		p := newTestOpenAI(t, u, "200ms")
		for _, stream := range []bool{false, true} {
			f := asTestFailure(t, p.Chat(testCall(`{"model":"m"}`, stream, 0), &Reply{}))
			if f.Class != Retryable || f.Status != 0 || f.Msg != "upstream timed out" {
				t.Errorf("stream=%v: failure = %+v", stream, f)
			}
		}
	})
	t.Run("refused", func(t *testing.T) {
		p := newTestOpenAI(t, nil, "5s")
		f := asTestFailure(t, p.Chat(testCall(`{"model":"m"}`, false, 0), &Reply{}))
		if f.Class != Retryable || f.Status != 0 || !strings.HasPrefix(f.Msg, "upstream connection failed") {
			t.Errorf("failure = %+v", f)
		}
	})
	t.Run("closed", func(t *testing.T) {
		u := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
			ctx.HijackSetNoResponse(true)
			ctx.Hijack(func(net.Conn) {})
		})
		p := newTestOpenAI(t, u, "5s")
		f := asTestFailure(t, p.Chat(testCall(`{"model":"m"}`, false, 0), &Reply{}))
		if f.Class != Retryable || f.Status != 0 {
			t.Errorf("failure = %+v", f)
		}
	})
}

func TestOpenAIStreamThroughHTTP(t *testing.T) {
	frames := []string{
		": keep-alive\n\n",
		`data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant"}}]}` + "\n\n",
		": keep-alive\n\n",
		`data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}` + "\n\n",
		"data: [DONE]\n\n",
	}
	u := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyString(strings.Join(frames, ""))
	})
	p := newTestOpenAI(t, u, "5s")
	var r Reply
	if err := p.Chat(testCall(`{"model":"m","stream":true}`, true, 1), &r); err != nil {
		t.Fatal(err)
	}
	defer r.Stream.Close()
	var got []string
	for {
		f, err := r.Stream.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(f))
	}
	if want := frames[1:]; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("frames = %q, want %q", got, want)
	}
	r.Stream.Close() // twice is fine
}

func TestOpenAIStreamErrorHidesTheKey(t *testing.T) {
	u := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyString(`data: {"error":{"message":"invalid key ` + testKey2 + `"}}` + "\n\n")
	})
	p := newTestOpenAI(t, u, "5s")
	var r Reply
	if err := p.Chat(testCall(`{"model":"m","stream":true}`, true, 1), &r); err != nil {
		t.Fatal(err)
	}
	defer r.Stream.Close()
	_, err := r.Stream.Next()
	f := asTestFailure(t, err)
	if f.Class != Retryable || f.Msg != "upstream stream error: invalid key <secret>" {
		t.Errorf("failure = %+v", f)
	}
}

// streamOf runs an openAIStream over raw upstream bytes, fed one byte per
// read, the worst split.
func streamOf(in string) *openAIStream {
	return &openAIStream{sse: newSSEReader(&splitReader{data: []byte(in)})}
}

type timeoutErr struct{}

func (timeoutErr) Error() string { return "i/o timeout" }
func (timeoutErr) Timeout() bool { return true }

func TestOpenAIStreamLogic(t *testing.T) {
	chunk := `data: {"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}` + "\n\n"
	finish := `data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n"
	usage := `data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}` + "\n\n"
	nullUsage := `data: {"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":null}],"usage":null}` + "\n\n"
	tests := []struct {
		name   string
		in     string
		frames []string
		// end is io.EOF, ErrStreamCut, or a *Failure's message.
		end any
	}{
		{"done", chunk + "data: [DONE]\n\n", []string{chunk, "data: [DONE]\n\n"}, io.EOF},
		{"comments before the first event are dropped", ": ping\n\n: ping\n\n" + chunk + ": ping\n\ndata: [DONE]\n\n",
			[]string{chunk, ": ping\n\n", "data: [DONE]\n\n"}, io.EOF},
		{"finish without [DONE] gets one", chunk + finish, []string{chunk, finish, "data: [DONE]\n\n"}, io.EOF},
		{"finish without [DONE] or final blank line", chunk + strings.TrimSuffix(finish, "\n\n"), []string{chunk, finish, "data: [DONE]\n\n"}, io.EOF},
		{"finish and usage without [DONE] gets one", chunk + finish + usage, []string{chunk, finish, usage, "data: [DONE]\n\n"}, io.EOF},
		{"usage null is no end", chunk + nullUsage, []string{chunk, nullUsage}, ErrStreamCut},
		{"cut after a chunk", chunk + chunk, []string{chunk, chunk}, ErrStreamCut},
		{"empty", "", nil, ErrStreamCut},
		{"only comments", ": ping\n\n", nil, ErrStreamCut},
		{"headers then nothing", "\n\n", nil, ErrStreamCut},
		{"error first", `data: {"error":{"message":"overloaded","type":"server_error"}}` + "\n\n", nil, "upstream stream error: overloaded"},
		{"error after start is relayed", chunk + `data: {"error":{"message":"late"}}` + "\n\n", []string{chunk, `data: {"error":{"message":"late"}}` + "\n\n", "data: [DONE]\n\n"}, io.EOF},
		{"garbage first", "data: <html>\n\n", nil, "upstream sent a stream event that is not JSON"},
		{"garbage later", chunk + "data: {oops\n\n", []string{chunk}, "upstream sent a stream event that is not JSON"},
		{"content mentioning error is no error", `data: {"choices":[{"delta":{"content":"\"error\" is a word"}}]}` + "\n\n" + "data: [DONE]\n\n",
			[]string{`data: {"choices":[{"delta":{"content":"\"error\" is a word"}}]}` + "\n\n", "data: [DONE]\n\n"}, io.EOF},
		{"multi-line data", "data: {\"choices\":\ndata: []}\n\ndata: [DONE]\n\n", []string{"data: {\"choices\":\ndata: []}\n\n", "data: [DONE]\n\n"}, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := streamOf(tt.in)
			defer s.sse.release()
			var got []string
			var err error
			for range 100 {
				var f []byte
				if f, err = s.Next(); err != nil {
					break
				}
				got = append(got, string(f))
			}
			if strings.Join(got, "|") != strings.Join(tt.frames, "|") {
				t.Errorf("frames = %q, want %q", got, tt.frames)
			}
			switch want := tt.end.(type) {
			case string:
				f := asTestFailure(t, err)
				if f.Class != Retryable || f.Msg != want {
					t.Errorf("end = %+v, want retryable %q", f, want)
				}
			case error:
				if err != want {
					t.Errorf("end = %v, want %v", err, want)
				}
			}
		})
	}
}

func TestOpenAIStreamReadErrors(t *testing.T) {
	chunk := `data: {"choices":[]}` + "\n\n"
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"timeout", timeoutErr{}, "upstream stream timed out"},
		{"fasthttp timeout", fasthttp.ErrTimeout, "upstream stream timed out"},
		{"cut", io.ErrUnexpectedEOF, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &openAIStream{sse: newSSEReader(io.MultiReader(strings.NewReader(chunk), errReader{tt.err}))}
			defer s.sse.release()
			if f, err := s.Next(); err != nil || string(f) != chunk {
				t.Fatalf("first = %q, %v", f, err)
			}
			_, err := s.Next()
			if tt.want == "" {
				if err != ErrStreamCut {
					t.Fatalf("err = %v, want ErrStreamCut", err)
				}
				return
			}
			if f := asTestFailure(t, err); f.Class != Retryable || f.Msg != tt.want {
				t.Errorf("failure = %+v, want %q", f, tt.want)
			}
		})
	}
	t.Run("frame too large", func(t *testing.T) {
		s := &openAIStream{sse: newSSEReader(strings.NewReader("data: " + strings.Repeat("x", maxFrame) + "\n\n"))}
		defer s.sse.release()
		if f := asTestFailure(t, func() error { _, err := s.Next(); return err }()); f.Class != Retryable {
			t.Errorf("failure = %+v", f)
		}
	})
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestClassifyStatus(t *testing.T) {
	tests := []struct {
		status int
		want   Class
	}{
		{400, BadRequest}, {413, BadRequest}, {422, BadRequest},
		{401, Auth}, {403, Auth},
		{429, RateLimited},
		{404, Retryable}, {408, Retryable}, {409, Retryable},
		{500, Retryable}, {502, Retryable}, {503, Retryable}, {504, Retryable}, {529, Retryable},
	}
	for _, tt := range tests {
		if got := classifyStatus(tt.status); got != tt.want {
			t.Errorf("classifyStatus(%d) = %v, want %v", tt.status, got, tt.want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"120", 120 * time.Second},
		{"1.5", 1500 * time.Millisecond},
		{"-3", 0},
		{"soon", 0},
		{"NaN", 0},
		{"Inf", 0},
		{"+Inf", 0},
		{"1e300", 0},
		{"Sun, 01 Mar 2026 12:00:30 GMT", 30 * time.Second},
		{"Sun, 01 Mar 2026 11:59:00 GMT", 0},
		{"Sunday, 01-Mar-26 12:00:30 GMT", 30 * time.Second},
		{"Sun Mar  1 12:00:30 2026", 30 * time.Second},
		{"Sun, 01 Mar 2026 12:00:30", 0},
	}
	for _, tt := range tests {
		if got := retryAfter([]byte(tt.in), now); got != tt.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if got := retryAfter([]byte("1e9"), now); got != 1e9*time.Second {
		t.Errorf("retryAfter(1e9) = %v, want a long positive wait", got)
	}
}

func TestTransportFailure(t *testing.T) {
	for _, err := range []error{fasthttp.ErrTimeout, fasthttp.ErrDialTimeout} {
		if f := transportFailure(err); f.Class != Retryable || f.Msg != "upstream timed out" {
			t.Errorf("transportFailure(%v) = %+v", err, f)
		}
	}
	if f := transportFailure(fasthttp.ErrBodyTooLarge); f.Class != Retryable || f.Msg != "upstream response too large" {
		t.Errorf("transportFailure(body too large) = %+v", f)
	}
	if f := transportFailure(fasthttp.ErrConnectionClosed); f.Class != Retryable || !strings.HasPrefix(f.Msg, "upstream connection failed: ") {
		t.Errorf("transportFailure(closed) = %+v", f)
	}
}

func TestFailureError(t *testing.T) {
	if got := (&Failure{Status: 503, Msg: "overloaded"}).Error(); got != "503 overloaded" {
		t.Errorf("Error() = %q", got)
	}
	if got := (&Failure{Msg: "upstream timed out"}).Error(); got != "upstream timed out" {
		t.Errorf("Error() = %q", got)
	}
	for c, want := range []string{"retryable", "rate_limited", "auth", "bad_request"} {
		if got := Class(c).String(); got != want {
			t.Errorf("Class(%d) = %q, want %q", c, got, want)
		}
	}
}

func TestNewRejectsUnknownType(t *testing.T) {
	if _, err := New(&config.Provider{Name: "x", Type: "carrier-pigeon", Protocol: "carrier-pigeon"}, nil, nil); err == nil {
		t.Fatal("New accepted an unknown type")
	}
}

// FuzzTokensOf holds tokensOf's single walk to what gjson's Get reads of
// the same usage object: the first of each count, escaped keys included.
func FuzzTokensOf(f *testing.F) {
	for _, s := range []string{`{"prompt_tokens":9,"completion_tokens":7}`, `{"completion_tokens":"7","prompt_tokens":1e3,"prompt_tokens":2}`,
		`{"pr\u006fmpt_tokens":true,"x":{"prompt_tokens":5}}`, `[1]`, `{}`, `{"prompt_tokens":-1.5,"completion_tokens":null}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckJSON([]byte(s)) != nil {
			return
		}
		u := gjson.Parse(s)
		want := Usage{}
		if u.IsObject() {
			want = Usage{Prompt: int(u.Get("prompt_tokens").Int()), Completion: int(u.Get("completion_tokens").Int()), Known: true}
		}
		if got := usageOf(u); got != want {
			t.Fatalf("%s: got %+v, Get reads %+v", s, got, want)
		}
	})
}

// benchAnswer is an OpenAI chat completion as the API sends it today,
// usage details included.
var benchAnswer = []byte(`{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,` +
	`"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"The capital of France is Paris. ` +
	`It has been the country's political and cultural centre for centuries.","refusal":null,"annotations":[]},"logprobs":null,` +
	`"finish_reason":"stop"}],"usage":{"prompt_tokens":1117,"completion_tokens":46,"total_tokens":1163,"prompt_tokens_details":` +
	`{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,` +
	`"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_fc9f1d7035"}`)

func BenchmarkAnswerOf(b *testing.B) {
	b.SetBytes(int64(len(benchAnswer)))
	for b.Loop() {
		if found, u, _, err := answerOf(benchAnswer, "choices"); !found || err != nil || u.Prompt != 1117 {
			b.Fatal("misread")
		}
	}
}

// readsReader hands out one part per Read and counts the reads.
type readsReader struct {
	parts []string
	reads int
}

func (r *readsReader) Read(p []byte) (int, error) {
	r.reads++
	if len(r.parts) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.parts[0])
	r.parts[0] = r.parts[0][n:]
	if r.parts[0] == "" {
		r.parts = r.parts[1:]
	}
	return n, nil
}

// NextReady hands out the frames that came in the read Next made, drops
// what Next drops (a usage chunk the gateway asked for), and says
// ErrNotReady rather than read again; frames it returned stay valid.
func TestOpenAIStreamNextReadyNeverReads(t *testing.T) {
	chunk := func(s string) string {
		return `data: {"choices":[{"index":0,"delta":{"content":"` + s + `"}}]}` + "\n\n"
	}
	usage := `data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}` + "\n\n"
	body := &readsReader{parts: []string{chunk("a") + chunk("b") + usage + chunk("c")[:9], chunk("c")[9:], "data: [DONE]\n\n"}}
	s := &openAIStream{sse: newSSEReader(body), strip: true}
	defer s.sse.release()
	next := func(ready bool, want string) {
		t.Helper()
		reads := body.reads
		f := s.Next
		if ready {
			f = s.NextReady
		}
		got, err := f()
		if want == "" {
			if err != ErrNotReady || body.reads != reads {
				t.Fatalf("got %q, %v after %d reads, want ErrNotReady and no read", got, err, body.reads-reads)
			}
			return
		}
		if err != nil || string(got) != want {
			t.Fatalf("got %q, %v, want %q", got, err, want)
		}
		if ready && body.reads != reads {
			t.Fatalf("NextReady read the body")
		}
	}
	next(false, chunk("a"))
	a := s.sse.buf[:len(chunk("a"))]
	next(true, chunk("b"))
	next(true, "")
	if string(a) != chunk("a") {
		t.Fatalf("frame before NextReady changed: %q", a)
	}
	next(false, chunk("c"))
	next(true, "")
	next(false, "data: [DONE]\n\n")
	next(true, "")
	if u := s.Usage(); !u.Known || u.Prompt != 5 {
		t.Errorf("usage %+v, want the stripped chunk's", u)
	}
}
