package engine

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// fakeThree is a chain of three providers p1, p2, p3, each serving m.
func fakeThree(rest string) string {
	return fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}, {name: "p3"}},
		"models:\n  auto: {targets: [p1/m, p2/m, p3/m]}\n"+rest)
}

const fakeAsk = `{"model":"auto","messages":[{"role":"user","content":"hi"}]}`
const fakeAskStream = `{"model":"auto","stream":true,"messages":[{"role":"user","content":"hi"}]}`

// fakeOKStreamBody is what fakeOK streams.
var fakeOKStreamBody = fakeChunk(0) + fakeChunk(1) + fakeFinish + fakeDone

func TestChatRelaysNonStreamByteExact(t *testing.T) {
	// An upstream body in an order and spacing no encoder would produce,
	// with fields the gateway does not know.
	reply := `{"usage":{"total_tokens":7,"prompt_tokens":5,"completion_tokens":2},  "choices":[{"finish_reason":"stop","message":{"content":"ça va? 😀 \u00e9 \"q\"","role":"assistant"},"index":0}],` +
		"\n\t" + `"model":"vendor/llama \"70b\" é","object":"chat.completion","id":"chatcmpl-xyz","created":1700000000,"system_fingerprint":"fp_1","x_extra":{"a":[1,2.50,null,{}]}}` + "\n"
	for _, model := range []string{"auto", "p1/m", "m"} {
		t.Run(model, func(t *testing.T) {
			n := newFakeNet(t)
			up := n.upstream("p1.test", fakeBody(200, reply))
			g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1", models: map[string]string{"m": `vendor/llama "70b" é`}}},
				"models:\n  auto: {targets: [p1/m]}\n"), n)
			body := "{\n  \"temperature\" : 0.25,\n  \"messages\": [ {\"content\": \"h\\u00e9llo — 😀 \\\"quoted\\\"\\n\\ttab\", \"role\":\"user\", \"name\": \"ünï\"} ],\n" +
				"  \"model\"   :\t\"" + model + "\" ,\n  \"x_vendor\": {\"nested\": [1, 2.50, true, null, {}], \"model\": \"not this one\"},\n  \"stream\": false, \"n\": 1\n}\n"
			want := strings.Replace(body, "\t\""+model+"\" ,", "\t\"vendor/llama \\\"70b\\\" é\" ,", 1)

			r := g.chat(body)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if string(r.body) != reply {
				t.Errorf("client got\n%q\nwant the upstream's bytes\n%q", r.body, reply)
			}
			if ct := r.get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if via := r.get("X-Routed-Via"); via != "p1/m" {
				t.Errorf("x-routed-via = %q, want p1/m", via)
			}
			if r.has("X-Fallback-Attempts") {
				t.Errorf("x-fallback-attempts = %q on a first-try answer", r.get("X-Fallback-Attempts"))
			}
			reqs := up.requests()
			if len(reqs) != 1 {
				t.Fatalf("upstream got %d requests", len(reqs))
			}
			if string(reqs[0].body) != want {
				t.Errorf("upstream got\n%q\nwant\n%q", reqs[0].body, want)
			}
			if reqs[0].uri != "/v1/chat/completions" {
				t.Errorf("upstream got %s", reqs[0].uri)
			}
		})
	}
}

// fakeStreamScript is an upstream stream of 20 chunks with keep-alive
// comments before the first and in the middle, line ends set by nl.
func fakeStreamScript(nl string) (sent []string, relayed string) {
	conv := func(s string) string { return strings.ReplaceAll(s, "\n", nl) }
	ka := conv(": keep-alive\n\n")
	sent = []string{ka, ka}
	var want strings.Builder
	for i := range 20 {
		sent = append(sent, conv(fakeChunk(i)))
		want.WriteString(conv(fakeChunk(i)))
		if i == 4 {
			sent = append(sent, ka)
			want.WriteString(ka)
		}
	}
	sent = append(sent, conv(fakeDone))
	want.WriteString(conv(fakeDone))
	return sent, want.String()
}

func TestChatRelaysStreamByteExact(t *testing.T) {
	for name, nl := range map[string]string{"LF": "\n", "CRLF": "\r\n"} {
		t.Run(name, func(t *testing.T) {
			sent, want := fakeStreamScript(nl)
			n := newFakeNet(t)
			up := n.upstream("p1.test", fakeStream(sent...))
			g := newFakeGateway(t, fakeThree(""), n)
			r := g.chat(fakeAskStream)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if string(r.body) != want {
				t.Errorf("client got\n%q\nwant\n%q", r.body, want)
			}
			if ct := r.get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("Content-Type = %q, want text/event-stream", ct)
			}
			if cc := r.get("Cache-Control"); cc != "no-cache" {
				t.Errorf("Cache-Control = %q", cc)
			}
			if via := r.get("X-Routed-Via"); via != "p1/m" {
				t.Errorf("x-routed-via = %q", via)
			}
			if got := string(up.requests()[0].body); got != strings.Replace(fakeAskStream, `"auto"`, `"p1-up"`, 1) {
				t.Errorf("upstream got %s", got)
			}
		})
	}
}

func TestChatStreamRelaysEachFrameAsItArrives(t *testing.T) {
	n := newFakeNet(t)
	gate := make(chan struct{})
	var up *fakeUpstream
	up = n.upstream("p1.test", func(ctx *fasthttp.RequestCtx, _ int) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			_, _ = w.WriteString(fakeChunk(0))
			_ = w.Flush()
			// The rest waits until the client has the first frame: a
			// gateway that buffered would never deliver it.
			select {
			case <-gate:
			case <-up.release:
				return
			}
			_, _ = w.WriteString(fakeChunk(1) + fakeDone)
		})
	})
	g := newFakeGateway(t, fakeThree(""), n)

	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://gw.test/v1/chat/completions")
	req.Header.SetMethod("POST")
	req.SetBodyString(fakeAskStream)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	resp.StreamBody = true
	if err := g.client.DoTimeout(req, resp, fakeDeadline); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.CloseBodyStream() }()
	first := make([]byte, len(fakeChunk(0)))
	if _, err := io.ReadFull(resp.BodyStream(), first); err != nil {
		t.Fatalf("reading the first frame: %v", err)
	}
	if string(first) != fakeChunk(0) {
		t.Fatalf("first frame %q", first)
	}
	close(gate)
	rest, err := io.ReadAll(resp.BodyStream())
	if err != nil {
		t.Fatal(err)
	}
	if string(rest) != fakeChunk(1)+fakeDone {
		t.Errorf("rest = %q", rest)
	}
	if up.hits() != 1 {
		t.Errorf("upstream hits = %d", up.hits())
	}
}

func TestChatStreamClientGoneClosesUpstream(t *testing.T) {
	n := newFakeNet(t)
	cut := make(chan error, 1)
	var up *fakeUpstream
	up = n.upstream("p1.test", func(ctx *fasthttp.RequestCtx, _ int) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			// An endless answer: only the gateway hanging up ends it.
			for i := 0; ; i++ {
				_, _ = w.WriteString(fakeChunk(i))
				if err := w.Flush(); err != nil {
					cut <- err
					return
				}
				select {
				case <-up.release:
					cut <- nil
					return
				default:
				}
			}
		})
	})
	// The provider's timeout outlasts the test's: only the client leaving
	// can end the exchange in time.
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1", timeout: "120s"}}, "models:\n  auto: {targets: [p1/m]}\n"), n)
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://gw.test/v1/chat/completions")
	req.Header.SetMethod("POST")
	req.SetBodyString(fakeAskStream)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	resp.StreamBody = true
	if err := g.client.DoTimeout(req, resp, fakeDeadline); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, len(fakeChunk(0)))
	if _, err := io.ReadFull(resp.BodyStream(), first); err != nil || string(first) != fakeChunk(0) {
		t.Fatalf("first frame %q, %v", first, err)
	}
	// Closing an unfinished body stream drops the connection.
	_ = resp.CloseBodyStream()
	select {
	case err := <-cut:
		if err == nil {
			t.Fatal("the upstream was never cut off")
		}
	case <-time.After(fakeDeadline):
		t.Fatal("the gateway kept reading the upstream after its client left")
	}
}

const fakeAuthConfig = `auth:
  keys:
    - {name: team-ml, key: "${GW_ML}", metadata: {team: ml}}
    - {name: team-web, key: "${GW_WEB}", metadata: {team: web}}
    - {name: limited, key: "${GW_LIM}", models: [auto, p1/m]}
    - {name: off, key: "${GW_OFF}", disabled: true}
    - {name: old, key: "${GW_OLD}", expires: 2020-01-01T00:00:00Z}
`

func TestChatUpstreamSeesOnlyTheProviderKey(t *testing.T) {
	tests := []struct {
		name string
		auth bool
		hdrs []string
	}{
		{"gateway key in Authorization", true, []string{"Authorization", "Bearer " + fakeEnv["GW_ML"]}},
		{"gateway key in X-Api-Key", true, []string{"X-Api-Key", fakeEnv["GW_ML"]}},
		{"auth off, client sends its own key", false, []string{"Authorization", "Bearer sk-client-own-key", "X-Api-Key", "sk-client-own-key"}},
	}
	for _, tt := range tests {
		for _, body := range []string{fakeAsk, fakeAskStream} {
			t.Run(tt.name+"/stream="+strconv.FormatBool(gjson.Get(body, "stream").Bool()), func(t *testing.T) {
				n := newFakeNet(t)
				up := n.upstream("p1.test", fakeOK("ok"))
				rest := ""
				if tt.auth {
					rest = fakeAuthConfig
				}
				g := newFakeGateway(t, fakeThree(rest), n)
				r := g.do("POST", "/v1/chat/completions", body, tt.hdrs...)
				if r.status != 200 {
					t.Fatalf("status %d: %s", r.status, r.body)
				}
				seen := up.requests()[0]
				if seen.auth != "Bearer "+fakeEnv["P1_KEY"] {
					t.Errorf("upstream Authorization = %q, want the provider key", seen.auth)
				}
				h := strings.ToLower(seen.header)
				if strings.Count(h, "authorization:") != 1 || strings.Contains(h, "x-api-key") {
					t.Errorf("client auth headers reached the upstream:\n%s", seen.header)
				}
				for _, secret := range []string{fakeEnv["GW_ML"], "sk-client-own-key"} {
					if strings.Contains(seen.header, secret) || bytes.Contains(seen.body, []byte(secret)) {
						t.Errorf("upstream saw client key %q:\n%s", secret, seen.header)
					}
				}
			})
		}
	}
}

// fakeFailure sets up p1 to fail one way; p2 answers.
type fakeFailure struct {
	name    string
	stream  bool
	timeout string // p1's provider timeout
	refused bool   // nothing listens at p1
	p1      func(u *fakeUpstream) func(*fasthttp.RequestCtx, int)
}

func fakeFixed(h func(*fasthttp.RequestCtx, int)) func(*fakeUpstream) func(*fasthttp.RequestCtx, int) {
	return func(*fakeUpstream) func(*fasthttp.RequestCtx, int) { return h }
}

func fakeFailures() []fakeFailure {
	hang := func(u *fakeUpstream) func(*fasthttp.RequestCtx, int) { return u.fakeHang }
	return []fakeFailure{
		{name: "429 with Retry-After", p1: fakeFixed(fakeBody(429, `{"error":{"message":"Rate limit reached","type":"rate_limit_error"}}`, "Retry-After", "30"))},
		{name: "429 without Retry-After", p1: fakeFixed(fakeBody(429, `{"error":{"message":"Rate limit reached"}}`))},
		{name: "500", p1: fakeFixed(fakeBody(500, `{"error":{"message":"internal error","type":"server_error"}}`))},
		{name: "503", p1: fakeFixed(fakeBody(503, `upstream connect error`))},
		{name: "401 from upstream", p1: fakeFixed(fakeBody(401, `{"error":{"message":"bad key"}}`))},
		{name: "timeout", timeout: "200ms", p1: hang},
		{name: "refused", refused: true},
		{name: "connection closed", p1: fakeFixed(fakeClose)},
		{name: "garbage for a status line", p1: fakeFixed(fakeRaw("SSH-2.0-OpenSSH_9.6\r\n"))},
		{name: "non-JSON 200", p1: fakeFixed(fakeBody(200, `<html><body>Welcome to nginx</body></html>`))},
		{name: "truncated JSON 200", p1: fakeFixed(fakeBody(200, `{"id":"chatcmpl-1","choices":[{"message":`))},
		{name: "stream: 500", stream: true, p1: fakeFixed(fakeBody(500, `{"error":{"message":"internal"}}`))},
		{name: "stream: timeout before headers", stream: true, timeout: "200ms", p1: hang},
		{name: "stream: refused", stream: true, refused: true},
		{name: "stream: connection closed", stream: true, p1: fakeFixed(fakeClose)},
		{name: "stream: headers then close", stream: true, p1: fakeFixed(fakeRaw(fakeSSEHead))},
		{name: "stream: keep-alive then close", stream: true, p1: fakeFixed(fakeRaw(fakeSSEHead + fakeChunked(": keep-alive\n\n")))},
		{name: "stream: empty body", stream: true, p1: fakeFixed(fakeStream())},
		{name: "stream: garbage first", stream: true, p1: fakeFixed(fakeStream("data: <html>oops</html>\n\n", fakeDone))},
		{name: "stream: error event first", stream: true, p1: fakeFixed(fakeStream(`data: {"error":{"message":"overloaded","type":"server_error"}}`+"\n\n", fakeDone))},
		{name: "stream: stalls before the first event", stream: true, timeout: "200ms", p1: func(u *fakeUpstream) func(*fasthttp.RequestCtx, int) {
			return func(ctx *fasthttp.RequestCtx, _ int) {
				ctx.SetContentType("text/event-stream")
				ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
					_, _ = w.WriteString(": keep-alive\n\n")
					_ = w.Flush()
					<-u.release
				})
			}
		}},
	}
}

func TestChatFailsOver(t *testing.T) {
	for _, tt := range fakeFailures() {
		t.Run(tt.name, func(t *testing.T) {
			n := newFakeNet(t)
			var p1 *fakeUpstream
			if !tt.refused {
				p1 = n.upstream("p1.test", nil)
				p1.set(tt.p1(p1))
			}
			p2 := n.upstream("p2.test", fakeOK("from p2"))
			p3 := n.upstream("p3.test", fakeOK("from p3"))
			g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1", timeout: tt.timeout}, {name: "p2"}, {name: "p3"}},
				"models:\n  auto: {targets: [p1/m, p2/m, p3/m]}\n"), n)
			ask, wantBody := fakeAsk, fakeCompletion("up", "from p2")
			if tt.stream {
				ask, wantBody = fakeAskStream, fakeOKStreamBody
			}
			p1Calls := func() int {
				if tt.refused {
					return n.dialsTo("p1.test")
				}
				return p1.hits()
			}

			r := g.chat(ask)
			if r.status != 200 || string(r.body) != wantBody {
				t.Fatalf("status %d, body %q; want p2's answer", r.status, r.body)
			}
			if via := r.get("X-Routed-Via"); via != "p2/m" {
				t.Errorf("x-routed-via = %q, want p2/m", via)
			}
			if fa := r.get("X-Fallback-Attempts"); fa != "1" {
				t.Errorf("x-fallback-attempts = %q, want 1", fa)
			}
			if p1Calls() != 1 || p2.hits() != 1 || p3.hits() != 0 {
				t.Errorf("calls p1 %d, p2 %d, p3 %d; want 1, 1, 0", p1Calls(), p2.hits(), p3.hits())
			}
			if log := g.log.String(); !strings.Contains(log, "upstream attempt failed") || !strings.Contains(log, "via=p1/m") {
				t.Errorf("failed attempt not logged:\n%s", log)
			}

			// p1 is cooling down: the next request goes straight to p2.
			r = g.chat(ask)
			if r.status != 200 || string(r.body) != wantBody {
				t.Fatalf("second request: status %d, body %q", r.status, r.body)
			}
			if via := r.get("X-Routed-Via"); via != "p2/m" {
				t.Errorf("second request: x-routed-via = %q", via)
			}
			if r.has("X-Fallback-Attempts") {
				t.Errorf("second request: x-fallback-attempts = %q; skipping a cooling key is no failed attempt", r.get("X-Fallback-Attempts"))
			}
			if p1Calls() != 1 || p2.hits() != 2 {
				t.Errorf("second request: calls p1 %d, p2 %d; want 1, 2", p1Calls(), p2.hits())
			}
		})
	}
}

func TestChatFailsOverAcrossKeys(t *testing.T) {
	n := newFakeNet(t)
	keyA, keyB := "Bearer "+fakeEnv["P1_KEY"], "Bearer "+fakeEnv["P1_KEY_B"]
	p1 := n.upstream("p1.test", func(ctx *fasthttp.RequestCtx, hit int) {
		if string(ctx.Request.Header.Peek("Authorization")) == keyA {
			fakeBody(429, `{"error":{"message":"quota"}}`, "Retry-After", "30")(ctx, hit)
			return
		}
		fakeOK("key b")(ctx, hit)
	})
	p2 := n.upstream("p2.test", fakeOK("p2"))
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1", keys: []string{"P1_KEY", "P1_KEY_B"}}, {name: "p2"}},
		"models:\n  auto: {targets: [p1/m, p2/m]}\n"), n)

	r := g.chat(fakeAsk)
	if r.status != 200 || string(r.body) != fakeCompletion("up", "key b") {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if via, fa := r.get("X-Routed-Via"), r.get("X-Fallback-Attempts"); via != "p1/m" || fa != "1" {
		t.Errorf("x-routed-via %q, x-fallback-attempts %q; want p1/m, 1", via, fa)
	}
	auths := func() []string {
		var a []string
		for _, s := range p1.requests() {
			a = append(a, s.auth)
		}
		return a
	}
	if got := auths(); !slices.Equal(got, []string{keyA, keyB}) {
		t.Errorf("upstream saw keys %q, want A then B once each", got)
	}
	r = g.chat(fakeAsk)
	if r.status != 200 || r.has("X-Fallback-Attempts") {
		t.Fatalf("second request: status %d, x-fallback-attempts %q", r.status, r.get("X-Fallback-Attempts"))
	}
	if got := auths(); !slices.Equal(got, []string{keyA, keyB, keyB}) {
		t.Errorf("second request: upstream saw keys %q; key A should be cooling down", got)
	}
	if p2.hits() != 0 {
		t.Errorf("p2 hits = %d", p2.hits())
	}
}

func TestChatMaxAttemptsBoundsAttempts(t *testing.T) {
	t.Run("targets", func(t *testing.T) {
		n := newFakeNet(t)
		p1 := n.upstream("p1.test", fakeBody(500, `{"error":{"message":"one"}}`))
		p2 := n.upstream("p2.test", fakeBody(502, `{"error":{"message":"two"}}`))
		p3 := n.upstream("p3.test", fakeOK("never asked"))
		g := newFakeGateway(t, fakeThree("failover: {max_attempts: 2}\n"), n)
		r := g.chat(fakeAsk)
		msg := fakeCheckError(t, r, 500, "server_error", "all_candidates_failed", "")
		if !strings.Contains(msg, "all 2 attempts") {
			t.Errorf("message %q does not count 2 attempts", msg)
		}
		if p1.hits() != 1 || p2.hits() != 1 || p3.hits() != 0 {
			t.Errorf("hits %d %d %d, want 1 1 0", p1.hits(), p2.hits(), p3.hits())
		}
	})
	t.Run("keys count as attempts", func(t *testing.T) {
		n := newFakeNet(t)
		p1 := n.upstream("p1.test", fakeBody(500, `{"error":{"message":"down"}}`))
		p2 := n.upstream("p2.test", fakeOK("never asked"))
		g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1", keys: []string{"P1_KEY", "P1_KEY_B"}}, {name: "p2"}},
			"models:\n  auto: {targets: [p1/m, p2/m]}\nfailover: {max_attempts: 2}\n"), n)
		r := g.chat(fakeAsk)
		msg := fakeCheckError(t, r, 500, "server_error", "all_candidates_failed", "")
		for _, want := range []string{"p1/m (key 1 of 2): 500 down", "p1/m (key 2 of 2): 500 down"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message %q lacks %q", msg, want)
			}
		}
		if p1.hits() != 2 || p2.hits() != 0 {
			t.Errorf("hits %d %d, want 2 0", p1.hits(), p2.hits())
		}
	})
}

func TestChatRelaysUpstreamBadRequest(t *testing.T) {
	bad := `{"error":{"message":"temperature must be at most 2","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}`
	for _, ask := range []string{fakeAsk, fakeAskStream} {
		t.Run("stream="+gjson.Get(ask, "stream").String(), func(t *testing.T) {
			n := newFakeNet(t)
			p1 := n.upstream("p1.test", fakeBody(400, bad))
			p2 := n.upstream("p2.test", fakeOK("never asked"))
			g := newFakeGateway(t, fakeThree(""), n)
			for i := 1; i <= 2; i++ {
				r := g.chat(ask)
				if r.status != 400 || string(r.body) != bad {
					t.Fatalf("request %d: status %d, body %s; want the upstream's 400 as sent", i, r.status, r.body)
				}
				if via := r.get("X-Routed-Via"); via != "p1/m" {
					t.Errorf("x-routed-via = %q", via)
				}
				// The client's fault is no reason to cool p1 down.
				if p1.hits() != i || p2.hits() != 0 {
					t.Errorf("request %d: hits p1 %d, p2 %d", i, p1.hits(), p2.hits())
				}
			}
		})
	}
	t.Run("without an error object", func(t *testing.T) {
		n := newFakeNet(t)
		n.upstream("p1.test", fakeBody(422, `{"detail":"unprocessable"}`))
		p2 := n.upstream("p2.test", fakeOK("never asked"))
		g := newFakeGateway(t, fakeThree(""), n)
		msg := fakeCheckError(t, g.chat(fakeAsk), 422, "invalid_request_error", "upstream_rejected_request", "")
		if !strings.Contains(msg, "p1/m") {
			t.Errorf("message %q does not name the target", msg)
		}
		if p2.hits() != 0 {
			t.Error("a 4xx failed over")
		}
	})
}

// fakeStreamError decodes the SSE error event that ends a broken stream.
func fakeStreamError(t *testing.T, frame string) (msg string) {
	t.Helper()
	data, ok := strings.CutPrefix(frame, "data: ")
	if !ok || !strings.HasSuffix(data, "\n\n") {
		t.Fatalf("last frame %q is not an SSE data event", frame)
	}
	return fakeErrorShape(t, []byte(data), "server_error", "stream_interrupted", "")
}

func TestChatStreamCutAfterFirstFrames(t *testing.T) {
	c0, c1 := fakeChunk(0), fakeChunk(1)
	tests := []struct {
		name    string
		timeout string
		p1      func(u *fakeUpstream) func(*fasthttp.RequestCtx, int)
		frames  string
		msg     string
	}{
		{name: "connection closed", p1: fakeFixed(fakeRaw(fakeSSEHead + fakeChunked(c0) + fakeChunked(c1))),
			frames: c0 + c1, msg: "upstream stream ended before the answer was complete"},
		{name: "connection closed inside a frame", p1: fakeFixed(fakeRaw(fakeSSEHead + fakeChunked(c0) + fakeChunked(c1[:20]))),
			frames: c0, msg: "upstream stream ended before the answer was complete"},
		{name: "clean end without finish", p1: fakeFixed(fakeStream(c0, c1)),
			frames: c0 + c1, msg: "upstream stream ended before the answer was complete"},
		{name: "garbage after the first frame", p1: fakeFixed(fakeStream(c0, "data: {oops\n\n", fakeDone)),
			frames: c0, msg: "upstream stream failed: upstream sent a stream event that is not JSON"},
		// The provider's timeout bounds the whole exchange, so it is
		// long enough here for the first frames to arrive on a busy machine.
		{name: "stalls past the timeout", timeout: "1s", p1: func(u *fakeUpstream) func(*fasthttp.RequestCtx, int) {
			return func(ctx *fasthttp.RequestCtx, _ int) {
				ctx.SetContentType("text/event-stream")
				ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
					_, _ = w.WriteString(c0 + c1)
					_ = w.Flush()
					<-u.release
				})
			}
		}, frames: c0 + c1, msg: "upstream stream failed: upstream stream timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newFakeNet(t)
			p1 := n.upstream("p1.test", nil)
			p1.set(tt.p1(p1))
			p2 := n.upstream("p2.test", fakeOK("too late"))
			g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1", timeout: tt.timeout}, {name: "p2"}},
				"models:\n  auto: {targets: [p1/m, p2/m]}\n"), n)
			start := time.Now()
			r := g.chat(fakeAskStream)
			if r.status != 200 || r.get("Content-Type") != "text/event-stream" {
				t.Fatalf("status %d %q: %s", r.status, r.get("Content-Type"), r.body)
			}
			body := string(r.body)
			if !strings.HasPrefix(body, tt.frames) {
				t.Fatalf("client got %q, want the frames so far %q first", body, tt.frames)
			}
			if msg := fakeStreamError(t, body[len(tt.frames):]); msg != tt.msg {
				t.Errorf("error event message %q, want %q", msg, tt.msg)
			}
			if p2.hits() != 0 {
				t.Error("a stream that reached the client failed over")
			}
			if !strings.Contains(g.log.String(), "upstream stream failed after the response started") {
				t.Errorf("cut not logged:\n%s", g.log.String())
			}
			if d := time.Since(start); d > fakeDeadline/2 {
				t.Errorf("the broken stream took %v to end", d)
			}
		})
	}
}

func TestChatStreamWithoutDoneGetsOne(t *testing.T) {
	usage := `data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1700000000,"model":"up","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}` + "\n\n"
	for name, frames := range map[string][]string{
		"finish_reason last": {fakeChunk(0), fakeChunk(1), fakeFinish},
		"usage chunk last":   {fakeChunk(0), fakeFinish, usage},
	} {
		t.Run(name, func(t *testing.T) {
			n := newFakeNet(t)
			n.upstream("p1.test", fakeStream(frames...))
			g := newFakeGateway(t, fakeThree(""), n)
			r := g.chat(fakeAskStream)
			if want := strings.Join(frames, "") + fakeDone; r.status != 200 || string(r.body) != want {
				t.Errorf("status %d, body %q; want %q", r.status, r.body, want)
			}
		})
	}
}

// fakeErrorShape checks an OpenAI error body, field by field and with no
// extra fields, and returns its message.
func fakeErrorShape(t *testing.T, body []byte, typ, code, param string) string {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || len(top) != 1 || top["error"] == nil {
		t.Fatalf("body %s is not {\"error\":{...}}", body)
	}
	var e map[string]json.RawMessage
	if err := json.Unmarshal(top["error"], &e); err != nil {
		t.Fatalf("error %s is not an object", top["error"])
	}
	keys := slices.Sorted(maps.Keys(e))
	if !slices.Equal(keys, []string{"code", "message", "param", "type"}) {
		t.Errorf("error fields %q, want code, message, param, type", keys)
	}
	var msg, gotType, gotCode string
	var gotParam *string
	_ = json.Unmarshal(e["message"], &msg)
	_ = json.Unmarshal(e["type"], &gotType)
	_ = json.Unmarshal(e["code"], &gotCode)
	if err := json.Unmarshal(e["param"], &gotParam); err != nil {
		t.Errorf("param %s is neither null nor a string", e["param"])
	}
	if msg == "" {
		t.Errorf("empty message in %s", body)
	}
	if gotType != typ || gotCode != code {
		t.Errorf("type %q code %q, want %q %q (%s)", gotType, gotCode, typ, code, body)
	}
	switch {
	case param == "" && gotParam != nil:
		t.Errorf("param = %q, want null", *gotParam)
	case param != "" && (gotParam == nil || *gotParam != param):
		t.Errorf("param = %v, want %q (%s)", e["param"], param, body)
	}
	return msg
}

// fakeCheckError checks an error response and returns its message.
func fakeCheckError(t *testing.T, r *fakeResponse, status int, typ, code, param string) string {
	t.Helper()
	if r.status != status {
		t.Errorf("status %d, want %d (%s)", r.status, status, r.body)
	}
	if ct := r.get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	return fakeErrorShape(t, r.body, typ, code, param)
}

func TestChatErrors(t *testing.T) {
	ml := []string{"Authorization", "Bearer " + fakeEnv["GW_ML"]}
	key := func(name string) []string { return []string{"Authorization", "Bearer " + fakeEnv[name]} }
	user := `[{"role":"user","content":"hi"}]`
	tests := []struct {
		name         string
		method, path string
		body         string
		hdrs         []string
		status       int
		typ, code    string
		param        string
		msg          string // a part of the message
	}{
		{"malformed JSON", "POST", "/v1/chat/completions", `{"model":"auto",`, ml, 400, "invalid_request_error", "invalid_json", "", "not valid JSON"},
		{"empty body", "POST", "/v1/chat/completions", ``, ml, 400, "invalid_request_error", "invalid_json", "", "JSON"},
		{"not an object", "POST", "/v1/chat/completions", `[{"model":"auto"}]`, ml, 400, "invalid_request_error", "invalid_json", "", "object"},
		{"missing model", "POST", "/v1/chat/completions", `{"messages":` + user + `}`, ml, 400, "invalid_request_error", "missing_field", "model", "model"},
		{"missing messages", "POST", "/v1/chat/completions", `{"model":"auto"}`, ml, 400, "invalid_request_error", "missing_field", "messages", "messages"},
		{"model wrong type", "POST", "/v1/chat/completions", `{"model":42,"messages":` + user + `}`, ml, 400, "invalid_request_error", "invalid_type", "model", "model"},
		{"model empty", "POST", "/v1/chat/completions", `{"model":"","messages":` + user + `}`, ml, 400, "invalid_request_error", "invalid_type", "model", "model"},
		{"messages wrong type", "POST", "/v1/chat/completions", `{"model":"auto","messages":"hi"}`, ml, 400, "invalid_request_error", "invalid_type", "messages", "messages"},
		{"messages empty", "POST", "/v1/chat/completions", `{"model":"auto","messages":[]}`, ml, 400, "invalid_request_error", "invalid_value", "messages", "messages"},
		{"message not an object", "POST", "/v1/chat/completions", `{"model":"auto","messages":["hi"]}`, ml, 400, "invalid_request_error", "invalid_type", "messages[0]", "message"},
		{"message without role", "POST", "/v1/chat/completions", `{"model":"auto","messages":[{"content":"hi"}]}`, ml, 400, "invalid_request_error", "invalid_type", "messages[0].role", "role"},
		{"second message without role", "POST", "/v1/chat/completions", `{"model":"auto","messages":[{"role":"user","content":"a"},{"role":7}]}`, ml, 400, "invalid_request_error", "invalid_type", "messages[1].role", "role"},
		{"stream wrong type", "POST", "/v1/chat/completions", `{"model":"auto","stream":"yes","messages":` + user + `}`, ml, 400, "invalid_request_error", "invalid_type", "stream", "stream"},
		{"tools wrong type", "POST", "/v1/chat/completions", `{"model":"auto","tools":{},"messages":` + user + `}`, ml, 400, "invalid_request_error", "invalid_type", "tools", "tools"},
		{"metadata wrong type", "POST", "/v1/chat/completions", `{"model":"auto","metadata":[1],"messages":` + user + `}`, ml, 400, "invalid_request_error", "invalid_type", "metadata", "metadata"},
		{"missing key", "POST", "/v1/chat/completions", fakeAsk, nil, 401, "authentication_error", "missing_api_key", "", "Authorization"},
		{"not a bearer key", "POST", "/v1/chat/completions", fakeAsk, []string{"Authorization", "Basic dXNlcjpwYXNz"}, 401, "authentication_error", "missing_api_key", "", "gateway key"},
		{"unknown key", "POST", "/v1/chat/completions", fakeAsk, []string{"Authorization", "Bearer gw-who-is-this"}, 401, "authentication_error", "invalid_api_key", "", "invalid gateway key"},
		{"key checked before the body", "POST", "/v1/chat/completions", `{oops`, nil, 401, "authentication_error", "missing_api_key", "", "gateway key"},
		{"disabled key", "POST", "/v1/chat/completions", fakeAsk, key("GW_OFF"), 403, "permission_error", "key_disabled", "", "disabled"},
		{"expired key", "POST", "/v1/chat/completions", fakeAsk, key("GW_OLD"), 403, "permission_error", "key_expired", "", "expired"},
		{"model not allowed", "POST", "/v1/chat/completions", `{"model":"p2/m","messages":` + user + `}`, key("GW_LIM"), 403, "permission_error", "model_not_allowed", "", `"p2/m"`},
		{"unknown model", "POST", "/v1/chat/completions", `{"model":"gpt-9","messages":` + user + `}`, ml, 404, "invalid_request_error", "model_not_found", "model", `"gpt-9"`},
		{"chat by GET", "GET", "/v1/chat/completions", "", ml, 405, "invalid_request_error", "method_not_allowed", "", "POST"},
		{"models by POST", "POST", "/v1/models", fakeAsk, ml, 405, "invalid_request_error", "method_not_allowed", "", "GET"},
		{"unknown path", "GET", "/v1/nothing-here", "", ml, 404, "invalid_request_error", "unknown_path", "", "/v1/nothing-here"},
		{"models without key", "GET", "/v1/models", "", nil, 401, "authentication_error", "missing_api_key", "", "gateway key"},
	}
	n := newFakeNet(t)
	up := n.upstream("p1.test", fakeOK("ok"))
	g := newFakeGateway(t, fakeThree(fakeAuthConfig), n)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := g.do(tt.method, tt.path, tt.body, tt.hdrs...)
			msg := fakeCheckError(t, r, tt.status, tt.typ, tt.code, tt.param)
			if !strings.Contains(msg, tt.msg) {
				t.Errorf("message %q does not mention %q", msg, tt.msg)
			}
			if r.has("Retry-After") {
				t.Errorf("Retry-After %q on a %d", r.get("Retry-After"), r.status)
			}
			if tt.status == 405 && r.get("Allow") != tt.msg {
				t.Errorf("Allow = %q, want %s", r.get("Allow"), tt.msg)
			}
		})
	}
	if up.hits() != 0 {
		t.Errorf("rejected requests reached the upstream %d times", up.hits())
	}
	// The same keys pass where they may.
	if r := g.do("POST", "/v1/chat/completions", fakeAsk, key("GW_LIM")...); r.status != 200 {
		t.Errorf("limited key on an allowed model: %d %s", r.status, r.body)
	}
}

func TestChatBodyTooLarge(t *testing.T) {
	n := newFakeNet(t)
	up := n.upstream("p1.test", fakeOK("ok"))
	g := newFakeGateway(t, fakeThree("max_body: 2KiB\n"), n)
	ask := func(size int) string {
		return `{"model":"auto","messages":[{"role":"user","content":"` + strings.Repeat("a", size) + `"}]}`
	}
	if r := g.chat(ask(1500)); r.status != 200 {
		t.Fatalf("a body under the limit: %d %s", r.status, r.body)
	}
	big := ask(4096)
	head := "POST /v1/chat/completions HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/json\r\n"
	for name, req := range map[string]string{
		"Content-Length": head + "Content-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big,
		"chunked":        head + "Transfer-Encoding: chunked\r\n\r\n" + fakeChunked(big[:1000]) + fakeChunked(big[1000:]) + "0\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			fakeCheckError(t, g.raw(req), 413, "invalid_request_error", "request_too_large", "")
		})
	}
	if up.hits() != 1 {
		t.Errorf("upstream hits = %d, want 1", up.hits())
	}
}

func TestChatEveryCandidateRateLimited(t *testing.T) {
	n := newFakeNet(t)
	p1 := n.upstream("p1.test", fakeBody(429, `{"error":{"message":"slow down"}}`, "Retry-After", "20"))
	p2 := n.upstream("p2.test", fakeBody(429, `{"error":{"message":"quota exceeded"}}`))
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}},
		"models:\n  auto: {targets: [p1/m, p2/m]}\nfailover: {cooldown: 60s}\n"), n)
	r := g.chat(fakeAsk)
	msg := fakeCheckError(t, r, 429, "rate_limit_error", "rate_limit_exceeded", "")
	for _, want := range []string{"p1/m: 429 slow down", "p2/m: 429 quota exceeded"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	// The soonest retry is p1's 20s, not the 60s cooldown p2 got.
	if ra, _ := strconv.Atoi(r.get("Retry-After")); ra < 19 || ra > 20 {
		t.Errorf("Retry-After = %q, want 20", r.get("Retry-After"))
	}

	r = g.chat(fakeAsk)
	msg = fakeCheckError(t, r, 429, "rate_limit_error", "rate_limit_exceeded", "")
	if !strings.Contains(msg, "cooling down") {
		t.Errorf("message %q", msg)
	}
	if ra, _ := strconv.Atoi(r.get("Retry-After")); ra < 19 || ra > 20 {
		t.Errorf("cooling: Retry-After = %q, want 20", r.get("Retry-After"))
	}
	if p1.hits() != 1 || p2.hits() != 1 {
		t.Errorf("hits %d %d: cooling keys were called", p1.hits(), p2.hits())
	}
}

func TestChatEveryCandidateFailed(t *testing.T) {
	n := newFakeNet(t)
	p1 := n.upstream("p1.test", fakeBody(500, `{"error":{"message":"boom while using `+fakeEnv["P1_KEY"]+`"}}`))
	p3 := n.upstream("p3.test", nil)
	p3.set(p3.fakeHang)
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}, {name: "p3", timeout: "200ms"}},
		"models:\n  auto: {targets: [p1/m, p2/m, p3/m]}\n"), n)
	r := g.chat(fakeAsk)
	msg := fakeCheckError(t, r, 500, "server_error", "all_candidates_failed", "")
	for _, want := range []string{`all 3 attempts for model "auto" failed`, "p1/m: 500 boom while using <secret>", "p2/m: upstream connection failed", "p3/m: upstream timed out"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	for _, k := range fakeProviderKeys() {
		if strings.Contains(msg, k) || strings.Contains(r.header, k) {
			t.Errorf("the answer leaks a provider key: %s", msg)
		}
	}
	if r.has("Retry-After") {
		t.Errorf("Retry-After %q on a 500", r.get("Retry-After"))
	}

	r = g.chat(fakeAsk)
	msg = fakeCheckError(t, r, 503, "server_error", "all_candidates_cooling_down", "")
	if !strings.Contains(msg, `"auto"`) {
		t.Errorf("message %q does not name the model", msg)
	}
	if ra, _ := strconv.Atoi(r.get("Retry-After")); ra < 1 || ra > 60 {
		t.Errorf("Retry-After = %q", r.get("Retry-After"))
	}
	if p1.hits() != 1 || n.dialsTo("p2.test") != 1 || p3.hits() != 1 {
		t.Errorf("calls %d %d %d: cooling keys were called", p1.hits(), n.dialsTo("p2.test"), p3.hits())
	}
}

func TestChatRequestID(t *testing.T) {
	n := newFakeNet(t)
	up := n.upstream("p1.test", fakeOK("ok"))
	g := newFakeGateway(t, fakeThree(""), n)

	for _, r := range []*fakeResponse{
		g.chat(fakeAsk, "X-Request-Id", "client-chosen-42"),
		g.chat(fakeAskStream, "X-Request-Id", "client-chosen-42"),
		g.chat(`{"model":"nope","messages":[{"role":"user","content":"x"}]}`, "X-Request-Id", "client-chosen-42"),
	} {
		if id := r.get("X-Request-Id"); id != "client-chosen-42" {
			t.Errorf("status %d: x-request-id = %q, want the client's", r.status, id)
		}
	}
	a, b := g.chat(fakeAsk).get("X-Request-Id"), g.get("/v1/nothing").get("X-Request-Id")
	if a == "" || b == "" || a == b {
		t.Errorf("generated ids %q and %q: want two different non-empty ids", a, b)
	}
	long := strings.Repeat("x", 200)
	if id := g.chat(fakeAsk, "X-Request-Id", long).get("X-Request-Id"); id == long || id == "" {
		t.Errorf("an overlong client id was echoed or dropped: %q", id)
	}
	if up.hits() != 4 {
		t.Errorf("upstream hits %d", up.hits())
	}
}

func TestChatRoutes(t *testing.T) {
	n := newFakeNet(t)
	ups := map[string]*fakeUpstream{}
	for _, p := range []string{"p1", "p2", "p3", "p4"} {
		ups[p] = n.upstream(p+".test", fakeOK(p))
	}
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}, {name: "p3"}, {name: "p4"}}, fakeAuthConfig+`models:
  auto: {targets: [p1/m]}
  long: {targets: [p2/m]}
routes:
  - name: long-prompts
    match: 'tokens > 300'
    model: long
  - name: gold-tier
    match: 'headers["x-tier"] == "gold"'
    targets: [p3/m]
  - name: ml-tools
    match: 'key.metadata.team == "ml" && tools'
    targets: [p4/m, p1/m]
`), n)
	ml, web := fakeEnv["GW_ML"], fakeEnv["GW_WEB"]
	ask := func(model, extra string) string {
		return `{"model":"` + model + `"` + extra + `,"messages":[{"role":"user","content":"hi"}]}`
	}
	tools := `,"tools":[{"type":"function","function":{"name":"f","parameters":{}}}]`
	long := `{"model":"auto","messages":[{"role":"user","content":"` + strings.Repeat("long ", 300) + `"}]}`
	tests := []struct {
		name  string
		key   string
		body  string
		hdrs  []string
		via   string
		route string
	}{
		{"no rule matches", web, ask("auto", ""), nil, "p1/m", "default"},
		{"tokens", web, long, nil, "p2/m", "long-prompts"},
		{"header", web, ask("auto", ""), []string{"X-Tier", "gold"}, "p3/m", "gold-tier"},
		{"header, other value", web, ask("auto", ""), []string{"X-Tier", "silver"}, "p1/m", "default"},
		{"key metadata and tools", ml, ask("auto", tools), nil, "p4/m", "ml-tools"},
		{"key metadata without tools", ml, ask("auto", ""), nil, "p1/m", "default"},
		{"empty tools", ml, ask("auto", `,"tools":[]`), nil, "p1/m", "default"},
		{"tools with another key", web, ask("auto", tools), nil, "p1/m", "default"},
		{"first matching rule wins", ml, ask("auto", tools), []string{"X-Tier", "gold"}, "p3/m", "gold-tier"},
		{"a rule overrides the model asked for", ml, ask("p2/m", tools), nil, "p4/m", "ml-tools"},
		{"a rule serves an unknown model", web, ask("gpt-9", ""), []string{"X-Tier", "gold"}, "p3/m", "gold-tier"},
		{"provider/model", web, ask("p2/m", ""), nil, "p2/m", "default"},
		{"bare provider model name", web, ask("m", ""), nil, "p1/m", "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g.key = tt.key
			r := g.chat(tt.body, tt.hdrs...)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if via := r.get("X-Routed-Via"); via != tt.via {
				t.Errorf("x-routed-via = %q, want %q", via, tt.via)
			}
			if route := r.get("X-Gateway-Route"); route != tt.route {
				t.Errorf("x-gateway-route = %q, want %q", route, tt.route)
			}
			p := strings.TrimSuffix(tt.via, "/m")
			reqs := ups[p].requests()
			if got := gjson.GetBytes(reqs[len(reqs)-1].body, "model").Str; got != p+"-up" {
				t.Errorf("%s was asked for model %q", p, got)
			}
		})
	}
	g.key = web
	fakeCheckError(t, g.chat(ask("gpt-9", "")), 404, "invalid_request_error", "model_not_found", "model")
}

func TestChatBareModelNameChain(t *testing.T) {
	n := newFakeNet(t)
	p1 := n.upstream("p1.test", fakeOK("p1"))
	p2 := n.upstream("p2.test", fakeOK("p2"))
	g := newFakeGateway(t, fakeYAML([]fakeProv{
		{name: "p1", models: map[string]string{"shared": "p1-shared", "solo": "p1-solo"}},
		{name: "p2", models: map[string]string{"shared": "p2-shared"}},
	}, ""), n)
	ask := func(model string) string {
		return `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`
	}
	lastModel := func(u *fakeUpstream) string {
		reqs := u.requests()
		return gjson.GetBytes(reqs[len(reqs)-1].body, "model").Str
	}

	r := g.chat(ask("shared"))
	if r.status != 200 || r.get("X-Routed-Via") != "p1/shared" || lastModel(p1) != "p1-shared" {
		t.Fatalf("shared: %d via %q, p1 asked for %q", r.status, r.get("X-Routed-Via"), lastModel(p1))
	}
	r = g.chat(ask("p2/shared"))
	if r.status != 200 || r.get("X-Routed-Via") != "p2/shared" || lastModel(p2) != "p2-shared" {
		t.Fatalf("p2/shared: %d via %q", r.status, r.get("X-Routed-Via"))
	}
	p1.set(fakeBody(503, `{"error":{"message":"busy"}}`))
	r = g.chat(ask("shared"))
	if r.status != 200 || r.get("X-Routed-Via") != "p2/shared" || r.get("X-Fallback-Attempts") != "1" {
		t.Fatalf("shared with p1 down: %d via %q fallbacks %q", r.status, r.get("X-Routed-Via"), r.get("X-Fallback-Attempts"))
	}
	// provider/model is a chain of one: no failover to p2.
	fakeCheckError(t, g.chat(ask("p1/shared")), 503, "server_error", "all_candidates_cooling_down", "")
	// Cooldowns are per (provider, model, key): p1's other model is tried.
	fakeCheckError(t, g.chat(ask("solo")), 500, "server_error", "all_candidates_failed", "")
	if p1.hits() != 3 || p2.hits() != 2 {
		t.Errorf("hits %d %d, want 3 2", p1.hits(), p2.hits())
	}
}

func TestModelsEndpoint(t *testing.T) {
	n := newFakeNet(t)
	g := newFakeGateway(t, fakeYAML([]fakeProv{
		{name: "p1", models: map[string]string{"m": "p1-up", "x": "p1-x"}},
		{name: "p2", models: map[string]string{"m": "p2-up", "m2": "p2-m2"}},
	}, `auth:
  keys:
    - {name: all, key: "${GW_ML}"}
    - {name: limited, key: "${GW_LIM}", models: [auto, m2, p1/x]}
models:
  auto: {targets: [p1/m, p2/m]}
  fast: {targets: [p2/m2]}
`), n)
	type entry struct {
		ID         string   `json:"id"`
		Object     string   `json:"object"`
		Created    int64    `json:"created"`
		OwnedBy    string   `json:"owned_by"`
		Operations []string `json:"operations"`
	}
	list := func(key string) []entry {
		t.Helper()
		g.key = fakeEnv[key]
		r := g.get("/v1/models")
		if r.status != 200 || r.get("Content-Type") != "application/json" {
			t.Fatalf("status %d %q: %s", r.status, r.get("Content-Type"), r.body)
		}
		var body struct {
			Object string  `json:"object"`
			Data   []entry `json:"data"`
		}
		dec := json.NewDecoder(bytes.NewReader(r.body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil || body.Object != "list" || body.Data == nil {
			t.Fatalf("not an OpenAI list: %s (%v)", r.body, err)
		}
		for _, e := range body.Data {
			if e.Object != "model" || e.Created == 0 || e.OwnedBy == "" || !slices.Contains(e.Operations, "chat") {
				t.Errorf("entry %+v", e)
			}
		}
		return body.Data
	}
	ids := func(es []entry) []string {
		var s []string
		for _, e := range es {
			s = append(s, e.ID+"@"+e.OwnedBy)
		}
		return s
	}
	if got, want := ids(list("GW_ML")), []string{"auto@gateway", "fast@gateway", "m@p1", "x@p1", "m2@p2"}; !slices.Equal(got, want) {
		t.Errorf("models = %q, want %q", got, want)
	}
	if got, want := ids(list("GW_LIM")), []string{"auto@gateway", "m2@p2"}; !slices.Equal(got, want) {
		t.Errorf("limited key's models = %q, want %q", got, want)
	}
}

func TestHealthAndTargets(t *testing.T) {
	n := newFakeNet(t)
	yaml := fakeThree(fakeAuthConfig)
	g := newFakeGateway(t, yaml, n)
	g.key = "" // both are public

	before := time.Now().UnixMilli()
	r := g.get("/health")
	if r.status != 200 || r.get("Content-Type") != "application/json" {
		t.Fatalf("health: %d %s", r.status, r.body)
	}
	sum := sha256.Sum256([]byte(yaml))
	h := gjson.ParseBytes(r.body)
	if h.Get("status").Str != "ok" {
		t.Errorf("status %q", h.Get("status").Str)
	}
	if got := h.Get("config.checksum").Str; got != hex.EncodeToString(sum[:]) {
		t.Errorf("config.checksum %q, want the file's SHA-256", got)
	}
	if got := h.Get("version").Str; got != fakeVersion {
		t.Errorf("version %q, want the binary's, %q", got, fakeVersion)
	}
	if !h.Get("last_reload.ok").Bool() {
		t.Errorf("last_reload %s", h.Get("last_reload").Raw)
	}
	if ts := h.Get("ts").Int(); ts < before || ts > time.Now().UnixMilli() {
		t.Errorf("ts %s, want the server's clock in unix ms", h.Get("ts").Raw)
	}
	if h.Get("region").Exists() {
		t.Errorf("region %s, want it left out when the config sets none", h.Get("region").Raw)
	}

	r = g.get("/targets")
	if r.status != 200 || string(r.body) != `{"targets":["p1","p2","p3"]}` {
		t.Errorf("targets: %d %s", r.status, r.body)
	}
}

func TestNoSecretLeaks(t *testing.T) {
	// Each step has its own model on every provider, so one step's
	// cooldowns do not change the next step's path.
	k1, k2, k3 := fakeEnv["P1_KEY"], fakeEnv["P2_KEY"], fakeEnv["P3_KEY"]
	steps := map[string]map[string]func(*fasthttp.RequestCtx, int){
		"s1": {"p1": fakeOK("fine")},
		"s2": {
			"p1": fakeBody(401, `{"error":{"message":"Incorrect API key provided: `+k1+`","code":"invalid_api_key"}}`),
			"p2": fakeBody(500, `{"error":{"message":"key `+k2+` broke us"}}`),
			"p3": fakeOK("third time"),
		},
		"s3": {
			"p1": fakeBody(429, `{"error":{"message":"quota for `+k1+` exceeded"}}`, "Retry-After", "30"),
			"p2": fakeBody(400, `{"error":{"message":"bad request from `+k2+`","type":"invalid_request_error"}}`),
		},
		"s4": {
			"p1": fakeBody(403, `{"error":{"message":"`+k1+` is not allowed"}}`),
			"p2": fakeBody(502, `{"message":"`+k2+`"}`),
			"p3": fakeBody(503, `{"error":{"message":"`+k3+` overloaded"}}`),
		},
		"s5": {
			"p1": fakeStream(`data: {"error":{"message":"invalid key `+k1+`"}}`+"\n\n", fakeDone),
			"p2": fakeOK("streamed"),
		},
		"s6": {
			"p1": fakeBody(500, `{"error":{"message":"`+k1+`"}}`),
			"p2": fakeRaw(fakeSSEHead + fakeChunked(fakeChunk(0))),
		},
	}
	n := newFakeNet(t)
	provs := []fakeProv{}
	groups := "models:\n"
	for _, p := range []string{"p1", "p2", "p3"} {
		models := map[string]string{}
		for s := range steps {
			models[s] = p + "-" + s
		}
		provs = append(provs, fakeProv{name: p, models: models})
		n.upstream(p+".test", func(ctx *fasthttp.RequestCtx, hit int) {
			step := strings.TrimPrefix(gjson.GetBytes(ctx.PostBody(), "model").Str, p+"-")
			if h := steps[step][p]; h != nil {
				h(ctx, hit)
				return
			}
			fakeBody(500, `{"error":{"message":"unscripted"}}`)(ctx, hit)
		})
	}
	for _, s := range slices.Sorted(maps.Keys(steps)) {
		groups += "  " + s + ": {targets: [p1/" + s + ", p2/" + s + ", p3/" + s + "]}\n"
	}
	g := newFakeGateway(t, fakeYAML(provs, "auth:\n  keys:\n    - {name: team-ml, key: \"${GW_ML}\"}\n"+groups), n)
	ask := func(model string, stream bool) string {
		return `{"model":"` + model + `","stream":` + strconv.FormatBool(stream) + `,"messages":[{"role":"user","content":"hi"}]}`
	}
	script := []struct {
		body   string
		hdrs   []string
		status int
		check  func(r *fakeResponse) bool
	}{
		{ask("s1", false), nil, 200, nil},
		{ask("s1", true), nil, 200, nil},
		{ask("s2", false), nil, 200, func(r *fakeResponse) bool { return r.get("X-Fallback-Attempts") == "2" }},
		{ask("s3", false), nil, 400, func(r *fakeResponse) bool { return strings.Contains(string(r.body), "bad request from <secret>") }},
		{ask("s4", false), nil, 500, nil},
		{ask("s4", false), nil, 503, nil},
		{ask("s5", true), nil, 200, func(r *fakeResponse) bool { return r.get("X-Routed-Via") == "p2/s5" }},
		{ask("s6", true), nil, 200, func(r *fakeResponse) bool { return strings.Contains(string(r.body), "stream_interrupted") }},
		{ask("s1", false), []string{"Authorization", "Bearer " + k1}, 401, nil},
		{`{"model":`, nil, 400, nil},
	}
	var seen []string
	for i, s := range script {
		r := g.chat(s.body, s.hdrs...)
		if r.status != s.status || (s.check != nil && !s.check(r)) {
			t.Errorf("step %d: status %d, headers\n%s\nbody %s", i, r.status, r.header, r.body)
		}
		seen = append(seen, r.header, string(r.body))
	}
	for _, path := range []string{"/v1/models", "/health", "/targets", "/v1/nothing"} {
		r := g.get(path)
		seen = append(seen, r.header, string(r.body))
	}
	log := g.log.String()
	if !strings.Contains(log, "upstream attempt failed") {
		t.Fatalf("the script failed nothing? log:\n%s", log)
	}
	for _, k := range append(fakeProviderKeys(), fakeEnv["GW_ML"]) {
		for _, s := range seen {
			if strings.Contains(s, k) {
				t.Errorf("a response leaks %q:\n%s", k, s)
			}
		}
		if strings.Contains(log, k) {
			t.Errorf("the log leaks %q:\n%s", k, log)
		}
	}
}
