package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"gateway/config"
	"gateway/engine"
)

// swapWait bounds every wait here; generous for a busy machine under -race.
const swapWait = 20 * time.Second

func swapEnv(name string) (string, bool) {
	if name == "SWAP_UP_KEY" {
		return "sk-swap", true
	}
	return "", false
}

// swapConfig parses yaml or fails the test.
func swapConfig(t testing.TB, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), config.Options{LookupEnv: swapEnv})
	if err != nil {
		t.Fatalf("parsing test config: %v\n%s", err, yaml)
	}
	return cfg
}

// swapMockYAML serves `auto` by mock/<model>.
func swapMockYAML(model string) string {
	return fmt.Sprintf(`providers:
  mock:
    type: mock
    models:
      %[1]s: {}
models:
  auto:
    targets: [mock/%[1]s]
`, model)
}

// swapGateway serves eng in memory until the test ends and returns a
// client for it.
func swapGateway(t *testing.T, eng *engine.Engine) *fasthttp.Client {
	t.Helper()
	ln := fasthttputil.NewInmemoryListener()
	srv := eng.Server()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), swapWait)
		defer cancel()
		_ = srv.ShutdownWithContext(ctx)
		_ = ln.Close()
		<-done
		eng.Close()
	})
	return &fasthttp.Client{
		Dial:                func(string) (net.Conn, error) { return ln.Dial() },
		MaxConnsPerHost:     64,
		MaxIdleConnDuration: time.Minute,
	}
}

func swapChatBody(stream bool) []byte {
	return fmt.Appendf(nil, `{"model":"auto","stream":%t,"messages":[{"role":"user","content":"hello"}]}`, stream)
}

// swapResult is what one chat request came back with.
type swapResult struct {
	status int
	via    string
	ctype  string
	body   []byte
}

func swapChat(c *fasthttp.Client, stream bool) (swapResult, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://gateway/v1/chat/completions")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetBody(swapChatBody(stream))
	if err := c.DoTimeout(req, resp, swapWait); err != nil {
		return swapResult{}, err
	}
	return swapResult{
		status: resp.StatusCode(),
		via:    string(resp.Header.Peek("X-Routed-Via")),
		ctype:  string(resp.Header.ContentType()),
		body:   append([]byte(nil), resp.Body()...),
	}, nil
}

// check says what is wrong with a reply that should have come from one of
// vias, or "" when nothing is.
func (r swapResult) check(stream bool, vias ...string) string {
	if r.status != fasthttp.StatusOK {
		return fmt.Sprintf("status %d: %s", r.status, r.body)
	}
	var model string
	for _, v := range vias {
		if r.via == v {
			_, model, _ = strings.Cut(v, "/")
		}
	}
	if model == "" {
		return fmt.Sprintf("x-routed-via %q, want one of %v", r.via, vias)
	}
	// The mock names its upstream model in the reply: it must be the one
	// the header names, or the request mixed two snapshots.
	if !bytes.Contains(r.body, []byte(`"model":"`+model+`"`)) {
		return fmt.Sprintf("routed via %s but the body is from another model: %s", r.via, r.body)
	}
	if stream {
		if !strings.HasPrefix(r.ctype, "text/event-stream") {
			return fmt.Sprintf("stream content-type %q", r.ctype)
		}
		if !bytes.HasSuffix(r.body, []byte("data: [DONE]\n\n")) {
			return fmt.Sprintf("stream does not end with [DONE]: %q", r.body)
		}
	}
	return ""
}

// TestSwapUnderLoad: requests keep succeeding, each served wholly by one
// snapshot, while the config flips between two versions.
func TestSwapUnderLoad(t *testing.T) {
	cfgA, cfgB := swapConfig(t, swapMockYAML("a")), swapConfig(t, swapMockYAML("b"))
	eng, err := engine.New(cfgA, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := swapGateway(t, eng)

	const (
		minSwaps    = 200
		minRequests = 400
	)
	var (
		stop     atomic.Bool
		served   atomic.Int64
		swaps    atomic.Int64
		wg       sync.WaitGroup
		failMu   sync.Mutex
		failures []string
	)
	fail := func(s string) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, s)
		}
		stop.Store(true)
	}
	for i := range 8 {
		stream := i%2 == 1
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				r, err := swapChat(c, stream)
				if err != nil {
					fail(fmt.Sprintf("stream=%t: %v", stream, err))
					return
				}
				if msg := r.check(stream, "mock/a", "mock/b"); msg != "" {
					fail(fmt.Sprintf("stream=%t: %s", stream, msg))
					return
				}
				served.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer stop.Store(true)
		deadline := time.Now().Add(swapWait)
		for i := 0; i < minSwaps || served.Load() < minRequests; i++ {
			if stop.Load() {
				return
			}
			if time.Now().After(deadline) {
				fail(fmt.Sprintf("only %d requests served in %v", served.Load(), swapWait))
				return
			}
			cfg := cfgA
			if i%2 == 1 {
				cfg = cfgB
			}
			if err := eng.Swap(cfg); err != nil {
				fail(fmt.Sprintf("swap %d: %v", i, err))
				return
			}
			swaps.Add(1)
			if served.Load() < int64(i) {
				// Let requests interleave with the swaps rather than
				// racing through all of them first.
				time.Sleep(time.Millisecond)
			}
		}
	}()
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("%d swaps, %d requests served", swaps.Load(), served.Load())
}

// TestSwapReroutes: an edit takes effect from the next request on.
func TestSwapReroutes(t *testing.T) {
	eng, err := engine.New(swapConfig(t, swapMockYAML("a")), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := swapGateway(t, eng)
	for i, model := range []string{"a", "b", "a", "b"} {
		if i > 0 {
			if err := eng.Swap(swapConfig(t, swapMockYAML(model))); err != nil {
				t.Fatal(err)
			}
		}
		for _, stream := range []bool{false, true} {
			r, err := swapChat(c, stream)
			if err != nil {
				t.Fatal(err)
			}
			if msg := r.check(stream, "mock/"+model); msg != "" {
				t.Errorf("after swap %d, stream=%t: %s", i, stream, msg)
			}
		}
	}
}

// slowUpstream is a fake OpenAI server whose streams send their first
// chunk, then wait for release before the rest.
type slowUpstream struct {
	ln      *fasthttputil.InmemoryListener
	started chan struct{} // one value per stream that sent its first chunk
	release chan struct{} // closed to let every stream finish
	auth    atomic.Value  // the last Authorization header seen
	model   atomic.Value  // the last "model" seen, raw
}

func newSlowUpstream(t *testing.T) *slowUpstream {
	u := &slowUpstream{
		ln:      fasthttputil.NewInmemoryListener(),
		started: make(chan struct{}, 16),
		release: make(chan struct{}),
	}
	chunk := func(content, finish string) string {
		return `data: {"id":"chatcmpl-up","object":"chat.completion.chunk","created":1,"model":"slow-upstream",` +
			`"choices":[{"index":0,"delta":{"content":"` + content + `"},"finish_reason":` + finish + `}]}` + "\n\n"
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		u.auth.Store(string(ctx.Request.Header.Peek("Authorization")))
		body := ctx.PostBody()
		if i := bytes.Index(body, []byte(`"model":`)); i >= 0 {
			if end := bytes.IndexByte(body[i+8:], ','); end >= 0 {
				u.model.Store(string(body[i+8 : i+8+end]))
			}
		}
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			_, _ = io.WriteString(w, chunk("before ", "null"))
			_ = w.Flush()
			u.started <- struct{}{}
			select {
			case <-u.release:
			case <-time.After(swapWait):
				return // the test failed; do not hang its cleanup
			}
			_, _ = io.WriteString(w, chunk("after", `"stop"`))
			_, _ = io.WriteString(w, "data: [DONE]\n\n")
			_ = w.Flush()
		})
	}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(u.ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), swapWait)
		defer cancel()
		_ = srv.ShutdownWithContext(ctx)
		_ = u.ln.Close()
		<-done
	})
	return u
}

const swapSlowYAML = `providers:
  up:
    type: openai
    base_url: http://upstream.test/v1
    keys: ["${SWAP_UP_KEY}"]
    models:
      slow: {upstream: slow-upstream}
models:
  auto:
    targets: [up/slow]
`

// TestSwapKeepsOpenStream: a stream begun before a swap finishes on the
// snapshot it started with, even when the new config drops its provider,
// while new requests already follow the new config.
func TestSwapKeepsOpenStream(t *testing.T) {
	up := newSlowUpstream(t)
	eng, err := engine.New(swapConfig(t, swapSlowYAML), engine.Options{
		Dial: func(string) (net.Conn, error) { return up.ln.Dial() },
	})
	if err != nil {
		t.Fatal(err)
	}
	c := swapGateway(t, eng)
	// Registered after swapGateway, so it runs first: a failing test must
	// not leave the upstream holding the stream open through cleanup.
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(up.release) }) }
	t.Cleanup(release)

	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://gateway/v1/chat/completions")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetBody(swapChatBody(true))
	resp.StreamBody = true
	if err := c.DoTimeout(req, resp, swapWait); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.CloseBodyStream() }()
	if resp.StatusCode() != fasthttp.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
	}
	if via := string(resp.Header.Peek("X-Routed-Via")); via != "up/slow" {
		t.Fatalf("x-routed-via %q, want up/slow", via)
	}
	select {
	case <-up.started:
	case <-time.After(swapWait):
		t.Fatal("the upstream never started streaming")
	}

	// The first event reaches the client before the swap.
	events := bufio.NewReader(resp.BodyStream())
	first, err := readEvent(events)
	if err != nil {
		t.Fatalf("reading the first event: %v", err)
	}
	if !strings.Contains(first, `"content":"before "`) {
		t.Fatalf("first event %q", first)
	}

	if err := eng.Swap(swapConfig(t, swapMockYAML("b"))); err != nil {
		t.Fatal(err)
	}
	r, err := swapChat(c, false)
	if err != nil {
		t.Fatal(err)
	}
	if msg := r.check(false, "mock/b"); msg != "" {
		t.Errorf("a request after the swap: %s", msg)
	}

	release()
	rest, err := io.ReadAll(events)
	if err != nil {
		t.Fatalf("reading the rest of the stream: %v", err)
	}
	if !strings.Contains(string(rest), `"content":"after"`) || !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Errorf("the rest of the stream = %q, want the last chunk and [DONE]", rest)
	}
	if got, _ := up.auth.Load().(string); got != "Bearer sk-swap" {
		t.Errorf("upstream saw Authorization %q", got)
	}
	if got, _ := up.model.Load().(string); got != `"slow-upstream"` {
		t.Errorf("upstream saw model %s, want the upstream name", got)
	}
}

// readEvent reads one SSE event, through its blank line.
func readEvent(r *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if line == "\n" || line == "\r\n" {
			return b.String(), nil
		}
	}
}

// TestSwapLimitsUnderLoad: requests keep flowing while reloads turn a
// target's caps on and off. Each round's key is new, so its state starts
// without caps and the next reload gives it some while requests of the
// round before still read it: under -race, any unsynchronised write of a
// key state the live snapshot reads is reported.
func TestSwapLimitsUnderLoad(t *testing.T) {
	const (
		rounds  = 30
		clients = 4
	)
	config := func(round int, limits string) *config.Config {
		t.Helper()
		yaml := fmt.Sprintf(`providers:
  mock:
    type: mock
    keys: ["${ROUND_KEY}"]
%s    models:
      m: {}
models:
  auto:
    targets: [mock/m]
`, limits)
		key := fmt.Sprintf("k-round-%d", round)
		cfg, err := config.Parse([]byte(yaml), config.Options{LookupEnv: func(string) (string, bool) { return key, true }})
		if err != nil {
			t.Fatalf("parsing test config: %v\n%s", err, yaml)
		}
		return cfg
	}
	eng, err := engine.New(config(0, ""), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := swapGateway(t, eng)

	var (
		stop     atomic.Bool
		served   atomic.Int64
		wg       sync.WaitGroup
		failMu   sync.Mutex
		failures []string
	)
	fail := func(s string) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, s)
		}
	}
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				r, err := swapChat(c, false)
				if err != nil {
					fail(err.Error())
					return
				}
				if msg := r.check(false, "mock/m"); msg != "" {
					fail(msg)
					return
				}
				served.Add(1)
			}
		}()
	}
	// The reloads never wait on the clients: a wait would order the
	// clients' reads before the next build's writes and hide a race.
	for round := range rounds {
		for _, limits := range []string{"", "    limits: {rpm: 1000000, tpm: 100000000}\n"} {
			if err := eng.Swap(config(round, limits)); err != nil {
				t.Fatalf("swap in round %d: %v", round, err)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	stop.Store(true)
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("%d swaps, %d requests served", 2*rounds, served.Load())
}

// TestReloadRotatedKey: a key file is rewritten and SIGHUP sent, with the
// config's bytes unchanged. The next request uses the new key, which
// starts fresh though the old one was held invalid, while the other key,
// unchanged, keeps its cooldown.
func TestReloadRotatedKey(t *testing.T) {
	var (
		mu   sync.Mutex
		hits = map[string]int{}
	)
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		auth := string(ctx.Request.Header.Peek("Authorization"))
		mu.Lock()
		hits[auth]++
		mu.Unlock()
		ctx.SetContentType("application/json")
		switch auth {
		case "Bearer sk-a-new-SECRET":
			ctx.SetBodyString(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",` +
				`"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}`)
		case "Bearer sk-b-SECRET":
			ctx.SetStatusCode(fasthttp.StatusInternalServerError)
			ctx.SetBodyString(`{"error":{"message":"down","type":"server_error"}}`)
		default:
			ctx.SetStatusCode(fasthttp.StatusUnauthorized)
			ctx.SetBodyString(`{"error":{"message":"invalid api key","type":"invalid_request_error","code":"invalid_api_key"}}`)
		}
	}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	hitsOf := func(key string) int {
		mu.Lock()
		defer mu.Unlock()
		return hits["Bearer "+key]
	}

	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a.key", "sk-a-old-SECRET")
	write("b.key", "sk-b-SECRET")
	write("gateway.yaml", `providers:
  up:
    type: openai
    base_url: http://upstream.test/v1
    keys: ["file:a.key", "file:b.key"]
    models:
      m: {}
models:
  auto:
    targets: [up/m]
failover: {cooldown: 1h, auth_cooldown: 1h}
`)
	path := filepath.Join(dir, "gateway.yaml")
	cfg, err := config.Load(path, config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(cfg, engine.Options{Dial: func(string) (net.Conn, error) { return ln.Dial() }})
	if err != nil {
		t.Fatal(err)
	}
	c := swapGateway(t, eng)
	var applied atomic.Int32
	r := config.NewReloader(path, config.Options{}, cfg, func(c *config.Config) error {
		if err := eng.Swap(c); err != nil {
			return err
		}
		applied.Add(1)
		return nil
	}, slog.New(slog.DiscardHandler))
	r.SetDebounce(20 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-runDone
	})

	// Both keys fail: a is held invalid, b cools down.
	if res, err := swapChat(c, false); err != nil || res.status == fasthttp.StatusOK {
		t.Fatalf("first request: %+v, %v; want a failure", res, err)
	}
	if hitsOf("sk-a-old-SECRET") != 1 || hitsOf("sk-b-SECRET") != 1 {
		t.Fatalf("first request tried a %d times and b %d times, want once each", hitsOf("sk-a-old-SECRET"), hitsOf("sk-b-SECRET"))
	}

	write("a.key", "sk-a-new-SECRET")
	r.Trigger()
	deadline := time.Now().Add(swapWait)
	for applied.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the rotated key was never applied; last reload %+v", r.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := range 3 {
		res, err := swapChat(c, false)
		if err != nil || res.status != fasthttp.StatusOK {
			t.Fatalf("request %d after the rotation: %+v, %v; want the new key to answer", i, res, err)
		}
	}
	if n := hitsOf("sk-a-new-SECRET"); n != 3 {
		t.Errorf("the new key answered %d requests, want 3", n)
	}
	if n := hitsOf("sk-b-SECRET"); n != 1 {
		t.Errorf("b was tried %d times in all: its cooldown did not survive the reload", n)
	}
}
