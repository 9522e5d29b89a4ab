package engine

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/adapters"
	"gateway/config"
)

// pxConfig parses yaml with the fake environment or fails the test.
func pxConfig(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), config.Options{LookupEnv: func(k string) (string, bool) {
		v, ok := fakeEnv[k]
		return v, ok
	}})
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return cfg
}

// pxAuth turns gateway-key auth on with one key, team-ml.
const pxAuth = "auth:\n  keys:\n    - {name: team-ml, key: \"${GW_ML}\"}\n"

// pxOne is a single OpenAI-protocol provider p1 at http://p1.test/v1.
func pxOne(rest string) string {
	return fakeYAML([]fakeProv{{name: "p1"}}, rest)
}

// pxEcho answers with the method, the URI and the body it got, and a few
// response headers a proxy must or must not relay.
func pxEcho(ctx *fasthttp.RequestCtx, _ int) {
	ctx.SetStatusCode(201)
	ctx.Response.Header.Set("X-Upstream", "yes")
	ctx.Response.Header.Set("Keep-Alive", "timeout=5")
	ctx.Response.Header.Set("Proxy-Authenticate", "Basic")
	ctx.Response.Header.Set("Upgrade", "h2c")
	ctx.Response.Header.Set("Set-Cookie", "upstream_session=s3cr3t; Path=/")
	ctx.SetContentType("application/octet-stream")
	ctx.SetBodyString(string(ctx.Method()) + " " + string(ctx.RequestURI()) + "\n" + string(ctx.PostBody()))
}

// pxMethod is the method of a request an upstream saw.
func pxMethod(s fakeSeen) string {
	m, _, _ := strings.Cut(s.header, " ")
	return m
}

// pxHeader returns a request header's value from what an upstream saw,
// and whether it was there at all.
func pxHeader(s fakeSeen, name string) (string, bool) {
	for _, line := range strings.Split(s.header, "\r\n")[1:] {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

func TestProxyForwardsEachMethod(t *testing.T) {
	// Bytes no encoder would produce: the body must go through untouched.
	body := "{ \"purpose\" :\t\"fine-tune\", \"x\": [1, 2.50, null], \"é\": \"😀 \\u00e9\" }\n"
	for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		t.Run(method, func(t *testing.T) {
			n := newFakeNet(t)
			up := n.upstream("p1.test", pxEcho)
			g := newFakeGateway(t, pxOne(""), n)
			sent := body
			if method == "GET" {
				sent = ""
			}
			r := g.do(method, "/proxy/p1/files/file-1/content?purpose=fine-tune&limit=2&q=a%20b", sent,
				"Authorization", "Bearer sk-client-own",
				"X-Api-Key", "sk-client-own",
				"X-Goog-Api-Key", "sk-client-own",
				"Cookie", "gw_session=abc",
				"Keep-Alive", "timeout=5",
				"Proxy-Authorization", "Basic Zm9vOmJhcg==",
				"Proxy-Connection", "keep-alive",
				"Te", "trailers",
				"Upgrade", "websocket",
				"OpenAI-Organization", "org-1",
				"X-Custom", "kept")
			wantURI := "/v1/files/file-1/content?purpose=fine-tune&limit=2&q=a%20b"
			if r.status != 201 || string(r.body) != method+" "+wantURI+"\n"+sent {
				t.Fatalf("client got %d %q, want the upstream's 201 and echo", r.status, r.body)
			}
			if up.hits() != 1 {
				t.Fatalf("upstream hits = %d", up.hits())
			}
			seen := up.requests()[0]
			if pxMethod(seen) != method || seen.uri != wantURI || string(seen.body) != sent {
				t.Errorf("upstream got %s %s %q", pxMethod(seen), seen.uri, seen.body)
			}
			if h, _ := pxHeader(seen, "Host"); h != "p1.test" {
				t.Errorf("upstream Host = %q", h)
			}
			if seen.auth != "Bearer "+fakeEnv["P1_KEY"] {
				t.Errorf("upstream Authorization = %q, want the provider key", seen.auth)
			}
			for _, h := range []string{"X-Api-Key", "X-Goog-Api-Key", "Cookie", "Keep-Alive", "Proxy-Authorization",
				"Proxy-Connection", "Te", "Upgrade"} {
				if v, ok := pxHeader(seen, h); ok {
					t.Errorf("upstream got %s: %s", h, v)
				}
			}
			if strings.Contains(seen.header, "sk-client-own") || strings.Contains(seen.header, "gw_session") {
				t.Errorf("client credentials reached the upstream:\n%s", seen.header)
			}
			for h, want := range map[string]string{"OpenAI-Organization": "org-1", "X-Custom": "kept"} {
				if v, _ := pxHeader(seen, h); v != want {
					t.Errorf("upstream %s = %q, want %q", h, v, want)
				}
			}
			if r.get("X-Upstream") != "yes" || r.get("Content-Type") != "application/octet-stream" {
				t.Errorf("upstream headers not relayed:\n%s", r.header)
			}
			for _, h := range []string{"Set-Cookie", "Keep-Alive", "Proxy-Authenticate", "Upgrade"} {
				if r.has(h) {
					t.Errorf("client got %s: %s", h, r.get(h))
				}
			}
			if strings.Contains(r.header, "s3cr3t") {
				t.Errorf("the upstream's cookie reached the client:\n%s", r.header)
			}
			if r.get("X-Request-Id") == "" {
				t.Error("no X-Request-Id")
			}
		})
	}
}

func TestProxyJoinsBaseURL(t *testing.T) {
	yaml := `providers:
  p1:
    type: openai
    base_url: http://p1.test/v1
    keys: ["${P1_KEY}"]
    models: {m: {}}
  p2:
    type: openai
    base_url: http://p2.test/openai/v1/
    keys: ["${P2_KEY}"]
    models: {m: {}}
  an:
    type: anthropic
    base_url: http://an.test
    keys: ["${P3_KEY}"]
    models: {m: {}}
`
	tests := []struct{ path, host, uri string }{
		// An OpenAI SDK pointed at <gateway>/proxy/p1/v1 must not reach /v1/v1.
		{"/proxy/p1/v1/chat/completions", "p1.test", "/v1/chat/completions"},
		{"/proxy/p1/chat/completions", "p1.test", "/v1/chat/completions"},
		{"/proxy/p1/v1/models?limit=1", "p1.test", "/v1/models?limit=1"},
		{"/proxy/p1/v1", "p1.test", "/v1/"},
		{"/proxy/p1/v1beta/models", "p1.test", "/v1/v1beta/models"},
		{"/proxy/p1/models/v1/x", "p1.test", "/v1/models/v1/x"},
		{"/proxy/p2/v1/chat/completions", "p2.test", "/openai/v1/chat/completions"},
		{"/proxy/p2/chat/completions", "p2.test", "/openai/v1/chat/completions"},
		{"/proxy/an/v1/messages", "an.test", "/v1/messages"},
		{"/proxy/an/v1/messages/count_tokens?beta=true", "an.test", "/v1/messages/count_tokens?beta=true"},
	}
	n := newFakeNet(t)
	ups := map[string]*fakeUpstream{}
	for _, h := range []string{"p1.test", "p2.test", "an.test"} {
		ups[h] = n.upstream(h, fakeBody(200, `{}`))
	}
	g := newFakeGateway(t, yaml, n)
	for _, tt := range tests {
		before := ups[tt.host].hits()
		r := g.do("POST", tt.path, `{"x":1}`)
		if r.status != 200 || ups[tt.host].hits() != before+1 {
			t.Errorf("POST %s: status %d %s, %s hits %d", tt.path, r.status, r.body, tt.host, ups[tt.host].hits()-before)
			continue
		}
		if got := ups[tt.host].requests()[before].uri; got != tt.uri {
			t.Errorf("POST %s reached %s%s, want %s", tt.path, tt.host, got, tt.uri)
		}
	}
}

// pxProtocols is one provider per wire protocol, each with its own host.
const pxProtocols = `providers:
  oa:
    type: openai
    base_url: http://oa.test/v1
    keys: ["${P1_KEY}"]
    models: {m: {}}
  an:
    type: anthropic
    base_url: http://an.test
    keys: ["${P2_KEY}"]
    models: {m: {}}
  ge:
    type: gemini
    base_url: http://ge.test/v1beta
    keys: ["${P3_KEY}"]
    models: {m: {}}
  co:
    type: cohere
    base_url: http://co.test
    keys: ["${P4_KEY}"]
    models: {m: {}}
  mock:
    type: mock
    models: {m: {}}
`

func TestProxyInjectsTheProtocolsKey(t *testing.T) {
	tests := []struct {
		prov, host, path string
		hdrs             []string
		// want are the auth headers the upstream must see, and only them.
		want map[string]string
	}{
		{"oa", "oa.test", "/proxy/oa/v1/models", nil,
			map[string]string{"Authorization": "Bearer " + fakeEnv["P1_KEY"]}},
		{"an", "an.test", "/proxy/an/v1/messages", nil,
			map[string]string{"X-Api-Key": fakeEnv["P2_KEY"], "Anthropic-Version": "2023-06-01"}},
		{"an", "an.test", "/proxy/an/v1/messages", []string{"Anthropic-Version", "2024-10-22"},
			map[string]string{"X-Api-Key": fakeEnv["P2_KEY"], "Anthropic-Version": "2024-10-22"}},
		{"ge", "ge.test", "/proxy/ge/v1beta/models/gemini-2.0-flash:generateContent", nil,
			map[string]string{"X-Goog-Api-Key": fakeEnv["P3_KEY"]}},
		{"co", "co.test", "/proxy/co/v2/chat", nil,
			map[string]string{"Authorization": "Bearer " + fakeEnv["P4_KEY"]}},
	}
	n := newFakeNet(t)
	ups := map[string]*fakeUpstream{}
	for _, h := range []string{"oa.test", "an.test", "ge.test", "co.test"} {
		ups[h] = n.upstream(h, fakeBody(200, `{"ok":true}`))
	}
	g := newFakeGateway(t, pxProtocols+pxAuth, n)
	auth := []string{"Authorization", "Bearer " + g.key}
	for _, tt := range tests {
		t.Run(tt.prov+strings.Join(tt.hdrs, "="), func(t *testing.T) {
			before := ups[tt.host].hits()
			// The client sends the gateway key and every kind of
			// credential of its own; only the provider's key may go on.
			hdrs := append(append(append([]string(nil), auth...), "X-Goog-Api-Key", "client-goog", "Cookie", "c=1"), tt.hdrs...)
			r := g.do("POST", tt.path, `{}`, hdrs...)
			if r.status != 200 || ups[tt.host].hits() != before+1 {
				t.Fatalf("status %d %s", r.status, r.body)
			}
			seen := ups[tt.host].requests()[before]
			for _, h := range []string{"Authorization", "X-Api-Key", "X-Goog-Api-Key", "Anthropic-Version", "Cookie"} {
				got, ok := pxHeader(seen, h)
				want, wantOK := tt.want[h]
				if ok != wantOK || got != want {
					t.Errorf("upstream %s = %q (sent: %v), want %q (sent: %v)", h, got, ok, want, wantOK)
				}
			}
			if strings.Contains(seen.header, g.key) || strings.Contains(seen.header, "client-goog") {
				t.Errorf("client credentials reached the upstream:\n%s", seen.header)
			}
		})
	}
	t.Run("anthropic key sent as x-api-key", func(t *testing.T) {
		// The Anthropic SDK sends its api_key, here the gateway key, in
		// x-api-key: the gateway takes it as the gateway key and replaces it.
		before := ups["an.test"].hits()
		r := g.do("POST", "/proxy/an/v1/messages", `{}`, "X-Api-Key", g.key)
		if r.status != 200 {
			t.Fatalf("status %d %s", r.status, r.body)
		}
		seen := ups["an.test"].requests()[before]
		if k, _ := pxHeader(seen, "X-Api-Key"); k != fakeEnv["P2_KEY"] || strings.Contains(seen.header, g.key) {
			t.Errorf("upstream headers:\n%s", seen.header)
		}
	})
}

func TestProxyRefuses(t *testing.T) {
	n := newFakeNet(t)
	g := newFakeGateway(t, pxProtocols, n)
	r := g.do("GET", "/proxy/nobody/v1/models", "")
	msg := fakeCheckError(t, r, 404, "invalid_request_error", "provider_not_found", "")
	if !strings.Contains(msg, `"nobody"`) {
		t.Errorf("message %q does not name the provider", msg)
	}
	r = g.do("POST", "/proxy/mock/v1/chat/completions", `{}`)
	fakeCheckError(t, r, 400, "invalid_request_error", "no_passthrough", "")
	r = g.do("GET", "/proxy/", "")
	fakeCheckError(t, r, 404, "invalid_request_error", "provider_not_found", "")
}

// pxRawGet is a raw GET request line for path, sent as is.
func pxRawGet(path string, hdrs ...string) string {
	var b strings.Builder
	b.WriteString("GET " + path + " HTTP/1.1\r\nHost: gw.test\r\n")
	for i := 0; i+1 < len(hdrs); i += 2 {
		b.WriteString(hdrs[i] + ": " + hdrs[i+1] + "\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	return b.String()
}

func TestProxyRejectsTraversal(t *testing.T) {
	paths := []string{
		"/proxy/p1/../admin",
		"/proxy/p1/v1/../../admin",
		"/proxy/p1/../p2/v1/models",
		"/proxy/p1/%2e%2e/admin",
		"/proxy/p1/%2E%2e/admin",
		"/proxy/p1/.%2e/admin",
		"/proxy/p1/v1/%2e%2e/%2e%2e/admin",
		"/proxy/p1/./v1/models",
		"/proxy/p1/%2e/v1/models",
		"/proxy/p1/a%2F..%2Fadmin",
		"/proxy/p1/a%2fb",
		"/proxy/p1/..%5Cadmin",
		"/proxy/p1/a%5cb",
		`/proxy/p1/..\admin`,
		`/proxy/p1/a\b`,
		"/proxy/p1//evil.test/x",
		"/proxy/p1///evil.test/x",
		"/proxy/p1/http://evil.test/x",
		"/proxy/p1/https://evil.test/x",
		"/proxy/p1/v1/models/http:%2F%2Fevil.test",
		"/proxy/p1/%zz/x",
		// Paths that reach /proxy/ only once normalized.
		"/v1/../proxy/p1/v1/models",
		"/v1/%2e%2e/proxy/p1/v1/models",
		"//proxy/p1/v1/models",
	}
	n := newFakeNet(t)
	up := n.upstream("p1.test", fakeBody(200, `{}`))
	p2 := n.upstream("p2.test", fakeBody(200, `{}`))
	n.upstream("evil.test", fakeBody(200, `{}`))
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}}, pxAuth), n)
	for _, p := range paths {
		r := g.raw(pxRawGet(p, "Authorization", "Bearer "+g.key))
		if r.status != 400 {
			t.Errorf("GET %s: status %d %s, want 400 invalid_path", p, r.status, r.body)
			continue
		}
		fakeErrorShape(t, r.body, "invalid_request_error", "invalid_path", "")
	}
	if up.hits() != 0 || p2.hits() != 0 || n.dialsTo("evil.test") != 0 {
		t.Errorf("a traversal reached an upstream: p1 %d, p2 %d, evil %d", up.hits(), p2.hits(), n.dialsTo("evil.test"))
		for _, s := range append(up.requests(), p2.requests()...) {
			t.Logf("upstream saw %s", s.uri)
		}
	}
	// Normalized out of /proxy/, a path is no passthrough at all.
	if r := g.raw(pxRawGet("/proxy/p1/../../admin", "Authorization", "Bearer "+g.key)); r.status != 404 {
		t.Errorf("GET /proxy/p1/../../admin: %d %s", r.status, r.body)
	}
	// A safe raw path goes through: the rejections above are about the
	// path, not the raw request. An absolute-form request line names the
	// gateway, never the host the passthrough reaches.
	for i, tt := range []struct{ path, uri string }{
		{"/proxy/p1/v1/models", "/v1/models"},
		{"http://evil.test/proxy/p1/v1/files?a=1", "/v1/files?a=1"},
	} {
		r := g.raw(pxRawGet(tt.path, "Authorization", "Bearer "+g.key))
		if r.status != 200 || up.hits() != i+1 {
			t.Errorf("GET %s: %d %s", tt.path, r.status, r.body)
			continue
		}
		if got := up.requests()[i].uri; got != tt.uri {
			t.Errorf("GET %s reached %s, want %s", tt.path, got, tt.uri)
		}
	}
	if p2.hits() != 0 || n.dialsTo("evil.test") != 0 {
		t.Errorf("p2 hits %d, evil dials %d", p2.hits(), n.dialsTo("evil.test"))
	}
	// Auth comes first: without a key nobody learns what the path would do.
	r := g.raw(pxRawGet("/proxy/p1/../admin"))
	fakeErrorShape(t, r.body, "authentication_error", "missing_api_key", "")
}

func TestProxyAuthAndKeyLimit(t *testing.T) {
	n := newFakeNet(t)
	up := n.upstream("p1.test", fakeBody(200, `{"data":[]}`))
	g := newFakeGateway(t, pxOne("auth:\n  keys:\n    - {name: team-ml, key: \"${GW_ML}\", rpm: 2}\n"), n)

	r := g.do("POST", "/proxy/p1/v1/files", `{}`)
	fakeCheckError(t, r, 401, "authentication_error", "missing_api_key", "")
	r = g.do("POST", "/proxy/p1/v1/files", `{}`, "Authorization", "Bearer "+fakeEnv["P1_KEY"])
	fakeCheckError(t, r, 401, "authentication_error", "invalid_api_key", "")
	if up.hits() != 0 {
		t.Fatalf("unauthenticated requests reached the upstream: %d", up.hits())
	}
	auth := []string{"Authorization", "Bearer " + g.key}
	for i, remaining := range []string{"1", "0"} {
		r = g.do("POST", "/proxy/p1/v1/files", `{}`, auth...)
		if r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
		if r.get("X-Ratelimit-Limit") != "2" || r.get("X-Ratelimit-Remaining") != remaining || r.get("X-Ratelimit-Reset") == "" {
			t.Errorf("request %d: rate headers\n%s", i, r.header)
		}
	}
	r = g.do("GET", "/proxy/p1/v1/models", "", auth...)
	fakeCheckError(t, r, 429, "rate_limit_error", "rate_limit_exceeded", "")
	if ra, err := strconv.Atoi(r.get("Retry-After")); err != nil || ra < 1 || ra > 61 {
		t.Errorf("Retry-After = %q", r.get("Retry-After"))
	}
	if up.hits() != 2 {
		t.Errorf("upstream hits = %d, want 2", up.hits())
	}
}

// pxGated streams frames as SSE, one flush each; before frame i > 0 it
// waits for gates[i-1], so the test decides when each leaves.
func pxGated(u **fakeUpstream, gates []chan struct{}, frames ...string) func(*fasthttp.RequestCtx, int) {
	return func(ctx *fasthttp.RequestCtx, _ int) {
		ctx.SetContentType("text/event-stream")
		ctx.Response.Header.Set("Cache-Control", "no-cache")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for i, f := range frames {
				if i > 0 {
					select {
					case <-gates[i-1]:
					case <-(*u).release:
						return
					}
				}
				_, _ = w.WriteString(f)
				if w.Flush() != nil {
					return
				}
			}
		})
	}
}

// pxReadStream sends req with a streamed response and reads frames one by
// one, opening gates[i] only once frame i is in hand: a gateway that
// buffered would deadlock here, and fail on the deadline.
func pxReadStream(t *testing.T, g *fakeGateway, req *fasthttp.Request, gates []chan struct{}, frames ...string) *fasthttp.Response {
	t.Helper()
	resp := fasthttp.AcquireResponse()
	t.Cleanup(func() { fasthttp.ReleaseResponse(resp) })
	resp.StreamBody = true
	if err := g.client.DoTimeout(req, resp, fakeDeadline); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.CloseBodyStream() }()
	if resp.StatusCode() != 200 {
		b, _ := io.ReadAll(resp.BodyStream())
		t.Fatalf("status %d %s", resp.StatusCode(), b)
	}
	type read struct {
		b   []byte
		err error
	}
	// Buffered, so a reader left behind by a failed test never blocks.
	got := make(chan read, len(frames))
	for i, f := range frames {
		go func() {
			buf := make([]byte, len(f))
			_, err := io.ReadFull(resp.BodyStream(), buf)
			got <- read{buf, err}
		}()
		select {
		case r := <-got:
			if r.err != nil || string(r.b) != f {
				t.Fatalf("frame %d = %q (%v), want %q", i, r.b, r.err, f)
			}
		case <-time.After(fakeDeadline):
			t.Fatalf("frame %d never came: the passthrough holds the stream back", i)
		}
		if i < len(gates) {
			close(gates[i])
		}
	}
	rest, err := io.ReadAll(resp.BodyStream())
	if err != nil || len(rest) != 0 {
		t.Errorf("after the last frame: %q, %v", rest, err)
	}
	return resp
}

func TestProxyStreamsEventByEvent(t *testing.T) {
	frames := []string{fakeChunk(0), fakeChunk(1), fakeFinish + fakeDone}
	gates := []chan struct{}{make(chan struct{}), make(chan struct{})}
	n := newFakeNet(t)
	var up *fakeUpstream
	up = n.upstream("p1.test", pxGated(&up, gates, frames...))
	g := newFakeGateway(t, pxOne(""), n)

	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://gw.test/proxy/p1/v1/chat/completions")
	req.Header.SetMethod("POST")
	body := `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	req.SetBodyString(body)
	resp := pxReadStream(t, g, req, gates, frames...)
	if ct := string(resp.Header.ContentType()); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q", ct)
	}
	if resp.Header.Peek("X-Cache") != nil {
		t.Errorf("a POST stream says X-Cache: %s", resp.Header.Peek("X-Cache"))
	}
	if seen := up.requests(); len(seen) != 1 || string(seen[0].body) != body {
		t.Errorf("upstream got %+v", seen)
	}
}

func TestProxyAnthropicSDKWireFormat(t *testing.T) {
	yaml := `providers:
  claude:
    type: anthropic
    base_url: http://an.test
    keys: ["${P2_KEY}"]
    models: {sonnet: {upstream: claude-sonnet-4-5}}
` + pxAuth
	// As the Anthropic SDK sends it: its own field order and spacing.
	ask := `{"max_tokens":1024,"messages":[{"role":"user","content":"Hello, Claude — ça va? 😀"}],"model":"claude-sonnet-4-5","metadata":{"user_id":"u-1"}}`
	askStream := strings.Replace(ask, `"max_tokens":1024,`, `"max_tokens":1024,"stream":true,`, 1)
	reply := `{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Bonjour! 😀"}],` +
		`"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":6}}`
	events := []string{
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_02\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Bon\"}}\n\n",
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":6}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
	}
	gates := []chan struct{}{make(chan struct{}), make(chan struct{})}
	n := newFakeNet(t)
	var up *fakeUpstream
	stream := pxGated(&up, gates, events...)
	up = n.upstream("an.test", func(ctx *fasthttp.RequestCtx, hit int) {
		if bytes.Contains(ctx.PostBody(), []byte(`"stream":true`)) {
			stream(ctx, hit)
			return
		}
		ctx.Response.Header.Set("Request-Id", "req_upstream_1")
		ctx.SetContentType("application/json")
		ctx.SetBodyString(reply)
	})
	g := newFakeGateway(t, yaml, n)

	send := func(body string, version bool) *fasthttp.Request {
		req := fasthttp.AcquireRequest()
		req.SetRequestURI("http://gw.test/proxy/claude/v1/messages")
		req.Header.SetMethod("POST")
		req.Header.SetContentType("application/json")
		req.Header.Set("X-Api-Key", g.key)
		if version {
			req.Header.Set("Anthropic-Version", "2023-06-01")
		}
		req.Header.Set("Anthropic-Beta", "prompt-caching-2024-07-31")
		req.Header.Set("X-Stainless-Lang", "python")
		req.SetBodyString(body)
		return req
	}
	checkSeen := func(i int, body string) {
		t.Helper()
		seen := up.requests()[i]
		if pxMethod(seen) != "POST" || seen.uri != "/v1/messages" || string(seen.body) != body {
			t.Errorf("upstream got %s %s %q", pxMethod(seen), seen.uri, seen.body)
		}
		for h, want := range map[string]string{"X-Api-Key": fakeEnv["P2_KEY"], "Anthropic-Version": "2023-06-01",
			"Anthropic-Beta": "prompt-caching-2024-07-31", "X-Stainless-Lang": "python", "Content-Type": "application/json"} {
			if got, _ := pxHeader(seen, h); got != want {
				t.Errorf("upstream %s = %q, want %q", h, got, want)
			}
		}
		if _, ok := pxHeader(seen, "Authorization"); ok || strings.Contains(seen.header, g.key) {
			t.Errorf("the gateway key reached the upstream:\n%s", seen.header)
		}
	}

	for i, version := range []bool{true, false} {
		req := send(ask, version)
		resp := &fasthttp.Response{}
		err := g.client.DoTimeout(req, resp, fakeDeadline)
		fasthttp.ReleaseRequest(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != 200 || string(resp.Body()) != reply {
			t.Fatalf("client got %d %q, want the upstream's bytes", resp.StatusCode(), resp.Body())
		}
		if string(resp.Header.Peek("Request-Id")) != "req_upstream_1" {
			t.Errorf("upstream headers not relayed:\n%s", resp.Header.String())
		}
		checkSeen(i, ask)
	}

	req := send(askStream, false)
	defer fasthttp.ReleaseRequest(req)
	pxReadStream(t, g, req, gates, events...)
	checkSeen(2, askStream)
}

// pxCached is a gateway in front of an upstream counting GETs of any path.
func pxCached(t *testing.T, rest string, h func(*fasthttp.RequestCtx, int)) (*fakeGateway, *fakeUpstream) {
	n := newFakeNet(t)
	up := n.upstream("p1.test", h)
	return newFakeGateway(t, pxOne(rest), n), up
}

// pxModels answers a model list numbered by hit, so a cached answer shows.
func pxModels(ctx *fasthttp.RequestCtx, hit int) {
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("X-Upstream-Hit", strconv.Itoa(hit))
	ctx.Response.Header.Set("Set-Cookie", "upstream_session=1")
	ctx.SetBodyString(`{"object":"list","data":[{"id":"m-` + strconv.Itoa(hit) + `"}]}`)
}

func TestProxyCacheMissThenHit(t *testing.T) {
	g, up := pxCached(t, "", pxModels)
	miss := g.do("GET", "/proxy/p1/v1/models?x=1", "")
	hit := g.do("GET", "/proxy/p1/v1/models?x=1", "")
	if miss.get("X-Cache") != "MISS" || hit.get("X-Cache") != "HIT" {
		t.Fatalf("X-Cache %q then %q, want MISS then HIT", miss.get("X-Cache"), hit.get("X-Cache"))
	}
	if hit.status != miss.status || !bytes.Equal(hit.body, miss.body) || hit.get("Content-Type") != miss.get("Content-Type") ||
		hit.get("X-Upstream-Hit") != "1" {
		t.Errorf("the hit differs:\nmiss %d %s\n%s\nhit %d %s\n%s", miss.status, miss.body, miss.header, hit.status, hit.body, hit.header)
	}
	if hit.has("Set-Cookie") || miss.has("Set-Cookie") {
		t.Errorf("Set-Cookie relayed:\n%s\n%s", miss.header, hit.header)
	}
	if hit.get("X-Request-Id") == "" || hit.get("X-Request-Id") == miss.get("X-Request-Id") {
		t.Errorf("request ids %q then %q", miss.get("X-Request-Id"), hit.get("X-Request-Id"))
	}
	if up.hits() != 1 {
		t.Errorf("upstream hits = %d, want 1", up.hits())
	}
	// Another query, another path: other entries.
	for _, p := range []string{"/proxy/p1/v1/models?x=2", "/proxy/p1/v1/models", "/proxy/p1/v1/files"} {
		if r := g.do("GET", p, ""); r.get("X-Cache") != "MISS" {
			t.Errorf("GET %s: X-Cache %q", p, r.get("X-Cache"))
		}
	}
	// The SDK's /v1 prefix and its absence are one upstream URL: one entry.
	if r := g.do("GET", "/proxy/p1/models?x=1", ""); r.get("X-Cache") != "HIT" {
		t.Errorf("GET /proxy/p1/models?x=1: X-Cache %q", r.get("X-Cache"))
	}
	if up.hits() != 4 {
		t.Errorf("upstream hits = %d, want 4", up.hits())
	}
}

func TestProxyCacheKeepsOut(t *testing.T) {
	tests := []struct {
		name     string
		upstream func(*fasthttp.RequestCtx, int)
		hdrs     []string // of the first GET
		// second is X-Cache of the second, plain GET; hits the upstream
		// count after both.
		first, second string
		hits          int
	}{
		{"404", fakeBody(404, `{"error":"nope"}`), nil, "MISS", "MISS", 2},
		{"500", fakeBody(500, `{"error":"down"}`), nil, "MISS", "MISS", 2},
		{"201", fakeBody(201, `{}`), nil, "MISS", "MISS", 2},
		{"upstream no-store", fakeBody(200, `{}`, "Cache-Control", "no-store"), nil, "MISS", "MISS", 2},
		{"upstream private", fakeBody(200, `{}`, "Cache-Control", "private, max-age=60"), nil, "MISS", "MISS", 2},
		{"client no-store", fakeBody(200, `{}`), []string{"Cache-Control", "no-store"}, "MISS", "MISS", 2},
		// no-cache asks for a fresh answer, which may be stored.
		{"client no-cache", fakeBody(200, `{}`), []string{"Cache-Control", "no-cache"}, "MISS", "HIT", 1},
		{"plain", fakeBody(200, `{}`), nil, "MISS", "HIT", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, up := pxCached(t, "", tt.upstream)
			if r := g.do("GET", "/proxy/p1/v1/models", "", tt.hdrs...); r.get("X-Cache") != tt.first {
				t.Errorf("first GET: X-Cache %q, want %q", r.get("X-Cache"), tt.first)
			}
			r := g.do("GET", "/proxy/p1/v1/models", "")
			if r.get("X-Cache") != tt.second || up.hits() != tt.hits {
				t.Errorf("second GET: X-Cache %q, upstream hits %d; want %q, %d", r.get("X-Cache"), up.hits(), tt.second, tt.hits)
			}
		})
	}
	t.Run("client no-cache skips a stored answer", func(t *testing.T) {
		g, up := pxCached(t, "", pxModels)
		g.do("GET", "/proxy/p1/v1/models", "")
		for _, cc := range []string{"no-cache", "No-Cache", "max-age=0, no-store"} {
			r := g.do("GET", "/proxy/p1/v1/models", "", "Cache-Control", cc)
			if r.get("X-Cache") != "MISS" {
				t.Errorf("Cache-Control %q: X-Cache %q", cc, r.get("X-Cache"))
			}
		}
		if up.hits() != 4 {
			t.Errorf("upstream hits = %d, want 4", up.hits())
		}
		// The last fresh answer stored was from no-cache (hit 3); no-store
		// (hit 4) kept its own out.
		if r := g.do("GET", "/proxy/p1/v1/models", ""); r.get("X-Cache") != "HIT" || r.get("X-Upstream-Hit") != "3" {
			t.Errorf("then: X-Cache %q, from upstream hit %q", r.get("X-Cache"), r.get("X-Upstream-Hit"))
		}
	})
}

func TestProxyOnlyGETIsCached(t *testing.T) {
	g, up := pxCached(t, "", pxEcho)
	for _, m := range []string{"POST", "POST", "PUT", "DELETE", "PATCH"} {
		r := g.do(m, "/proxy/p1/v1/models", `{}`)
		if r.status != 201 || r.has("X-Cache") {
			t.Errorf("%s: %d, X-Cache %q", m, r.status, r.get("X-Cache"))
		}
	}
	if up.hits() != 5 {
		t.Errorf("upstream hits = %d, want 5", up.hits())
	}
	// A GET after them is a first GET.
	if r := g.do("GET", "/proxy/p1/v1/models", ""); r.get("X-Cache") != "MISS" {
		t.Errorf("GET after writes: X-Cache %q", r.get("X-Cache"))
	}
}

func TestProxyCacheOff(t *testing.T) {
	g, up := pxCached(t, "cache: {ttl: 0s}\n", pxModels)
	for i := range 2 {
		r := g.do("GET", "/proxy/p1/v1/models", "")
		if r.status != 200 || r.has("X-Cache") {
			t.Errorf("GET %d: %d, X-Cache %q", i, r.status, r.get("X-Cache"))
		}
	}
	if up.hits() != 2 {
		t.Errorf("upstream hits = %d, want 2", up.hits())
	}
	if g.eng.cache != nil {
		t.Error("ttl 0s still built a cache")
	}
}

func TestProxyCacheExpires(t *testing.T) {
	// ristretto reads the wall clock, so expiry is watched, not faked:
	// the entry must serve until its TTL and stop once it is over.
	const ttl = time.Second
	g, up := pxCached(t, "cache: {ttl: 1s}\n", pxModels)
	start := time.Now()
	if r := g.do("GET", "/proxy/p1/v1/models", ""); r.get("X-Cache") != "MISS" {
		t.Fatalf("first GET: X-Cache %q", r.get("X-Cache"))
	}
	r := g.do("GET", "/proxy/p1/v1/models", "")
	if r.get("X-Cache") != "HIT" && time.Since(start) < ttl {
		t.Fatalf("second GET within the TTL: X-Cache %q", r.get("X-Cache"))
	}
	deadline := time.Now().Add(fakeDeadline)
	for {
		r := g.do("GET", "/proxy/p1/v1/models", "")
		if r.get("X-Cache") == "MISS" {
			if since := time.Since(start); since < ttl {
				t.Errorf("the entry expired after %v, before its TTL of %v", since, ttl)
			}
			break
		}
		if r.get("X-Upstream-Hit") != "1" {
			t.Fatalf("a HIT served upstream hit %q", r.get("X-Upstream-Hit"))
		}
		if time.Now().After(deadline) {
			t.Fatalf("still a HIT %v after the first GET; ttl is %v", time.Since(start), ttl)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if up.hits() != 2 {
		t.Errorf("upstream hits = %d, want 2", up.hits())
	}
}

func TestProxyCacheStaysWithinMaxBytes(t *testing.T) {
	const maxBytes, paths = 4 << 10, 40
	body := strings.Repeat("x", 1<<10)
	g, up := pxCached(t, "cache: {max_bytes: 4KiB}\n", fakeBody(200, body))
	for round := range 2 {
		for i := range paths {
			r := g.do("GET", "/proxy/p1/v1/files/"+strconv.Itoa(i), "")
			if r.status != 200 || string(r.body) != body {
				t.Fatalf("GET %d: %d, %d bytes", i, r.status, len(r.body))
			}
		}
		entries, used := g.eng.cache.size()
		if used > maxBytes || entries > maxBytes/len(body) {
			t.Errorf("round %d: %d entries of %d bytes cached; max_bytes is %d", round, entries, used, maxBytes)
		}
	}
	// 80 GETs of 40 paths of which at most 3 fit: most went upstream.
	if up.hits() <= paths+paths/2 {
		t.Errorf("upstream hits = %d: the cache holds more than max_bytes", up.hits())
	}
	r := g.get("/api/stats")
	var cached struct {
		CachedKeys int `json:"cachedKeys"`
	}
	if err := json.Unmarshal(r.body, &cached); err != nil || cached.CachedKeys > maxBytes/len(body) {
		t.Errorf("/api/stats cachedKeys: %s (%v)", r.body, err)
	}
}

func TestProxyCacheSurvivesSwap(t *testing.T) {
	g, up := pxCached(t, "", pxModels)
	if r := g.do("GET", "/proxy/p1/v1/models", ""); r.get("X-Cache") != "MISS" {
		t.Fatalf("X-Cache %q", r.get("X-Cache"))
	}
	// Another file: another checksum, another snapshot.
	if err := g.eng.Swap(pxConfig(t, pxOne("# reloaded\nfailover: {max_attempts: 2}\n"))); err != nil {
		t.Fatal(err)
	}
	if g.eng.snap.Load().cfg == g.cfg {
		t.Fatal("the swap did not publish a new snapshot")
	}
	r := g.do("GET", "/proxy/p1/v1/models", "")
	if r.get("X-Cache") != "HIT" || r.get("X-Upstream-Hit") != "1" || up.hits() != 1 {
		t.Errorf("after a swap: X-Cache %q from upstream hit %q, upstream hits %d", r.get("X-Cache"), r.get("X-Upstream-Hit"), up.hits())
	}
}

func TestProxyCacheServesEveryClientItsEncoding(t *testing.T) {
	// An upstream that compresses when asked: a gzip body cached for one
	// client must not reach another that cannot read it.
	plain := `{"object":"list","data":[]}`
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	_, _ = zw.Write([]byte(plain))
	_ = zw.Close()
	g, _ := pxCached(t, "", func(ctx *fasthttp.RequestCtx, _ int) {
		ctx.SetContentType("application/json")
		if bytes.Contains(ctx.Request.Header.Peek("Accept-Encoding"), []byte("gzip")) {
			ctx.Response.Header.Set("Content-Encoding", "gzip")
			ctx.SetBody(zipped.Bytes())
			return
		}
		ctx.SetBodyString(plain)
	})
	g.do("GET", "/proxy/p1/v1/models", "", "Accept-Encoding", "gzip")
	r := g.do("GET", "/proxy/p1/v1/models", "")
	if string(r.body) != plain || r.has("Content-Encoding") {
		t.Errorf("a client that asked for no encoding got Content-Encoding %q and %q", r.get("Content-Encoding"), r.body)
	}
}

func TestProxyRedactsTheProviderKey(t *testing.T) {
	// Some upstreams echo the key they were given in an error; the
	// passthrough must not hand it to the client, buffered or streamed.
	echo := func(ctx *fasthttp.RequestCtx, _ int) {
		key := strings.TrimPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer ")
		if ctx.IsGet() {
			ctx.SetStatusCode(401)
			ctx.SetBodyString(`{"error":{"message":"Incorrect API key provided: ` + key + `"}}`)
			return
		}
		// Streamed, with the key split over two flushes.
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			_, _ = w.WriteString("data: {\"key\":\"" + key[:7])
			_ = w.Flush()
			_, _ = w.WriteString(key[7:] + "\"}\n\ndata: " + key + key + "\n\n")
			_ = w.Flush()
		})
	}
	g, _ := pxCached(t, "", echo)
	k := fakeEnv["P1_KEY"]
	r := g.do("GET", "/proxy/p1/v1/models", "")
	if r.status != 401 || strings.Contains(string(r.body), k) || !strings.Contains(string(r.body), "provided: <secret>") {
		t.Errorf("GET: %d %s", r.status, r.body)
	}
	r = g.do("POST", "/proxy/p1/v1/chat/completions", `{"stream":true}`)
	if want := "data: {\"key\":\"<secret>\"}\n\ndata: <secret><secret>\n\n"; string(r.body) != want {
		t.Errorf("stream: %q, want %q", r.body, want)
	}
}

func TestProxyRedactsAcrossReads(t *testing.T) {
	// However the upstream's bytes are cut, a key never gets through,
	// and nothing else is changed or held back past the end.
	key := fakeEnv["P1_KEY"]
	tests := []struct{ in, want string }{
		{"", ""},
		{"no key here\n\n", "no key here\n\n"},
		{"data: " + key + "\n\n", "data: <secret>\n\n"},
		{key + key, "<secret><secret>"},
		{"sk-p1-", "sk-p1-"},
		{"sk-p1-S", "sk-p1-S"},
		{"sk-p1-SECRET-1111aaa", "<secret>"},
		{"ssk-sk-p1-" + key + "s", "ssk-sk-p1-<secret>s"},
		{key[:len(key)-1] + "X " + key, "<secret>X <secret>"},
		{`data: "\u0073k-p1-SECRET-1111aaaa"` + "\n\n", `data: "<secret>"` + "\n\n"},
		{"Incorrect key sk-p1***aaa\n", "Incorrect key <secret>\n"},
	}
	readers := map[string]func(string) io.Reader{
		"whole":    func(s string) io.Reader { return strings.NewReader(s) },
		"one byte": func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
		"half":     func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) },
		"data+EOF": func(s string) io.Reader { return iotest.DataErrReader(strings.NewReader(s)) },
	}
	for name, r := range readers {
		for _, tt := range tests {
			resp := fasthttp.AcquireResponse()
			resp.SetBodyStream(r(tt.in), -1)
			b := &passBody{resp: resp, red: adapters.NewRedactor([]string{key})}
			out, err := io.ReadAll(iotest.OneByteReader(b))
			_ = b.Close()
			if err != nil || string(out) != tt.want {
				t.Errorf("%s %q: got %q (%v), want %q", name, tt.in, out, err, tt.want)
			}
		}
	}
}
