package engine

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkRedisLimiter makes limiter decisions in a real redis-server
// and reports what they cost Redis itself: redis-µs/op is the server's
// CPU (user and system, network included), script-µs/op the time Redis
// counts in EVALSHA. The windows are full first (a bucket a second for a
// minute and a day), then the clock moves 1ms a decision, as under a
// load of 1000 requests a second.
func BenchmarkRedisLimiter(b *testing.B) {
	huge := int64(1_000_000_000)
	for _, bc := range []struct {
		name   string
		c      caps
		settle bool
		// refuse keeps the limiter at its cap, so every decision is a
		// refusal that must say when a request fits.
		refuse bool
	}{
		{name: "rpm", c: caps{rpm: huge}},
		{name: "rpm+tpm+settle", c: caps{rpm: huge, tpm: huge}, settle: true},
		{name: "all", c: caps{rpm: huge, rpd: huge, tpm: huge, tpd: huge}, settle: true},
		{name: "refused", c: caps{rpm: 61}, refuse: true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			be := newTestRedisBackend(b)
			l := be.Limiter("bench")
			sec, ms := int64(time.Second), int64(time.Millisecond)
			now := t0
			if !bc.refuse {
				// A day bucket is 24 minutes: a few of them first.
				for range 3 {
					l.Reserve(now, bc.c, 100)
					now += int64(24 * time.Minute)
				}
			}
			for range 61 {
				if _, ok, _ := l.Reserve(now, bc.c, 100); !ok {
					b.Fatal("filling the window: refused")
				}
				now += sec
			}
			now -= sec
			before := redisCost(b, be)
			b.ResetTimer()
			for b.Loop() {
				if bc.refuse {
					if _, ok, _ := l.Reserve(now, bc.c, 100); ok {
						b.Fatal("granted over the cap")
					}
					continue
				}
				now += ms
				r, ok, _ := l.Reserve(now, bc.c, 100)
				if !ok {
					b.Fatal("refused")
				}
				if bc.settle {
					r.Settle(now, 60)
				}
			}
			b.StopTimer()
			after := redisCost(b, be)
			calls := after.calls - before.calls
			b.ReportMetric((after.cpu-before.cpu)*1e6/float64(b.N), "redis-µs/op")
			b.ReportMetric(float64(after.usec-before.usec)/float64(b.N), "script-µs/op")
			b.ReportMetric(float64(calls)/float64(b.N), "scripts/op")
		})
	}
}

// redisUsage is what a redis-server reports it has spent: CPU seconds,
// and the calls and µs of EVALSHA.
type redisUsage struct {
	cpu         float64
	calls, usec int64
}

func redisCost(tb testing.TB, be *redisBackend) redisUsage {
	tb.Helper()
	info, err := be.rdb.Info(context.Background(), "cpu", "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	var u redisUsage
	for line := range strings.Lines(info) {
		line = strings.TrimSpace(line)
		name, val, _ := strings.Cut(line, ":")
		switch name {
		case "used_cpu_user", "used_cpu_sys":
			f, _ := strconv.ParseFloat(val, 64)
			u.cpu += f
		case "cmdstat_evalsha":
			for kv := range strings.SplitSeq(val, ",") {
				k, v, _ := strings.Cut(kv, "=")
				n, _ := strconv.ParseInt(v, 10, 64)
				switch k {
				case "calls":
					u.calls = n
				case "usec":
					u.usec = n
				}
			}
		}
	}
	return u
}
