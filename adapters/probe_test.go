package adapters

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/config"
)

// probeProtocols are the protocols with a model list, each with where its
// probe goes, the header its key goes in, and a 1-token chat answer.
var probeProtocols = []struct {
	protocol, baseURL, path, keyHeader, keyValue, chatAnswer string
}{
	{"openai", "http://up.test/v1", "/v1/models", "Authorization", "Bearer " + testKey1,
		`{"id":"c","object":"chat.completion","created":1,"model":"up-m","choices":[{"index":0,"message":{"role":"assistant","content":"p"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`},
	{"anthropic", "http://up.test", "/v1/models?limit=1", "X-Api-Key", testKey1,
		`{"id":"msg_1","type":"message","role":"assistant","model":"up-m","content":[{"type":"text","text":"p"}],"stop_reason":"max_tokens","usage":{"input_tokens":3,"output_tokens":1}}`},
	{"gemini", "http://up.test/v1beta", "/v1beta/models?pageSize=1", "X-Goog-Api-Key", testKey1,
		`{"candidates":[{"content":{"parts":[{"text":"p"}],"role":"model"},"finishReason":"MAX_TOKENS"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1}}`},
	{"cohere", "http://up.test", "/v1/models?page_size=1", "Authorization", "Bearer " + testKey1,
		`{"id":"x","finish_reason":"MAX_TOKENS","message":{"role":"assistant","content":[{"type":"text","text":"p"}]},"usage":{"tokens":{"input_tokens":3,"output_tokens":1}}}`},
}

// probeFake is an upstream whose answer a test sets, recording each
// request's URI, key header and body.
type probeFake struct {
	*upstream
	mu                 sync.Mutex
	uris, keys, bodies []string
}

func newProbeFake(t *testing.T, keyHeader string, answer fasthttp.RequestHandler) *probeFake {
	f := &probeFake{}
	f.upstream = newUpstream(t, func(ctx *fasthttp.RequestCtx) {
		f.mu.Lock()
		f.uris = append(f.uris, string(ctx.RequestURI()))
		f.keys = append(f.keys, string(ctx.Request.Header.Peek(keyHeader)))
		f.bodies = append(f.bodies, string(ctx.PostBody()))
		f.mu.Unlock()
		answer(ctx)
	})
	return f
}

// probeProvider loads a one-provider config of protocol at baseURL whose
// upstream is u, and returns it with its client and adapter.
func probeProvider(t *testing.T, protocol, baseURL string, u *upstream) (*config.Provider, *fasthttp.HostClient, Provider) {
	t.Helper()
	yaml := "providers:\n  up:\n    type: " + protocol + "\n    base_url: " + baseURL +
		"\n    keys: [\"${K1}\"]\n    timeout: 2s\n    models:\n      m: {upstream: up-m}\n"
	cfg, err := config.Parse([]byte(yaml), config.Options{LookupEnv: func(string) (string, bool) { return testKey1, true }})
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Providers["up"]
	client := NewClient(p, func(addr string) (net.Conn, error) {
		if addr != "up.test:80" {
			return nil, errors.New("dial " + addr + ": connection refused")
		}
		return u.ln.Dial()
	})
	t.Cleanup(client.CloseIdleConnections)
	a, err := New(p, client, testRedactor)
	if err != nil {
		t.Fatal(err)
	}
	return p, client, a
}

// probeAnswer answers status with body (and header pairs).
func probeAnswer(status int, body string, hdrs ...string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		for i := 0; i+1 < len(hdrs); i += 2 {
			ctx.Response.Header.Set(hdrs[i], hdrs[i+1])
		}
		ctx.SetStatusCode(status)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(body)
	}
}

// probeCase is an upstream's answer and what a probe must make of it.
type probeCase struct {
	name   string
	answer fasthttp.RequestHandler
	// healthy: no failure; else the class and the wait.
	healthy bool
	class   Class
	wait    time.Duration
}

// probeCases are the answers every protocol's probes are classified from.
// The error bodies quote the key, as some upstreams do: the failure must
// never carry it, nor the upstream's words.
var probeCases = []probeCase{
	{"401 invalid", probeAnswer(401, `{"error":{"message":"bad key `+testKey1+`","type":"authentication_error"},"message":"bad key `+testKey1+`"}`), false, Auth, 0},
	{"403 invalid", probeAnswer(403, `{"error":{"message":"key `+testKey1+` forbidden","type":"permission_error"}}`), false, Auth, 0},
	{"429 rate limited", probeAnswer(429, `{"error":{"message":"slow down `+testKey1+`","type":"rate_limit_error"}}`, "Retry-After", "7"), false, RateLimited, 7 * time.Second},
	{"500 error", probeAnswer(500, `{"error":{"message":"overloaded `+testKey1+`"}}`), false, Retryable, 0},
	{"connection closed", func(ctx *fasthttp.RequestCtx) {
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(net.Conn) {})
	}, false, Retryable, 0},
	// The HTTP client's error quotes a malformed status line.
	{"not HTTP", func(ctx *fasthttp.RequestCtx) {
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) { _, _ = c.Write([]byte("HELLO " + testKey1 + "\r\n\r\n")) })
	}, false, Retryable, 0},
}

func checkProbe(t *testing.T, f *Failure, healthy bool, class Class, wait time.Duration) {
	t.Helper()
	switch {
	case healthy && f != nil:
		t.Fatalf("failure %v (class %s), want healthy", f, f.Class)
	case healthy:
		return
	case f == nil:
		t.Fatalf("healthy, want class %s", class)
	case f.Class != class || f.RetryAfter != wait:
		t.Errorf("class %s wait %v (%v), want %s wait %v", f.Class, f.RetryAfter, f, class, wait)
	}
	if strings.Contains(f.Msg, "sk-test") || strings.Contains(f.Msg, "overloaded") || strings.Contains(f.Msg, "slow down") || f.Body != nil {
		t.Errorf("failure carries the upstream's words: %q body %q", f.Msg, f.Body)
	}
}

// A model-list probe goes where each protocol lists its models, with the
// key where the protocol reads it, and is classified: 2xx JSON healthy,
// 429 rate limited with its wait, 401/403 invalid, 404/405 (no list
// served there) unchecked, anything else (5xx, a cut connection, a 200
// that is not JSON) an error.
func TestProbeModelsPerProtocol(t *testing.T) {
	for _, pr := range probeProtocols {
		t.Run(pr.protocol, func(t *testing.T) {
			cases := append([]probeCase{
				{"200 healthy", probeAnswer(200, `{"data":[{"id":"m"}],"models":[]}`), true, 0, 0},
				{"200 not JSON", probeAnswer(200, `<html>maintenance</html>`), false, Retryable, 0},
				// No model list there: the probe cannot check the key.
				{"404 no list", probeAnswer(404, `404 page not found`), false, Unsupported, 0},
				{"405 no list", probeAnswer(405, `method not allowed`), false, Unsupported, 0},
			}, probeCases...)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					u := newProbeFake(t, pr.keyHeader, c.answer)
					p, client, _ := probeProvider(t, pr.protocol, pr.baseURL, u.upstream)
					checkProbe(t, ProbeModels(p, client, 0), c.healthy, c.class, c.wait)
					u.mu.Lock()
					defer u.mu.Unlock()
					// A GET the upstream cut without an answer is sent
					// again (fasthttp's rule for idempotent requests).
					if len(u.uris) == 0 || len(u.uris) > 1 && c.name != "connection closed" && c.name != "not HTTP" {
						t.Fatalf("%d requests, want one", len(u.uris))
					}
					for i := range u.uris {
						if u.uris[i] != pr.path || u.keys[i] != pr.keyValue || u.bodies[i] != "" {
							t.Errorf("request %q with key %q body %q, want a GET %s with the key", u.uris[i], u.keys[i], u.bodies[i], pr.path)
						}
					}
				})
			}
		})
	}
}

// Gemini refuses a bad key with a 400 naming API_KEY_INVALID: its own
// classification makes that invalid, not an error.
func TestProbeModelsGeminiBadKeyIs400(t *testing.T) {
	u := newProbeFake(t, "X-Goog-Api-Key", probeAnswer(400, `{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}`))
	p, client, _ := probeProvider(t, "gemini", "http://up.test/v1beta", u.upstream)
	checkProbe(t, ProbeModels(p, client, 0), false, Auth, 0)
}

// A chat probe is a 1-token, non-streamed request through the adapter's
// own chat call, classified the same way, its usage reported.
func TestProbeChatPerProtocol(t *testing.T) {
	for _, pr := range probeProtocols {
		t.Run(pr.protocol, func(t *testing.T) {
			cases := append([]probeCase{{"200 healthy", probeAnswer(200, pr.chatAnswer), true, 0, 0}}, probeCases...)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					u := newProbeFake(t, pr.keyHeader, c.answer)
					_, _, a := probeProvider(t, pr.protocol, pr.baseURL, u.upstream)
					usage, f := ProbeChat(a, "up-m", 0)
					checkProbe(t, f, c.healthy, c.class, c.wait)
					if c.healthy && (!usage.Known || usage.Completion != 1) {
						t.Errorf("usage %+v, want the answer's 1 completion token", usage)
					}
					u.mu.Lock()
					defer u.mu.Unlock()
					if len(u.uris) != 1 || u.keys[0] != pr.keyValue || !strings.Contains(u.bodies[0], "up-m") && pr.protocol != "gemini" {
						t.Fatalf("requests %q keys %q bodies %q", u.uris, u.keys, u.bodies)
					}
					// One token, asked under each protocol's own name for it.
					if b := u.bodies[0]; !strings.Contains(b, `"max_tokens":1`) && !strings.Contains(b, `"maxOutputTokens":1`) || strings.Contains(b, `"stream":true`) {
						t.Errorf("body %s: want a 1-token non-stream request", b)
					}
				})
			}
		})
	}
}

// The mock answers a chat probe in process, healthy, with no network.
func TestProbeChatMock(t *testing.T) {
	cfg, err := config.Parse([]byte("providers:\n  mock:\n    type: mock\n    models: {echo: {}}\n"), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg.Providers["mock"], nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, f := ProbeChat(a, "echo", -1); f != nil {
		t.Fatalf("mock probe: %v", f)
	}
	if f := ProbeModels(cfg.Providers["mock"], nil, -1); f == nil || f.Class != Unsupported {
		t.Errorf("a model-list probe of the mock: %v, want Unsupported", f)
	}
}
