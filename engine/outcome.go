package engine

import (
	"errors"
	"gateway/adapters"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// This file records what an attempt's outcome means: a success, a
// failure's cooldown and breaker count, the settlement of reserved
// tokens, and the answer when no candidate succeeded.

// won records a success, answered at now: the breaker closes, latency is
// measured, the session sticks, and an upstream that said the key is
// spent cools it.
func (e *Engine) won(s *snapshot, c candidate, ttfb time.Duration, exhausted time.Duration, session uint64, fallbacks int, now int64) {
	c.t.state.breaker.Success()
	c.t.observe(ttfb)
	c.t.state.use.won(ttfb, fallbacks > 0)
	if exhausted > 0 {
		c.ks.until.Start(now, exhausted, coolRate)
	}
	if session != 0 {
		e.sticky.Set(session, c.t.name, now, s.stickyTTL)
	}
}

// failed records a failed attempt and reports whether the request is
// answered (a bad request relayed).
func (e *Engine) failed(ctx *fasthttp.RequestCtx, w *walker, c candidate, f *adapters.Failure, x *exchange) bool {
	refund(c)
	c.t.state.use.failed(f.Class)
	penalize(w.s, c, f, nanotime())
	if f.Class == adapters.Auth {
		e.refused(w.s, c)
	}
	if x.trace != nil {
		x.trace.add(c.t, c.slot, "failed", f.Class.String())
	}
	if f.Class == adapters.BadRequest {
		relayBadRequest(ctx, c.t, f)
		return true
	}
	x.fails = append(x.fails, failedAttempt{c: c, f: f})
	e.log.Warn("upstream attempt failed", "request_id", string(ctx.Response.Header.PeekCanonical(hdrRequestID)),
		"via", c.t.name, "key", c.slot, "class", f.Class.String(), "status", f.Status, "err", f.Msg)
	return false
}

// penalize applies what a failed attempt says about its key and target:
// a cooldown, and a count towards the breaker or its reset.
func penalize(s *snapshot, c candidate, f *adapters.Failure, now int64) {
	switch f.Class {
	case adapters.BadRequest:
		// The upstream is well; the request is not.
		c.t.state.breaker.Success()
	case adapters.RateLimited:
		d := time.Duration(s.cooldown)
		if f.RetryAfter > 0 {
			d = f.RetryAfter
		}
		c.ks.until.Start(now, d, coolRate)
		c.t.state.breaker.Success()
	case adapters.Auth:
		c.ks.until.Start(now, time.Duration(s.authCool), coolAuth)
		c.t.state.breaker.Success()
	case adapters.ContextTooLong, adapters.Unsupported:
		// Nothing is wrong with the key; another model may take it.
		c.t.state.breaker.Success()
	default:
		c.ks.until.Start(now, time.Duration(s.cooldown), coolFailure)
		c.t.state.breaker.Failure(now, s.breakAfter, s.openFor)
	}
}

func asFailure(err error) *adapters.Failure {
	var f *adapters.Failure
	if errors.As(err, &f) {
		return f
	}
	if errors.Is(err, adapters.ErrStreamCut) {
		return &adapters.Failure{Class: adapters.Retryable, Msg: "upstream stream ended before its first event"}
	}
	return &adapters.Failure{Class: adapters.Retryable, Msg: err.Error()}
}

// settlement is what one answered request reserved, to correct against
// the real usage once it is known.
type settlement struct {
	c   candidate
	key *gatewayKey
	// keyRes is what the gateway key reserved.
	keyRes Reservation
	// route and all are the series of the request's route and of the
	// whole gateway, which count its tokens too; nil for none.
	route, all *series
}

// settle corrects what r reserved to the usage u, known at now.
func (r *settlement) settle(u adapters.Usage, now int64) {
	if !u.Known {
		return
	}
	u = u.Bounded()
	used := int64(u.Prompt + u.Completion)
	if r.c.t != nil {
		r.c.t.state.use.tokens(u)
	}
	r.c.res.Settle(now, used)
	r.keyRes.Settle(now, used)
	if r.key != nil {
		r.key.stats.use.tokens(u)
	}
	r.route.at().tokens(u)
	r.all.at().tokens(u)
}

// relayBadRequest hands the upstream's verdict on the client's request
// back to the client: it would fail the same way anywhere.
func relayBadRequest(ctx *fasthttp.RequestCtx, t *target, f *adapters.Failure) {
	ctx.Response.Header.SetCanonical(hdrRoutedVia, t.via)
	if f.Body != nil {
		ctx.SetStatusCode(f.Status)
		ctx.SetContentTypeBytes(strJSON)
		ctx.SetBody(f.Body)
		return
	}
	(&apiError{status: f.Status, typ: "invalid_request_error", code: "upstream_rejected_request",
		msg: t.name + " rejected the request: " + f.Msg}).write(ctx)
}

// exhausted answers when no candidate succeeded.
func (e *Engine) exhausted(ctx *fasthttp.RequestCtx, g *group, x *exchange, w *walker) {
	now := nanotime()
	retryIn := func(until int64) int {
		return max(1, int((until-now+int64(time.Second)-1)/int64(time.Second)))
	}
	if len(x.fails) == 0 {
		w.verdict(g.name, now).write(ctx)
		return
	}
	if last := x.fails[len(x.fails)-1]; !w.otherSkip && !w.rateSkip && !w.capSkip {
		refused := true
		for _, a := range x.fails {
			refused = refused && (a.f.Class == adapters.ContextTooLong || a.f.Class == adapters.Unsupported)
		}
		if refused {
			// Every candidate refused the request itself (a prompt too
			// long, a model or parameter none serves): the client must
			// change it, as the upstreams said.
			relayBadRequest(ctx, last.c.t, last.f)
			return
		}
	}
	var b strings.Builder
	allRate := true
	soonest := int64(0)
	b.WriteString("all ")
	b.WriteString(strconv.Itoa(len(x.fails)))
	b.WriteString(" attempts for model ")
	b.WriteString(strconv.Quote(g.name))
	b.WriteString(" failed: ")
	for i, a := range x.fails {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(a.c.t.name)
		if n := len(a.c.t.provider.cfg.Keys); n > 1 {
			b.WriteString(" (key " + strconv.Itoa(a.c.slot+1) + " of " + strconv.Itoa(n) + ")")
		}
		b.WriteString(": ")
		b.WriteString(a.f.Error())
		if a.f.Class != adapters.RateLimited {
			allRate = false
		}
		if until, _, _ := a.c.ks.until.Active(now); soonest == 0 || until < soonest {
			soonest = until
		}
	}
	err := &apiError{status: fasthttp.StatusInternalServerError, typ: "server_error", code: "all_candidates_failed", msg: b.String()}
	if allRate && !w.otherSkip {
		err.status, err.typ, err.code = fasthttp.StatusTooManyRequests, "rate_limit_error", "rate_limit_exceeded"
		if w.earliest > now && w.earliest < soonest {
			soonest = w.earliest
		}
		err.retryAfter = retryIn(soonest)
	}
	err.write(ctx)
}

// verdict is the answer when every candidate was skipped without a call.
func (w *walker) verdict(model string, now int64) *apiError {
	err := &apiError{status: fasthttp.StatusServiceUnavailable, typ: "server_error"}
	name := strconv.Quote(model)
	switch {
	case w.opSkips > 0 && w.opSkips == w.skipped:
		err.status, err.typ, err.code = fasthttp.StatusBadRequest, "invalid_request_error", "unsupported_operation"
		err.msg = "no target of model " + name + " serves " + w.op.name + " requests"
		return err
	case w.skipped > 0 && w.allBreaker:
		err.code = "circuit_open"
		err.msg = "every candidate for model " + name + " has its circuit breaker open"
	case w.rateSkip || w.capSkip:
		err.status, err.typ, err.code = fasthttp.StatusTooManyRequests, "rate_limit_error", "rate_limit_exceeded"
		err.msg = "every candidate for model " + name + " is over its rate caps"
		if w.rateSkip {
			err.msg = "every candidate for model " + name + " is rate limited (over its caps or cooling down after a 429)"
		}
	case w.tooLarge && !w.otherSkip:
		err.status, err.typ, err.code = fasthttp.StatusBadRequest, "invalid_request_error", "request_too_large"
		err.msg = "the request needs more tokens than any candidate for model " + name + " allows"
		return err
	default:
		err.code = "all_candidates_cooling_down"
		err.msg = "every candidate for model " + name + " is cooling down after recent failures"
		if w.probeSkip {
			err.msg = "every candidate for model " + name + " is cooling down after recent failures or held out by its last health probe"
		}
	}
	err.retryAfter = max(1, int((w.earliest-now+int64(time.Second)-1)/int64(time.Second)))
	err.msg += "; retry in " + strconv.Itoa(err.retryAfter) + "s"
	return err
}
