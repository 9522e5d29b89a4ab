package engine

import (
	"bytes"
	"net"
	"sync/atomic"
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
	go func() { _ = g.srv.Serve(ln); close(done) }()
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
