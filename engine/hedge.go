package engine

import (
	"time"

	"github.com/valyala/fasthttp"

	"gateway/adapters"
)

// hedgeResult is what one hedged attempt produced.
type hedgeResult struct {
	c     candidate
	reply adapters.Reply
	first []byte
	err   error
	took  time.Duration
}

// hedged walks the chain like the sequential loop, but when a candidate
// has not answered within the group's hedge_after it starts the next one
// too, and takes whichever answers first. A losing stream is closed when
// it arrives; a losing non-stream call, which fasthttp cannot abort, is
// discarded when it returns.
func (e *Engine) hedged(ctx *fasthttp.RequestCtx, s *snapshot, g *group, x *exchange, w *walker, res settlement, session uint64) {
	// The attempts may outlive the handler, and the request body with it.
	body := append([]byte(nil), x.call.Body...)
	results := make(chan *hedgeResult, s.cfg.Failover.MaxAttempts)
	launched, inflight := 0, 0
	launch := func() bool {
		if launched == s.cfg.Failover.MaxAttempts {
			return false
		}
		c, ok := w.next()
		if !ok {
			return false
		}
		launched++
		inflight++
		call := x.call
		call.Body = body
		call.Upstream, call.UpstreamJSON, call.Key = c.t.model.Upstream, c.t.upstreamJSON, c.key
		go func() {
			r := &hedgeResult{c: c}
			start := time.Now()
			r.err = c.t.provider.adapter.Chat(&call, &r.reply)
			if r.err == nil && call.Stream {
				if r.first, r.err = r.reply.Stream.Next(); r.err != nil {
					r.reply.Stream.Close()
				}
			}
			r.took = time.Since(start)
			results <- r
		}()
		return true
	}
	launch()
	timer := time.NewTimer(g.hedge)
	defer timer.Stop()
	for inflight > 0 {
		select {
		case r := <-results:
			inflight--
			if r.err == nil {
				if inflight > 0 {
					go e.discard(s, results, inflight)
				}
				x.ttfb, x.winner = r.took, r.c
				e.won(s, r.c, r.took, r.reply.Exhausted, session, len(x.fails))
				x.reply.Body = append(x.reply.Body[:0], r.reply.Body...)
				x.reply.Stream, x.reply.Usage = r.reply.Stream, r.reply.Usage
				res.c = r.c
				e.answer(ctx, s, r.c.t, x, len(x.fails), r.first, res)
				return
			}
			if e.failed(ctx, w, r.c, asFailure(r.err), x) {
				if inflight > 0 {
					go e.discard(s, results, inflight)
				}
				return
			}
			if inflight == 0 && launch() {
				timer.Reset(g.hedge)
			}
		case <-timer.C:
			if launch() {
				timer.Reset(g.hedge)
			}
		}
	}
	e.refundKey(res.key, res.at, res.keyTokens)
	e.exhausted(ctx, g, x, w)
}

// discard collects the attempts still running after a winner: a stream is
// closed at once, cancelling it upstream; any success still tells the
// breaker and the latency average that the target works, and any failure
// cools its key and counts for its breaker, as it would have in the race;
// a failed half-open probe must reopen its breaker, not hold it half-open.
func (e *Engine) discard(s *snapshot, results <-chan *hedgeResult, n int) {
	for range n {
		r := <-results
		if r.err != nil {
			f := asFailure(r.err)
			refund(r.c)
			penalize(s, r.c, f, nanotime())
			e.log.Warn("hedged attempt failed after another answered", "via", r.c.t.name, "key", r.c.slot,
				"class", f.Class.String(), "status", f.Status, "err", f.Msg)
			continue
		}
		r.c.t.state.breaker.success()
		r.c.t.observe(r.took)
		if r.reply.Stream != nil {
			r.reply.Stream.Close()
		} else {
			(&settlement{c: r.c}).settle(r.reply.Usage)
		}
	}
}
