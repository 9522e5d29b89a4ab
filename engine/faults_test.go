package engine

import (
	"bufio"
	"bytes"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/config"
)

// The fault-injection suite: upstreams and clients that behave like real
// ones at their worst, over real loopback TCP where connections matter.

// tcpServe serves srv on a loopback port and returns its address.
func tcpServe(t *testing.T, srv *fasthttp.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// smallSendBuffers gives every accepted connection a small send buffer, so
// a client that does not read blocks the writer after a few KiB.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(16 << 10)
	}
	return c, err
}

// tcpGateway is an engine for yaml, served on a loopback port and dialing
// its upstreams over TCP.
type tcpGateway struct {
	t      *testing.T
	srv    *fasthttp.Server
	addr   string
	client *fasthttp.HostClient
}

func newTCPGateway(t *testing.T, yaml string) *tcpGateway {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), config.Options{LookupEnv: func(k string) (string, bool) {
		v, ok := fakeEnv[k]
		return v, ok
	}})
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	eng, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &tcpGateway{t: t, srv: eng.Server(), addr: ln.Addr().String()}
	g.srv.Logger = fakeQuiet{}
	done := make(chan struct{})
	go func() { _ = g.srv.Serve(smallSendBuffers{ln}); close(done) }()
	g.client = &fasthttp.HostClient{Addr: g.addr}
	t.Cleanup(func() {
		g.client.CloseIdleConnections()
		_ = ln.Close()
		<-done
		eng.Close()
	})
	return g
}

func (g *tcpGateway) do(method, path, body string) (int, []byte) {
	g.t.Helper()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://" + g.addr + path)
	req.Header.SetMethod(method)
	req.SetBodyString(body)
	resp := &fasthttp.Response{}
	if err := g.client.DoTimeout(req, resp, fakeDeadline); err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode(), bytes.Clone(resp.Body())
}

// waitFor polls cond until it holds, failing with what after fakeDeadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(fakeDeadline); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("still waiting, after %v, for %s", fakeDeadline, what)
		}
	}
}

// TestStaleKeepAliveRetried: an upstream closes idle connections sooner
// than the gateway drops them (here 200ms against the default 4s; Node,
// uvicorn and Ollama close after about 5s), and a request comes after
// each close. Each one meets a closed connection, is sent again on a
// fresh one, and succeeds; the key is never cooled, the breaker stays
// closed.
func TestStaleKeepAliveRetried(t *testing.T) {
	var served atomic.Int32
	up := tcpServe(t, &fasthttp.Server{IdleTimeout: 200 * time.Millisecond, Logger: fakeQuiet{}, Handler: func(ctx *fasthttp.RequestCtx) {
		served.Add(1)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(fakeCompletion("up", "hi"))
	}})
	g := newTCPGateway(t, "providers:\n  up: {type: openai, base_url: http://"+up+"/v1, models: {m: {}}}\n")
	const n = 5
	for i := range n {
		if i > 0 {
			// Longer than the upstream keeps an idle connection: this
			// gap is the fault, not a wait for something.
			time.Sleep(300 * time.Millisecond)
		}
		if status, body := g.do("POST", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`); status != 200 {
			t.Fatalf("request %d: status %d: %s", i+1, status, body)
		}
	}
	if got := served.Load(); got != n {
		t.Errorf("upstream served %d requests, want %d", got, n)
	}
	_, stats := g.do("GET", "/api/stats", "")
	m := gjson.GetBytes(stats, "providers.up.models.m")
	if m.Get("breaker").Str != "closed" || m.Get("keys.0.state").Str != "healthy" || m.Get("errors").Exists() {
		t.Errorf("target after the stale connections = %s, want breaker closed, key healthy, no errors", m.Raw)
	}
}

// TestIdleUpstreamConnectionsDropped: an idle upstream connection is
// closed by the gateway after idle_conn_timeout, before the server's own
// keep-alive would.
func TestIdleUpstreamConnectionsDropped(t *testing.T) {
	closed := make(chan struct{}, 1)
	up := tcpServe(t, &fasthttp.Server{IdleTimeout: time.Minute, Logger: fakeQuiet{},
		ConnState: func(_ net.Conn, st fasthttp.ConnState) {
			if st == fasthttp.StateClosed {
				select {
				case closed <- struct{}{}:
				default:
				}
			}
		},
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("application/json")
			ctx.SetBodyString(fakeCompletion("up", "hi"))
		}})
	g := newTCPGateway(t, "providers:\n  up: {type: openai, base_url: http://"+up+"/v1, idle_conn_timeout: 100ms, models: {m: {}}}\n")
	if status, body := g.do("POST", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`); status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	select {
	case <-closed:
	case <-time.After(fakeDeadline):
		t.Fatalf("the idle upstream connection was still open after %v; idle_conn_timeout is 100ms", fakeDeadline)
	}
}

// slowReader opens a connection to addr that takes almost nothing in:
// its receive buffer is tiny and it never reads.
func slowReader(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		_ = rc.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return err
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// endless streams SSE chunks until a write fails, and sends that error
// on released.
func endless(released chan<- error) func(*fasthttp.RequestCtx) {
	return func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for i := 0; ; i++ {
				_, _ = w.WriteString(fakeChunk(i))
				if err := w.Flush(); err != nil {
					released <- err
					return
				}
			}
		})
	}
}

// rawPost is a POST of body to path as a client writes it.
func rawPost(path, body string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// TestSlowReaderCut: a client that stops reading a large answer or an
// endless stream, chat or passthrough, is cut once a write has made no
// progress for client_write_timeout; a stream's upstream is released with
// it.
func TestSlowReaderCut(t *testing.T) {
	large := fakeCompletion("up", strings.Repeat("x", 4<<20))
	for _, tt := range []struct {
		name, path, body string
		stream           bool
	}{
		{"large answer", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, false},
		{"endless stream", "/v1/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`, true},
		{"endless passthrough", "/proxy/up/chat/completions", `{"model":"up","stream":true}`, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var hits atomic.Int32
			released := make(chan error, 1)
			stream := endless(released)
			up := tcpServe(t, &fasthttp.Server{Logger: fakeQuiet{}, Handler: func(ctx *fasthttp.RequestCtx) {
				hits.Add(1)
				if tt.stream {
					stream(ctx)
					return
				}
				ctx.SetContentType("application/json")
				ctx.SetBodyString(large)
			}})
			g := newTCPGateway(t, "client_write_timeout: 300ms\nproviders:\n  up: {type: openai, base_url: http://"+up+"/v1, stream_usage: false, models: {m: {}}}\n")
			c := slowReader(t, g.addr)
			if _, err := c.Write([]byte(rawPost(tt.path, tt.body))); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the request to reach the upstream", func() bool { return hits.Load() == 1 })
			waitFor(t, "the gateway to give up on the client", func() bool { return g.srv.GetOpenConnectionsCount() == 0 })
			if tt.stream {
				select {
				case <-released:
				case <-time.After(fakeDeadline):
					t.Fatal("the upstream stream was still being read after the client was cut")
				}
			}
		})
	}
}

// TestReadingClientNotCut: a stream that lasts several times
// client_write_timeout reaches a client that keeps reading whole.
func TestReadingClientNotCut(t *testing.T) {
	const frames = 40
	up := tcpServe(t, &fasthttp.Server{Logger: fakeQuiet{}, Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for i := range frames {
				// The pace is the scenario: 40 frames over 1s, against a
				// write timeout of 300ms.
				time.Sleep(25 * time.Millisecond)
				_, _ = w.WriteString(fakeChunk(i))
				if w.Flush() != nil {
					return
				}
			}
			_, _ = w.WriteString(fakeFinish + fakeDone)
		})
	}})
	g := newTCPGateway(t, "client_write_timeout: 300ms\nproviders:\n  up: {type: openai, base_url: http://"+up+"/v1, stream_usage: false, models: {m: {}}}\n")
	for _, path := range []string{"/v1/chat/completions", "/proxy/up/chat/completions"} {
		status, body := g.do("POST", path, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
		if status != 200 || !strings.Contains(string(body), fakeChunk(frames-1)) || !strings.HasSuffix(string(body), fakeDone) {
			t.Errorf("%s: status %d, body ends %q; want the whole stream", path, status, body[max(0, len(body)-200):])
		}
	}
}

// oversized answers with a valid answer of size bytes and more: a body
// with its length, or, when the request says "chunked", a chunked one; a
// stream of one such event, or, when the request says "chunked", a
// failure with such a body.
func oversized(size int) func(*fasthttp.RequestCtx, int) {
	content := strings.Repeat("x", size)
	whole := []byte(fakeCompletion("up", content))
	event := []byte(`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"up","choices":[{"index":0,"delta":{"content":"` +
		content + `"},"finish_reason":null}]}` + "\n\n" + fakeFinish + fakeDone)
	return func(ctx *fasthttp.RequestCtx, _ int) {
		stream := bytes.Contains(ctx.PostBody(), []byte(`"stream":true`))
		chunked := bytes.Contains(ctx.PostBody(), []byte(`"chunked"`))
		ctx.SetContentType("application/json")
		body := whole
		switch {
		case !stream && !chunked:
			ctx.Response.SetBodyRaw(whole)
			return
		case stream && chunked:
			ctx.SetStatusCode(fasthttp.StatusInternalServerError)
		case stream:
			ctx.SetContentType("text/event-stream")
			body = event
		}
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for rest := body; len(rest) > 0; {
				n := min(len(rest), 64<<10)
				if _, err := w.Write(rest[:n]); err != nil || w.Flush() != nil {
					return
				}
				rest = rest[n:]
			}
		})
	}
}

// TestOversizedUpstreamBodies: an answer over max_response_body, whole or
// one SSE line, fails over to the next candidate.
func TestOversizedUpstreamBodies(t *testing.T) {
	n := newFakeNet(t)
	p1 := n.upstream("p1.test", oversized(2<<20))
	n.upstream("p2.test", fakeOK("from p2"))
	g := newFakeGateway(t, `
providers:
  p1: {type: openai, base_url: http://p1.test/v1, max_response_body: 1MiB, stream_usage: false, models: {m: {}}}
  p2: {type: openai, base_url: http://p2.test/v1, stream_usage: false, models: {m: {}}}
models:
  auto: {targets: [p1/m, p2/m]}
failover: {cooldown: 1ns}
`, n)
	for _, tt := range []struct{ name, body string }{
		{"body with its length", `{"model":"auto","messages":[{"role":"user","content":"hi"}]}`},
		{"chunked body", `{"model":"auto","messages":[{"role":"user","content":"chunked"}]}`},
		{"stream line", `{"model":"auto","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"stream error body", `{"model":"auto","stream":true,"messages":[{"role":"user","content":"chunked"}]}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hits := p1.hits()
			r := g.chat(tt.body)
			if r.status != 200 || r.get("X-Routed-Via") != "p2/m" || r.get("X-Fallback-Attempts") != "1" || p1.hits() != hits+1 {
				t.Errorf("status %d via %q after %q fallbacks (p1 hits %d); want 200 from p2 after p1 failed: %s",
					r.status, r.get("X-Routed-Via"), r.get("X-Fallback-Attempts"), p1.hits()-hits, r.body)
			}
		})
	}
}

// TestUpstreamBurstLeavesNoHeap: after a burst of large answers, some over
// the limit (4MiB against 1MiB) and some served (1.5MiB, under the default
// 8MiB), the heap comes back near where it was: no pool keeps the large
// buffers. Over TCP, as in-memory connections pool buffers of their own.
func TestUpstreamBurstLeavesNoHeap(t *testing.T) {
	over := oversized(4 << 20)
	p1 := tcpServe(t, &fasthttp.Server{Logger: fakeQuiet{}, Handler: func(ctx *fasthttp.RequestCtx) { over(ctx, 0) }})
	large := strings.Repeat("y", 3<<19)
	served := []byte(fakeCompletion("up", large))
	streamed := []byte(`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"up","choices":[{"index":0,"delta":{"content":"` +
		large + `"},"finish_reason":null}]}` + "\n\n" + fakeFinish + fakeDone)
	p2 := tcpServe(t, &fasthttp.Server{Logger: fakeQuiet{}, Handler: func(ctx *fasthttp.RequestCtx) {
		switch {
		case bytes.Contains(ctx.PostBody(), []byte("warm-up")):
			ctx.SetContentType("application/json")
			ctx.SetBodyString(fakeCompletion("up", "ready"))
		case bytes.Contains(ctx.PostBody(), []byte(`"stream":true`)):
			ctx.SetContentType("text/event-stream")
			ctx.Response.SetBodyRaw(streamed)
		default:
			ctx.SetContentType("application/json")
			ctx.Response.SetBodyRaw(served)
		}
	}})
	g := newTCPGateway(t, `
providers:
  p1: {type: openai, base_url: http://`+p1+`/v1, max_response_body: 1MiB, stream_usage: false, models: {m: {}}}
  p2: {type: openai, base_url: http://`+p2+`/v1, stream_usage: false, models: {m: {}}}
models:
  auto: {targets: [p1/m, p2/m]}
failover: {cooldown: 1ns}
circuit_breaker: {failures: 1000}
`)
	bodies := []string{
		`{"model":"auto","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"auto","messages":[{"role":"user","content":"chunked"}]}`,
		`{"model":"auto","stream":true,"messages":[{"role":"user","content":"chunked"}]}`,
	}
	chat := func(body string) string {
		status, answer := g.do("POST", "/v1/chat/completions", body)
		if status != 200 || len(answer) < len(large) || !bytes.HasSuffix(answer, []byte(fakeDone)) && !gjson.ValidBytes(answer) {
			return "status " + strconv.Itoa(status) + ": " + string(answer[:min(len(answer), 300)])
		}
		return ""
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	if status, answer := g.do("POST", "/v1/chat/completions", `{"model":"auto","messages":[{"role":"user","content":"warm-up"}]}`); status != 200 {
		t.Fatalf("warm-up: status %d: %s", status, answer)
	}
	before := heap()
	var wg sync.WaitGroup
	fails := make(chan string, 16)
	for i := range 16 {
		wg.Go(func() {
			if f := chat(bodies[i%len(bodies)]); f != "" {
				fails <- f
			}
		})
	}
	wg.Wait()
	close(fails)
	for f := range fails {
		t.Errorf("a request of the burst: %s; want p2's answer", f)
	}
	// The burst moved about 16 * (1 + 1.5) MiB through the gateway, and
	// the pools would keep most of it; the slack is for the runtime's own.
	if after := heap(); after > before+8<<20 {
		t.Errorf("heap in use %d KiB after the burst, %d KiB before: large buffers are kept", after>>10, before>>10)
	}
}
