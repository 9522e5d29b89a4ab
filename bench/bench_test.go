package main

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/config"
)

func TestBuckets(t *testing.T) {
	// Every value lands in a bucket whose range holds it, buckets are in
	// order, and a bucket is at most 1/64 of its values wide.
	prev := -1
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 1000, 4095, 4096, 1e6, 1e9, 3e11} {
		i := bucketOf(v)
		lo, hi := bucketRange(i)
		if v < lo || v >= hi {
			t.Errorf("value %d: bucket %d is [%d, %d)", v, i, lo, hi)
		}
		if i < prev {
			t.Errorf("value %d: bucket %d before the previous value's %d", v, i, prev)
		}
		if v >= histLinear && float64(hi-lo) > float64(lo)/histSub {
			t.Errorf("value %d: bucket [%d, %d) is too wide", v, lo, hi)
		}
		prev = i
	}
	if i := bucketOf(1 << 62); i != histBuckets-1 {
		t.Errorf("huge value: bucket %d, want the last one", i)
	}
	if i := bucketOf(-5); i != 0 {
		t.Errorf("negative value: bucket %d, want 0", i)
	}
}

func TestQuantiles(t *testing.T) {
	var h hist
	if h.quantile(.5) != 0 {
		t.Fatal("empty histogram: want 0")
	}
	// 1..1000 µs: p50 is 500 µs, p99 990 µs, within a bucket's width.
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{.5, 500 * time.Microsecond}, {.99, 990 * time.Microsecond}, {.001, time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.quantile(c.q)
		if d := got - c.want; d < -c.want/64 || d > c.want/64 {
			t.Errorf("q%.3f = %v, want %v ± 1/64", c.q, got, c.want)
		}
	}
	if h.quantile(1) > 1000*time.Microsecond {
		t.Errorf("max = %v, above the largest value", h.quantile(1))
	}

	// Against a sorted sample of random latencies, merged from two halves.
	rng := rand.New(rand.NewPCG(1, 2))
	var a, b hist
	var all []time.Duration
	for i := range 20000 {
		d := time.Duration(rng.ExpFloat64() * float64(80*time.Microsecond))
		all = append(all, d)
		if i%2 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
	}
	a.merge(&b)
	slices.Sort(all)
	for _, q := range []float64{.5, .9, .99, .999} {
		want := all[int(q*float64(len(all))+0.999999)-1]
		got := a.quantile(q)
		if d := got - want; d < -want/60 || d > want/60 {
			t.Errorf("merged q%v = %v, sorted sample says %v", q, got, want)
		}
	}
	if a.n != 20000 {
		t.Errorf("merged count %d", a.n)
	}
}

func TestParseStat(t *testing.T) {
	// A real line, with a command name holding spaces and a ')'.
	line := "4242 (gate way) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 37 0 0 20 0 9 0 123456 1300000000 3300 18446744073709551615 1 1 0 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
	st, err := parseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if st.CPUTicks != 250+37 {
		t.Errorf("CPUTicks = %d, want utime 250 + stime 37", st.CPUTicks)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 ten 12 13"} {
		if _, err := parseStat(bad); err == nil {
			t.Errorf("parseStat(%q): no error", bad)
		}
	}
}

func TestParseRSS(t *testing.T) {
	status := "Name:\tgateway\nState:\tS (sleeping)\nVmPeak:\t 1300000 kB\nVmRSS:\t   13184 kB\nRssAnon:\t    6000 kB\nRssFile:\t    7184 kB\nRssShmem:\t       0 kB\nThreads:\t9\n"
	got, err := parseRSS(status)
	if err != nil {
		t.Fatal(err)
	}
	if want := (rss{total: 13184 << 10, anon: 6000 << 10, file: 7184 << 10}); got != want {
		t.Errorf("rss = %+v, want %+v", got, want)
	}
	if _, err := parseRSS("VmRSS:\t13184 kB\nRssAnon:\tmany kB\n"); err == nil {
		t.Error("RssAnon not a number: no error")
	}
	if _, err := parseRSS("Name:\tzombie\nState:\tZ (zombie)\n"); err == nil {
		t.Error("no VmRSS line: no error")
	}
}

func TestParseSystemBusy(t *testing.T) {
	busy, err := parseSystemBusy("cpu  100 5 50 9000 40 3 2 7 11 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(100 + 5 + 50 + 7); busy != want {
		t.Errorf("busy = %d, want %d", busy, want)
	}
}

func TestAuxvClkTck(t *testing.T) {
	var b []byte
	for _, kv := range [][2]uint64{{6, 4096}, {17, 250}, {25, 0xdead}, {0, 0}} {
		b = binary.LittleEndian.AppendUint64(b, kv[0])
		b = binary.LittleEndian.AppendUint64(b, kv[1])
	}
	if hz, ok := parseAuxvClkTck(b, 8, binary.LittleEndian); !ok || hz != 250 {
		t.Errorf("got %d %v, want 250", hz, ok)
	}
	if _, ok := parseAuxvClkTck(b[:16], 8, binary.LittleEndian); ok {
		t.Error("found AT_CLKTCK where there is none")
	}
	if hz := clockTicks(); hz <= 0 {
		t.Errorf("clockTicks() = %d", hz)
	}
}

func TestUpstreamHandler(t *testing.T) {
	h := upstreamHandler(3, 0)
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/v1/chat/completions")
	ctx.Request.SetBodyString(`{"model":"m","stream":true}`)
	h(&ctx)
	body := ctx.Response.Body()
	if n := bytes.Count(body, []byte("data: {")); n != 3 {
		t.Errorf("%d chunks, want 3", n)
	}
	if !bytes.HasSuffix(body, doneFrame) {
		t.Errorf("stream does not end with [DONE]: %q", body)
	}
	ctx.Response.Reset()
	ctx.Request.SetBodyString(`{"model":"m"}`)
	h(&ctx)
	if string(ctx.Response.Body()) != completion {
		t.Errorf("body %q", ctx.Response.Body())
	}
}

// The generated gateway.yaml must load as the gateway would load it.
func TestGatewayConfig(t *testing.T) {
	cfg, err := parseBenchConfig(gatewayConfig("127.0.0.1:1", "127.0.0.1:2", true, ""))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Providers["up"]
	if cfg.Listen != "127.0.0.1:1" || p == nil || p.BaseURL != "http://127.0.0.1:2/v1" || *p.StreamUsage || len(cfg.Routes) != 1 || len(cfg.Auth.Keys) != 1 {
		t.Errorf("unexpected config: listen %q, provider %+v, %d routes, %d keys", cfg.Listen, p, len(cfg.Routes), len(cfg.Auth.Keys))
	}
	if l := p.Models["m"].Limits; l != (config.Limits{}) {
		t.Errorf("the memory gateway's model has limits %+v, want none", l)
	}
}

// The Redis gateway's config is the same plus a state block and a model
// cap. A config package without `state:` may refuse that block, and only
// that block: everything else must load.
func TestGatewayConfigRedis(t *testing.T) {
	text := gatewayConfig("127.0.0.1:1", "127.0.0.1:2", false, "redis://127.0.0.1:3/0")
	first, rest, _ := strings.Cut(text, "\n")
	second, rest, _ := strings.Cut(rest, "\n")
	if first != "log: {access: false}" || second != `state: {backend: redis, redis: {url: "redis://127.0.0.1:3/0", prefix: "bench:", on_error: closed}}` {
		t.Fatalf("first lines %q, %q", first, second)
	}
	if _, err := parseBenchConfig(text); err != nil && !strings.Contains(err.Error(), `"state"`) {
		t.Errorf("the Redis config fails for another reason than its state block: %v", err)
	}
	cfg, err := parseBenchConfig(first + "\n" + rest)
	if err != nil {
		t.Fatal(err)
	}
	if rpm := cfg.Providers["up"].Models["m"].Limits.RPM; rpm != 1e9 {
		t.Errorf("model rpm %d, want 1e9", rpm)
	}
	if *cfg.Log.Access {
		t.Error("access log on, want off")
	}
}

func parseBenchConfig(text string) (*config.Config, error) {
	env := map[string]string{"BENCH_GW_KEY": gatewayKey, "BENCH_UPSTREAM_KEY": upstreamKey}
	return config.Parse([]byte(text), config.Options{
		LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
}

// The verdicts judge the median of each round's gateway/floor pair against
// issue 15's limits: one bad round out of three does not fail a target,
// two do.
func TestVerdictsUseMedianOfRounds(t *testing.T) {
	o, err := parseFlags([]string{"-concurrency", "16", "-rounds", "3"})
	if err != nil {
		t.Fatal(err)
	}
	rep := newReport(o, "cpu", "kernel", "rev", 100)
	for _, gw := range []int{900, 500, 880} { // 90%, 50%, 88% of the floor
		rep.addLoad("floor", 16, fakeResult(1000, time.Millisecond, 100))
		rep.addLoad("gateway", 16, fakeResult(gw, time.Millisecond, 120))
	}
	md := rep.markdown()
	wantLines(t, md,
		"| throughput at concurrency 16, gateway / floor (median of rounds) | 88% | ≥ 85% | PASS |",
		"| throughput at concurrency 64, gateway / floor (median of rounds) | not measured (add 64 to -concurrency) | ≥ 85% | — |",
		"| CPU per request at concurrency 16, gateway / floor (median of rounds) |",
		"| added p50 latency over the floor at concurrency 1 (median of rounds) | not measured (add 1 to -concurrency) | ≤ 30 µs | — |",
	)

	rep = newReport(o, "cpu", "kernel", "rev", 100)
	for _, gw := range []int{900, 500, 600} {
		rep.addLoad("floor", 16, fakeResult(1000, time.Millisecond, 100))
		rep.addLoad("gateway", 16, fakeResult(gw, time.Millisecond, 120))
	}
	if md := rep.markdown(); !strings.Contains(md, "| throughput at concurrency 16, gateway / floor (median of rounds) | 60% | ≥ 85% | **FAIL** |") {
		t.Errorf("two bad rounds of three pass:\n%s", md)
	}
}

// wantLines fails t for each of lines that md does not hold.
func wantLines(t *testing.T, md string, lines ...string) {
	t.Helper()
	for _, want := range lines {
		if !strings.Contains(md, want) {
			t.Errorf("no line %q in\n%s", want, md)
		}
	}
}
