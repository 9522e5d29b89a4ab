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

// limiter is the in-memory Limiter: it counts requests and tokens per
// minute and per day over sliding windows, for one (provider, model, key)
// or one gateway key.
type limiter struct {
	mu                 sync.Mutex
	rpm, rpd, tpm, tpd window
	// latest is the newest time a call has brought.
	latest int64
}

func newLimiter() *limiter {
	return &limiter{rpm: newWindow(time.Minute), rpd: newWindow(24 * time.Hour),
		tpm: newWindow(time.Minute), tpd: newWindow(24 * time.Hour)}
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

// Check implements Limiter.
func (l *limiter) Check(now int64, c caps, tokens int64) (bool, int64) {
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

// Reserve implements Limiter. The reservation is counted at the clamped
// now, the bucket settling corrects.
func (l *limiter) Reserve(now int64, c caps, tokens int64) (Reservation, bool, int64) {
	r, ok, at, _ := l.reserve(now, c, tokens, false)
	return r, ok, at
}

// Admit implements Limiter.
func (l *limiter) Admit(now int64, c caps, tokens int64) (Reservation, bool, int64, quota) {
	return l.reserve(now, c, tokens, c.rpm > 0)
}

// reserve is Reserve, and the quota of c.rpm after it when asked.
func (l *limiter) reserve(now int64, c caps, tokens int64, asked bool) (r Reservation, ok bool, at int64, q quota) {
	if c.none() {
		return Reservation{}, true, now, q
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now = l.clamp(now)
	if ok, at = l.fits(now, c, tokens); ok {
		l.add(now, c, tokens)
		r = Reservation{lim: l, caps: c, at: now, tokens: tokens}
	}
	if asked {
		q = l.quota(now, c.rpm)
	}
	return r, ok, at, q
}

// take counts a reservation that was granted elsewhere (by the shared
// backend), so this replica's own counts stay whole for when it must
// count alone.
func (l *limiter) take(now int64, c caps, tokens int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.add(l.clamp(now), c, tokens)
}

// add counts one request and tokens at now in each capped window. The
// caller holds mu.
func (l *limiter) add(now int64, c caps, tokens int64) {
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
}

// Settle implements Limiter: the tokens counted at r.at are corrected by
// the real usage minus the estimate.
func (l *limiter) Settle(r Reservation, now, used int64) {
	c, at, delta := r.caps, r.at, used-r.tokens
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

// Cancel implements Limiter.
func (l *limiter) Cancel(r Reservation) {
	c, at, tokens := r.caps, r.at, r.tokens
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

// Requests implements Limiter.
func (l *limiter) Requests(now int64, rpm int64) (remaining int64, reset int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.quota(l.clamp(now), rpm)
	return q.remaining, q.reset
}

// quota is where the minute cap rpm stands at now. The caller holds mu.
func (l *limiter) quota(now, rpm int64) quota {
	used := l.rpm.used(now)
	reset := l.rpm.freeAt(now, rpm-used+1, rpm)
	if reset <= now {
		reset = now + int64(time.Minute)
	}
	return quota{remaining: max(0, rpm-used), reset: reset}
}

// Used implements Limiter. It reads at the newest time a call has
// brought, as the others do, without moving it.
func (l *limiter) Used(now int64) (requests, tokens int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now = max(now, l.latest)
	return l.rpm.used(now), l.tpm.used(now)
}
