package engine

import (
	"github.com/valyala/fasthttp"

	"gateway/adapters"
)

// operation is one client API on the shared request path: the upstream
// call an attempt makes, which targets can make it, and how a success is
// answered. The runner, the walker, reservations, sticky sessions and the
// outcome record are the same for every operation.
type operation struct {
	// name is how routes (`operation == "chat"`), explain and the stats
	// call it.
	name string
	// body is the field that carries the request's content (messages,
	// input, prompt): required, and what the prompt estimate counts.
	body string
	// decided are the top-level fields the gateway decides on, refused
	// when repeated or spelled in another case.
	decided []string
	// streams: the operation may stream (a body's "stream" is read);
	// output: its calls generate tokens, reserved against token caps.
	streams, output bool
	// call makes one upstream attempt on target t.
	call func(t *target, c *adapters.Call, r *adapters.Reply) error
	// serves reports whether a target can make the call; a target that
	// cannot is skipped without one. Nil: every target can.
	serves func(t *target) bool
	// streamError is the frame a stream that fails after it started ends
	// with; nil when the stream's own codec says so itself.
	streamError func(error) []byte
	// answer sends a successful reply to the client.
	answer func(e *Engine, ctx *fasthttp.RequestCtx, s *snapshot, t *target, x *exchange, fallbacks int, first []byte, res settlement)
}

// operations are the client APIs, in the order /v1/models lists them.
var operations = []*operation{opChat, opResponses, opMessages, opEmbeddings, opCompletions}

// servedBy reports whether t can serve op; a nil op is chat, which every
// target serves.
func (op *operation) servedBy(t *target) bool {
	return op == nil || op.serves == nil || op.serves(t)
}

// opChat is POST /v1/chat/completions.
var opChat = &operation{
	name:        "chat",
	body:        "messages",
	decided:     chatFields,
	streams:     true,
	output:      true,
	streamError: streamError,
	call:        chatCall,
	answer:      (*Engine).answer,
}

func chatCall(t *target, c *adapters.Call, r *adapters.Reply) error {
	return t.provider.adapter.Chat(c, r)
}

// translatedCall is a chat call for an ingress codec: a stream reply is
// wrapped into the client's protocol, so the first frame the runner
// waits for is already the client's.
func translatedCall(t *target, c *adapters.Call, r *adapters.Reply) error {
	err := t.provider.adapter.Chat(c, r)
	if err == nil && r.Stream != nil && c.Wrap != nil {
		r.Stream = c.Wrap(r.Stream)
	}
	return err
}

// opEmbeddings is POST /v1/embeddings, to targets whose model declares
// embeddings and whose protocol has them.
var opEmbeddings = &operation{
	name:    "embeddings",
	body:    "input",
	decided: []string{"model", "input", "encoding_format", "dimensions"},
	call: func(t *target, c *adapters.Call, r *adapters.Reply) error {
		return t.provider.adapter.(adapters.Embedder).Embed(c, r)
	},
	serves: func(t *target) bool {
		return t.model.Serves["embeddings"] && adapters.Serves[adapters.Embedder](t.provider.adapter)
	},
	answer: (*Engine).answer,
}

// opCompletions is the legacy POST /v1/completions, to OpenAI-compatible
// targets; its answers and stream chunks are relayed as they come.
var opCompletions = &operation{
	name:        "completions",
	body:        "prompt",
	decided:     []string{"model", "prompt", "stream", "stream_options", "max_tokens"},
	streams:     true,
	output:      true,
	streamError: streamError,
	call: func(t *target, c *adapters.Call, r *adapters.Reply) error {
		return t.provider.adapter.(adapters.Completer).Complete(c, r)
	},
	serves: func(t *target) bool {
		return t.model.Serves["completions"] && adapters.Serves[adapters.Completer](t.provider.adapter)
	},
	answer: (*Engine).answer,
}
