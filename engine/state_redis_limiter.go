package engine

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"
)

// redisLimiter is the Limiter of one (provider, model, key) or gateway
// key in Redis. It keeps a memory limiter beside it that counts what this
// replica takes, so that it can count alone, from its own share, while
// Redis fails, and hand its counts back when Redis lost them.
type redisLimiter struct {
	b     *redisBackend
	key   string
	local *limiter
	// The minute requests and when the oldest leaves, as of the last
	// decision, for X-RateLimit headers without a round trip.
	requests, exit atomic.Int64
}

// Limiter ops of limiterScript.
const (
	opCheck   = "check"
	opReserve = "reserve"
	opSettle  = "settle"
	opCancel  = "cancel"
	opUsed    = "used"
	opMerge   = "merge"
)

// run makes one decision in Redis and remembers the minute's requests
// when the reply says them (a call that read the minute window).
func (l *redisLimiter) run(op string, now int64, c caps, n, at int64) ([]int64, bool) {
	if !l.b.up.Load() {
		return nil, false
	}
	s, ns := splitTime(now)
	as, _ := splitTime(at)
	v, err := l.b.run(limiterScript, l.key, op, s, ns, bounded(c.rpm), bounded(c.rpd), bounded(c.tpm), bounded(c.tpd), bounded(n), as)
	if err != nil || len(v) != 6 {
		return nil, false
	}
	if v[3] >= 0 {
		l.requests.Store(v[3])
		l.exit.Store(v[5])
	}
	return v, true
}

// decision turns a check or reserve reply into (ok, at).
func decision(v []int64) (bool, int64) {
	if v[0] == 1 {
		return true, joinTime(v[1], v[2])
	}
	if v[1] < 0 {
		return false, never
	}
	return false, joinTime(v[1], 0)
}

// Check implements Limiter.
func (l *redisLimiter) Check(now int64, c caps, tokens int64) (bool, int64) {
	if c.none() {
		return true, now
	}
	if v, ok := l.run(opCheck, now, c, tokens, 0); ok {
		return decision(v)
	}
	return l.local.Check(now, c, tokens)
}

// Reserve implements Limiter.
func (l *redisLimiter) Reserve(now int64, c caps, tokens int64) (Reservation, bool, int64) {
	if c.none() {
		return Reservation{}, true, now
	}
	v, shared := l.run(opReserve, now, c, tokens, 0)
	if !shared {
		r, ok, at := l.local.Reserve(now, c, tokens)
		r.lim = l
		return r, ok, at
	}
	ok, at := decision(v)
	if !ok {
		return Reservation{}, false, at
	}
	l.local.take(at, c, tokens)
	return Reservation{lim: l, caps: c, at: at, tokens: tokens}, true, at
}

// Admit implements Limiter: the quota is the decision's, as Requests
// tells it without a round trip.
func (l *redisLimiter) Admit(now int64, c caps, tokens int64) (Reservation, bool, int64, quota) {
	r, ok, at := l.Reserve(now, c, tokens)
	var q quota
	if c.rpm > 0 {
		q.remaining, q.reset = l.Requests(now, c.rpm)
	}
	return r, ok, at, q
}

// Settle implements Limiter.
func (l *redisLimiter) Settle(r Reservation, now, used int64) {
	c, delta := r.caps, used-r.tokens
	if delta == 0 || (c.tpm == 0 && c.tpd == 0) {
		return
	}
	l.local.Settle(r, now, used)
	l.run(opSettle, now, c, delta, r.at)
}

// Cancel implements Limiter.
func (l *redisLimiter) Cancel(r Reservation) {
	l.local.Cancel(r)
	l.run(opCancel, r.at, r.caps, r.tokens, 0)
}

// Requests implements Limiter from the last decision's reply: it is read
// for the headers of every answer, and must not cost a round trip.
func (l *redisLimiter) Requests(now, rpm int64) (remaining, reset int64) {
	if !l.b.up.Load() {
		return l.local.Requests(now, rpm)
	}
	remaining = max(0, rpm-l.requests.Load())
	reset = joinTime(l.exit.Load(), 0)
	if reset <= now {
		reset = now + int64(time.Minute)
	}
	return remaining, reset
}

// Used implements Limiter.
func (l *redisLimiter) Used(now int64) (requests, tokens int64) {
	if v, ok := l.run(opUsed, now, caps{}, 0, 0); ok {
		return v[3], v[4]
	}
	return l.local.Used(now)
}

// merge folds the replica's own counts into Redis, added or kept at the
// larger (limiterScript's merge).
func (l *redisLimiter) merge(ctx context.Context, now int64, add bool) error {
	mode := "max"
	if add {
		mode = "add"
	}
	l.local.mu.Lock()
	latest := l.local.latest
	args := []any{opMerge, 0, 0, mode}
	for _, w := range [...]struct {
		name string
		win  *window
	}{{"m", &l.local.rpm}, {"d", &l.local.rpd}, {"M", &l.local.tpm}, {"D", &l.local.tpd}} {
		cur := max(now, latest) / w.win.width
		for i, e := range w.win.stamp {
			if n := w.win.count[i]; n > 0 && e >= cur-buckets && e <= cur {
				args = append(args, w.name+strconv.FormatInt(e, 10), min(n, maxCount))
			}
		}
	}
	l.local.mu.Unlock()
	if len(args) == 4 {
		return nil
	}
	args[1], args[2] = splitTime(latest)
	return limiterScript.Run(ctx, l.b.rdb, []string{l.key}, args...).Err()
}
