package engine

import (
	"strconv"
	"testing"
	"time"
)

// forEachLimiter runs a limiter test against every Limiter: memory, and
// Redis when a redis-server is at hand. Both must behave alike to the
// nanosecond.
func forEachLimiter(t *testing.T, test func(t *testing.T, newLim func() Limiter)) {
	t.Run("memory", func(t *testing.T) { test(t, func() Limiter { return newLimiter() }) })
	t.Run("redis", func(t *testing.T) {
		b := newTestRedisBackend(t)
		n := 0
		test(t, func() Limiter {
			n++
			return b.Limiter("lim" + strconv.Itoa(n))
		})
	})
}

// t0 is a fixed clock start, on a bucket boundary of every window.
var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano()

func TestLimiterMinuteWindowEdges(t *testing.T) { forEachLimiter(t, testLimiterMinuteWindowEdges) }

func testLimiterMinuteWindowEdges(t *testing.T, newLim func() Limiter) {
	sec := int64(time.Second)
	tests := []struct {
		name    string
		at      []int64 // offsets of granted requests, in seconds
		try     int64   // offset of the request under test
		want    bool
		retryAt int64 // expected retry offset in seconds when refused
	}{
		{"under cap", []int64{0, 1}, 2, true, 0},
		{"at cap refused", []int64{0, 1, 2}, 3, false, 61},
		{"still refused just before the oldest leaves", []int64{0, 1, 2}, 60, false, 61},
		{"oldest bucket left", []int64{0, 1, 2}, 61, true, 0},
		{"no reset at the minute boundary", []int64{50, 55, 59}, 60, false, 111},
		{"a burst at the end of one minute blocks the start of the next", []int64{59, 59, 59}, 61, false, 120},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLim()
			c := caps{rpm: 3}
			for _, at := range tc.at {
				if _, ok, _ := l.Reserve(t0+at*sec, c, 0); !ok {
					t.Fatalf("setup request at %ds refused", at)
				}
			}
			_, ok, retry := l.Reserve(t0+tc.try*sec, c, 0)
			if ok != tc.want {
				t.Fatalf("reserve at %ds = %v, want %v", tc.try, ok, tc.want)
			}
			if !ok && retry != t0+tc.retryAt*sec {
				t.Fatalf("retry at %v s, want %d s", float64(retry-t0)/float64(sec), tc.retryAt)
			}
			if !ok {
				// At the promised time the request fits.
				if _, ok, _ := l.Reserve(retry, c, 0); !ok {
					t.Fatalf("refused again at the retry time")
				}
			}
		})
	}
}

// TestLimiterNeverExceedsCap checks the invariant that matters: in any
// sliding minute no more than rpm requests are granted.
func TestLimiterNeverExceedsCap(t *testing.T) { forEachLimiter(t, testLimiterNeverExceedsCap) }

func testLimiterNeverExceedsCap(t *testing.T, newLim func() Limiter) {
	l := newLim()
	c := caps{rpm: 10}
	var granted []int64
	step := int64(250 * time.Millisecond)
	for now := t0; now < t0+int64(5*time.Minute); now += step {
		for range 3 {
			if _, ok, _ := l.Reserve(now, c, 0); ok {
				granted = append(granted, now)
			}
		}
	}
	for i := range granted {
		n := 0
		for _, g := range granted[i:] {
			if g-granted[i] < int64(time.Minute) {
				n++
			}
		}
		if n > 10 {
			t.Fatalf("%d requests granted within one minute of %v", n, time.Duration(granted[i]-t0))
		}
	}
	// It is not wasteful either: at least 9 of 10 per minute get through.
	if len(granted) < 5*9 {
		t.Fatalf("only %d requests granted over 5 minutes at rpm 10", len(granted))
	}
}

func TestLimiterTokensAndSettle(t *testing.T) { forEachLimiter(t, testLimiterTokensAndSettle) }

func testLimiterTokensAndSettle(t *testing.T, newLim func() Limiter) {
	l := newLim()
	c := caps{tpm: 1000, tpd: 5000}
	r, ok, _ := l.Reserve(t0, c, 800)
	if !ok {
		t.Fatal("800 of 1000 refused")
	}
	if _, ok, _ := l.Reserve(t0, c, 300); ok {
		t.Fatal("1100 of 1000 granted")
	}
	// The real usage was 500, not the 800 reserved: 300 come back.
	r.Settle(t0+int64(time.Second), 500)
	if _, ok, _ := l.Reserve(t0+int64(time.Second), c, 500); !ok {
		t.Fatal("500 more refused after settling to 500")
	}
	if _, ok, at := l.Reserve(t0, c, 2000); ok || at != never {
		t.Fatalf("a request over the whole cap: ok=%v at=%d, want never", ok, at)
	}
	// The day cap binds once minutes have passed.
	now := t0
	for i := range 10 {
		now += int64(2 * time.Minute)
		_, ok, _ := l.Reserve(now, c, 900)
		if want := i < 4; ok != want { // 1000 used + 4*900 = 4600; the 5th would be 5500
			t.Fatalf("day request %d: ok=%v want %v", i, ok, want)
		}
	}
}

func TestLimiterRequestsHeaderValues(t *testing.T) {
	forEachLimiter(t, testLimiterRequestsHeaderValues)
}

func testLimiterRequestsHeaderValues(t *testing.T, newLim func() Limiter) {
	l := newLim()
	c := caps{rpm: 2}
	rem, reset := l.Requests(t0, 2)
	if rem != 2 || reset != t0+int64(time.Minute) {
		t.Fatalf("fresh: remaining %d reset %v", rem, time.Duration(reset-t0))
	}
	l.Reserve(t0, c, 0)
	l.Reserve(t0+int64(10*time.Second), c, 0)
	rem, reset = l.Requests(t0+int64(20*time.Second), 2)
	if rem != 0 || reset != t0+int64(61*time.Second) {
		t.Fatalf("spent: remaining %d reset %v", rem, time.Duration(reset-t0))
	}
}

func TestLimiterDayWindowEdges(t *testing.T) { forEachLimiter(t, testLimiterDayWindowEdges) }

func testLimiterDayWindowEdges(t *testing.T, newLim func() Limiter) {
	l := newLim()
	c := caps{rpd: 2}
	hour := int64(time.Hour)
	for _, at := range []int64{0, hour} {
		if _, ok, _ := l.Reserve(t0+at, c, 0); !ok {
			t.Fatalf("request at %v refused", time.Duration(at))
		}
	}
	_, ok, retry := l.Reserve(t0+2*hour, c, 0)
	// Day buckets are 24 minutes wide; the oldest counts whole while it
	// overlaps the day, so the first request frees 24h24m after it.
	if want := t0 + 24*hour + int64(24*time.Minute); ok || retry != want {
		t.Fatalf("third request: ok %v, retry at %v; want refused until 24h24m", ok, time.Duration(retry-t0))
	}
	if _, ok, _ := l.Reserve(t0+24*hour, c, 0); ok {
		t.Fatal("a day later the oldest bucket still overlaps the day, yet it was granted")
	}
	if _, ok, _ := l.Reserve(retry, c, 0); !ok {
		t.Fatal("refused at the promised time")
	}
	// A minute cap does not hide a day cap, nor the other way round.
	both := caps{rpm: 100, rpd: 1}
	l = newLim()
	l.Reserve(t0, both, 0)
	if _, ok, at := l.Reserve(t0+int64(2*time.Minute), both, 0); ok || at <= t0+24*hour {
		t.Fatalf("day cap ignored: ok %v, at %v", ok, time.Duration(at-t0))
	}
}

func TestLimiterSettleEdges(t *testing.T) { forEachLimiter(t, testLimiterSettleEdges) }

func testLimiterSettleEdges(t *testing.T, newLim func() Limiter) {
	c := caps{tpm: 1000}
	minute := int64(time.Minute)
	used := func(l Limiter, now int64) int64 {
		_, tokens := l.Used(now)
		return tokens
	}
	t.Run("more than reserved, after the reservation left the window", func(t *testing.T) {
		l := newLim()
		r, _, _ := l.Reserve(t0, c, 100)
		// The extra tokens were spent now: they count now.
		r.Settle(t0+2*minute, 400)
		if got := used(l, t0+2*minute); got != 300 {
			t.Errorf("used %d, want the 300 extra in the current minute", got)
		}
	})
	t.Run("less than reserved, after the reservation left the window", func(t *testing.T) {
		l := newLim()
		r, _, _ := l.Reserve(t0, c, 800)
		l.Reserve(t0+2*minute, c, 100)
		// Nothing of the old reservation counts any more: no credit.
		r.Settle(t0+2*minute, 100)
		if got := used(l, t0+2*minute); got != 100 {
			t.Errorf("used %d, want 100: a late refund must not eat into the current minute", got)
		}
	})
	t.Run("a refund larger than the bucket", func(t *testing.T) {
		l := newLim()
		r, _, _ := l.Reserve(t0, c, 100)
		l.Reserve(t0+int64(30*time.Second), c, 500)
		// Settling 900 below the 100 reserved.
		r.Settle(t0+int64(40*time.Second), -800)
		if got := used(l, t0+int64(40*time.Second)); got != 500 {
			t.Errorf("used %d, want 500: a bucket never goes below zero", got)
		}
	})
	t.Run("a cap without token limits ignores settling", func(t *testing.T) {
		l := newLim()
		r, _, _ := l.Reserve(t0, caps{rpm: 5}, 0)
		r.Settle(t0, 1000)
		if got := used(l, t0); got != 0 {
			t.Errorf("used %d", got)
		}
	})
}

func TestLimiterCancelGivesBackAWholeReservation(t *testing.T) {
	forEachLimiter(t, testLimiterCancelGivesBackAWholeReservation)
}

func testLimiterCancelGivesBackAWholeReservation(t *testing.T, newLim func() Limiter) {
	l := newLim()
	c := caps{rpm: 1, tpm: 100}
	r, ok, _ := l.Reserve(t0, c, 80)
	if !ok {
		t.Fatal("first reservation refused")
	}
	r.Cancel()
	if _, ok, _ := l.Reserve(t0+1, c, 100); !ok {
		t.Fatal("a cancelled reservation still counts")
	}
}

// TestLimiterTimeNeverGoesBack: a call that brings an older time than the
// limiter has already seen (a request that read the clock, then waited on
// a slow attempt) counts at the newest time: it sees the newer buckets,
// never resets a slot a newer bucket lives in, and its tokens settle in
// the bucket they went into.
func TestLimiterTimeNeverGoesBack(t *testing.T) { forEachLimiter(t, testLimiterTimeNeverGoesBack) }

func testLimiterTimeNeverGoesBack(t *testing.T, newLim func() Limiter) {
	sec := int64(time.Second)
	tests := []struct {
		name      string
		first     int64 // offset of the reservation made first, s
		late      int64 // the older offset a later call brings, s
		lateFits  bool  // whether the late call fits the caps
		c         caps
		wantAfter int64 // tokens counted a second after first
	}{
		{"a bucket behind, over rpm", 61, 60, false, caps{rpm: 1}, 0},
		{"a window behind, over rpm", 61, 0, false, caps{rpm: 1}, 0},
		{"a window behind, under tpm", 61, 0, true, caps{tpm: 1000}, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLim()
			if _, ok, _ := l.Reserve(t0+tc.first*sec, tc.c, 100); !ok {
				t.Fatal("first reservation refused")
			}
			if ok, _ := l.Check(t0+tc.late*sec, tc.c, 100); ok != tc.lateFits {
				t.Errorf("check at %ds = %v, want %v", tc.late, ok, tc.lateFits)
			}
			r, ok, _ := l.Reserve(t0+tc.late*sec, tc.c, 100)
			if ok != tc.lateFits {
				t.Fatalf("reserve at %ds = %v, want %v", tc.late, ok, tc.lateFits)
			}
			after := t0 + (tc.first+1)*sec
			if ok {
				// Half the tokens come back; they must leave the bucket
				// the reservation went into, not one the window lost.
				r.Settle(after, 50)
				_, got := l.Used(after)
				if got != tc.wantAfter-50 {
					t.Errorf("tokens counted after settling %d, want %d", got, tc.wantAfter-50)
				}
				return
			}
			// The first reservation still holds its slot.
			if _, ok, _ := l.Reserve(after, tc.c, 100); ok {
				t.Errorf("a reservation at %ds fits: the late call wiped the one at %ds", tc.first+1, tc.first)
			}
		})
	}
}

// TestLimiterIdleWindows: a window that slept, for part of its period or
// longer than all of it, counts only what is left in it when it wakes:
// no stale sum blocks it, and nothing that still counts is forgotten.
func TestLimiterIdleWindows(t *testing.T) { forEachLimiter(t, testLimiterIdleWindows) }

func testLimiterIdleWindows(t *testing.T, newLim func() Limiter) {
	sec, minute, day := int64(time.Second), int64(time.Minute), int64(24*time.Hour)
	reserve := func(t *testing.T, l Limiter, at int64, c caps, tokens int64, want bool) int64 {
		t.Helper()
		_, ok, retry := l.Reserve(at, c, tokens)
		if ok != want {
			t.Fatalf("reserve at %v: ok=%v, want %v", time.Duration(at-t0), ok, want)
		}
		return retry
	}
	t.Run("minute, asleep for part of it", func(t *testing.T) {
		l, c := newLim(), caps{rpm: 3}
		for _, at := range []int64{0, 10, 20} {
			reserve(t, l, t0+at*sec, c, 0, true)
		}
		// At 75s the requests of 0s and 10s have left, the one of 20s
		// counts until 81s.
		reserve(t, l, t0+75*sec, c, 0, true)
		reserve(t, l, t0+75*sec, c, 0, true)
		if retry := reserve(t, l, t0+75*sec, c, 0, false); retry != t0+81*sec {
			t.Fatalf("retry at %v, want 81s", time.Duration(retry-t0))
		}
		if req, _ := l.Used(t0 + 75*sec); req != 3 {
			t.Fatalf("%d requests counted at 75s, want 3", req)
		}
	})
	t.Run("minute, asleep for longer than it", func(t *testing.T) {
		l, c := newLim(), caps{rpm: 3, tpm: 1000}
		for _, at := range []int64{0, 1, 2} {
			reserve(t, l, t0+at*sec, c, 300, true)
		}
		// Read only, the counts are already gone a minute and 3s on.
		if req, tokens := l.Used(t0 + 63*sec); req != 0 || tokens != 0 {
			t.Fatalf("at 63s: %d requests, %d tokens counted, want none", req, tokens)
		}
		now := t0 + 10*minute
		if req, tokens := l.Used(now); req != 0 || tokens != 0 {
			t.Fatalf("after 10m asleep: %d requests, %d tokens counted, want none", req, tokens)
		}
		for range 3 {
			reserve(t, l, now, c, 300, true)
		}
		if retry := reserve(t, l, now+sec, c, 0, false); retry != now+61*sec {
			t.Fatalf("retry at %v, want 61s after waking", time.Duration(retry-now))
		}
		if req, tokens := l.Used(now + sec); req != 3 || tokens != 900 {
			t.Fatalf("after waking: %d requests, %d tokens, want 3 and 900", req, tokens)
		}
		// Asleep again, longer than a day: the same.
		now += day + 7*sec
		reserve(t, l, now, c, 1000, true)
		if _, tokens := l.Used(now); tokens != 1000 {
			t.Fatalf("after a day asleep: %d tokens, want 1000", tokens)
		}
	})
	t.Run("day, asleep for longer than it", func(t *testing.T) {
		l, c := newLim(), caps{rpd: 2}
		reserve(t, l, t0, c, 0, true)
		reserve(t, l, t0+int64(time.Hour), c, 0, true)
		reserve(t, l, t0+2*int64(time.Hour), c, 0, false)
		now := t0 + 3*day
		reserve(t, l, now, c, 0, true)
		reserve(t, l, now, c, 0, true)
		// Refused until the first of the two leaves: its 24-minute bucket
		// counts whole.
		if retry := reserve(t, l, now+minute, c, 0, false); retry != now+day+int64(24*time.Minute) {
			t.Fatalf("retry at %v, want 24h24m after waking", time.Duration(retry-now))
		}
	})
	t.Run("a refund settled after its bucket left, with nothing in between", func(t *testing.T) {
		l, c := newLim(), caps{tpm: 1000}
		r, _, _ := l.Reserve(t0, c, 800)
		// The settling call is the first to see the reservation's bucket
		// gone: no credit, and the count does not go below zero.
		r.Settle(t0+2*minute, 100)
		if _, tokens := l.Used(t0 + 2*minute); tokens != 0 {
			t.Fatalf("%d tokens counted, want 0", tokens)
		}
		reserve(t, l, t0+2*minute, c, 1000, true)
		reserve(t, l, t0+2*minute, c, 1, false)
	})
}

// TestLimiterCancelOfTheOldestRequest: when the oldest counted request is
// taken back, the next one to leave the minute is the one after it, and
// the X-RateLimit reset says so.
func TestLimiterCancelOfTheOldestRequest(t *testing.T) {
	forEachLimiter(t, testLimiterCancelOfTheOldestRequest)
}

func testLimiterCancelOfTheOldestRequest(t *testing.T, newLim func() Limiter) {
	sec := int64(time.Second)
	l, c := newLim(), caps{rpm: 2}
	first, _, _ := l.Reserve(t0, c, 0)
	l.Reserve(t0+10*sec, c, 0)
	first.Cancel()
	if ok, _ := l.Check(t0+20*sec, c, 0); !ok {
		t.Fatal("one request of two counted, yet refused")
	}
	if rem, reset := l.Requests(t0+20*sec, 2); rem != 1 || reset != t0+71*sec {
		t.Fatalf("remaining %d, reset at %v; want 1 and 71s", rem, time.Duration(reset-t0))
	}
	// Both the second and a new one count; the third is refused until
	// the second leaves.
	l.Reserve(t0+30*sec, c, 0)
	if _, ok, at := l.Reserve(t0+40*sec, c, 0); ok || at != t0+71*sec {
		t.Fatalf("ok %v, retry at %v; want refused until 71s", ok, time.Duration(at-t0))
	}
}

func TestLimiterAdmitIsReserveThenRequests(t *testing.T) {
	forEachLimiter(t, testLimiterAdmitIsReserveThenRequests)
}

// testLimiterAdmitIsReserveThenRequests: Admit decides as Reserve does and
// returns the quota Requests tells right after, granted or refused; a cap
// set without rpm has no quota.
func testLimiterAdmitIsReserveThenRequests(t *testing.T, newLim func() Limiter) {
	admit, reserve := newLim(), newLim()
	sec := int64(time.Second)
	for _, c := range []caps{{rpm: 3, tpm: 1000}, {tpm: 1000}} {
		now := t0
		for i, step := range []int64{0, 5, 5, 5, 0, 30, 20, 1, 60, 1} {
			now += step * sec
			ar, aok, aat, q := admit.Admit(now, c, 300)
			rr, rok, rat := reserve.Reserve(now, c, 300)
			if aok != rok || aat != rat || ar.at != rr.at || ar.tokens != rr.tokens {
				t.Fatalf("%+v request %d: admit %v %v, reserve %v %v", c, i, aok, aat-t0, rok, rat-t0)
			}
			var want quota
			if c.rpm > 0 {
				want.remaining, want.reset = reserve.Requests(now, c.rpm)
			}
			if q != want {
				t.Fatalf("%+v request %d (ok %v): quota %+v, Requests says %+v", c, i, aok, q, want)
			}
		}
	}
}
