package engine

import (
	"bytes"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"gateway/config"
)

// benchUpstream is a fake OpenAI server answering every chat request with
// a fixed completion, or 20 SSE chunks when the body asks to stream.
func benchUpstream(b *testing.B) *fasthttputil.InmemoryListener {
	ln := fasthttputil.NewInmemoryListener()
	reply := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how can I help?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16}}`)
	var stream []byte
	for i := range 20 {
		stream = append(stream, `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"tok`+strconv.Itoa(i)+` "},"finish_reason":null}]}`+"\n\n"...)
	}
	stream = append(stream, "data: [DONE]\n\n"...)
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if bytes.Contains(ctx.PostBody(), []byte(`"stream":true`)) {
			ctx.SetContentType("text/event-stream")
			ctx.SetBody(stream)
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBody(reply)
	}}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Shutdown() })
	return ln
}

// benchGateway serves an engine for cfgYAML in memory and returns a client
// connected to it.
func benchGateway(b *testing.B, cfgYAML string, up *fasthttputil.InmemoryListener) *fasthttp.HostClient {
	cfg, err := config.Parse([]byte(cfgYAML), config.Options{LookupEnv: func(k string) (string, bool) {
		return "key-" + k, true
	}})
	if err != nil {
		b.Fatal(err)
	}
	eng, err := New(cfg, Options{Dial: func(string) (net.Conn, error) { return up.Dial() }})
	if err != nil {
		b.Fatal(err)
	}
	ln := fasthttputil.NewInmemoryListener()
	srv := eng.Server()
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Shutdown(); eng.Close() })
	return &fasthttp.HostClient{Addr: "gateway", Dial: func(string) (net.Conn, error) { return ln.Dial() }}
}

const benchConfig = `
auth:
  keys:
    - {name: bench, key: "${GW}", rpm: 1000000000, metadata: {team: ml}}
providers:
  up:
    type: openai
    base_url: http://upstream.test/v1
    keys: ["${UP}"]
    models:
      m: {upstream: upstream-model}
models:
  auto: {targets: [up/m]}
routes:
  - name: tools
    match: 'key.metadata.team == "ml" && tools'
    model: auto
`

func benchChat(b *testing.B, cfgYAML, body string, stream bool) {
	benchClient(b, benchGateway(b, cfgYAML, benchUpstream(b)), body, stream)
}

// benchClient sends body to c's chat endpoint, one request after another.
func benchClient(b *testing.B, c *fasthttp.HostClient, body string, stream bool) {
	req := benchRequest(body)
	resp := fasthttp.AcquireResponse()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		benchDo(b, c, req, resp)
		if stream && !bytes.HasSuffix(resp.Body(), []byte("data: [DONE]\n\n")) {
			b.Fatalf("stream did not end with [DONE]: %q", resp.Body())
		}
	}
}

// benchDo sends req with c and fails the benchmark unless it is answered
// 200.
func benchDo(b *testing.B, c *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) {
	if err := c.Do(req, resp); err != nil {
		b.Fatal(err)
	}
	if resp.StatusCode() != 200 {
		b.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
	}
}

// benchRequest is a POST of body to the chat endpoint with the bench's
// gateway key.
func benchRequest(body string) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.SetRequestURI("http://gateway/v1/chat/completions")
	req.Header.SetMethod("POST")
	req.Header.Set("Authorization", "Bearer key-GW")
	req.SetBodyString(body)
	return req
}

// BenchmarkChat is one non-stream request through auth, the body scan, a
// route rule that matches, and the openai adapter.
func BenchmarkChat(b *testing.B) {
	benchChat(b, benchConfig, benchChatBody, false)
}

// BenchmarkChatFloor is BenchmarkChat's request through the floor of
// bench/ instead of the gateway: a bare fasthttp proxy that forwards the
// client's request to the same upstream and relays its answer. The ratio
// of the two is what the gateway adds, without the scheduling noise of a
// load test over real sockets.
func BenchmarkChatFloor(b *testing.B) {
	benchClient(b, benchFloor(b, benchUpstream(b)), benchChatBody, false)
}

// benchFloor serves bench/'s floor proxy in memory in front of the fake
// upstream up and returns a client connected to it.
func benchFloor(b *testing.B, up *fasthttputil.InmemoryListener) *fasthttp.HostClient {
	hc := &fasthttp.HostClient{Addr: "upstream", Dial: func(string) (net.Conn, error) { return up.Dial() },
		ReadBufferSize: 16 << 10, NoDefaultUserAgentHeader: true}
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{NoDefaultServerHeader: true, Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.Response.StreamBody = true
		if err := hc.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadGateway)
		}
	}}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Shutdown() })
	return &fasthttp.HostClient{Addr: "floor", Dial: func(string) (net.Conn, error) { return ln.Dial() }}
}

// benchClients is the number of clients of the parallel benchmarks, as
// the load test's highest concurrency.
const benchClients = 64

// BenchmarkChatParallel is BenchmarkChat with 64 clients at once, each
// sending its requests back to back: what every request writes that all
// share (counters, limiter windows, a target's state) costs more here,
// with every core busy, than one client after another shows.
func BenchmarkChatParallel(b *testing.B) {
	benchClientParallel(b, benchGateway(b, benchConfig, benchUpstream(b)), benchChatBody)
}

// BenchmarkChatFloorParallel is BenchmarkChatFloor with 64 clients at
// once, BenchmarkChatParallel's floor.
func BenchmarkChatFloorParallel(b *testing.B) {
	benchClientParallel(b, benchFloor(b, benchUpstream(b)), benchChatBody)
}

// benchClientParallel sends body to c's chat endpoint from benchClients
// goroutines at once (rounded to a multiple of GOMAXPROCS).
func benchClientParallel(b *testing.B, c *fasthttp.HostClient, body string) {
	b.SetParallelism(max(1, benchClients/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := benchRequest(body)
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		for pb.Next() {
			if err := c.Do(req, resp); err != nil {
				b.Error(err)
				return
			}
			if resp.StatusCode() != 200 {
				b.Errorf("status %d: %s", resp.StatusCode(), resp.Body())
				return
			}
		}
	})
}

// BenchmarkChatStream relays 20 SSE chunks.
func BenchmarkChatStream(b *testing.B) {
	benchChat(b, benchConfig, `{"model":"auto","stream":true,"messages":[{"role":"user","content":"Say hello."}]}`, true)
}

// BenchmarkChatSharedState is BenchmarkChat with upstream caps (rpm and
// tpm) on the target, on the memory backend and on Redis (a local
// redis-server): the difference is what the shared state adds to a
// request, three round trips here (the key's reservation, the target's,
// and settling the target's tokens).
func BenchmarkChatSharedState(b *testing.B) {
	capped := strings.Replace(benchConfig, "keys: [\"${UP}\"]", "keys: [\"${UP}\"]\n    limits: {rpm: 1000000000, tpm: 1000000000}", 1)
	body := `{"model":"auto","messages":[{"role":"user","content":"Say hello."}]}`
	b.Run("memory", func(b *testing.B) { benchChat(b, capped, body, false) })
	b.Run("redis", func(b *testing.B) {
		benchChat(b, redisStateYAML(testRedis(b), uniquePrefix("bench"), "local")+capped, body, false)
	})
}

// BenchmarkRoute is route matching alone for BenchmarkChat's request: the
// rule `key.metadata.team == "ml" && tools`, for a key of team ml (the rule
// hinges on tools) and for one of team ops (the key alone says no).
func BenchmarkRoute(b *testing.B) {
	cfgYAML := strings.Replace(benchConfig, "metadata: {team: ml}}", "metadata: {team: ml}}\n    - {name: ops, key: \"${OPS}\", metadata: {team: ops}}", 1)
	s := testEngine(b, cfgYAML, Options{}).snap.Load()
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/v1/chat/completions")
	ctx.Request.Header.SetMethod("POST")
	for _, name := range []string{"bench", "ops"} {
		b.Run(name, func(b *testing.B) {
			key := s.byName[name]
			x := &exchange{op: opChat}
			x.req.model, x.req.tools, x.req.messages = "auto", true, 2
			want := name == "bench"
			b.ReportAllocs()
			for b.Loop() {
				if _, r := s.route(&ctx, key, x); (r != nil) != want {
					b.Fatalf("route %v, want a match: %v", r, want)
				}
			}
		})
	}
}
