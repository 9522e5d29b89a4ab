package engine

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/expr-lang/expr/vm"
	"github.com/valyala/fasthttp"

	"gateway/adapters"
	"gateway/config"
)

// exchange is the per-request scratch space of a chat completion, pooled
// so the hot path reuses its buffers.
type exchange struct {
	// op is the operation the request asks for; in what its ingress
	// codec adds, nil for the OpenAI APIs served as they come.
	op    *operation
	in    *ingress
	att   attempt
	req   chatRequest
	call  adapters.Call
	reply adapters.Reply
	env   config.RequestEnv
	fails []failedAttempt
	order [8]*target
	num   [20]byte
	// What the access log and the route's counters need at the end.
	route     *routeState
	routeName string
	winner    candidate
	// start is when the request came and ttfb when its answer did, after
	// it: the request's clock readings, taken once each.
	start time.Time
	ttfb  time.Duration
	relay *relay
	// trace, nil unless the client asked for x-gateway-explain, records
	// the walk for it.
	trace *routeTrace
}

type failedAttempt struct {
	c candidate
	f *adapters.Failure
}

var exchangePool = sync.Pool{New: func() any { return &exchange{} }}

var vmPool = sync.Pool{New: func() any { return &vm.VM{} }}

// stickySeed seeds conversation hashes. It is fixed, not random per
// process: replicas sharing sticky sessions (state.backend redis) must
// name a conversation alike.
const stickySeed = 0x9e3779b97f4a7c15

var hdrSessionID = []byte("X-Session-Id")

// serve answers one request of op whose body (the client's, or what an
// ingress codec translated it into) is body: scan, the key's limits,
// route, then the runner. Every operation takes this path.
func (e *Engine) serve(ctx *fasthttp.RequestCtx, s *snapshot, key *gatewayKey, op *operation, body []byte, in *ingress) {
	x := exchangePool.Get().(*exchange)
	x.start = arrival(ctx)
	defer func() {
		e.finish(ctx, s, key, x)
		// All of it is cleared at once but the buffers: the body keeps its
		// capacity, unless a large answer grew it. Clearing the struct and
		// putting the buffers back is one memclr; a composite literal with
		// them would be built aside and copied over.
		body, fails := x.reply.Body[:0], x.fails[:0]
		if cap(body) > maxPooledBody {
			body = nil
		}
		*x = exchange{}
		x.reply.Body, x.fails = body, fails
		exchangePool.Put(x)
	}()
	x.op, x.in = op, in
	if err := e.stateRefusal(); err != nil {
		err.write(ctx)
		return
	}
	if err := scan(body, &x.req, x.op); err != nil {
		if key != nil {
			// Every answer to a key says where its limit stands.
			key.rateHeaders(ctx, nanotime())
		}
		err.write(ctx)
		return
	}
	// The key's limits count the request at its arrival.
	now := clockAt(x.start)
	// Tokens the key is charged up front: the prompt and what the request
	// allows itself, the completion bounded as reservation says; settled
	// against the real usage after, in the bucket they went into.
	var keyRes Reservation
	if key != nil {
		keyTokens := reservation(int64(x.req.tokens), int64(x.req.maxTokens), config.DefaultReserveMaxTokens, key.caps)
		if err := key.modelRefusal(x.req.model); err != nil {
			key.rateHeaders(ctx, now)
			err.write(ctx)
			return
		}
		res, ok, at, q := key.lim.Admit(now, key.caps, keyTokens)
		key.quotaHeaders(ctx, q)
		if !ok {
			keyLimited(ctx, key, now, at)
			return
		}
		keyRes = res
	}
	g, r := s.route(ctx, key, x)
	x.route, x.routeName = s.defaultRoute, "default"
	routeHeader := strDefaultRoute
	if r != nil {
		x.route, x.routeName, routeHeader = r.stats, r.cfg.Name, r.header
	}
	if g == nil {
		keyRes.Settle(nanotime(), 0)
		(&apiError{status: fasthttp.StatusNotFound, typ: "invalid_request_error", code: "model_not_found", param: "model",
			msg: "model " + strconv.Quote(x.req.model) + " not found; GET /v1/models lists the models this key may use"}).write(ctx)
		return
	}
	ctx.Response.Header.SetCanonical(hdrRoute, routeHeader)
	if len(g.targets) == 0 {
		keyRes.Settle(nanotime(), 0)
		(&apiError{status: fasthttp.StatusServiceUnavailable, typ: "server_error", code: "no_provider",
			msg: "no provider serves model " + strconv.Quote(x.req.model) + ": every provider in its chain was left out at load"}).write(ctx)
		return
	}
	x.call.Body = body
	if in != nil {
		x.call.Wrap, x.call.Native = in.wrap, in.native
	}
	x.call.ModelStart, x.call.ModelEnd = x.req.modelStart, x.req.modelEnd
	x.call.Stream, x.call.ClientUsage, x.call.StreamOptions = x.req.stream && op.streams, x.req.clientUsage, x.req.streamOptions

	session := s.session(ctx, key, &x.req)
	var sticky *target
	if session != 0 {
		if via, ok := e.sticky.Get(session, now); ok {
			for _, t := range g.targets {
				if t.name == via {
					sticky = t
				}
			}
		}
	}
	w := &walker{s: s, op: x.op, order: g.order(x.order[:0], sticky), clock: nanotime, now: now, prompt: int64(x.req.tokens),
		maxOut: int64(x.req.maxTokens), reserve: true, allBreaker: true}
	if debugAsked(ctx, key) {
		x.trace = &routeTrace{group: g}
		w.trace = x.trace
	}
	res := settlement{key: key, keyRes: keyRes, route: x.route.series.Load(), all: e.states.analytics.all}
	e.run(ctx, s, g, x, w, res, session)
}

// route picks the group: the first matching rule, else the requested
// name. It also returns the rule that chose it, nil for none.
func (s *snapshot) route(ctx *fasthttp.RequestCtx, key *gatewayKey, x *exchange) (*group, *route) {
	env := &x.env
	env.Model = x.req.model
	if len(s.routes) > 0 {
		env.Stream, env.Tokens = x.req.stream, x.req.tokens
		env.Messages, env.Tools = x.req.messages, x.req.tools
		env.Path, env.Method, env.Operation = bytesString(ctx.Path()), bytesString(ctx.Method()), x.op.name
		if key != nil {
			env.Key = config.KeyEnv{Name: key.cfg.Name, Metadata: key.cfg.Metadata}
		}
		if s.uses.Headers {
			env.Headers = make(map[string]string)
			ctx.Request.Header.VisitAll(func(k, v []byte) {
				env.Headers[strings.ToLower(string(k))] = string(v)
			})
		}
		if s.uses.Metadata && x.req.metadata.IsObject() {
			env.Metadata, _ = x.req.metadata.Value().(map[string]any)
		}
	}
	return s.pick(env, s.matchesFor(key))
}

// pick applies the routes to a filled environment, as resolved for the
// calling key by matchesFor: the server and explain both decide here. It
// returns the rule that matched, nil for none.
func (s *snapshot) pick(env *config.RequestEnv, ms []config.KeyMatch) (*group, *route) {
	if len(s.routes) > 0 {
		if r := s.match(env, ms); r != nil {
			return r.group, r
		}
	}
	return s.groups[env.Model], nil
}

// matchesFor returns the routes resolved for key, nil for none.
func (s *snapshot) matchesFor(key *gatewayKey) []config.KeyMatch {
	if key == nil {
		return s.cfg.NoKeyMatches
	}
	return key.cfg.Matches
}

// match returns the first route whose expression is true for env: decided
// at load when the key alone decides, else read directly or run; a route
// past the end of ms runs its generic program.
func (s *snapshot) match(env *config.RequestEnv, ms []config.KeyMatch) *route {
	var v *vm.VM
	var found *route
	for i, r := range s.routes {
		prog := r.cfg.Program
		if i < len(ms) {
			m := &ms[i]
			if m.Direct != nil || m.Program == nil {
				if m.Program == nil && m.Match || m.Direct != nil && m.Direct(env) {
					found = r
					break
				}
				continue
			}
			prog = m.Program
		}
		if v == nil {
			v = vmPool.Get().(*vm.VM)
		}
		// An expression that fails at run time (a missing map key
		// compared, say) is no match, as in CoreDNS.
		if out, err := v.Run(prog, env); err == nil && out == true {
			found = r
			break
		}
	}
	if v != nil {
		vmPool.Put(v)
	}
	return found
}

// arrival is when the request came: fasthttp's reading of the clock for
// it (Server sets LazyRequestTime, so the first ask reads it), or a
// reading now for a RequestCtx no server handed over.
func arrival(ctx *fasthttp.RequestCtx) time.Time {
	if t := ctx.Time(); !t.IsZero() {
		return t
	}
	return time.Now()
}

// session identifies the conversation for sticky routing: by X-Session-Id
// when sent, else by the key, system prompt and first user message, but
// only once the history holds an assistant turn. A one-shot request (the
// common case) is no conversation yet: it is neither pinned nor recorded,
// so it costs no hashing and leaves no state; its conversation sticks
// from its first follow-up on. A zero id means no session.
func (s *snapshot) session(ctx *fasthttp.RequestCtx, key *gatewayKey, r *chatRequest) uint64 {
	if s.stickyTTL <= 0 {
		return 0
	}
	sid := ctx.Request.Header.PeekCanonical(hdrSessionID)
	if len(sid) == 0 && (!r.assistant || r.firstUser == "") {
		return 0
	}
	var h xxhash.Digest
	h.ResetWithSeed(stickySeed)
	if key != nil {
		h.WriteString(key.cfg.Name)
	}
	if len(sid) > 0 {
		h.WriteString("\x00h")
		h.Write(sid)
	} else {
		h.WriteString("\x00")
		h.WriteString(r.system)
		h.WriteString("\x00")
		h.WriteString(r.firstUser)
	}
	return h.Sum64() | 1
}

// finish counts the answer for the gateway, its route and key, and
// remembers it for /api/requests and writes its access log line, or hands
// both to the stream relay to do when it ends.
func (e *Engine) finish(ctx *fasthttp.RequestCtx, s *snapshot, key *gatewayKey, x *exchange) {
	if x.trace != nil {
		x.trace.header(ctx, x)
	}
	status := ctx.Response.StatusCode()
	// The request ends here, its answer made (translated for the
	// Responses and Messages APIs); a stream's own end is told when it
	// ends.
	lat := time.Since(x.start)
	at := x.start.Add(lat)
	e.requests.Add(1)
	fellBack := x.winner.t != nil && len(x.fails) > 0
	if x.route != nil {
		x.route.answered(status, lat, fellBack)
	}
	if key != nil {
		key.stats.answered(status, lat, fellBack)
	}
	e.states.analytics.all.at().answered(status, lat, fellBack)
	// The line borrows the request's bytes: the entry remembered copies
	// what it keeps, and a stream's access log line copies them. Its
	// usage is bounded as settlement bounds it.
	l := accessLine{
		id: bytesString(ctx.Response.Header.PeekCanonical(hdrRequestID)), route: x.routeName, status: status,
		model: x.req.model, stream: x.req.stream, latency: lat, ttfb: x.ttfb, usage: x.reply.Usage.Bounded(), fails: x.fails,
	}
	if key != nil {
		l.key = key.cfg.Name
	}
	if x.winner.t != nil {
		l.winner = &x.winner
		l.via = x.winner.t.name
	}
	logged := e.access != nil && s.access
	if logged {
		// Only the access log tells them.
		l.method, l.path = "POST", bytesString(ctx.Path())
	}
	if x.relay != nil {
		x.relay.entry.fill(&l, at)
		x.relay.recent, x.relay.start = &e.recent, x.start
		if logged {
			r := x.relay
			r.line = l
			r.line.detach(&r.own)
			r.accessLog = e.access
		}
		return
	}
	e.recent.record(&l, at)
	if logged {
		e.access.write(&l, at)
	}
}

// answer sends a successful reply.
func (e *Engine) answer(ctx *fasthttp.RequestCtx, s *snapshot, t *target, x *exchange, fallbacks int, first []byte, res settlement) {
	h := &ctx.Response.Header
	h.SetCanonical(hdrRoutedVia, t.via)
	if fallbacks > 0 {
		h.SetCanonical(hdrFallbacks, strconv.AppendInt(x.num[:0], int64(fallbacks), 10))
	}
	if x.reply.Stream == nil {
		// Settled when the answer came.
		res.settle(x.reply.Usage, clockAt(x.start)+int64(x.ttfb))
		ctx.SetContentTypeBytes(strJSON)
		// The reply's buffer becomes the response's, uncopied, and the
		// response's old one the exchange's, for its next reply.
		x.reply.Body = ctx.Response.SwapBody(x.reply.Body)
		return
	}
	ctx.SetContentTypeBytes(strEventStream)
	h.Set(fasthttp.HeaderCacheControl, "no-cache")
	h.Set("X-Accel-Buffering", "no")
	r := relayPool.Get().(*relay)
	*r = relay{first: first, stream: x.reply.Stream, log: e.log, via: t.via, res: res, s: s,
		writes: clientWrites{conn: ctx.Conn(), timeout: e.writeTimeout}, errFrame: x.op.streamError, own: r.own}
	x.relay = r
	ctx.Response.SetBodyStream(r, -1)
}
