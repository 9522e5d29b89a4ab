package engine

import (
	"io"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/adapters"
	"gateway/config"
)

// testEngine is an engine for cfgYAML, whose ${K} references read
// "key-K", closed when tb ends.
func testEngine(tb testing.TB, cfgYAML string, opt Options) *Engine {
	tb.Helper()
	cfg, err := config.Parse([]byte(cfgYAML), config.Options{LookupEnv: func(k string) (string, bool) { return "key-" + k, true }})
	if err != nil {
		tb.Fatal(err)
	}
	e, err := New(cfg, opt)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.Close)
	return e
}

// bookkeepingEngine is an engine for benchConfig writing its access log
// to io.Discard, with its snapshot, key and the target the route picks.
func bookkeepingEngine(b *testing.B) (*Engine, *snapshot, *gatewayKey, *target) {
	e := testEngine(b, benchConfig, Options{AccessLog: io.Discard})
	s := e.snap.Load()
	return e, s, s.byName["bench"], s.groups["auto"].targets[0]
}

// BenchmarkFinish is the bookkeeping of one answered request: the
// counters of the gateway, its route and key, /api/requests' ring and the
// access log line.
func BenchmarkFinish(b *testing.B) {
	e, s, key, t := bookkeepingEngine(b)
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/v1/chat/completions")
	ctx.Response.Header.SetCanonical(hdrRequestID, []byte("req_0123456789ab0000000000000001"))
	x := &exchange{route: s.routes[0].stats, routeName: "tools", winner: candidate{t: t}, ttfb: time.Millisecond}
	x.req.model, x.reply.Usage = "auto", adapters.Usage{Known: true, Prompt: 9, Completion: 7}
	b.ReportAllocs()
	for b.Loop() {
		x.start = time.Now()
		e.finish(&ctx, s, key, x)
	}
}

// BenchmarkBookkeeping is everything counted for one answered request
// after its upstream answered: the target's success, the settlement of
// its tokens and finish, the serial run on one core, the parallel one on
// every core at once, as a loaded gateway runs it, where cores contend
// for the counters every request shares.
func BenchmarkBookkeeping(b *testing.B) {
	e, s, key, t := bookkeepingEngine(b)
	one := func(ctx *fasthttp.RequestCtx, x *exchange) {
		c := candidate{t: t, ks: t.keys[0]}
		x.start = time.Now()
		e.won(s, c, x.ttfb, 0, 0, 0, nanotime())
		res := settlement{c: c, key: key, route: x.route.series.Load(), all: e.states.analytics.all}
		res.settle(x.reply.Usage, nanotime())
		e.finish(ctx, s, key, x)
	}
	request := func() (*fasthttp.RequestCtx, *exchange) {
		ctx := new(fasthttp.RequestCtx)
		ctx.Request.SetRequestURI("/v1/chat/completions")
		ctx.Response.Header.SetCanonical(hdrRequestID, []byte("req_0123456789ab0000000000000001"))
		x := &exchange{route: s.routes[0].stats, routeName: "tools", winner: candidate{t: t}, ttfb: time.Millisecond}
		x.req.model, x.reply.Usage = "auto", adapters.Usage{Known: true, Prompt: 9, Completion: 7}
		return ctx, x
	}
	b.Run("serial", func(b *testing.B) {
		ctx, x := request()
		b.ReportAllocs()
		for b.Loop() {
			one(ctx, x)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ctx, x := request()
			for pb.Next() {
				one(ctx, x)
			}
		})
	})
}

// benchLine is a typical access log line's request.
var benchLine = accessLine{id: "req_0123456789ab0000000000000001", method: "POST", path: "/v1/chat/completions", model: "auto",
	key: "bench", route: "tools", via: "up/m", status: 200, latency: 1500 * time.Microsecond, ttfb: 700 * time.Microsecond,
	usage: adapters.Usage{Known: true, Prompt: 9, Completion: 7}}

// BenchmarkAccessLine encodes one access log line, a microsecond after
// the one before, without reading the clock.
func BenchmarkAccessLine(b *testing.B) {
	var buf [512]byte
	at := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		at = at.Add(time.Microsecond + 7)
		appendAccess(buf[:0], &benchLine, at)
	}
}

// BenchmarkAccessWrite encodes and buffers one access log line.
func BenchmarkAccessWrite(b *testing.B) {
	a := newAccessWriter(io.Discard)
	b.Cleanup(a.close)
	at := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		at = at.Add(time.Microsecond + 7)
		a.write(&benchLine, at)
	}
}

// BenchmarkRecentRecord remembers one request for /api/requests.
func BenchmarkRecentRecord(b *testing.B) {
	var r recentRing
	at := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		r.record(&benchLine, at)
	}
}

// BenchmarkKeyReserve is a gateway key's admission at 50,000 requests a
// second: the reservation against its rpm cap and the X-RateLimit headers
// of the answer; its minute window full, and ten seconds into its use
// (a gateway just started, or a load test), when the oldest buckets of
// the window are empty.
func BenchmarkKeyReserve(b *testing.B) {
	for _, tt := range []struct {
		name string
		age  time.Duration
	}{{"full", time.Minute}, {"young", 10 * time.Second}} {
		b.Run(tt.name, func(b *testing.B) {
			_, _, key, _ := bookkeepingEngine(b)
			var ctx fasthttp.RequestCtx
			const step = int64(20 * time.Microsecond)
			now := nanotime()
			for range int64(tt.age) / step {
				now += step
				key.lim.Reserve(now, key.caps, 100)
			}
			b.ReportAllocs()
			for b.Loop() {
				now += step
				res, ok, _, q := key.lim.Admit(now, key.caps, 100)
				key.quotaHeaders(&ctx, q)
				if !ok {
					b.Fatal("refused")
				}
				res.Settle(now, 16)
			}
		})
	}
}
