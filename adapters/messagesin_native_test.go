package adapters

import (
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// The native Messages path: an Anthropic target gets the client's body
// with only "model" patched and its answer is relayed as it came.

// messagesCall is a native Call for a Messages body, as the engine fills
// it from MessagesToChat's request.
func messagesCall(t *testing.T, body string, key int) *Call {
	t.Helper()
	_, req, f := MessagesToChat([]byte(body))
	if f != nil {
		t.Fatal(f)
	}
	return &Call{Body: []byte(body), ModelStart: req.ModelStart, ModelEnd: req.ModelEnd,
		Upstream: "claude-test", UpstreamJSON: []byte(`"claude-test"`), Stream: req.Stream, Key: key}
}

// newNativeAnthropic builds an anthropic provider without configured
// headers, whose upstream is u.
func newNativeAnthropic(t *testing.T, u *anthUpstream) Provider {
	t.Helper()
	yaml := `
providers:
  claude:
    type: anthropic
    base_url: http://up.test
    keys: ["${K1}", "${K2}"]
    models:
      m: {upstream: claude-test}
`
	var ln *fasthttputil.InmemoryListener
	if u != nil {
		ln = u.ln
	}
	return testProvider(t, yaml, "claude", "up.test:80", ln)
}

const nativeReply = `{"id":"msg_01","type":"message","role":"assistant","model":"claude-test","content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"text","text":"hi"}],` +
	`"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":5,"cache_read_input_tokens":20,"cache_creation_input_tokens":3,"output_tokens":2}}`

func TestAnthropicMessagesSendsClientBody(t *testing.T) {
	u := newAnthUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(nativeReply)
	})
	p := newNativeAnthropic(t, u)
	body := `{ "max_tokens":10, "model" : "auto", "thinking":{"type":"enabled","budget_tokens":5},"top_k":3,` +
		`"messages":[{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"d"}}]}] }`
	for key, want := range []string{testKey1, testKey2} {
		c := messagesCall(t, body, key)
		c.Beta = []byte("interleaved-thinking-2025-05-14")
		r := Reply{Body: []byte("old reply")}
		if err := p.(MessagesProvider).Messages(c, &r); err != nil {
			t.Fatal(err)
		}
		if string(r.Body) != nativeReply {
			t.Errorf("reply %s, want the upstream's as it is", r.Body)
		}
		if r.Usage != (Usage{Prompt: 28, Completion: 2, Known: true}) {
			t.Errorf("usage %+v", r.Usage)
		}
		got := u.requests()[key]
		if wantBody := strings.Replace(body, `"auto"`, `"claude-test"`, 1); string(got.body) != wantBody {
			t.Errorf("upstream got %s\nwant %s", got.body, wantBody)
		}
		if got.method != "POST" || got.uri != "/v1/messages" || got.contentType != "application/json" || got.auth != "" {
			t.Errorf("upstream got %s %s, Content-Type %q, Authorization %q", got.method, got.uri, got.contentType, got.auth)
		}
		keys, versions, betas := u.headers()
		if keys[key] != want || versions[key] != AnthropicVersion || betas[key] != "interleaved-thinking-2025-05-14" {
			t.Errorf("x-api-key %q (want key %d), anthropic-version %q, anthropic-beta %q", keys[key], key+1, versions[key], betas[key])
		}
	}
}

func TestAnthropicMessagesConfiguredHeadersWin(t *testing.T) {
	u := newAnthUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(nativeReply)
	})
	p := newTestAnthropic(t, u, "http://up.test", "")
	c := messagesCall(t, `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}]}`, 0)
	c.Beta = []byte("client-beta")
	var r Reply
	if err := p.(MessagesProvider).Messages(c, &r); err != nil {
		t.Fatal(err)
	}
	if _, _, betas := u.headers(); betas[0] != "tools-test" {
		t.Errorf("anthropic-beta %q, want the configured one", betas[0])
	}
	if got := u.requests()[0]; got.extra != "extra-value" {
		t.Errorf("X-Extra %q", got.extra)
	}
}

func TestAnthropicMessagesFailures(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		class  Class
		msg    string
	}{
		{"bad request", 400, `{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}`, BadRequest, "max_tokens: too big"},
		{"too long", 400, `{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 300000 tokens"}}`, ContextTooLong, "prompt is too long: 300000 tokens"},
		{"overloaded", 529, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, Retryable, "Overloaded"},
		{"rate limited", 429, `{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`, RateLimited, "slow down"},
		{"auth", 401, `{"type":"error","error":{"type":"authentication_error","message":"bad key ` + testKey1 + `"}}`, Auth, "upstream rejected the provider key"},
		{"not JSON", 200, `{"id":`, Retryable, "upstream sent a body that is not JSON"},
		{"not a message", 200, `{"type":"completion"}`, Retryable, "upstream answered 200 without a message"},
		{"error with a 200", 200, `{"type":"error","error":{"type":"api_error","message":"boom"}}`, Retryable, "upstream error: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newAnthUpstream(t, func(ctx *fasthttp.RequestCtx) {
				ctx.SetStatusCode(tt.status)
				ctx.SetBodyString(tt.body)
			})
			var r Reply
			err := newNativeAnthropic(t, u).(MessagesProvider).Messages(messagesCall(t, `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}]}`, 0), &r)
			f := asTestFailure(t, err)
			if f.Class != tt.class || f.Msg != tt.msg {
				t.Errorf("failure %v %q, want %v %q", f.Class, f.Msg, tt.class, tt.msg)
			}
			if r.Body != nil || r.Stream != nil {
				t.Errorf("a failure left a reply: %s", r.Body)
			}
		})
	}
}

func TestAnthropicMessagesRedacts(t *testing.T) {
	u := newAnthUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString(`{"type":"message","content":[{"type":"text","text":"your key is ` + testKey2 + `"}]}`)
	})
	var r Reply
	if err := newNativeAnthropic(t, u).(MessagesProvider).Messages(messagesCall(t, `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}]}`, 0), &r); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(r.Body), "SECOND") || !strings.Contains(string(r.Body), "<secret>") {
		t.Errorf("reply %s", r.Body)
	}
}

func TestAnthropicMessagesStreamRedacts(t *testing.T) {
	leak := `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"key ` + testKey1 + `"}}`
	u := anthStreamServer(t, anthEvents("message_start", nativeStart, "content_block_start", nativeBlock, "content_block_delta", leak,
		"content_block_stop", nativeEnd, "message_delta", nativeDelta, "message_stop", nativeStop), false)
	var r Reply
	c := messagesCall(t, `{"model":"m","max_tokens":1,"stream":true,"messages":[{"role":"user","content":"x"}]}`, 0)
	if err := newNativeAnthropic(t, u).(MessagesProvider).Messages(c, &r); err != nil {
		t.Fatal(err)
	}
	defer r.Stream.Close()
	frames, end := anthDrain(t, r.Stream)
	if all := strings.Join(frames, ""); end != "EOF" || strings.Contains(all, "FIRST") || !strings.Contains(all, `"text":"key <secret>"`) {
		t.Errorf("client read %q, end %q", all, end)
	}
}

func TestServesMessages(t *testing.T) {
	anth := newNativeAnthropic(t, nil)
	oai := newTestOpenAI(t, nil, "1s")
	if !Serves[MessagesProvider](anth) || Serves[MessagesProvider](oai) {
		t.Errorf("Serves[MessagesProvider]: anthropic %v, openai %v", Serves[MessagesProvider](anth), Serves[MessagesProvider](oai))
	}
	if !Serves[MessagesProvider](anth.(redacting).p) {
		t.Error("an unwrapped anthropic adapter does not serve Messages")
	}
	var r Reply
	f := asTestFailure(t, oai.(MessagesProvider).Messages(messagesCall(t, `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}]}`, 0), &r))
	if f.Class != Unsupported {
		t.Errorf("openai Messages: %v", f)
	}
}

const (
	nativeStart = `{"type":"message_start","message":{"id":"msg_n","type":"message","role":"assistant","content":[],"model":"claude-test","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"cache_read_input_tokens":4,"output_tokens":1}}}`
	nativeBlock = `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`
	nativeText  = `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}`
	nativeEnd   = `{"type":"content_block_stop","index":0}`
	nativeDelta = `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":7}}`
	nativeStop  = `{"type":"message_stop"}`
	nativePing  = `{"type": "ping"}`
	nativeOver  = `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`
)

func TestAnthropicMessagesStream(t *testing.T) {
	whole := anthEvents("message_start", nativeStart, "ping", nativePing, "content_block_start", nativeBlock,
		"content_block_delta", nativeText, "content_block_stop", nativeEnd, "message_delta", nativeDelta, "message_stop", nativeStop)
	tests := []struct {
		name, in string
		// out is what the client reads; end how the stream ends.
		out, end string
		usage    Usage
	}{
		{"relayed as it is", whole, whole, "EOF", Usage{Prompt: 14, Completion: 7, Known: true}},
		{"overloaded after message_start fails over", anthEvents("message_start", nativeStart, "ping", nativePing, "error", nativeOver),
			"", "retryable: upstream stream error (overloaded_error): Overloaded", Usage{Prompt: 14, Completion: 1, Known: true}},
		{"cut after message_start fails over", anthEvents("message_start", nativeStart), "", "cut", Usage{Prompt: 14, Completion: 1, Known: true}},
		{"error mid-stream ends it", anthEvents("message_start", nativeStart, "content_block_start", nativeBlock, "error", nativeOver),
			anthEvents("message_start", nativeStart, "content_block_start", nativeBlock, "error", nativeOver),
			"retryable: upstream stream error (overloaded_error): Overloaded", Usage{Prompt: 14, Completion: 1, Known: true}},
		{"cut mid-stream", anthEvents("message_start", nativeStart, "content_block_start", nativeBlock),
			anthEvents("message_start", nativeStart, "content_block_start", nativeBlock) +
				"event: error\ndata: " + `{"type":"error","error":{"type":"api_error","message":"upstream stream ended before it was complete"}}` + "\n\n",
			"cut", Usage{Prompt: 14, Completion: 1, Known: true}},
		{"garbage", anthEvents("message_start", "{"), "", "retryable: upstream sent a stream event that is not JSON", Usage{}},
		{"comments", ": hi\n\n" + whole[:len(whole)-len(anthEvents("message_stop", nativeStop))] + ": later\n\n" + anthEvents("message_stop", nativeStop),
			whole[:len(whole)-len(anthEvents("message_stop", nativeStop))] + ": later\n\n" + anthEvents("message_stop", nativeStop),
			"EOF", Usage{Prompt: 14, Completion: 7, Known: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := anthStreamServer(t, tt.in, false)
			var r Reply
			c := messagesCall(t, `{"model":"m","max_tokens":1,"stream":true,"messages":[{"role":"user","content":"x"}]}`, 0)
			if err := newNativeAnthropic(t, u).(MessagesProvider).Messages(c, &r); err != nil {
				t.Fatal(err)
			}
			defer r.Stream.Close()
			frames, end := anthDrain(t, r.Stream)
			if got := strings.Join(frames, ""); got != tt.out || end != tt.end {
				t.Errorf("client read %q, end %q\nwant        %q, end %q", got, end, tt.out, tt.end)
			}
			if r.Stream.Usage() != tt.usage {
				t.Errorf("usage %+v, want %+v", r.Stream.Usage(), tt.usage)
			}
			if got := u.requests()[0].body; !strings.Contains(string(got), `"model":"claude-test","max_tokens":1,"stream":true`) {
				t.Errorf("upstream got %s", got)
			}
		})
	}
}

func TestAnthropicMessagesStreamStalls(t *testing.T) {
	u := anthStreamServer(t, anthEvents("message_start", nativeStart, "content_block_start", nativeBlock), true)
	p := testProvider(t, `
providers:
  claude:
    type: anthropic
    base_url: http://up.test
    keys: ["${K1}"]
    idle_timeout: 50ms
    models:
      m: {upstream: claude-test}
`, "claude", "up.test:80", u.ln)
	var r Reply
	if err := p.(MessagesProvider).Messages(messagesCall(t, `{"model":"m","max_tokens":1,"stream":true,"messages":[{"role":"user","content":"x"}]}`, 0), &r); err != nil {
		t.Fatal(err)
	}
	defer r.Stream.Close()
	start := time.Now()
	frames, end := anthDrain(t, r.Stream)
	if len(frames) != 3 || !strings.Contains(frames[2], "idle_timeout") || end != "retryable: upstream stream went silent past idle_timeout" {
		t.Errorf("frames %q, end %q", frames, end)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("the stall took %v to end", time.Since(start))
	}
}
