package engine

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"gateway/config"
)

// fakeDeadline bounds every client call of the chat tests: generous, so a
// busy machine running -race does not flake, yet a hang fails the test.
const fakeDeadline = 10 * time.Second

// fakeEnv is the environment the fake configs' ${...} references resolve
// in. Provider keys look like real ones so a leak is easy to spot.
var fakeEnv = map[string]string{
	"P1_KEY":   "sk-p1-SECRET-1111aaaa",
	"P1_KEY_B": "sk-p1-SECRET-2222bbbb",
	"P2_KEY":   "sk-p2-SECRET-3333cccc",
	"P3_KEY":   "sk-p3-SECRET-4444dddd",
	"P4_KEY":   "sk-p4-SECRET-5555eeee",
	"GW_ML":    "gw-team-ml-0001",
	"GW_WEB":   "gw-team-web-0002",
	"GW_LIM":   "gw-limited-0003",
	"GW_OFF":   "gw-disabled-0004",
	"GW_OLD":   "gw-expired-0005",
}

// fakeProviderKeys lists every provider key value in fakeEnv.
func fakeProviderKeys() []string {
	var ks []string
	for k, v := range fakeEnv {
		if strings.HasPrefix(k, "P") {
			ks = append(ks, v)
		}
	}
	return ks
}

// fakeSeen is what a fake upstream recorded of one request.
type fakeSeen struct {
	uri    string
	auth   string
	header string // every request header, as sent
	body   []byte
}

// fakeUpstream is an in-process OpenAI-compatible server at one host.
type fakeUpstream struct {
	host string
	ln   *fasthttputil.InmemoryListener
	// release unblocks handlers that hang until the test ends.
	release chan struct{}

	mu     sync.Mutex
	seen   []fakeSeen
	handle func(ctx *fasthttp.RequestCtx, hit int)
}

// hits counts the requests the upstream received.
func (u *fakeUpstream) hits() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

// requests returns what the upstream received, in order.
func (u *fakeUpstream) requests() []fakeSeen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]fakeSeen(nil), u.seen...)
}

// set replaces the upstream's behaviour for the requests to come.
func (u *fakeUpstream) set(h func(ctx *fasthttp.RequestCtx, hit int)) {
	u.mu.Lock()
	u.handle = h
	u.mu.Unlock()
}

func (u *fakeUpstream) serve(ctx *fasthttp.RequestCtx) {
	u.mu.Lock()
	u.seen = append(u.seen, fakeSeen{
		uri:    string(ctx.RequestURI()),
		auth:   string(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)),
		header: ctx.Request.Header.String(),
		body:   bytes.Clone(ctx.PostBody()),
	})
	hit, h := len(u.seen), u.handle
	u.mu.Unlock()
	h(ctx, hit)
}

// fakeQuiet drops fasthttp's own logs of connections cut on purpose.
type fakeQuiet struct{}

func (fakeQuiet) Printf(string, ...any) {}

// fakeNet is the in-memory network between the gateway and its fakes: it
// dials a fake by the host of its base_url, and refuses unknown hosts.
type fakeNet struct {
	t     *testing.T
	mu    sync.Mutex
	ups   map[string]*fakeUpstream
	dials map[string]int
}

func newFakeNet(t *testing.T) *fakeNet {
	return &fakeNet{t: t, ups: map[string]*fakeUpstream{}, dials: map[string]int{}}
}

// upstream starts a fake at host (e.g. "p1.test") answering with h.
func (n *fakeNet) upstream(host string, h func(ctx *fasthttp.RequestCtx, hit int)) *fakeUpstream {
	u := &fakeUpstream{host: host, ln: fasthttputil.NewInmemoryListener(), release: make(chan struct{}), handle: h}
	srv := &fasthttp.Server{Handler: u.serve, Logger: fakeQuiet{}, NoDefaultServerHeader: true}
	done := make(chan struct{})
	go func() { _ = srv.Serve(u.ln); close(done) }()
	n.t.Cleanup(func() {
		close(u.release)
		_ = u.ln.Close()
		<-done
	})
	n.mu.Lock()
	n.ups[host] = u
	n.mu.Unlock()
	return u
}

// dialsTo counts dial attempts to host, refused ones included.
func (n *fakeNet) dialsTo(host string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dials[host]
}

func (n *fakeNet) dial(addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	n.mu.Lock()
	n.dials[host]++
	u := n.ups[host]
	n.mu.Unlock()
	if u == nil {
		return nil, errors.New("dial tcp " + addr + ": connect: connection refused")
	}
	return u.ln.Dial()
}

// fakeLog is a goroutine-safe log sink.
type fakeLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *fakeLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *fakeLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// fakeVersion is the binary version fake gateways report.
const fakeVersion = "v0.0.0-test"

// fakeGateway is an engine served over an in-memory listener, with a
// client that speaks real HTTP to it.
type fakeGateway struct {
	t      *testing.T
	eng    *Engine
	cfg    *config.Config
	client *fasthttp.HostClient
	ln     *fasthttputil.InmemoryListener
	log    *fakeLog
	// key is the gateway key chat and get send; "" sends none.
	key string
}

func newFakeGateway(t *testing.T, yaml string, n *fakeNet) *fakeGateway {
	t.Helper()
	return newFakeGatewayWith(t, yaml, n, Options{})
}

// newFakeGatewayWith is newFakeGateway with more options: its logger,
// dialer and version are the fake ones.
func newFakeGatewayWith(t *testing.T, yaml string, n *fakeNet, opt Options) *fakeGateway {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), config.Options{LookupEnv: func(k string) (string, bool) {
		v, ok := fakeEnv[k]
		return v, ok
	}})
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	g := &fakeGateway{t: t, cfg: cfg, log: &fakeLog{}}
	if len(cfg.Auth.Keys) > 0 {
		g.key = fakeEnv["GW_ML"]
	}
	logger := slog.New(slog.NewTextHandler(g.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opt.Logger, opt.Dial, opt.Version = logger, n.dial, fakeVersion
	g.eng, err = New(cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	ln := fasthttputil.NewInmemoryListener()
	srv := g.eng.Server()
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	g.ln = ln
	g.client = &fasthttp.HostClient{Addr: "gw.test", Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	t.Cleanup(func() {
		g.client.CloseIdleConnections()
		_ = ln.Close()
		<-done
		g.eng.Close()
	})
	return g
}

// fakeResponse is what the client got.
type fakeResponse struct {
	status int
	header string // every response header, as received
	body   []byte
	resp   *fasthttp.Response
}

// get returns a response header's value.
func (r *fakeResponse) get(name string) string { return string(r.resp.Header.Peek(name)) }

// has reports whether the response carries the header at all.
func (r *fakeResponse) has(name string) bool { return r.resp.Header.Peek(name) != nil }

// do sends one request; hdrs are name, value pairs.
func (g *fakeGateway) do(method, path, body string, hdrs ...string) *fakeResponse {
	g.t.Helper()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://gw.test" + path)
	req.Header.SetMethod(method)
	if body != "" {
		req.Header.SetContentType("application/json")
		req.SetBodyString(body)
	}
	for i := 0; i+1 < len(hdrs); i += 2 {
		req.Header.Set(hdrs[i], hdrs[i+1])
	}
	resp := &fasthttp.Response{}
	if err := g.client.DoTimeout(req, resp, fakeDeadline); err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	return &fakeResponse{status: resp.StatusCode(), header: resp.Header.String(), body: bytes.Clone(resp.Body()), resp: resp}
}

// raw writes a raw request on a fresh connection and reads the answer.
// Unlike the client it keeps reading when the gateway hangs up before
// taking the whole request, as it does for a body over the limit.
func (g *fakeGateway) raw(req string) *fakeResponse {
	g.t.Helper()
	c, err := g.ln.Dial()
	if err != nil {
		g.t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(fakeDeadline))
	_, _ = c.Write([]byte(req))
	resp := &fasthttp.Response{}
	if err := resp.Read(bufio.NewReader(c)); err != nil {
		g.t.Fatalf("reading the answer to a raw request: %v", err)
	}
	return &fakeResponse{status: resp.StatusCode(), header: resp.Header.String(), body: bytes.Clone(resp.Body()), resp: resp}
}

// chat posts a chat completion with the gateway's key.
func (g *fakeGateway) chat(body string, hdrs ...string) *fakeResponse {
	g.t.Helper()
	if g.key != "" {
		hdrs = append([]string{"Authorization", "Bearer " + g.key}, hdrs...)
	}
	return g.do("POST", "/v1/chat/completions", body, hdrs...)
}

// get sends a GET with the gateway's key.
func (g *fakeGateway) get(path string) *fakeResponse {
	g.t.Helper()
	var hdrs []string
	if g.key != "" {
		hdrs = []string{"Authorization", "Bearer " + g.key}
	}
	return g.do("GET", path, "", hdrs...)
}

// fakeProv describes one provider of a fake config.
type fakeProv struct {
	name    string // also the host: name + ".test"
	timeout string // "" = 5s
	keys    []string
	models  map[string]string // model -> upstream; nil = {m: <name>-up}
	// streamUsage leaves stream_usage on, so streams ask for a usage
	// chunk; off by default, so that relays stay byte for byte.
	streamUsage bool
}

// fakeYAML renders providers, then rest verbatim.
func fakeYAML(provs []fakeProv, rest string) string {
	var b strings.Builder
	b.WriteString("providers:\n")
	for _, p := range provs {
		timeout := p.timeout
		if timeout == "" {
			timeout = "5s"
		}
		keys := p.keys
		if keys == nil {
			keys = []string{strings.ToUpper(p.name) + "_KEY"}
		}
		refs := make([]string, len(keys))
		for i, k := range keys {
			refs[i] = strconv.Quote("${" + k + "}")
		}
		fmt.Fprintf(&b, "  %s:\n    type: openai\n    base_url: http://%s.test/v1\n    keys: [%s]\n    timeout: %s\n    stream_usage: %v\n    models:\n",
			p.name, p.name, strings.Join(refs, ", "), timeout, p.streamUsage)
		if p.models == nil {
			fmt.Fprintf(&b, "      m: {upstream: %s-up}\n", p.name)
		}
		for _, m := range slices.Sorted(maps.Keys(p.models)) {
			fmt.Fprintf(&b, "      %s: {upstream: %s}\n", m, strconv.Quote(p.models[m]))
		}
	}
	b.WriteString(rest)
	return b.String()
}

// fakeCompletion is an OpenAI chat.completion as an upstream sends it.
func fakeCompletion(model, content string) string {
	return `{"id":"chatcmpl-` + model + `","object":"chat.completion","created":1700000000,"model":"` + model +
		`","choices":[{"index":0,"message":{"role":"assistant","content":` + strconv.Quote(content) +
		`},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`
}

// fakeChunk is the i-th chat.completion.chunk frame of a stream.
func fakeChunk(i int) string {
	return `data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1700000000,"model":"up","choices":[{"index":0,"delta":{"content":"tok` +
		strconv.Itoa(i) + ` "},"finish_reason":null}]}` + "\n\n"
}

// fakeFinish is a chunk that ends the answer.
const fakeFinish = `data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1700000000,"model":"up","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n"

const fakeDone = "data: [DONE]\n\n"

// fakeOK answers every request with a completion naming the upstream
// model it was asked for, or a short stream when asked to stream.
func fakeOK(content string) func(*fasthttp.RequestCtx, int) {
	return func(ctx *fasthttp.RequestCtx, _ int) {
		if bytes.Contains(ctx.PostBody(), []byte(`"stream":true`)) {
			fakeStream(fakeChunk(0), fakeChunk(1), fakeFinish, fakeDone)(ctx, 0)
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(fakeCompletion("up", content))
	}
}

// fakeBody answers with status and body (and header pairs).
func fakeBody(status int, body string, hdrs ...string) func(*fasthttp.RequestCtx, int) {
	return func(ctx *fasthttp.RequestCtx, _ int) {
		for i := 0; i+1 < len(hdrs); i += 2 {
			ctx.Response.Header.Set(hdrs[i], hdrs[i+1])
		}
		ctx.SetStatusCode(status)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(body)
	}
}

// fakeStream sends frames as an SSE stream, flushing each one.
func fakeStream(frames ...string) func(*fasthttp.RequestCtx, int) {
	return func(ctx *fasthttp.RequestCtx, _ int) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for _, f := range frames {
				_, _ = w.WriteString(f)
				if w.Flush() != nil {
					return
				}
			}
		})
	}
}

// fakeHang never answers; the provider's timeout has to give up on it.
func (u *fakeUpstream) fakeHang(*fasthttp.RequestCtx, int) { <-u.release }

// fakeClose drops the connection without a word.
func fakeClose(ctx *fasthttp.RequestCtx, _ int) {
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(net.Conn) {})
}

// fakeRaw writes raw bytes on the connection, then closes it.
func fakeRaw(raw string) func(*fasthttp.RequestCtx, int) {
	return func(ctx *fasthttp.RequestCtx, _ int) {
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) { _, _ = c.Write([]byte(raw)) })
	}
}

// fakeSSEHead is the head of a chunked SSE response.
const fakeSSEHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

// fakeChunked frames s as one HTTP chunk.
func fakeChunked(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }
