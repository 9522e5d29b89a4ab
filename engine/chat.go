package engine

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr/vm"
	"github.com/valyala/fasthttp"

	"gateway/adapters"
	"gateway/config"
)

// exchange is the per-request scratch space of a chat completion, pooled
// so the hot path reuses its buffers.
type exchange struct {
	req   chatRequest
	call  adapters.Call
	reply adapters.Reply
	env   config.RequestEnv
	fails []failedAttempt
	num   [20]byte
}

type failedAttempt struct {
	target *target
	key    int
	f      *adapters.Failure
}

var exchangePool = sync.Pool{New: func() any { return &exchange{} }}

var vmPool = sync.Pool{New: func() any { return &vm.VM{} }}

func (e *Engine) chat(ctx *fasthttp.RequestCtx, s *snapshot, key *config.Key) {
	x := exchangePool.Get().(*exchange)
	defer func() {
		x.reply.Stream = nil
		x.fails = x.fails[:0]
		x.env = config.RequestEnv{}
		x.call = adapters.Call{}
		x.req = chatRequest{}
		exchangePool.Put(x)
	}()
	body := ctx.PostBody()
	if err := scanChat(body, &x.req); err != nil {
		err.write(ctx)
		return
	}
	if key != nil && key.Allowed != nil && !key.Allowed[x.req.model] {
		(&apiError{status: fasthttp.StatusForbidden, typ: "permission_error", code: "model_not_allowed",
			msg: "gateway key " + key.Name + " may not use model " + strconv.Quote(x.req.model)}).write(ctx)
		return
	}
	g := s.route(ctx, key, x)
	if g == nil {
		(&apiError{status: fasthttp.StatusNotFound, typ: "invalid_request_error", code: "model_not_found", param: "model",
			msg: "model " + strconv.Quote(x.req.model) + " not found; GET /v1/models lists the models this key may use"}).write(ctx)
		return
	}
	if len(g.targets) == 0 {
		(&apiError{status: fasthttp.StatusServiceUnavailable, typ: "server_error", code: "no_provider",
			msg: "no provider serves model " + strconv.Quote(x.req.model) + ": every provider in its chain was left out at load"}).write(ctx)
		return
	}
	x.call.Body = body
	x.call.ModelStart, x.call.ModelEnd = x.req.modelStart, x.req.modelEnd
	x.call.Stream = x.req.stream
	e.attempt(ctx, s, g, x)
}

// route picks the group: the first matching rule, else the requested name.
func (s *snapshot) route(ctx *fasthttp.RequestCtx, key *config.Key, x *exchange) *group {
	if len(s.routes) > 0 {
		env := &x.env
		env.Model, env.Stream, env.Tokens = x.req.model, x.req.stream, x.req.tokens
		env.Messages, env.Tools = x.req.messages, x.req.tools
		env.Path, env.Method = bytesString(ctx.Path()), bytesString(ctx.Method())
		if key != nil {
			env.Key = config.KeyEnv{Name: key.Name, Metadata: key.Metadata}
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
		v := vmPool.Get().(*vm.VM)
		defer vmPool.Put(v)
		for _, r := range s.routes {
			// An expression that fails at run time (a missing map key
			// compared, say) is no match, as in CoreDNS.
			if out, err := v.Run(r.cfg.Program, env); err == nil && out == true {
				ctx.Response.Header.SetCanonical(hdrRoute, []byte(r.cfg.Name))
				return r.group
			}
		}
	}
	return s.groups[x.req.model]
}

// attempt walks the chain until one candidate answers.
func (e *Engine) attempt(ctx *fasthttp.RequestCtx, s *snapshot, g *group, x *exchange) {
	cfg := s.cfg
	now := time.Now().UnixNano()
	tried, skippedRate := 0, false
	var earliest int64
	for _, t := range g.targets {
		for ki, ks := range t.keys {
			if tried == cfg.Failover.MaxAttempts {
				break
			}
			if until, on := ks.until.active(now); on {
				if earliest == 0 || until < earliest {
					earliest = until
				}
				skippedRate = skippedRate || ks.until.rate.Load()
				continue
			}
			tried++
			keyIdx := ki
			if len(t.provider.cfg.Keys) == 0 {
				keyIdx = -1
			}
			x.call.Upstream, x.call.UpstreamJSON, x.call.Key = t.model.Upstream, t.upstreamJSON, keyIdx
			x.reply.Stream = nil
			err := t.provider.adapter.Chat(&x.call, &x.reply)
			var first []byte
			if err == nil && x.call.Stream {
				// Fail over until the first frame is in hand: nothing has
				// reached the client yet.
				if first, err = x.reply.Stream.Next(); err != nil {
					x.reply.Stream.Close()
				}
			}
			if err == nil {
				e.answer(ctx, t, x, len(x.fails), first)
				return
			}
			f := asFailure(err)
			if f.Class == adapters.BadRequest {
				relayBadRequest(ctx, t, f)
				return
			}
			d := cfg.Failover.Cooldown.D()
			if f.RetryAfter > 0 {
				d = f.RetryAfter
			}
			ks.until.start(time.Now().UnixNano(), d, f.Class == adapters.RateLimited)
			x.fails = append(x.fails, failedAttempt{target: t, key: ki, f: f})
			e.log.Warn("upstream attempt failed", "request_id", string(ctx.Response.Header.PeekBytes(hdrRequestID)),
				"via", string(t.via), "key", ki, "class", f.Class.String(), "status", f.Status, "err", f.Msg)
		}
	}
	e.exhausted(ctx, g, x, tried, earliest, skippedRate)
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

// answer sends a successful reply.
func (e *Engine) answer(ctx *fasthttp.RequestCtx, t *target, x *exchange, fallbacks int, first []byte) {
	h := &ctx.Response.Header
	h.SetCanonical(hdrRoutedVia, t.via)
	if fallbacks > 0 {
		h.SetCanonical(hdrFallbacks, strconv.AppendInt(x.num[:0], int64(fallbacks), 10))
	}
	if x.reply.Stream == nil {
		ctx.SetContentTypeBytes(strJSON)
		ctx.SetBody(x.reply.Body)
		return
	}
	ctx.SetContentTypeBytes(strEventStream)
	h.Set(fasthttp.HeaderCacheControl, "no-cache")
	h.Set("X-Accel-Buffering", "no")
	ctx.Response.SetBodyStream(&relay{first: first, stream: x.reply.Stream, log: e.log, via: t.via}, -1)
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
		msg: string(t.via) + " rejected the request: " + f.Msg}).write(ctx)
}

// exhausted answers when no candidate succeeded.
func (e *Engine) exhausted(ctx *fasthttp.RequestCtx, g *group, x *exchange, tried int, earliest int64, skippedRate bool) {
	now := time.Now().UnixNano()
	retryIn := func(until int64) int {
		return int((until - now + int64(time.Second) - 1) / int64(time.Second))
	}
	if tried == 0 {
		err := &apiError{status: fasthttp.StatusServiceUnavailable, typ: "server_error", code: "all_candidates_cooling_down",
			retryAfter: max(1, retryIn(earliest))}
		if skippedRate {
			err.status, err.typ, err.code = fasthttp.StatusTooManyRequests, "rate_limit_error", "rate_limit_exceeded"
		}
		err.msg = "every candidate for model " + strconv.Quote(g.name) + " is cooling down after recent failures; retry in " +
			strconv.Itoa(err.retryAfter) + "s"
		err.write(ctx)
		return
	}
	var b strings.Builder
	allRate := true
	soonest := int64(0)
	b.WriteString("all ")
	b.WriteString(strconv.Itoa(tried))
	b.WriteString(" attempts for model ")
	b.WriteString(strconv.Quote(g.name))
	b.WriteString(" failed: ")
	for i, a := range x.fails {
		if i > 0 {
			b.WriteString("; ")
		}
		b.Write(a.target.via)
		if n := len(a.target.provider.cfg.Keys); n > 1 {
			b.WriteString(" (key " + strconv.Itoa(a.key+1) + " of " + strconv.Itoa(n) + ")")
		}
		b.WriteString(": ")
		b.WriteString(a.f.Error())
		if a.f.Class != adapters.RateLimited {
			allRate = false
		}
		if until, _ := a.target.keys[a.key].until.active(now); soonest == 0 || until < soonest {
			soonest = until
		}
	}
	err := &apiError{status: fasthttp.StatusInternalServerError, typ: "server_error", code: "all_candidates_failed", msg: b.String()}
	if allRate {
		err.status, err.typ, err.code = fasthttp.StatusTooManyRequests, "rate_limit_error", "rate_limit_exceeded"
		err.retryAfter = max(1, retryIn(soonest))
	}
	err.write(ctx)
}

// relay streams a reply to the client frame by frame. fasthttp calls its
// WriteTo, and each Write becomes one flushed chunk, so events go out as
// they arrive with no goroutine or copy in between.
type relay struct {
	first   []byte
	stream  adapters.Stream
	log     *slog.Logger
	via     []byte
	pending []byte
	ended   bool
}

// next returns the next bytes for the client, and false at the end. A
// failure mid-stream ends the stream with an OpenAI-shaped error event,
// never a silent hang.
func (r *relay) next() ([]byte, bool) {
	if r.ended {
		return nil, false
	}
	if r.first != nil {
		b := r.first
		r.first = nil
		return b, true
	}
	frame, err := r.stream.Next()
	switch {
	case err == io.EOF:
		r.ended = true
		r.stream.Close()
		return nil, false
	case err != nil:
		r.ended = true
		r.stream.Close()
		r.log.Warn("upstream stream failed after the response started", "via", string(r.via), "err", err)
		return streamError(err), true
	}
	return frame, true
}

// WriteTo relays every frame as one flushed chunk.
func (r *relay) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for {
		b, ok := r.next()
		if !ok {
			return n, nil
		}
		m, err := w.Write(b)
		n += int64(m)
		if err != nil {
			// The client went away; closing the upstream stops its work.
			r.Close()
			return n, err
		}
	}
}

// SupportsBodyWriteTo tells fasthttp to call WriteTo rather than Read.
func (r *relay) SupportsBodyWriteTo() bool { return true }

// Read serves fasthttp paths that do not use WriteTo.
func (r *relay) Read(p []byte) (int, error) {
	for len(r.pending) == 0 {
		b, ok := r.next()
		if !ok {
			return 0, io.EOF
		}
		r.pending = b
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// Close releases the upstream stream; fasthttp calls it when the response
// is done, however it ended.
func (r *relay) Close() error {
	r.ended = true
	r.stream.Close()
	return nil
}

func streamError(err error) []byte {
	msg := "upstream stream failed: " + asFailure(err).Msg
	if errors.Is(err, adapters.ErrStreamCut) {
		msg = "upstream stream ended before the answer was complete"
	}
	b, _ := json.Marshal(errorBody{errorFields{Message: msg, Type: "server_error", Code: "stream_interrupted"}})
	return append(append([]byte("data: "), b...), "\n\n"...)
}
