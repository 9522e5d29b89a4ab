package engine

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/config"
)

// rtYAML renders provs as fakeYAML does, with extra provider fields
// (limits, first_byte_timeout, ...) for the providers extra names, one
// field a line.
func rtYAML(provs []fakeProv, extra map[string]string, rest string) string {
	y := fakeYAML(provs, rest)
	for name, fields := range extra {
		head := "\n  " + name + ":\n"
		if !strings.Contains(y, head) {
			panic("rtYAML: no provider " + name)
		}
		var b strings.Builder
		for _, l := range strings.Split(strings.TrimSpace(fields), "\n") {
			b.WriteString("    " + strings.TrimSpace(l) + "\n")
		}
		y = strings.Replace(y, head, head+b.String(), 1)
	}
	return y
}

// rtParse parses a fake config, with fakeEnv for its references.
func rtParse(t *testing.T, yaml string) *config.Config {
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

// rtPost is g.chat for goroutines other than the test's: it returns the
// transport error instead of failing the test.
func rtPost(g *fakeGateway, body string, hdrs ...string) (*fakeResponse, error) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://gw.test/v1/chat/completions")
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.SetBodyString(body)
	if g.key != "" {
		req.Header.Set("Authorization", "Bearer "+g.key)
	}
	for i := 0; i+1 < len(hdrs); i += 2 {
		req.Header.Set(hdrs[i], hdrs[i+1])
	}
	resp := &fasthttp.Response{}
	if err := g.client.DoTimeout(req, resp, fakeDeadline); err != nil {
		return nil, err
	}
	return &fakeResponse{status: resp.StatusCode(), header: resp.Header.String(), body: bytes.Clone(resp.Body()), resp: resp}, nil
}

// rtTarget returns the target via of the chain a client names group.
func rtTarget(t *testing.T, g *fakeGateway, group, via string) *target {
	t.Helper()
	gr := g.eng.snap.Load().groups[group]
	if gr == nil {
		t.Fatalf("no chain %q", group)
	}
	for _, tg := range gr.targets {
		if tg.name == via {
			return tg
		}
	}
	t.Fatalf("chain %q has no target %s", group, via)
	return nil
}

// rtKey returns the state of the first key of target via of group.
func rtKey(t *testing.T, g *fakeGateway, group, via string) *keyState {
	t.Helper()
	return rtTarget(t, g, group, via).keys[0]
}

// rtUsed returns what a limiter counts in its minute windows now.
func rtUsed(l Limiter) (requests, tokens int64) { return l.Used(nanotime()) }

// rtEventually polls cond until it holds, failing the test at the
// deadline.
func rtEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(fakeDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// rtCooling checks that ks cools down for reason, until d after a moment
// between before and after.
func rtCooling(t *testing.T, ks *keyState, reason int32, d time.Duration, before, after time.Time) {
	t.Helper()
	until, got, _ := ks.until.Active(0)
	lo, hi := rtNano(before)+int64(d), rtNano(after)+int64(d)
	if until < lo || until > hi {
		t.Errorf("cooling until now%+v, want now+%v", time.Duration(until-rtNano(after)), d)
	}
	if got != reason {
		t.Errorf("cooldown reason %d, want %d", got, reason)
	}
}

// rtNano is t on the engine's clock.
func rtNano(t time.Time) int64 { return clockBase.UnixNano() + int64(t.Sub(clockBase)) }

// rtUncool ends a key's cooldown, as time passing would.
func rtUncool(ks *keyState) {
	until, _, _ := ks.until.Active(0)
	ks.until.Lift(until)
}

// rtOpenExpired leaves br open with open_for over, as time passing would:
// closed, then opened by a failure long enough ago.
func rtOpenExpired(br Breaker) {
	br.Success()
	br.Failure(nanotime()-int64(time.Minute), 1, int64(30*time.Second))
}

// rtProbeOut reports whether a breaker is half-open, its probe out: it
// refuses with no deadline ahead.
func rtProbeOut(br Breaker, now int64) bool {
	refuses, until := br.Refuses(now)
	return refuses && until <= now
}

// rtCompletion is a chat.completion reporting the given usage.
func rtCompletion(content string, prompt, completion int) string {
	return `{"id":"chatcmpl-rt","object":"chat.completion","created":1700000000,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":` +
		strconv.Quote(content) + `},"finish_reason":"stop"}],"usage":{"prompt_tokens":` + strconv.Itoa(prompt) +
		`,"completion_tokens":` + strconv.Itoa(completion) + `,"total_tokens":` + strconv.Itoa(prompt+completion) + `}}`
}

// rtUsageChunk is the usage chunk stream_options.include_usage asks for.
func rtUsageChunk(prompt, completion int) string {
	return `data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1700000000,"model":"up","choices":[],"usage":{"prompt_tokens":` +
		strconv.Itoa(prompt) + `,"completion_tokens":` + strconv.Itoa(completion) + `,"total_tokens":` + strconv.Itoa(prompt+completion) + `}}` + "\n\n"
}

// rtUsageUpstream answers like an OpenAI server reporting *usage tokens
// of completion: in the body, or in a usage chunk when a stream asks for
// one.
func rtUsageUpstream(mu *sync.Mutex, usage *int) func(*fasthttp.RequestCtx, int) {
	return func(ctx *fasthttp.RequestCtx, hit int) {
		mu.Lock()
		n := *usage
		mu.Unlock()
		body := ctx.PostBody()
		if !gjson.GetBytes(body, "stream").Bool() {
			ctx.SetContentType("application/json")
			ctx.SetBodyString(rtCompletion("ok", 5, n-5))
			return
		}
		frames := []string{fakeChunk(0), fakeFinish}
		if gjson.GetBytes(body, "stream_options.include_usage").Bool() {
			frames = append(frames, rtUsageChunk(5, n-5))
		}
		fakeStream(append(frames, fakeDone)...)(ctx, hit)
	}
}

// rtHeadThenHang sends a stream's response head and then nothing, holding
// the connection open until the test ends.
func rtHeadThenHang(u *fakeUpstream, after string) func(*fasthttp.RequestCtx, int) {
	return func(ctx *fasthttp.RequestCtx, _ int) {
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) {
			_, _ = c.Write([]byte(fakeSSEHead + after))
			<-u.release
		})
	}
}

// rtAim makes the next round_robin pick of group start at index i.
func rtAim(g *fakeGateway, group string, i int) {
	g.eng.snap.Load().groups[group].state.turn.Store(uint32(i))
}

// rtAskMax asks for auto with max_tokens set, so each request reserves a
// known number of tokens: the prompt estimate (8) plus max.
func rtAskMax(max int, stream bool, extra string) string {
	return `{"model":"auto","stream":` + strconv.FormatBool(stream) + `,"max_tokens":` + strconv.Itoa(max) + extra +
		`,"messages":[{"role":"user","content":"hi"}]}`
}

// rtPrompt is the prompt estimate of rtAskMax's messages.
const rtPrompt = 8

func TestRoutingSettlesTokensAfterUsage(t *testing.T) {
	// tpm 300 and 108 reserved a request (8 prompt + 100 max_tokens): by
	// the reservation alone two requests fit in a minute. The upstream
	// reports 7 tokens each, so after settling far more do.
	const tpm, maxTok, reserved = 300, 100, rtPrompt + 100
	var req chatRequest
	if err := scan([]byte(rtAskMax(maxTok, false, "")), &req, opChat); err != nil || req.tokens != rtPrompt {
		t.Fatalf("prompt estimate %d (%v), the test assumes %d", req.tokens, err, rtPrompt)
	}
	for _, stream := range []bool{false, true} {
		t.Run("stream="+strconv.FormatBool(stream), func(t *testing.T) {
			var mu sync.Mutex
			usage := 7
			n := newFakeNet(t)
			up := n.upstream("p1.test", rtUsageUpstream(&mu, &usage))
			g := newFakeGateway(t, rtYAML([]fakeProv{{name: "p1", streamUsage: true}},
				map[string]string{"p1": "limits: {tpm: " + strconv.Itoa(tpm) + "}"}, "models:\n  auto: {targets: [p1/m]}\n"), n)
			lim := rtKey(t, g, "auto", "p1/m").limiter()
			tokens := func() int64 { _, tk := rtUsed(lim); return tk }

			const runs = 10
			if runs*reserved <= tpm {
				t.Fatal("the test needs more requests than the reservation alone lets through")
			}
			for i := 1; i <= runs; i++ {
				r := g.chat(rtAskMax(maxTok, stream, ""))
				if r.status != 200 {
					t.Fatalf("request %d: status %d %s; settling to the real usage should leave room", i, r.status, r.body)
				}
				// A stream settles when the relay closes; wait for it so
				// the next request sees the settled count.
				rtEventually(t, "request "+strconv.Itoa(i)+" to settle", func() bool { return tokens() == int64(7*i) })
			}

			// Real usage counts in full: one request of 250 leaves no room.
			mu.Lock()
			usage = 250
			mu.Unlock()
			if r := g.chat(rtAskMax(maxTok, stream, "")); r.status != 200 {
				t.Fatalf("status %d %s", r.status, r.body)
			}
			rtEventually(t, "the large request to settle", func() bool { return tokens() == 7*runs+250 })
			r := g.chat(rtAskMax(maxTok, stream, ""))
			fakeCheckError(t, r, 429, "rate_limit_error", "rate_limit_exceeded", "")
			if !r.has("Retry-After") {
				t.Error("429 without Retry-After")
			}
			if up.hits() != runs+1 {
				t.Errorf("upstream hits %d, want %d: the capped request reached it", up.hits(), runs+1)
			}
		})
	}
}

func TestRoutingStreamUsageChunk(t *testing.T) {
	usage := rtUsageChunk(5, 2)
	tests := []struct {
		name string
		body string
		// inject: the gateway adds stream_options itself; seen: the
		// client gets the usage chunk.
		inject, seen bool
	}{
		{"client did not ask", rtAskMax(100, true, ""), true, false},
		{"client asked", rtAskMax(100, true, `,"stream_options":{"include_usage":true}`), false, true},
		{"client declined", rtAskMax(100, true, `,"stream_options":{"include_usage":false}`), false, false},
		{"body starts with whitespace", "\n\t " + rtAskMax(100, true, ""), true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			n7 := 7
			n := newFakeNet(t)
			up := n.upstream("p1.test", rtUsageUpstream(&mu, &n7))
			g := newFakeGateway(t, rtYAML([]fakeProv{{name: "p1", streamUsage: true}},
				map[string]string{"p1": "limits: {tpm: 100000}"}, "models:\n  auto: {targets: [p1/m]}\n"), n)
			r := g.chat(tt.body)
			if r.status != 200 {
				t.Fatalf("status %d %s", r.status, r.body)
			}
			want := fakeChunk(0) + fakeFinish + fakeDone
			if tt.seen {
				want = fakeChunk(0) + fakeFinish + usage + fakeDone
			}
			if string(r.body) != want {
				t.Errorf("client got\n%q\nwant\n%q", r.body, want)
			}
			sent := up.requests()[0].body
			if !gjson.ValidBytes(sent) {
				t.Fatalf("upstream got invalid JSON %q", sent)
			}
			if got := gjson.GetBytes(sent, "model").Str; got != "p1-up" {
				t.Errorf("upstream asked for model %q", got)
			}
			if tt.inject {
				if !bytes.Contains(sent, []byte(`"stream_options":{"include_usage":true}`)) {
					t.Errorf("upstream body lacks the injected stream_options: %s", sent)
				}
			} else if want := strings.Replace(tt.body, `"auto"`, `"p1-up"`, 1); string(sent) != want {
				t.Errorf("upstream got\n%s\nwant the client's body with only model patched\n%s", sent, want)
			}
			if tt.inject || tt.seen {
				lim := rtKey(t, g, "auto", "p1/m").limiter()
				rtEventually(t, "the stream to settle at 7 tokens", func() bool { _, tk := rtUsed(lim); return tk == 7 })
			}
		})
	}
}

func TestRoutingSkipsKeyTheUpstreamSaysIsSpent(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		cool    time.Duration // 0: not spent
	}{
		{"requests", []string{"X-Ratelimit-Remaining-Requests", "0", "X-Ratelimit-Reset-Requests", "30s"}, 30 * time.Second},
		{"tokens", []string{"X-Ratelimit-Remaining-Tokens", "0", "X-Ratelimit-Reset-Tokens", "1m30s"}, 90 * time.Second},
		{"seconds", []string{"X-Ratelimit-Remaining-Requests", "0", "X-Ratelimit-Reset-Requests", "12"}, 12 * time.Second},
		{"unreadable reset", []string{"X-Ratelimit-Remaining-Requests", "0", "X-Ratelimit-Reset-Requests", "soon"}, time.Minute},
		{"some left", []string{"X-Ratelimit-Remaining-Requests", "3", "X-Ratelimit-Reset-Requests", "30s"}, 0},
	}
	for _, tt := range tests {
		for _, stream := range []bool{false, true} {
			t.Run(tt.name+"/stream="+strconv.FormatBool(stream), func(t *testing.T) {
				n := newFakeNet(t)
				p1 := n.upstream("p1.test", func(ctx *fasthttp.RequestCtx, hit int) {
					for i := 0; i < len(tt.headers); i += 2 {
						ctx.Response.Header.Set(tt.headers[i], tt.headers[i+1])
					}
					fakeOK("p1")(ctx, hit)
				})
				p2 := n.upstream("p2.test", fakeOK("p2"))
				g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}}, "models:\n  auto: {targets: [p1/m, p2/m]}\n"), n)
				ask := fakeAsk
				if stream {
					ask = fakeAskStream
				}
				before := time.Now()
				r := g.chat(ask)
				after := time.Now()
				if r.status != 200 || r.get("X-Routed-Via") != "p1/m" {
					t.Fatalf("first request: status %d via %q: the spent key's own answer is good", r.status, r.get("X-Routed-Via"))
				}
				r = g.chat(ask)
				if r.status != 200 {
					t.Fatalf("second request: status %d %s", r.status, r.body)
				}
				if r.has("X-Fallback-Attempts") {
					t.Errorf("x-fallback-attempts %q: skipping a spent key is no failed attempt", r.get("X-Fallback-Attempts"))
				}
				ks := rtKey(t, g, "auto", "p1/m")
				if tt.cool == 0 {
					if r.get("X-Routed-Via") != "p1/m" || p1.hits() != 2 || p2.hits() != 0 {
						t.Errorf("via %q, hits %d %d: a key with requests left was skipped", r.get("X-Routed-Via"), p1.hits(), p2.hits())
					}
					if _, _, on := ks.until.Active(nanotime()); on {
						t.Error("a key with requests left is cooling down")
					}
					return
				}
				if r.get("X-Routed-Via") != "p2/m" || p1.hits() != 1 || p2.hits() != 1 {
					t.Errorf("via %q, hits p1 %d p2 %d; want p2 to serve without a call to p1", r.get("X-Routed-Via"), p1.hits(), p2.hits())
				}
				rtCooling(t, ks, coolRate, tt.cool, before, after)
			})
		}
	}
}

func TestRoutingCooldownClasses(t *testing.T) {
	const cooldown = 45 * time.Second
	tests := []struct {
		name   string
		p1     func(*fasthttp.RequestCtx, int)
		reason int32
		cool   time.Duration
		// alone is what a chain of only the cooling key answers.
		status int
		code   string
	}{
		{"429 with Retry-After", fakeBody(429, `{"error":{"message":"slow down"}}`, "Retry-After", "5"), coolRate, 5 * time.Second, 429, "rate_limit_exceeded"},
		{"429 with a reset header", fakeBody(429, `{"error":{"message":"slow down"}}`, "X-Ratelimit-Remaining-Requests", "0", "X-Ratelimit-Reset-Requests", "7s"), coolRate, 7 * time.Second, 429, "rate_limit_exceeded"},
		{"429 bare", fakeBody(429, `{"error":{"message":"slow down"}}`), coolRate, cooldown, 429, "rate_limit_exceeded"},
		{"500", fakeBody(500, `{"error":{"message":"boom"}}`), coolFailure, cooldown, 503, "all_candidates_cooling_down"},
		{"connection closed", fakeClose, coolFailure, cooldown, 503, "all_candidates_cooling_down"},
		{"401", fakeBody(401, `{"error":{"message":"bad key"}}`), coolAuth, time.Hour, 503, "all_candidates_cooling_down"},
		{"403", fakeBody(403, `{"error":{"message":"forbidden"}}`), coolAuth, time.Hour, 503, "all_candidates_cooling_down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newFakeNet(t)
			p1 := n.upstream("p1.test", tt.p1)
			p2 := n.upstream("p2.test", fakeOK("p2"))
			g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}},
				"models:\n  auto: {targets: [p1/m, p2/m]}\nfailover: {cooldown: 45s}\n"), n)
			before := time.Now()
			r := g.chat(fakeAsk)
			after := time.Now()
			if r.status != 200 || r.get("X-Routed-Via") != "p2/m" || r.get("X-Fallback-Attempts") != "1" {
				t.Fatalf("status %d via %q fallbacks %q: want p2 after p1 failed", r.status, r.get("X-Routed-Via"), r.get("X-Fallback-Attempts"))
			}
			ks := rtKey(t, g, "auto", "p1/m")
			rtCooling(t, ks, tt.reason, tt.cool, before, after)

			r = g.chat(fakeAsk)
			if r.status != 200 || r.get("X-Routed-Via") != "p2/m" || p1.hits() != 1 {
				t.Fatalf("while cooling: status %d via %q, p1 hits %d", r.status, r.get("X-Routed-Via"), p1.hits())
			}
			// Alone, the cooling key is an error that says when to retry.
			r = g.chat(`{"model":"p1/m","messages":[{"role":"user","content":"hi"}]}`)
			fakeCheckError(t, r, tt.status, map[int]string{429: "rate_limit_error", 503: "server_error"}[tt.status], tt.code, "")
			ra, _ := strconv.Atoi(r.get("Retry-After"))
			if secs := int(tt.cool / time.Second); ra < secs-3 || ra > secs {
				t.Errorf("Retry-After %q, want about %d", r.get("Retry-After"), secs)
			}
			if p1.hits() != 1 {
				t.Errorf("p1 hits %d: a cooling key was called", p1.hits())
			}

			// Once the cooldown is over the key is tried again.
			rtUncool(ks)
			p1.set(fakeOK("p1 again"))
			r = g.chat(fakeAsk)
			if r.status != 200 || r.get("X-Routed-Via") != "p1/m" || p1.hits() != 2 {
				t.Errorf("after the cooldown: status %d via %q, p1 hits %d", r.status, r.get("X-Routed-Via"), p1.hits())
			}
			if p2.hits() != 2 {
				t.Errorf("p2 hits %d, want 2", p2.hits())
			}
		})
	}
}

func TestRoutingBreakerEndToEnd(t *testing.T) {
	n := newFakeNet(t)
	up := n.upstream("p1.test", fakeBody(500, `{"error":{"message":"down"}}`))
	// A cooldown of 1ns keeps the key out of the way: only the breaker
	// stops calls here.
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}},
		"models:\n  auto: {targets: [p1/m]}\nfailover: {cooldown: 1ns}\ncircuit_breaker: {failures: 2, open_for: 30s}\n"), n)
	br := rtTarget(t, g, "auto", "p1/m").state.breaker

	for i := 1; i <= 2; i++ {
		fakeCheckError(t, g.chat(fakeAsk), 500, "server_error", "all_candidates_failed", "")
		if up.hits() != i {
			t.Fatalf("failure %d: upstream hits %d", i, up.hits())
		}
	}
	if st := br.State(nanotime()); st != "open" {
		t.Fatalf("breaker state %s after 2 consecutive failures, want open", st)
	}
	r := g.chat(fakeAsk)
	msg := fakeCheckError(t, r, 503, "server_error", "circuit_open", "")
	if !strings.Contains(msg, "circuit breaker") {
		t.Errorf("message %q", msg)
	}
	if ra, _ := strconv.Atoi(r.get("Retry-After")); ra < 28 || ra > 30 {
		t.Errorf("Retry-After %q, want about 30 (open_for)", r.get("Retry-After"))
	}
	if up.hits() != 2 {
		t.Fatalf("an open breaker let a call through: hits %d", up.hits())
	}

	// open_for has passed: one probe goes through, the rest wait for it.
	rtOpenExpired(br)
	probing := make(chan struct{}, 1)
	verdict := make(chan struct{})
	up.set(func(ctx *fasthttp.RequestCtx, hit int) {
		select {
		case probing <- struct{}{}:
		default:
		}
		select {
		case <-verdict:
		case <-up.release:
		}
		fakeOK("probe")(ctx, hit)
	})
	type result struct {
		r   *fakeResponse
		err error
	}
	probe := make(chan result, 1)
	go func() {
		r, err := rtPost(g, fakeAsk)
		probe <- result{r, err}
	}()
	select {
	case <-probing:
	case <-time.After(fakeDeadline):
		t.Fatal("no probe reached the upstream after open_for")
	}
	if !rtProbeOut(br, nanotime()) {
		t.Errorf("breaker state %s while probing, want half-open", br.State(nanotime()))
	}
	r = g.chat(fakeAsk)
	fakeCheckError(t, r, 503, "server_error", "circuit_open", "")
	if !r.has("Retry-After") {
		t.Error("503 circuit_open without Retry-After")
	}
	close(verdict)
	res := <-probe
	if res.err != nil || res.r.status != 200 {
		t.Fatalf("probe: %v %+v", res.err, res.r)
	}
	if st := br.State(nanotime()); st != "closed" {
		t.Fatalf("breaker state %s after a good probe, want closed", st)
	}
	if r := g.chat(fakeAsk); r.status != 200 || up.hits() != 4 {
		t.Fatalf("closed again: status %d, hits %d", r.status, up.hits())
	}

	// A failed probe opens the breaker again for open_for.
	up.set(fakeBody(500, `{"error":{"message":"down"}}`))
	for range 2 {
		g.chat(fakeAsk)
	}
	rtOpenExpired(br)
	before := time.Now()
	fakeCheckError(t, g.chat(fakeAsk), 500, "server_error", "all_candidates_failed", "")
	if _, until := br.Refuses(nanotime()); br.State(nanotime()) != "open" || until < rtNano(before)+int64(29*time.Second) {
		t.Fatalf("after a failed probe: state %s, open for %v", br.State(nanotime()), time.Duration(until-nanotime()))
	}
	hits := up.hits()
	fakeCheckError(t, g.chat(fakeAsk), 503, "server_error", "circuit_open", "")
	if up.hits() != hits {
		t.Error("a reopened breaker let a call through")
	}
}

func TestRoutingEveryCandidateOverItsCaps(t *testing.T) {
	n := newFakeNet(t)
	p1 := n.upstream("p1.test", fakeOK("p1"))
	p2 := n.upstream("p2.test", fakeOK("p2"))
	g := newFakeGateway(t, rtYAML([]fakeProv{{name: "p1"}, {name: "p2"}},
		map[string]string{"p1": "limits: {rpm: 1}", "p2": "limits: {rpm: 1, tpm: 5000}"},
		"models:\n  auto: {targets: [p1/m, p2/m]}\n"), n)
	for _, want := range []string{"p1/m", "p2/m"} {
		r := g.chat(fakeAsk)
		if r.status != 200 || r.get("X-Routed-Via") != want {
			t.Fatalf("status %d via %q, want %s", r.status, r.get("X-Routed-Via"), want)
		}
		if r.has("X-Fallback-Attempts") {
			t.Errorf("x-fallback-attempts %q: a capped key is skipped, not tried", r.get("X-Fallback-Attempts"))
		}
	}
	for _, ask := range []string{fakeAsk, fakeAskStream} {
		r := g.chat(ask)
		msg := fakeCheckError(t, r, 429, "rate_limit_error", "rate_limit_exceeded", "")
		if !strings.Contains(msg, "over its rate caps") {
			t.Errorf("message %q", msg)
		}
		// The oldest request leaves the minute window in about a minute.
		if ra, _ := strconv.Atoi(r.get("Retry-After")); ra < 50 || ra > 61 {
			t.Errorf("Retry-After %q, want about 60", r.get("Retry-After"))
		}
	}
	if p1.hits() != 1 || p2.hits() != 1 {
		t.Errorf("hits %d %d: a capped key was called", p1.hits(), p2.hits())
	}
	// A prompt larger than a token cap can never fit: that is the
	// client's to fix, not a wait.
	r := g.chat(`{"model":"p2/m","max_tokens":10,"messages":[{"role":"user","content":"` + strings.Repeat("w", 20400) + `"}]}`)
	fakeCheckError(t, r, 400, "invalid_request_error", "request_too_large", "")
	if r.has("Retry-After") {
		t.Errorf("Retry-After %q on a request that can never fit", r.get("Retry-After"))
	}
}

// rtRateHeaders checks a response's X-RateLimit-* for a key of rpm with
// remaining requests left.
func rtRateHeaders(t *testing.T, r *fakeResponse, rpm, remaining int) {
	t.Helper()
	if got := r.get("X-RateLimit-Limit"); got != strconv.Itoa(rpm) {
		t.Errorf("status %d: X-RateLimit-Limit %q, want %d", r.status, got, rpm)
	}
	if got := r.get("X-RateLimit-Remaining"); got != strconv.Itoa(remaining) {
		t.Errorf("status %d: X-RateLimit-Remaining %q, want %d", r.status, got, remaining)
	}
	reset, err := strconv.ParseInt(r.get("X-RateLimit-Reset"), 10, 64)
	now := time.Now().Unix()
	if err != nil || reset < now-1 || reset > now+61 {
		t.Errorf("status %d: X-RateLimit-Reset %q, want unix seconds within the minute", r.status, r.get("X-RateLimit-Reset"))
	}
}

func TestRoutingGatewayKeyRPM(t *testing.T) {
	n := newFakeNet(t)
	up := n.upstream("p1.test", fakeOK("ok"))
	g := newFakeGateway(t, fakeThree(`auth:
  keys:
    - {name: team-ml, key: "${GW_ML}", rpm: 4}
    - {name: limited, key: "${GW_LIM}", rpm: 10, models: [auto]}
`), n)
	steps := []struct {
		body   string
		status int
	}{
		{fakeAsk, 200},
		{`{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}`, 404},
		{fakeAskStream, 200},
		{`{"model":"p2/m","messages":[{"role":"user","content":"hi"}]}`, 500}, // nothing listens at p2
	}
	for i, s := range steps {
		r := g.chat(s.body)
		if r.status != s.status {
			t.Fatalf("step %d: status %d, want %d: %s", i, r.status, s.status, r.body)
		}
		rtRateHeaders(t, r, 4, 3-i)
	}
	hits := up.hits()
	r := g.chat(fakeAsk)
	msg := fakeCheckError(t, r, 429, "rate_limit_error", "rate_limit_exceeded", "")
	if !strings.Contains(msg, "team-ml") {
		t.Errorf("message %q does not name the key", msg)
	}
	if ra, _ := strconv.Atoi(r.get("Retry-After")); ra < 50 || ra > 61 {
		t.Errorf("Retry-After %q, want about 60", r.get("Retry-After"))
	}
	rtRateHeaders(t, r, 4, 0)
	if up.hits() != hits {
		t.Error("a request over the key's limit reached the upstream")
	}

	// Another key has its own budget; answers refused before routing
	// carry the headers too, and cost nothing.
	g.key = fakeEnv["GW_LIM"]
	for _, tc := range []struct {
		body   string
		status int
	}{
		{`{"model":"p1/m","messages":[{"role":"user","content":"hi"}]}`, 403},
		{`{"model":"auto",`, 400},
	} {
		r := g.chat(tc.body)
		if r.status != tc.status {
			t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
		}
		rtRateHeaders(t, r, 10, 10)
	}
	r = g.chat(fakeAsk)
	if r.status != 200 {
		t.Fatalf("status %d %s", r.status, r.body)
	}
	rtRateHeaders(t, r, 10, 9)
	// No key, no headers.
	g.key = ""
	if r := g.chat(fakeAsk); r.status != 401 || r.has("X-RateLimit-Limit") {
		t.Errorf("without a key: status %d, X-RateLimit-Limit %q", r.status, r.get("X-RateLimit-Limit"))
	}
}

func TestRoutingGatewayKeyTokenBudget(t *testing.T) {
	var mu sync.Mutex
	usage := 7
	n := newFakeNet(t)
	up := n.upstream("p1.test", rtUsageUpstream(&mu, &usage))
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1", streamUsage: true}}, `models:
  auto: {targets: [p1/m]}
auth:
  keys:
    - {name: team-ml, key: "${GW_ML}", rpm: 1000, tpm: 300}
`), n)
	lim := g.eng.snap.Load().byName["team-ml"].lim
	tokens := func() int64 { _, tk := rtUsed(lim); return tk }
	// 108 charged up front, 7 kept: by the charge alone two would fit.
	for i := 1; i <= 5; i++ {
		r := g.chat(rtAskMax(100, i%2 == 0, ""))
		if r.status != 200 {
			t.Fatalf("request %d: status %d %s", i, r.status, r.body)
		}
		rtEventually(t, "the key's tokens to settle", func() bool { return tokens() == int64(7*i) })
	}
	mu.Lock()
	usage = 250
	mu.Unlock()
	if r := g.chat(rtAskMax(100, false, "")); r.status != 200 {
		t.Fatalf("status %d %s", r.status, r.body)
	}
	rtEventually(t, "the large request to settle", func() bool { return tokens() == 35+250 })
	r := g.chat(rtAskMax(100, false, ""))
	fakeCheckError(t, r, 429, "rate_limit_error", "rate_limit_exceeded", "")
	if !r.has("Retry-After") {
		t.Error("429 without Retry-After")
	}
	if up.hits() != 6 {
		t.Errorf("upstream hits %d, want 6", up.hits())
	}
	// A prompt the budget can never hold is a 400, not a wait; a large
	// max_tokens alone reserves up to the cap and waits.
	r = g.chat(`{"model":"auto","max_tokens":10,"messages":[{"role":"user","content":"` + strings.Repeat("w", 1400) + `"}]}`)
	fakeCheckError(t, r, 400, "invalid_request_error", "request_too_large", "")
	r = g.chat(rtAskMax(1000, false, ""))
	fakeCheckError(t, r, 429, "rate_limit_error", "rate_limit_exceeded", "")
}

func TestRoutingRoundRobinCycles(t *testing.T) {
	n := newFakeNet(t)
	for _, p := range []string{"p1", "p2", "p3"} {
		n.upstream(p+".test", fakeOK(p))
	}
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}, {name: "p3"}},
		"models:\n  auto: {strategy: round_robin, targets: [p1/m, p2/m, p3/m]}\n"), n)
	var got []string
	for range 9 {
		r := g.chat(fakeAsk)
		if r.status != 200 {
			t.Fatalf("status %d %s", r.status, r.body)
		}
		got = append(got, r.get("X-Routed-Via"))
	}
	want := strings.Repeat("p1/m p2/m p3/m ", 3)
	if strings.Join(got, " ")+" " != want {
		t.Errorf("round robin served %v, want %s", got, want)
	}
}

func TestRoutingWeighted(t *testing.T) {
	n := newFakeNet(t)
	p1 := n.upstream("p1.test", fakeOK("p1"))
	p2 := n.upstream("p2.test", fakeOK("p2"))
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}},
		"models:\n  auto: {strategy: weighted, targets: [p1/m, {target: p2/m, weight: 3}]}\n  plain: {targets: [p2/m, p1/m]}\n"), n)
	gr := g.eng.snap.Load().groups["auto"]
	if gr.strategy != "weighted" || gr.weights != 4 || gr.targets[0].weight != 1 || gr.targets[1].weight != 3 {
		t.Fatalf("weights compiled as %d (%d, %d) under %s", gr.weights, gr.targets[0].weight, gr.targets[1].weight, gr.strategy)
	}
	if pl := g.eng.snap.Load().groups["plain"]; pl.targets[0].weight != 1 || pl.targets[0].keys[0] != gr.targets[1].keys[0] {
		t.Error("a target shared by two chains lost its own weight or its shared state")
	}
	for range 200 {
		if r := g.chat(fakeAsk); r.status != 200 {
			t.Fatalf("status %d %s", r.status, r.body)
		}
	}
	// 3:1 over 200 requests: p2 serving fewer than p1 is astronomically
	// unlikely; the exact share is checked on order() itself.
	if p1.hits() == 0 || p2.hits() <= p1.hits() || p1.hits()+p2.hits() != 200 {
		t.Errorf("hits p1 %d, p2 %d: want both served, p2 about 3 times as often", p1.hits(), p2.hits())
	}
}

func TestRoutingLeastLatency(t *testing.T) {
	n := newFakeNet(t)
	slow := n.upstream("p1.test", nil)
	slow.set(func(ctx *fasthttp.RequestCtx, hit int) {
		select {
		case <-time.After(200 * time.Millisecond): // slowness to measure
		case <-slow.release:
		}
		fakeOK("slow")(ctx, hit)
	})
	fast := n.upstream("p2.test", fakeOK("fast"))
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}},
		"models:\n  auto: {strategy: least_latency, targets: [p1/m, p2/m]}\n"), n)
	for range 40 {
		if r := g.chat(fakeAsk); r.status != 200 {
			t.Fatalf("status %d %s", r.status, r.body)
		}
	}
	// Each unmeasured target is tried first, then the faster one wins
	// all but the explorations.
	if slow.hits() == 0 || fast.hits() <= 3*slow.hits() {
		t.Errorf("hits slow %d, fast %d: want the slow one measured, then mostly the fast one", slow.hits(), fast.hits())
	}
	ts, tf := rtTarget(t, g, "auto", "p1/m").state.ttfb.Load(), rtTarget(t, g, "auto", "p2/m").state.ttfb.Load()
	if tf == 0 || ts < int64(200*time.Millisecond) || tf >= ts {
		t.Errorf("ttfb slow %v, fast %v", time.Duration(ts), time.Duration(tf))
	}
}

func TestRoutingKeysRotate(t *testing.T) {
	n := newFakeNet(t)
	up := n.upstream("p1.test", fakeOK("ok"))
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1", keys: []string{"P1_KEY", "P1_KEY_B"}}},
		"models:\n  auto: {targets: [p1/m]}\n"), n)
	const runs = 100
	for i := range runs {
		ask := fakeAsk
		if i%3 == 0 {
			ask = fakeAskStream
		}
		if r := g.chat(ask); r.status != 200 {
			t.Fatalf("status %d %s", r.status, r.body)
		}
	}
	count := map[string]int{}
	for _, s := range up.requests() {
		count[s.auth]++
	}
	a, b := count["Bearer "+fakeEnv["P1_KEY"]], count["Bearer "+fakeEnv["P1_KEY_B"]]
	if a+b != runs || a < runs*2/5 || b < runs*2/5 {
		t.Errorf("key A served %d, key B %d of %d: want about half each", a, b, runs)
	}
}

func TestRoutingHedge(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run("stream="+strconv.FormatBool(stream), func(t *testing.T) {
			n := newFakeNet(t)
			started := make(chan struct{}, 1)
			gate := make(chan struct{})
			cut := make(chan error, 1)
			var slow *fakeUpstream
			slow = n.upstream("p1.test", func(ctx *fasthttp.RequestCtx, _ int) {
				started <- struct{}{}
				if !stream {
					select {
					case <-gate:
					case <-slow.release:
					}
					ctx.SetContentType("application/json")
					ctx.SetBodyString(fakeCompletion("up", "slow"))
					return
				}
				ctx.SetContentType("text/event-stream")
				ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
					select {
					case <-gate:
					case <-slow.release:
						cut <- nil
						return
					}
					// An endless answer: only the gateway closing the
					// losing stream ends it before the test does.
					for i := 0; ; i++ {
						_, _ = w.WriteString(fakeChunk(i))
						if err := w.Flush(); err != nil {
							cut <- err
							return
						}
						select {
						case <-slow.release:
							cut <- nil
							return
						default:
						}
					}
				})
			})
			fast := n.upstream("p2.test", fakeOK("fast"))
			// The slow provider's timeout outlasts the test: without the
			// hedge, the request could not be answered in time.
			g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1", timeout: "120s"}, {name: "p2"}},
				"models:\n  auto: {hedge_after: 50ms, targets: [p1/m, p2/m]}\n"), n)
			ask, want := fakeAsk, fakeCompletion("up", "fast")
			if stream {
				ask, want = fakeAskStream, fakeOKStreamBody
			}
			start := time.Now()
			r := g.chat(ask)
			if r.status != 200 || string(r.body) != want {
				t.Fatalf("status %d body %q, want the fast upstream's answer", r.status, r.body)
			}
			if via := r.get("X-Routed-Via"); via != "p2/m" {
				t.Errorf("x-routed-via %q, want p2/m", via)
			}
			if d := time.Since(start); d > fakeDeadline/2 {
				t.Errorf("the hedged answer took %v", d)
			}
			select {
			case <-started:
			default:
				t.Error("the first target was never called")
			}
			if fast.hits() != 1 {
				t.Errorf("fast hits %d", fast.hits())
			}
			close(gate)
			if !stream {
				// The late answer is discarded, yet tells the breaker
				// and the latency average that p1 works.
				ttfb := &rtTarget(t, g, "auto", "p1/m").state.ttfb
				rtEventually(t, "the late answer to be measured", func() bool { return ttfb.Load() > 0 })
				return
			}
			select {
			case err := <-cut:
				if err == nil {
					t.Fatal("the losing stream was never closed")
				}
			case <-time.After(fakeDeadline):
				t.Fatal("the gateway kept reading the losing stream")
			}
		})
	}
}

func TestRoutingHedgeNotNeeded(t *testing.T) {
	n := newFakeNet(t)
	p1 := n.upstream("p1.test", fakeOK("p1"))
	p2 := n.upstream("p2.test", fakeOK("p2"))
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}},
		"models:\n  auto: {hedge_after: 5s, targets: [p1/m, p2/m]}\n"), n)
	for _, ask := range []string{fakeAsk, fakeAskStream} {
		if r := g.chat(ask); r.status != 200 || r.get("X-Routed-Via") != "p1/m" {
			t.Fatalf("status %d via %q", r.status, r.get("X-Routed-Via"))
		}
	}
	if p1.hits() != 2 || p2.hits() != 0 {
		t.Errorf("hits %d %d: a hedge started for an answer within hedge_after", p1.hits(), p2.hits())
	}
	// A failure before hedge_after moves on at once.
	p1.set(fakeBody(500, `{"error":{"message":"down"}}`))
	rtUncool(rtKey(t, g, "auto", "p1/m"))
	if r := g.chat(fakeAsk); r.status != 200 || r.get("X-Routed-Via") != "p2/m" || r.get("X-Fallback-Attempts") != "1" {
		t.Errorf("status %d via %q fallbacks %q", r.status, r.get("X-Routed-Via"), r.get("X-Fallback-Attempts"))
	}
}

// TestRoutingHedgeLoserFailureCounts: an attempt that loses the race and
// then fails still tells the breaker. A losing half-open probe that failed
// must reopen the breaker, not leave it waiting for a verdict forever.
func TestRoutingHedgeLoserFailureCounts(t *testing.T) {
	n := newFakeNet(t)
	gate := make(chan struct{})
	var slow *fakeUpstream
	slow = n.upstream("p1.test", func(ctx *fasthttp.RequestCtx, hit int) {
		select {
		case <-gate:
		case <-slow.release:
		}
		fakeBody(500, `{"error":{"message":"late and broken"}}`)(ctx, hit)
	})
	n.upstream("p2.test", fakeOK("fast"))
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1", timeout: "120s"}, {name: "p2"}},
		"models:\n  auto: {hedge_after: 50ms, targets: [p1/m, p2/m]}\ncircuit_breaker: {failures: 1, open_for: 30s}\n"), n)
	tg := rtTarget(t, g, "auto", "p1/m")
	br := tg.state.breaker
	// The breaker was open and open_for is over: the next call is its
	// probe.
	rtOpenExpired(br)
	if r := g.chat(fakeAsk); r.status != 200 || r.get("X-Routed-Via") != "p2/m" {
		t.Fatalf("status %d via %q", r.status, r.get("X-Routed-Via"))
	}
	if slow.hits() != 1 || !rtProbeOut(br, nanotime()) {
		t.Fatalf("p1 hits %d, breaker %s: the probe should be out", slow.hits(), br.State(nanotime()))
	}
	close(gate)
	rtEventually(t, "the failed probe to reopen the breaker", func() bool { return br.State(nanotime()) == "open" })
	if _, until := br.Refuses(nanotime()); until < nanotime()+int64(20*time.Second) {
		t.Errorf("reopened for only %v", time.Duration(until-nanotime()))
	}
	ks := tg.keys[0]
	rtEventually(t, "the failed key to cool down", func() bool {
		_, _, on := ks.until.Active(nanotime())
		return on
	})
	if _, reason, _ := ks.until.Active(0); reason != coolFailure {
		t.Errorf("cooldown reason %d", reason)
	}
}

func TestRoutingStreamTimeouts(t *testing.T) {
	tests := []struct {
		name string
		p1   func(u *fakeUpstream) func(*fasthttp.RequestCtx, int)
	}{
		{"headers then nothing", func(u *fakeUpstream) func(*fasthttp.RequestCtx, int) { return rtHeadThenHang(u, "") }},
		{"keep-alive comments only", func(u *fakeUpstream) func(*fasthttp.RequestCtx, int) {
			return rtHeadThenHang(u, fakeChunked(": keep-alive\n\n"))
		}},
		{"no headers", func(u *fakeUpstream) func(*fasthttp.RequestCtx, int) { return u.fakeHang }},
	}
	for _, tt := range tests {
		t.Run("first_byte_timeout/"+tt.name, func(t *testing.T) {
			n := newFakeNet(t)
			p1 := n.upstream("p1.test", nil)
			p1.set(tt.p1(p1))
			p2 := n.upstream("p2.test", fakeOK("p2"))
			// timeout is far beyond the client's deadline: only
			// first_byte_timeout can move on in time.
			g := newFakeGateway(t, rtYAML([]fakeProv{{name: "p1", timeout: "120s"}, {name: "p2"}},
				map[string]string{"p1": "first_byte_timeout: 300ms"}, "models:\n  auto: {targets: [p1/m, p2/m]}\n"), n)
			start := time.Now()
			r := g.chat(fakeAskStream)
			took := time.Since(start)
			if r.status != 200 || string(r.body) != fakeOKStreamBody || r.get("X-Routed-Via") != "p2/m" {
				t.Fatalf("status %d via %q body %q, want p2's stream", r.status, r.get("X-Routed-Via"), r.body)
			}
			if r.get("X-Fallback-Attempts") != "1" || p1.hits() != 1 || p2.hits() != 1 {
				t.Errorf("fallbacks %q, hits %d %d", r.get("X-Fallback-Attempts"), p1.hits(), p2.hits())
			}
			if took < 300*time.Millisecond {
				t.Errorf("failed over after %v, before first_byte_timeout", took)
			}
			if !strings.Contains(g.log.String(), "first_byte_timeout") {
				t.Errorf("the log does not say why:\n%s", g.log.String())
			}
		})
	}
	t.Run("idle_timeout", func(t *testing.T) {
		n := newFakeNet(t)
		var p1 *fakeUpstream
		p1 = n.upstream("p1.test", func(ctx *fasthttp.RequestCtx, _ int) {
			ctx.SetContentType("text/event-stream")
			ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
				_, _ = w.WriteString(fakeChunk(0) + fakeChunk(1))
				_ = w.Flush()
				<-p1.release
			})
		})
		p2 := n.upstream("p2.test", fakeOK("too late"))
		g := newFakeGateway(t, rtYAML([]fakeProv{{name: "p1", timeout: "120s"}, {name: "p2"}},
			map[string]string{"p1": "idle_timeout: 300ms\nfirst_byte_timeout: 5s"}, "models:\n  auto: {targets: [p1/m, p2/m]}\n"), n)
		start := time.Now()
		r := g.chat(fakeAskStream)
		took := time.Since(start)
		if r.status != 200 {
			t.Fatalf("status %d %s", r.status, r.body)
		}
		body, frames := string(r.body), fakeChunk(0)+fakeChunk(1)
		if !strings.HasPrefix(body, frames) {
			t.Fatalf("client got %q, want the frames so far first", body)
		}
		if msg := fakeStreamError(t, body[len(frames):]); !strings.Contains(msg, "idle_timeout") {
			t.Errorf("error event %q does not name idle_timeout", msg)
		}
		if took < 300*time.Millisecond {
			t.Errorf("ended after %v, before idle_timeout", took)
		}
		if p2.hits() != 0 {
			t.Error("a stream that reached the client failed over")
		}
	})
}

func TestRoutingStateSurvivesReload(t *testing.T) {
	n := newFakeNet(t)
	p1 := n.upstream("p1.test", fakeOK("p1"))
	p2 := n.upstream("p2.test", fakeOK("p2"))
	cfg := func(p1Limits string, withP2 bool, auth string) string {
		provs := []fakeProv{{name: "p1"}, {name: "p2"}}
		extra := map[string]string{"p1": "limits: " + p1Limits, "p2": "limits: {rpm: 1}"}
		groups := "models:\n  auto: {targets: [p1/m]}\n"
		if withP2 {
			groups += "  two: {targets: [p2/m]}\n"
		} else {
			provs = provs[:1]
			delete(extra, "p2")
		}
		return rtYAML(provs, extra, groups+auth)
	}
	authV := func(v string) string {
		return "auth:\n  keys:\n    - {name: team-ml, key: \"${GW_ML}\", rpm: 4, metadata: {v: \"" + v + "\"}}\n"
	}
	g := newFakeGateway(t, cfg("{rpm: 2}", true, authV("1")), n)
	swap := func(yaml string) {
		t.Helper()
		if err := g.eng.Swap(rtParse(t, yaml)); err != nil {
			t.Fatal(err)
		}
	}
	ask := func(model string) *fakeResponse {
		t.Helper()
		return g.chat(`{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`)
	}
	for range 2 {
		if r := ask("auto"); r.status != 200 {
			t.Fatalf("status %d %s", r.status, r.body)
		}
	}
	fakeCheckError(t, ask("auto"), 429, "rate_limit_error", "rate_limit_exceeded", "")
	if r := ask("two"); r.status != 200 {
		t.Fatalf("two: status %d %s", r.status, r.body)
	}
	ks, ts := rtKey(t, g, "auto", "p1/m"), rtTarget(t, g, "auto", "p1/m").state

	// The key's metadata changes: its spent minute stays spent.
	swap(cfg("{rpm: 2}", true, authV("2")))
	r := ask("auto")
	fakeCheckError(t, r, 429, "rate_limit_error", "rate_limit_exceeded", "")
	if !strings.Contains(string(r.body), "gateway key team-ml") {
		t.Errorf("the key's counters did not survive the reload: %s", r.body)
	}

	// Auth goes: the targets' counters stay, the capped keys stay capped.
	swap(cfg("{rpm: 2}", true, ""))
	g.key = ""
	if rtKey(t, g, "auto", "p1/m") != ks || rtTarget(t, g, "auto", "p1/m").state != ts {
		t.Error("a reload replaced the state of a target it kept")
	}
	for _, model := range []string{"auto", "two"} {
		msg := fakeCheckError(t, ask(model), 429, "rate_limit_error", "rate_limit_exceeded", "")
		if !strings.Contains(msg, "over its rate caps") {
			t.Errorf("%s: %s", model, msg)
		}
	}
	if p1.hits() != 2 || p2.hits() != 1 {
		t.Errorf("hits %d %d: a capped key was called after the reload", p1.hits(), p2.hits())
	}

	// A raised cap applies to the counts so far: one more fits.
	swap(cfg("{rpm: 3}", true, ""))
	if r := ask("auto"); r.status != 200 {
		t.Fatalf("after raising rpm to 3: status %d %s", r.status, r.body)
	}
	fakeCheckError(t, ask("auto"), 429, "rate_limit_error", "rate_limit_exceeded", "")

	// A provider removed takes its state with it; the rest is kept.
	swap(cfg("{rpm: 3}", false, ""))
	st := &g.eng.states
	st.mu.Lock()
	keptP1 := false
	for name, v := range st.keys {
		if strings.HasPrefix(name, "p2/") {
			t.Errorf("key state %s kept after p2 was removed", name)
		}
		keptP1 = keptP1 || v == ks
	}
	for name := range st.targets {
		if strings.HasPrefix(name, "p2/") {
			t.Errorf("target state %s kept after p2 was removed", name)
		}
	}
	for name := range st.groups {
		if strings.Contains(name, "p2/") || name == "group:two" {
			t.Errorf("chain state %s kept after it was removed", name)
		}
	}
	if len(st.gkeys) != 0 {
		t.Errorf("gateway key counters %v kept after the keys were removed", st.gkeys)
	}
	if !keptP1 || st.targets["p1/m"] != ts {
		t.Error("p1's state was dropped with p2's")
	}
	st.mu.Unlock()

	// Back again, p2 starts afresh: its spent minute is forgotten.
	swap(cfg("{rpm: 3}", true, ""))
	if r := ask("two"); r.status != 200 {
		t.Errorf("re-added p2: status %d %s", r.status, r.body)
	}
	fakeCheckError(t, ask("auto"), 429, "rate_limit_error", "rate_limit_exceeded", "")
}

func TestRoutingBurstNeverExceedsCaps(t *testing.T) {
	caps := map[string]int{"p1": 3, "p2": 5, "p3": 2}
	n := newFakeNet(t)
	ups := map[string]*fakeUpstream{}
	extra := map[string]string{}
	for p, rpm := range caps {
		ups[p] = n.upstream(p+".test", fakeOK(p))
		extra[p] = "limits: {rpm: " + strconv.Itoa(rpm) + "}"
	}
	g := newFakeGateway(t, rtYAML([]fakeProv{{name: "p1"}, {name: "p2"}, {name: "p3"}}, extra,
		"models:\n  auto: {targets: [p1/m, p2/m, p3/m]}\n"), n)

	const burst = 100
	type result struct {
		status     int
		retryAfter string
		body       string
		err        error
	}
	results := make(chan result, burst)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ask := fakeAsk
			if i%2 == 1 {
				ask = fakeAskStream
			}
			r, err := rtPost(g, ask)
			if err != nil {
				results <- result{err: err}
				return
			}
			results <- result{status: r.status, retryAfter: r.get("Retry-After"), body: string(r.body)}
		}()
	}
	close(start)
	wg.Wait()
	close(results)
	statuses := map[int]int{}
	for r := range results {
		if r.err != nil {
			t.Errorf("request failed: %v", r.err)
			continue
		}
		statuses[r.status]++
		switch r.status {
		case 200:
		case 429:
			if ra, err := strconv.Atoi(r.retryAfter); err != nil || ra < 1 || ra > 61 {
				t.Errorf("429 with Retry-After %q", r.retryAfter)
			}
			if code := gjson.Get(r.body, "error.code").Str; code != "rate_limit_exceeded" {
				t.Errorf("429 with code %q", code)
			}
		default:
			t.Errorf("status %d: %s", r.status, r.body)
		}
	}
	if statuses[200] != 10 || statuses[429] != burst-10 {
		t.Errorf("statuses %v, want 10 successes and %d 429s", statuses, burst-10)
	}
	for p, rpm := range caps {
		if hits := ups[p].hits(); hits != rpm {
			t.Errorf("%s saw %d requests, its cap is %d", p, hits, rpm)
		}
	}
	// The minute is spent: the next one is refused too.
	r := g.chat(fakeAsk)
	fakeCheckError(t, r, 429, "rate_limit_error", "rate_limit_exceeded", "")
	if !r.has("Retry-After") {
		t.Error("429 without Retry-After")
	}
}

// TestFinishedStreamKeepsItsConnection checks that a stream read to its
// [DONE] leaves the upstream connection reusable: the next stream does
// not dial again.
func TestFinishedStreamKeepsItsConnection(t *testing.T) {
	n := newFakeNet(t)
	n.upstream("p1.test", fakeStream(fakeChunk(0), fakeFinish, fakeDone))
	g := newFakeGateway(t, fakeThree(""), n)
	for i := range 3 {
		if r := g.chat(fakeAskStream); r.status != 200 || !strings.HasSuffix(string(r.body), fakeDone) {
			t.Fatalf("stream %d: %d %q", i, r.status, r.body)
		}
	}
	if d := n.dialsTo("p1.test"); d != 1 {
		t.Errorf("%d dials for 3 streams, want 1", d)
	}
}
