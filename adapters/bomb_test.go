package adapters

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// FuzzUpstreamBody sends whatever an upstream might answer, non-stream
// and as one stream event, through every protocol's adapter: nothing
// panics or overflows the stack, and nothing nested past MaxJSONDepth is
// taken as an answer.
func FuzzUpstreamBody(f *testing.F) {
	for _, s := range []string{
		`{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}`,
		`{"type":"message","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}`,
		`{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}]}`,
		`{"message":{"content":[{"type":"text","text":"hi"}]},"finish_reason":"COMPLETE"}`,
		strings.Repeat(`{"a":`, 100000),
		strings.Repeat("[", 300) + strings.Repeat("]", 300),
		`{"choices":[{"message":{"content":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}}]}`,
	} {
		f.Add([]byte(s))
	}
	var answer atomic.Pointer[[]byte]
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		b := *answer.Load()
		ctx.SetContentType("application/json")
		if bytes.Contains(ctx.PostBody(), []byte(`"stream":true`)) || bytes.Contains(ctx.RequestURI(), []byte("stream")) {
			ctx.SetContentType("text/event-stream")
			ctx.SetBodyString("data: " + string(b) + "\n\n")
			return
		}
		ctx.SetBody(b)
	}}
	go func() { _ = srv.Serve(ln) }()
	f.Cleanup(func() { _ = ln.Close() })
	var provs []Provider
	for _, p := range []string{"openai", "anthropic", "gemini", "cohere"} {
		yaml := "providers:\n  x:\n    type: " + p + "\n    base_url: http://up.test/v1\n    keys: [\"${K1}\"]\n    models:\n      m: {upstream: m}\n"
		provs = append(provs, testProvider(f, yaml, "x", "up.test:80", ln))
	}
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	f.Fuzz(func(t *testing.T, b []byte) {
		answer.Store(&b)
		for _, stream := range []bool{false, true} {
			for _, p := range provs {
				c := &Call{Body: body, ModelStart: 9, ModelEnd: 12, Upstream: "m", UpstreamJSON: []byte(`"m"`), Stream: stream}
				var r Reply
				err := p.Chat(c, &r)
				if err == nil && r.Stream != nil {
					for range 4 {
						if _, err = r.Stream.Next(); err != nil {
							break
						}
					}
					r.Stream.Close()
				}
				if err == nil && !stream && CheckJSON(b) != nil {
					t.Fatalf("%T took %.60q as an answer", p, b)
				}
			}
		}
	})
}
