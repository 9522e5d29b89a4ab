package engine

import (
	"strconv"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/adapters"
	"gateway/config"
)

// opMessages is POST /v1/messages (Anthropic's Messages API): an
// Anthropic target gets the client's body with only "model" patched;
// every other target of the chat family gets it translated onto chat
// completions, and its answer translated back.
var opMessages = &operation{
	name:    "messages",
	body:    "messages",
	decided: chatFields,
	streams: true,
	output:  true,
	call:    messagesCall,
	serves:  func(t *target) bool { return t.model.Serves["messages"] },
	answer:  (*Engine).answerMessage,
}

// opMessagesNative serves a Messages request that chat completions
// cannot express (documents, server tools...): only targets that speak
// the Messages API themselves, with the client's body as it came.
var opMessagesNative = func() *operation {
	op := *opMessages
	op.serves = func(t *target) bool {
		return t.model.Serves["messages"] && adapters.Serves[adapters.MessagesProvider](t.provider.adapter)
	}
	return &op
}()

// messagesCall sends the client's Messages body to a target that speaks
// the Messages API, and the chat translation to any other.
func messagesCall(t *target, c *adapters.Call, r *adapters.Reply) error {
	a := t.provider.adapter
	if !adapters.Serves[adapters.MessagesProvider](a) {
		return translatedCall(t, c, r)
	}
	return a.(adapters.MessagesProvider).Messages(nativeCall(c), r)
}

// nativeCall is the attempt c with the client's own body, for a target
// that speaks the client's protocol.
func nativeCall(c *adapters.Call) *adapters.Call {
	n := *c.Native
	n.Upstream, n.UpstreamJSON, n.Key = c.Upstream, c.UpstreamJSON, c.Key
	return &n
}

// messages serves POST /v1/messages at the gateway's root, as Anthropic's
// SDKs and Claude Code call it, with errors in Anthropic's shape.
func (e *Engine) messages(ctx *fasthttp.RequestCtx, s *snapshot) {
	defer anthropicErrors(ctx)
	key, ok := admit(ctx, s, fasthttp.MethodPost)
	if !ok {
		return
	}
	body := ctx.PostBody()
	chat, req, f := adapters.MessagesToChat(body)
	if f != nil {
		relayFailure(ctx, f)
		return
	}
	native := &adapters.Call{Body: body, ModelStart: req.ModelStart, ModelEnd: req.ModelEnd, Stream: req.Stream,
		Beta: ctx.Request.Header.Peek("Anthropic-Beta")}
	in := &ingress{msg: req, native: native}
	op := opMessages
	if req.Untranslatable != "" {
		// Only a native target can serve it: route on the client's own
		// body, which the scan reads like a chat body.
		op, chat = opMessagesNative, body
	} else {
		in.wrap = func(up adapters.Stream) adapters.Stream { return adapters.NewMessagesStream(up, req) }
	}
	e.serve(ctx, s, key, op, chat, in)
}

// answerMessage sends the winning reply in Messages shape: as it came
// from a native target, translated from anyone else's chat completion.
func (e *Engine) answerMessage(ctx *fasthttp.RequestCtx, s *snapshot, t *target, x *exchange, fallbacks int, first []byte, res settlement) {
	if x.reply.Stream == nil && !adapters.Serves[adapters.MessagesProvider](t.provider.adapter) {
		msg, f := adapters.ChatToMessage(x.reply.Body, x.in.msg)
		if f != nil {
			(&apiError{status: fasthttp.StatusBadGateway, typ: "server_error", code: "upstream_invalid_response",
				msg: t.name + " answered with something that is not a chat completion"}).write(ctx)
			return
		}
		x.reply.Body = append(x.reply.Body[:0], msg...)
	}
	e.answer(ctx, s, t, x, fallbacks, first, res)
}

// countTokens serves POST /v1/messages/count_tokens with the gateway's
// estimate of a Messages request's input tokens.
func (e *Engine) countTokens(ctx *fasthttp.RequestCtx, s *snapshot) {
	defer anthropicErrors(ctx)
	if _, ok := admit(ctx, s, fasthttp.MethodPost); !ok {
		return
	}
	body := ctx.PostBody()
	n, f := adapters.CountTokens(body)
	if f != nil {
		relayFailure(ctx, f)
		return
	}
	if own := s.anthropicCount(body); own != nil {
		ctx.SetContentTypeBytes(strJSON)
		ctx.SetBody(own)
		return
	}
	ctx.SetContentTypeBytes(strJSON)
	ctx.SetBodyString(`{"input_tokens":` + strconv.Itoa(n) + `}`)
}

// anthropicCount asks the first Anthropic target the request's model
// routes to for its own count; nil when there is none or it failed, and
// the gateway's estimate answers.
func (s *snapshot) anthropicCount(body []byte) []byte {
	model := gjson.GetBytes(body, "model")
	g, _ := s.pick(&config.RequestEnv{Model: model.Str, Operation: opMessages.name, Path: "/v1/messages/count_tokens", Method: "POST"}, s.matchesFor(nil))
	if g == nil {
		return nil
	}
	for _, t := range g.targets {
		if !t.model.Serves["messages"] || !adapters.Serves[adapters.TokenCounter](t.provider.adapter) {
			continue
		}
		c := adapters.Call{Body: body, ModelStart: model.Index, ModelEnd: model.Index + len(model.Raw),
			Upstream: t.model.Upstream, UpstreamJSON: t.upstreamJSON, Key: -1}
		if len(t.provider.cfg.Keys) > 0 {
			c.Key = 0
		}
		var r adapters.Reply
		if t.provider.adapter.(adapters.TokenCounter).CountTokens(&c, &r) != nil {
			return nil
		}
		return r.Body
	}
	return nil
}

// anthropicErrors rewrites an error answered in OpenAI's shape, the
// gateway's own or an upstream's, into Anthropic's, which the Messages
// endpoint's clients parse. Headers (Retry-After, X-RateLimit-*) stay.
func anthropicErrors(ctx *fasthttp.RequestCtx) {
	status := ctx.Response.StatusCode()
	if status < 400 || ctx.Response.IsBodyStream() {
		return
	}
	body := ctx.Response.Body()
	if gjson.GetBytes(body, "type").Str == "error" {
		return
	}
	msg := gjson.GetBytes(body, "error.message").Str
	if msg == "" {
		msg = fasthttp.StatusMessage(status)
	}
	ctx.SetBody(adapters.MessagesErrorBody(status, msg))
}
