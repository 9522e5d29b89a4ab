package engine

import (
	"net"
	"testing"

	"github.com/valyala/fasthttp"

	"gateway/adapters"
)

// benchReply is the upstream answer of benchUpstream, as an adapter hands
// it over.
const benchReply = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how can I help?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16}}`

// BenchmarkServe is the engine's own work for BenchmarkChat's request,
// without the sockets and without the upstream exchange: the request id,
// the key's check, the body scan, the key's limits, the route, the runner
// and the bookkeeping, around an upstream call that answers at once.
func BenchmarkServe(b *testing.B) {
	e := testEngine(b, benchConfig, Options{Dial: func(string) (net.Conn, error) { return nil, net.ErrClosed }})
	s := e.snap.Load()
	op := *opChat
	op.call = func(_ *target, _ *adapters.Call, r *adapters.Reply) error {
		r.Body = append(r.Body[:0], benchReply...)
		r.Usage = adapters.Usage{Known: true, Prompt: 9, Completion: 7}
		return nil
	}
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/v1/chat/completions")
	ctx.Request.Header.SetMethod(fasthttp.MethodPost)
	ctx.Request.Header.Set("Authorization", "Bearer key-GW")
	ctx.Request.SetBodyString(benchChatBody)
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		e.setRequestID(&ctx)
		key, ok := admit(&ctx, s, fasthttp.MethodPost)
		if !ok {
			b.Fatalf("refused: %s", ctx.Response.Body())
		}
		e.serve(&ctx, s, key, &op, ctx.PostBody(), nil)
		if ctx.Response.StatusCode() != fasthttp.StatusOK {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

// BenchmarkAuthenticate finds BenchmarkChat's gateway key from its
// Authorization header.
func BenchmarkAuthenticate(b *testing.B) {
	_, s, want, _ := bookkeepingEngine(b)
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("Authorization", "Bearer key-GW")
	b.ReportAllocs()
	for b.Loop() {
		if key, err := s.authenticate(&ctx); key != want || err != nil {
			b.Fatalf("key %v, error %v", key, err)
		}
	}
}

// BenchmarkResponseHeaders sets the headers the gateway adds to a chat
// answer: the request id, the key's rate limit, the route and the target.
func BenchmarkResponseHeaders(b *testing.B) {
	e, _, key, t := bookkeepingEngine(b)
	var ctx fasthttp.RequestCtx
	q := quota{remaining: 999999999, reset: nanotime()}
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Reset()
		e.setRequestID(&ctx)
		key.quotaHeaders(&ctx, q)
		ctx.Response.Header.SetCanonical(hdrRoute, []byte("tools"))
		ctx.Response.Header.SetCanonical(hdrRoutedVia, t.via)
	}
}
