package engine

import (
	"sync"
	"time"

	"gateway/config"
)

// caps are the limits one limiter enforces; zero is no cap.
type caps struct {
	rpm, rpd, tpm, tpd int64
}

func capsOf(l config.Limits) caps {
	return caps{rpm: int64(l.RPM), rpd: int64(l.RPD), tpm: int64(l.TPM), tpd: int64(l.TPD)}
}

func (c caps) none() bool { return c == caps{} }

// limiter counts requests and tokens per minute and per day over sliding
// windows, for one (provider, model, key) or one gateway key. Its counts
// live in the engine and survive reloads; the caps come from the snapshot.
type limiter struct {
	mu                 sync.Mutex
	rpm, rpd, tpm, tpd window
	// latest is the newest time a call has brought.
	latest int64
}

func newLimiter() *limiter {
	l := &limiter{}
	l.init()
	return l
}

// init sizes the windows of a zero limiter; one already sized is kept.
func (l *limiter) init() {
	if l.rpm.width != 0 {
		return
	}
	l.rpm, l.rpd = newWindow(time.Minute), newWindow(24*time.Hour)
	l.tpm, l.tpd = newWindow(time.Minute), newWindow(24*time.Hour)
}

// never is returned by reserve for a request that can never fit a cap.
const never = -1

// clamp returns now, or the newest time a call has brought when that is
// later. Time never goes back for a limiter: a request that read the
// clock and then waited (on a slow attempt, or for the lock) counts as
// of the newest time, so it sees every bucket counted since and never
// resets a slot that a newer bucket holds. The caller holds mu.
func (l *limiter) clamp(now int64) int64 {
	if now < l.latest {
		return l.latest
	}
	l.latest = now
	return now
}

// check reports, without taking anything, whether one request of tokens
// fits every cap now, and if not the earliest time it would (never when
// tokens alone exceed a cap).
func (l *limiter) check(now int64, c caps, tokens int64) (bool, int64) {
	if c.none() {
		return true, now
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fits(l.clamp(now), c, tokens)
}

func (l *limiter) fits(now int64, c caps, tokens int64) (bool, int64) {
	at := now
	for _, w := range [...]struct {
		win   *window
		limit int64
		n     int64
	}{{&l.rpm, c.rpm, 1}, {&l.rpd, c.rpd, 1}, {&l.tpm, c.tpm, tokens}, {&l.tpd, c.tpd, tokens}} {
		if w.limit == 0 {
			continue
		}
		t := w.win.freeAt(now, w.n, w.limit)
		if t == never {
			return false, never
		}
		at = max(at, t)
	}
	return at <= now, at
}

// reserve takes one request and tokens if every cap allows them, and
// returns the time they were counted at, which settle and cancel need;
// otherwise it returns what check does.
func (l *limiter) reserve(now int64, c caps, tokens int64) (bool, int64) {
	if c.none() {
		return true, now
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now = l.clamp(now)
	if ok, at := l.fits(now, c, tokens); !ok {
		return false, at
	}
	if c.rpm > 0 {
		l.rpm.add(now, 1)
	}
	if c.rpd > 0 {
		l.rpd.add(now, 1)
	}
	if c.tpm > 0 {
		l.tpm.add(now, tokens)
	}
	if c.tpd > 0 {
		l.tpd.add(now, tokens)
	}
	return true, now
}

// settle corrects a reservation counted at `at` (as reserve returned it)
// by delta tokens (the real usage minus the estimate).
func (l *limiter) settle(c caps, at, now, delta int64) {
	if delta == 0 || (c.tpm == 0 && c.tpd == 0) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now = l.clamp(now)
	if c.tpm > 0 {
		l.tpm.addAt(at, now, delta)
	}
	if c.tpd > 0 {
		l.tpd.addAt(at, now, delta)
	}
}

// cancel takes back a whole reservation made at `at`, for a request that
// was never sent.
func (l *limiter) cancel(c caps, at, tokens int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range [...]struct {
		win   *window
		limit int64
		n     int64
	}{{&l.rpm, c.rpm, 1}, {&l.rpd, c.rpd, 1}, {&l.tpm, c.tpm, tokens}, {&l.tpd, c.tpd, tokens}} {
		if w.limit > 0 {
			w.win.addAt(at, at, -w.n)
		}
	}
}

// requests returns how many more requests the minute cap allows and when
// the next one frees (unix ns), for X-RateLimit headers.
func (l *limiter) requests(now int64, rpm int64) (remaining int64, reset int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now = l.clamp(now)
	used := l.rpm.used(now)
	remaining = max(0, rpm-used)
	reset = l.rpm.freeAt(now, rpm-used+1, rpm)
	if reset <= now {
		reset = now + int64(time.Minute)
	}
	return remaining, reset
}
