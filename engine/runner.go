package engine

import (
	"bytes"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/adapters"
)

// attempt is one call of one candidate: made inline by the runner, or on
// its own goroutine when the group hedges.
type attempt struct {
	c candidate
	// reply is where a hedged attempt answers; an inline one answers in
	// the exchange's own reply.
	reply adapters.Reply
	first []byte
	err   error
	took  time.Duration
}

// try makes one attempt of op through candidate c into r. For a stream it
// waits for the first frame: until that is in hand nothing has reached the
// client, so a failure can still move on.
func try(op *operation, c candidate, call *adapters.Call, r *adapters.Reply) ([]byte, error) {
	call.Upstream, call.UpstreamJSON, call.Key = c.t.model.Upstream, c.t.upstreamJSON, c.key
	r.Stream, r.Exhausted = nil, 0
	err := op.call(c.t, call, r)
	if err != nil || !call.Stream {
		return nil, err
	}
	first, err := r.Stream.Next()
	if err != nil {
		r.Stream.Close()
	}
	return first, err
}

// run is the one failover loop, for every operation: it takes the
// candidates the walker yields, in order, and answers with the first
// success, relays a failure the request itself caused, or, when every
// candidate failed or was skipped, says why. Ordering, reservations and
// breaker probes are the walker's; cooldowns and outcomes are recorded
// here. How attempts are scheduled is the group's: one at a time, inline
// (no goroutine, nothing allocated), or hedged (race below).
func (e *Engine) run(ctx *fasthttp.RequestCtx, s *snapshot, g *group, x *exchange, w *walker, res settlement, session uint64) {
	var h race
	hedged := g.hedge > 0 && len(g.targets) > 1
	if hedged {
		h.start(e, s, g, x)
		defer h.abandon()
	}
	for {
		a := &x.att
		if !hedged {
			if len(x.fails) >= s.cfg.Failover.MaxAttempts {
				break
			}
			c, ok := w.next()
			if !ok {
				break
			}
			*a = attempt{c: c}
			a.first, a.err = try(x.op, c, &x.call, &x.reply)
		} else if a = h.next(w); a == nil {
			break
		} else if a.err == nil {
			x.reply.Body = append(x.reply.Body[:0], a.reply.Body...)
			x.reply.Stream, x.reply.Usage, x.reply.Exhausted = a.reply.Stream, a.reply.Usage, a.reply.Exhausted
		}
		if a.err == nil {
			// One clock reading ends the attempt and the wait for the
			// answer; an inline attempt started at the walker's reading
			// for its candidate.
			now := nanotime()
			if !hedged {
				a.took = time.Duration(now - w.now)
			}
			x.ttfb = time.Duration(now - clockAt(x.start))
			e.won(s, a.c, a.took, x.reply.Exhausted, session, len(x.fails), now)
			x.winner = a.c
			res.c = a.c
			x.op.answer(e, ctx, s, a.c.t, x, len(x.fails), a.first, res)
			return
		}
		if e.failed(ctx, w, a.c, asFailure(a.err), x) {
			return
		}
	}
	res.keyRes.Settle(nanotime(), 0)
	e.exhausted(ctx, g, x, w)
}

// race schedules a hedged group's attempts: when the current attempt has
// not answered within hedge_after, the next candidate starts too, and
// the first to answer is taken. Attempts run on their own goroutines, so
// they work on a copy of the request body, which may outlive the handler;
// they share only the results channel with the race. The walker is
// handed in at each step rather than kept, so it stays on the runner's
// stack.
type race struct {
	e *Engine
	s *snapshot
	g *group
	x *exchange
	// call is x's call with its own copies of every byte that points into
	// the client's request (the body, a native request's body, the beta
	// header): an attempt still running when another won outlives the
	// handler, after which fasthttp reuses the request's buffers.
	call    adapters.Call
	results chan *attempt
	timer   *time.Timer

	launched, inflight int
}

func (h *race) start(e *Engine, s *snapshot, g *group, x *exchange) {
	*h = race{e: e, s: s, g: g, x: x, call: owned(x.call),
		results: make(chan *attempt, s.cfg.Failover.MaxAttempts), timer: time.NewTimer(g.hedge)}
}

// owned is c with its own copies of the bytes that point into the
// client's request: the body and the beta header, its native request's
// too.
func owned(c adapters.Call) adapters.Call {
	c.Body, c.Beta = bytes.Clone(c.Body), bytes.Clone(c.Beta)
	if c.Native != nil {
		n := owned(*c.Native)
		c.Native = &n
	}
	return c
}

// launch starts the next candidate, if there is one and attempts are
// left, and restarts the hedge timer.
func (h *race) launch(w *walker) bool {
	if h.launched == h.s.cfg.Failover.MaxAttempts {
		return false
	}
	c, ok := w.next()
	if !ok {
		return false
	}
	h.launched++
	h.inflight++
	call := h.call
	op, results := h.x.op, h.results
	go func() {
		a := &attempt{c: c}
		t0 := nanotime()
		a.first, a.err = try(op, c, &call, &a.reply)
		a.took = time.Duration(nanotime() - t0)
		results <- a
	}()
	h.timer.Reset(h.g.hedge)
	return true
}

// next returns the next attempt to answer, starting candidates as the
// hedge timer fires; nil when none is running and none is left.
func (h *race) next(w *walker) *attempt {
	if h.inflight == 0 && !h.launch(w) {
		return nil
	}
	for {
		select {
		case a := <-h.results:
			h.inflight--
			return a
		case <-h.timer.C:
			h.launch(w)
		}
	}
}

// abandon leaves the attempts still running to discard once they end.
func (h *race) abandon() {
	h.timer.Stop()
	if h.inflight > 0 {
		go h.e.discard(h.s, h.results, h.inflight)
	}
}

// discard collects the attempts still running after a winner: a stream is
// closed at once, cancelling it upstream; any success still tells the
// breaker and the latency average that the target works, and any failure
// cools its key and counts for its breaker, as it would have in the race;
// a failed half-open probe must reopen its breaker, not hold it half-open.
func (e *Engine) discard(s *snapshot, results <-chan *attempt, n int) {
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
		r.c.t.state.breaker.Success()
		r.c.t.observe(r.took)
		if r.reply.Stream != nil {
			r.reply.Stream.Close()
		} else {
			(&settlement{c: r.c}).settle(r.reply.Usage, nanotime())
		}
	}
}
