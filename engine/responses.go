package engine

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/adapters"
)

// ingress is what an ingress codec adds to a request it translated onto
// chat completions: how to wrap a stream reply, and what its answer needs.
type ingress struct {
	wrap func(adapters.Stream) adapters.Stream
	// resp, id and created: a Responses API request.
	resp    *adapters.ResponsesRequest
	id      string
	created int64
	// msg and native: an Anthropic Messages request, and the client's
	// own body for a target that speaks Messages itself.
	msg    *adapters.MessagesRequest
	native *adapters.Call
}

// opResponses is POST /v1/responses, translated onto chat completions for
// every target that serves the chat family.
var opResponses = &operation{
	name:    "responses",
	body:    "messages",
	decided: chatFields,
	streams: true,
	output:  true,
	call:    responsesCall,
	serves:  func(t *target) bool { return t.model.Serves["responses"] },
	answer:  (*Engine).answerResponse,
}

// opResponsesNative serves a request that continues a response the
// gateway did not store (previous_response_id of an upstream's own
// answer): only targets with `responses: native`, with the client's body.
var opResponsesNative = func() *operation {
	op := *opResponses
	op.body, op.decided = "input", []string{"model", "input", "stream", "tools", "previous_response_id"}
	op.serves = func(t *target) bool { return t.model.Serves["responses"] && nativeResponses(t) }
	return &op
}()

// nativeResponses reports whether t takes Responses requests as they
// are.
func nativeResponses(t *target) bool {
	return t.provider.cfg.Responses == "native" && adapters.Serves[adapters.ResponsesProvider](t.provider.adapter)
}

// responsesCall sends the client's Responses body to a native target, and
// the chat translation to any other.
func responsesCall(t *target, c *adapters.Call, r *adapters.Reply) error {
	if !nativeResponses(t) {
		return translatedCall(t, c, r)
	}
	return t.provider.adapter.(adapters.ResponsesProvider).Responses(nativeCall(c), r)
}

// responses serves POST /v1/responses: the request is translated onto
// chat completions, with the stored conversation of previous_response_id
// before it, and served by the one request path.
func (e *Engine) responses(ctx *fasthttp.RequestCtx, s *snapshot) {
	key, ok := admit(ctx, s, fasthttp.MethodPost)
	if !ok {
		return
	}
	body := ctx.PostBody()
	chat, req, f := adapters.ResponsesToChat(body, nil)
	if f != nil {
		relayFailure(ctx, f)
		return
	}
	model := gjson.GetBytes(body, "model")
	in := &ingress{resp: req, id: newResponseID(), created: time.Now().Unix(),
		native: &adapters.Call{Body: body, ModelStart: model.Index, ModelEnd: model.Index + len(model.Raw), Stream: req.Stream}}
	in.wrap = func(up adapters.Stream) adapters.Stream {
		return adapters.NewResponsesStream(up, in.resp, in.id, in.created)
	}
	op := opResponses
	if req.PreviousResponseID != "" {
		prev, ok := e.answers.get(req.PreviousResponseID, keyName(key), nanotime(), int64(s.cfg.ResponseStore.StoreTTL))
		switch {
		case ok:
			chat, req, f = adapters.ResponsesToChat(body, prev.history)
			if f != nil {
				relayFailure(ctx, f)
				return
			}
			in.resp = req
		case s.hasNativeResponses():
			// Not one of the gateway's: perhaps a native upstream's own,
			// which only such a target can continue.
			op, chat = opResponsesNative, body
		default:
			(&apiError{status: fasthttp.StatusNotFound, typ: "invalid_request_error", code: "previous_response_not_found",
				param: "previous_response_id", msg: "Previous response with id " + strconv.Quote(req.PreviousResponseID) + " not found."}).write(ctx)
			return
		}
	}
	e.serve(ctx, s, key, op, chat, in)
}

// hasNativeResponses reports whether any provider takes Responses
// requests as they are.
func (s *snapshot) hasNativeResponses() bool {
	for _, p := range s.providers {
		if p.cfg.Responses == "native" {
			return true
		}
	}
	return false
}

// answerResponse sends a chat reply as a Responses API answer, and keeps
// it for previous_response_id unless the client said store: false.
func (e *Engine) answerResponse(ctx *fasthttp.RequestCtx, s *snapshot, t *target, x *exchange, fallbacks int, first []byte, res settlement) {
	if nativeResponses(t) {
		// The upstream's own Response, which it stores itself.
		e.answer(ctx, s, t, x, fallbacks, first, res)
		return
	}
	in, key := x.in, keyName(res.key)
	keep := func(response, assistant []byte) {
		if in.resp.Store && assistant != nil {
			e.answers.put(&storedResponse{id: in.id, key: key, response: response, history: in.resp.History(assistant)},
				nanotime(), int64(s.cfg.ResponseStore.StoreTTL), int64(s.cfg.ResponseStore.StoreMaxBytes))
		}
	}
	if x.reply.Stream != nil {
		e.answer(ctx, s, t, x, fallbacks, first, res)
		x.relay.onEnd = func(st adapters.Stream) {
			if rs, ok := st.(*adapters.ResponsesStream); ok {
				keep(rs.Response(), rs.Assistant())
			}
		}
		return
	}
	response, assistant, f := adapters.ChatToResponse(x.reply.Body, in.resp, in.id, in.created)
	if f != nil {
		(&apiError{status: fasthttp.StatusBadGateway, typ: "server_error", code: "upstream_invalid_response",
			msg: t.name + " answered with something that is not a chat completion"}).write(ctx)
		return
	}
	keep(response, assistant)
	x.reply.Body = append(x.reply.Body[:0], response...)
	e.answer(ctx, s, t, x, fallbacks, first, res)
}

// storedResponse serves GET /v1/responses/{id}: a stored answer, to the
// gateway key that created it only.
func (e *Engine) storedResponse(ctx *fasthttp.RequestCtx, s *snapshot, id string) {
	key, ok := admit(ctx, s, fasthttp.MethodGet)
	if !ok {
		return
	}
	r, ok := e.answers.get(id, keyName(key), nanotime(), int64(s.cfg.ResponseStore.StoreTTL))
	if !ok {
		(&apiError{status: fasthttp.StatusNotFound, typ: "invalid_request_error", code: "not_found",
			msg: "Response with id " + strconv.Quote(id) + " not found."}).write(ctx)
		return
	}
	ctx.SetContentTypeBytes(strJSON)
	ctx.SetBody(r.response)
}

// relayFailure answers with an ingress codec's refusal, in its shape.
func relayFailure(ctx *fasthttp.RequestCtx, f *adapters.Failure) {
	ctx.SetStatusCode(f.Status)
	ctx.SetContentTypeBytes(strJSON)
	ctx.SetBody(f.Body)
}

// keyName is the gateway key's name, "" with auth off.
func keyName(k *gatewayKey) string {
	if k == nil {
		return ""
	}
	return k.cfg.Name
}

// newResponseID makes a Responses API id: "resp_" and 24 random hex
// digits, unguessable, since an id is all GET /v1/responses/{id} asks.
func newResponseID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "resp_" + hex.EncodeToString(b[:])
}
