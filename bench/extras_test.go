package main

import (
	"bufio"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/engine"
)

// serve serves h on a loopback port until the test ends.
func serve(t *testing.T, h fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}

// serveEngine serves the real engine on the bench's config, with
// redisURL, in front of the fake upstream; it returns the config's error
// when it does not load.
func serveEngine(t *testing.T, redisURL string) (string, error) {
	t.Helper()
	up := serve(t, upstreamHandler(3, 0))
	cfg, err := parseBenchConfig(gatewayConfig("127.0.0.1:0", up, false, redisURL))
	if err != nil {
		return "", err
	}
	eng, err := engine.New(cfg, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	return serve(t, eng.Handler), nil
}

// post sends c to s once and returns the status and body.
func post(t *testing.T, s *server, c *call) (int, []byte) {
	t.Helper()
	req, resp := c.request(s.addr), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	if err := s.client.DoTimeout(req, resp, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode(), append([]byte(nil), resp.Body()...)
}

// startTestRedis starts a redis-server as the bench does, or skips.
func startTestRedis(t *testing.T) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not on PATH: the Redis phase is skipped in that case too")
	}
	t.Cleanup(stopAll)
	rs, err := startRedis(t.Context(), t.TempDir(), func(err error) { t.Errorf("redis exited: %v", err) })
	if err != nil || rs == nil {
		t.Fatalf("startRedis: %v, %v", rs, err)
	}
	return rs
}

// The extra phases' requests, sent to the real engine with the bench's
// config in front of the fake upstream, pass the sanity checks: the
// engine accepts them and translates the upstream's answer into each
// API's shape. The checks refuse the other APIs' answers.
func TestExtrasThroughEngine(t *testing.T) {
	addr, err := serveEngine(t, "")
	if err != nil {
		t.Fatal(err)
	}
	gw := &server{name: "gateway", addr: addr, client: newClient(addr, 4)}
	var extras []extraPhase
	for _, c := range []*call{responsesCall, messagesCall, chatCall} {
		extras = append(extras, extraPhase{c.path, gw, c})
	}
	if err := sanityExtras(extras); err != nil {
		t.Fatal(err)
	}

	answers := map[*call][]byte{}
	for _, c := range []*call{responsesCall, messagesCall, chatCall} {
		_, answers[c] = post(t, gw, c)
	}
	for c := range answers {
		for other, body := range answers {
			if err := checkAnswer(c, body); (err == nil) != (c == other) {
				t.Errorf("checking a %s answer as %s: %v", other.path, c.path, err)
			}
		}
	}
	wrong := strings.Replace(string(answers[messagesCall]), upstreamText, "Hi.", 1)
	if err := checkAnswer(messagesCall, []byte(wrong)); err == nil || !strings.Contains(err.Error(), "text") {
		t.Errorf("an answer with another text: %v", err)
	}
	if err := checkAnswer(chatCall, []byte("not json")); err == nil {
		t.Error("an answer that is not JSON passed")
	}

	// An answer other than 200 fails the sanity check, naming the status.
	gw.proc = &child{name: "engine", logPath: t.TempDir() + "/none.log"}
	unknown := *messagesCall
	unknown.body = []byte(`{"model":"nope","max_tokens":8,"messages":[{"role":"user","content":"Hi."}]}`)
	if err := sanityExtras([]extraPhase{{"messages", gw, &unknown}}); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("an unknown model: %v, want HTTP 404", err)
	}
}

func TestReadReply(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"+PONG\r\n", "PONG", ""},
		{":42\r\n", "42", ""},
		{"$5\r\nhello\r\n", "hello", ""},
		{"$0\r\n\r\n", "", ""},
		{"-ERR unknown command\r\n", "", "redis: ERR unknown command"},
		{"$-1\r\n", "", "bad bulk length"},
		{"$99999999\r\n", "", "bad bulk length"},
		{"$5\r\nhel", "", "EOF"},
		{"*1\r\n$1\r\na\r\n", "", "unexpected reply"},
		{"\r\n", "", "empty reply"},
	} {
		got, err := readReply(bufio.NewReader(strings.NewReader(c.in)))
		if got != c.want || (err == nil) != (c.err == "") || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("readReply(%q) = %q, %v; want %q, %q", c.in, got, err, c.want, c.err)
		}
	}
}

func TestParseCommandStats(t *testing.T) {
	info := "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=95,usec_per_call=9.50,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_get:calls=20,usec=3,usec_per_call=0.15,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_info:calls=7,usec=59,usec_per_call=8.40,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_config|get:calls=1,usec=11,usec_per_call=11.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_fcall_ro:calls=2,usec=11,usec_per_call=5.50,rejected_calls=0,failed_calls=0\r\n"
	c, err := parseCommandStats(info)
	if err != nil || c != (redisCounts{scripts: 12, commands: 33}) {
		t.Errorf("got %+v, %v; want 12 scripts, 33 commands (INFO left out)", c, err)
	}
	if d := c.since(redisCounts{scripts: 2, commands: 3}); d != (redisCounts{scripts: 10, commands: 30}) {
		t.Errorf("since: %+v", d)
	}
	if _, err := parseCommandStats("cmdstat_get:usec=3\r\n"); err == nil {
		t.Error("a line without calls: no error")
	}
}

// startRedis runs the real redis-server: it answers, counts commands, and
// stops with the run's children.
func TestStartRedis(t *testing.T) {
	rs := startTestRedis(t)
	before, err := rs.counts()
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"SET bench:x 1", "SET bench:y 2", `EVAL "return redis.call('GET','bench:x')" 0`} {
		if _, err := redisCmd(rs.addr, cmd); err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
	}
	after, err := rs.counts()
	if d := after.since(before); err != nil || d != (redisCounts{scripts: 1, commands: 4}) {
		t.Errorf("counts %+v then %+v (%v), want 1 script and 4 commands more (the script's GET included)", before, after, err)
	}
	if _, err := redisCmd(rs.addr, "NOSUCHCOMMAND"); err == nil {
		t.Error("an unknown command: no error")
	}
	if persistence, err := redisCmd(rs.addr, "INFO persistence"); err != nil || !strings.Contains(persistence, "aof_enabled:0\r\n") {
		t.Errorf("INFO persistence: %v, want aof_enabled:0 in\n%s", err, persistence)
	}
	rs.proc.stop()
	if !rs.proc.exited() {
		t.Error("redis still running after stop")
	}
}

// fakeResult is one round of a phase: reqs requests in a second, each
// taking lat, cpuMs of CPU in all.
func fakeResult(reqs int, lat time.Duration, cpuMs int64) *result {
	r := &result{reqs: uint64(reqs), elapsed: time.Second, cpuTicks: cpuMs / 10}
	for range reqs {
		r.lat.record(lat)
	}
	return r
}

// The extra phases' table compares each with the floor's and the
// gateway's chat phases at the same concurrency, and their failures count
// among the gateway's answers.
func TestMarkdownExtras(t *testing.T) {
	o, err := parseFlags([]string{"-concurrency", "1,16", "-rounds", "1"})
	if err != nil {
		t.Fatal(err)
	}
	rep := newReport(o, "cpu", "kernel", "rev", 100)
	// Latencies at the low ends of their histogram buckets come back exact.
	const floor, gateway, api = 131072 * time.Nanosecond, 196608 * time.Nanosecond, 262144 * time.Nanosecond
	rep.addLoad("floor", 1, fakeResult(1000, floor, 50))
	rep.addLoad("gateway", 1, fakeResult(900, gateway, 90))
	rep.addLoad("responses", 1, fakeResult(800, api, 80))
	redis := fakeResult(600, api, 60)
	redis.stateTicks, redis.stateCounts, redis.non2xx = 3, redisCounts{scripts: 600, commands: 1500}, 2
	rep.addLoad("redis", 1, redis)
	rep.addLoad("messages", 16, fakeResult(700, api, 70)) // no chat phases at 16
	md := rep.markdown()

	wantLines(t, md,
		"| 1 | Responses → chat | 800 | 262.1 | 262.1 | 0 | 0 | 100.0 | 0.0 | 80% | +131.1 | 2.00× | 89% | +65.5 |",
		"| 1 | chat, state in Redis | 600 | 262.1 | 262.1 | 2 | 0 | 100.0 | 0.0 | 60% | +131.1 | 2.00× | 67% | +65.5 |",
		"| 16 | Messages → chat | 700 | 262.1 | 262.1 | 0 | 0 | 100.0 | 0.0 | — | — | — | — | — |",
		"The Redis server itself used 50.0 µs of CPU, 1.0 script calls and 2.5 commands in all per request at concurrency 1 (commands run by scripts included).",
		"| gateway answers: non-2xx, errors, broken streams | 2 | 0 | **FAIL** |",
	)
	if i, j := strings.Index(md, "| 1 | Responses"), strings.Index(md, "| 1 | chat, state in Redis"); i < 0 || j < i {
		t.Error("extra phases out of order")
	}
	if strings.Contains(md, "Redis phase not run") {
		t.Error("a skip note without a skip")
	}

	rep = newReport(o, "cpu", "kernel", "rev", 100)
	rep.addLoad("floor", 1, fakeResult(1000, floor, 50))
	rep.redisSkipped = "no redis-server on PATH"
	md = rep.markdown()
	if !strings.Contains(md, "Redis phase not run: no redis-server on PATH.") || strings.Contains(md, "New APIs") {
		t.Errorf("skipped Redis phase, no extra phase run:\n%s", md)
	}
}

// The Redis phase's gateway, the real engine on the bench's config with a
// real redis-server, answers chat and makes a script call in Redis per
// request at least: the phase measures the shared backend, not memory.
func TestRedisGatewayThroughEngine(t *testing.T) {
	rs := startTestRedis(t)
	addr, err := serveEngine(t, "redis://"+rs.addr+"/0")
	if err != nil && strings.Contains(err.Error(), `"state"`) {
		t.Skipf("this tree's config has no state block yet, as the bench reports then: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	gw := &server{name: "gateway-redis", addr: addr, client: newClient(addr, 4), state: rs,
		proc: &child{name: "engine", logPath: t.TempDir() + "/none.log"}}
	if err := sanityExtras([]extraPhase{{"redis", gw, chatCall}}); err != nil {
		t.Fatal(err)
	}
	before, err := rs.counts()
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for range n {
		if code, body := post(t, gw, chatCall); code != 200 {
			t.Fatalf("HTTP %d: %s", code, body)
		}
	}
	after, err := rs.counts()
	if d := after.since(before); err != nil || d.scripts < n {
		t.Errorf("%d requests made %d script calls (%v), want one each at least", n, d.scripts, err)
	}
}
