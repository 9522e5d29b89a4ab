package adapters

import (
	"errors"
	"io"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// This file translates Cohere's v2 stream events into OpenAI chunks.

// cohereStream translates Cohere's v2 stream events into OpenAI chunks:
//
//	message-start   → a chunk with the assistant role
//	content-delta   → a content chunk (thinking deltas are left out)
//	tool-call-start → a tool_calls delta with index, id, type, name and
//	                  the arguments so far
//	tool-call-delta → a tool_calls delta with more arguments, as they come
//	message-end     → the finish chunk, the usage chunk if the client asked
//	                  for it, and [DONE]
//
// tool-plan-delta, content-start/end, tool-call-end and citation events
// carry nothing an OpenAI client reads, and are skipped. A message-end
// that reports ERROR or TIMEOUT is a Retryable failure; a stream that ends
// without message-end is ErrStreamCut. Frames are built back to back in
// out and handed out one per Next.
type cohereStream struct {
	resp    *fasthttp.Response
	sse     *sseReader
	scratch []byte
	model   string
	created int64
	// usageTo is set when the client asked for the usage chunk.
	usageTo bool

	id string
	// holding: the role chunk of message-start is kept back until there
	// is more to send, so a failure right after it can still fail over.
	// rolled: the role chunk is built. done: message-end came and
	// [DONE] is built.
	holding, rolled, done bool
	// calls maps Cohere's tool call index to the OpenAI one, which counts
	// the calls started; last is the call an unindexed delta belongs to.
	calls   map[int64]int
	started int
	last    int

	frames
	// err is sticky: a failed stream stays failed.
	err   error
	usage Usage
	streamRedactor
}

func newCohereStream(body io.Reader, model string, created int64, usageTo bool) *cohereStream {
	return &cohereStream{sse: newSSEReader(body), model: model, created: created, usageTo: usageTo}
}

var errCohereClosed = errors.New("cohere stream used after Close")

// Next returns the next translated frame.
func (s *cohereStream) Next() ([]byte, error) { return s.pass(s.next()) }

func (s *cohereStream) next() ([]byte, error) {
	if f, ok := s.pop(); ok {
		return f, nil
	}
	switch {
	case s.err != nil:
		return nil, s.err
	case s.done:
		return nil, io.EOF
	case s.sse == nil:
		return nil, errCohereClosed
	}
	if !s.holding {
		s.reset()
	}
	for {
		frame, err := s.sse.read()
		switch {
		case err == io.EOF:
			return s.fail(ErrStreamCut)
		case err != nil:
			return s.fail(err)
		}
		if f := s.event(frame); f != nil {
			return s.fail(f)
		}
		if !s.holding {
			if f, ok := s.pop(); ok {
				return f, nil
			}
		}
	}
}

func (s *cohereStream) fail(err error) ([]byte, error) {
	s.err = err
	return nil, err
}

// pop returns the next built frame, if any.
func (s *cohereStream) pop() ([]byte, bool) {
	if s.holding {
		return nil, false
	}
	return s.take()
}

// chunk builds one chat.completion.chunk frame with delta d.
func (s *cohereStream) chunk(d *ChatMessage, finish *string) {
	s.frame(&Chunk{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
		Choices: []Choice{{Index: 0, Delta: d, FinishReason: finish}}})
}

func (s *cohereStream) frame(c *Chunk) {
	s.out = appendFrame(s.out, c)
	s.mark()
	s.holding = false
}

// event translates one upstream event into the frames it yields.
func (s *cohereStream) event(frame []byte) *Failure {
	data, ok := frameData(frame, s.scratch)
	if !ok || (len(data) > 0 && data[0] == '[') {
		// Comments, and the [DONE] some proxies add.
		return nil
	}
	if CheckJSON(data) != nil {
		return &Failure{Class: Retryable, Msg: "upstream sent a stream event that is not JSON"}
	}
	ev := gjson.ParseBytes(data)
	typ := ev.Get("type").Str
	if typ == "" {
		typ = string(eventName(frame))
	}
	if typ != "message-start" && typ != "message-end" && !s.rolled {
		// A stream that skipped message-start still opens with the role.
		s.begin("")
	}
	switch typ {
	case "message-start":
		if !s.rolled {
			s.begin(ev.Get("id").Str)
			s.holding = true
		}
	case "content-start", "content-delta":
		// A thinking block has delta.message.content.thinking instead.
		if t := ev.Get("delta.message.content.text"); t.Type == gjson.String && t.Str != "" {
			s.chunk(&ChatMessage{Content: &t.Str}, nil)
		}
	case "tool-call-start":
		tc := cohereCallDelta(ev)
		n := s.started
		s.started++
		if i := ev.Get("index"); i.Exists() {
			if s.calls == nil {
				s.calls = map[int64]int{}
			}
			s.calls[i.Int()] = n
		}
		s.last = n
		call := ToolCall{Index: Ptr(n), ID: tc.Get("id").Str, Type: "function"}
		call.Function.Name = tc.Get("function.name").Str
		call.Function.Arguments = cohereArguments(tc.Get("function.arguments"))
		s.chunk(&ChatMessage{ToolCalls: []ToolCall{call}}, nil)
	case "tool-call-delta":
		if s.started == 0 {
			// Arguments of a call that never started have no id to go with.
			return nil
		}
		n := s.last
		if i := ev.Get("index"); i.Exists() {
			if m, ok := s.calls[i.Int()]; ok {
				n = m
			}
		}
		if args := cohereArguments(cohereCallDelta(ev).Get("function.arguments")); args != "" {
			call := ToolCall{Index: Ptr(n)}
			call.Function.Arguments = args
			s.chunk(&ChatMessage{ToolCalls: []ToolCall{call}}, nil)
		}
	case "message-end":
		reason := ev.Get("delta.finish_reason").Str
		var js *UsageJS
		s.usage, js = cohereUsage(ev.Get("delta.usage"))
		finish, failed := cohereFinish(reason)
		if failed {
			return &Failure{Class: Retryable, Msg: cohereGenerationFailed(reason, ev.Get("delta.error").Str)}
		}
		if !s.rolled {
			s.begin("")
		}
		s.chunk(&ChatMessage{}, &finish)
		if s.usageTo && js != nil {
			s.frame(&Chunk{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
				Choices: []Choice{}, Usage: js})
		}
		s.out = append(s.out, doneFrame...)
		s.mark()
		s.done = true
	}
	// tool-plan-delta, content-end, tool-call-end, citation-start,
	// citation-end, debug and whatever a later API version adds: nothing.
	return nil
}

// begin builds the role chunk; every chunk carries the stream's id.
func (s *cohereStream) begin(id string) {
	s.id, s.rolled = id, true
	s.chunk(&ChatMessage{Role: "assistant", Content: Ptr("")}, nil)
}

// cohereCallDelta returns an event's tool call: an object in the
// documented stream, a one-element list from some servers.
func cohereCallDelta(ev gjson.Result) gjson.Result {
	tc := ev.Get("delta.message.tool_calls")
	if tc.IsArray() {
		return tc.Get("0")
	}
	return tc
}

// Usage returns the usage message-end reported.
func (s *cohereStream) Usage() Usage { return s.usage }

// Close releases the upstream body; it is safe to call twice.
func (s *cohereStream) Close() {
	if s.sse == nil {
		return
	}
	s.sse.stop()
	if s.resp != nil {
		endBody(s.resp, s.sse, s.done)
		s.resp = nil
	}
	s.sse.release()
	s.sse = nil
}
