package engine

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// TestRedisLimiterMatchesMemory runs random calls, at random times (late
// ones, bursts, sleeps of a second to a day), on the memory limiter and
// the Redis one side by side: every answer must be the same.
func TestRedisLimiterMatchesMemory(t *testing.T) {
	b := newTestRedisBackend(t)
	capSets := []caps{
		{rpm: 5}, {tpm: 1000}, {rpm: 5, rpd: 20, tpm: 1000, tpd: 5000}, {rpd: 8, tpd: 3000},
	}
	for seed := range uint64(8) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			mem, red := newLimiter(), b.Limiter("diff"+strconv.FormatUint(seed, 10))
			// Even seeds keep one set of caps, odd ones change them on the
			// way, as a reload would.
			c := capSets[int(seed/2)%len(capSets)]
			type pair struct{ m, r Reservation }
			var open []pair
			now := t0
			for step := range 600 {
				switch x := rng.IntN(100); {
				case x < 40:
				case x < 70:
					now += rng.Int64N(int64(3 * time.Second))
				case x < 85:
					now += rng.Int64N(int64(2 * time.Minute))
				case x < 92:
					now -= rng.Int64N(int64(70 * time.Second)) // a late call
				case x < 97:
					now += rng.Int64N(int64(3 * time.Hour))
				default:
					now += rng.Int64N(int64(50 * time.Hour))
				}
				if seed%2 == 1 && rng.IntN(40) == 0 {
					c = capSets[rng.IntN(len(capSets))]
				}
				where := func(what string) string {
					return "step " + strconv.Itoa(step) + " at " + time.Duration(now-t0).String() + ": " + what
				}
				switch op := rng.IntN(10); {
				case op < 5:
					tokens := rng.Int64N(400)
					mr, mok, mat := mem.Reserve(now, c, tokens)
					rr, rok, rat := red.Reserve(now, c, tokens)
					if mok != rok || mat != rat || mr.at != rr.at {
						t.Fatalf("%s: reserve %d: memory %v %v (at %v), redis %v %v (at %v)", where("reserve"), tokens,
							mok, mat-t0, mr.at-t0, rok, rat-t0, rr.at-t0)
					}
					if mok {
						open = append(open, pair{mr, rr})
					}
					if c.rpm > 0 {
						mrem, mreset := mem.Requests(now, c.rpm)
						rrem, rreset := red.Requests(now, c.rpm)
						if mok && (mrem != rrem || mreset != rreset) {
							t.Fatalf("%s: memory %d %v, redis %d %v", where("requests"), mrem, mreset-t0, rrem, rreset-t0)
						}
					}
				case op < 6:
					tokens := rng.Int64N(1200)
					mok, mat := mem.Check(now, c, tokens)
					rok, rat := red.Check(now, c, tokens)
					if mok != rok || mat != rat {
						t.Fatalf("%s: memory %v %v, redis %v %v", where("check"), mok, mat-t0, rok, rat-t0)
					}
				case op < 8 && len(open) > 0:
					i := rng.IntN(len(open))
					used := rng.Int64N(600)
					open[i].m.Settle(now, used)
					open[i].r.Settle(now, used)
					open = append(open[:i], open[i+1:]...)
				case op < 9 && len(open) > 0:
					i := rng.IntN(len(open))
					open[i].m.Cancel()
					open[i].r.Cancel()
					open = append(open[:i], open[i+1:]...)
				default:
					mreq, mtok := mem.Used(now)
					rreq, rtok := red.Used(now)
					if mreq != rreq || mtok != rtok {
						t.Fatalf("%s: memory %d requests %d tokens, redis %d and %d", where("used"), mreq, mtok, rreq, rtok)
					}
				}
			}
		})
	}
}

// TestRedisLimiterKeysExpire: every limiter hash has a TTL, a minute's or
// with a day cap a day's, and a call with minute caps only never cuts a
// day's short.
func TestRedisLimiterKeysExpire(t *testing.T) {
	b := newTestRedisBackend(t)
	ttl := func(l Limiter) time.Duration {
		t.Helper()
		d, err := b.rdb.PTTL(context.Background(), l.(*redisLimiter).key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	sec := int64(time.Second)
	l := b.Limiter("ttl")
	l.Check(t0, caps{rpm: 5}, 0)
	if d := ttl(l); d <= 0 || d > 125*time.Second {
		t.Fatalf("after a check with rpm: TTL %v, want up to 125s", d)
	}
	l.Reserve(t0+sec, caps{rpm: 5, rpd: 10}, 0)
	if d := ttl(l); d < 24*time.Hour {
		t.Fatalf("with a day cap: TTL %v, want 25h", d)
	}
	l.Reserve(t0+2*sec, caps{rpm: 5}, 0)
	if d := ttl(l); d < 24*time.Hour {
		t.Fatalf("a minute-only call cut the day's TTL to %v", d)
	}
}
