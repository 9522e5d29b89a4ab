package adapters

import (
	"errors"
	"io"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// This file translates Anthropic's typed SSE events into OpenAI chunks.

// anthropicStreamFailure is an `error` event. Before the first frame went
// out it fails the attempt over; after, the engine ends the client's
// stream with it.
func anthropicStreamFailure(typ, msg string) *Failure {
	f := &Failure{Class: Retryable, Msg: "upstream stream error"}
	if typ != "" {
		f.Msg += " (" + truncate(typ, 50) + ")"
	}
	if msg != "" {
		f.Msg += ": " + truncate(msg, 300)
	}
	if typ == "rate_limit_error" {
		f.Class = RateLimited
	}
	return f
}

// anthropicStream translates Anthropic's typed SSE events into OpenAI
// chunks, one frame per Next. Frames are built back to back in out; an
// event yields at most a few, and Next drains them before reading on.
type anthropicStream struct {
	resp        *fasthttp.Response
	sse         *sseReader
	scratch     []byte
	clientUsage bool
	streamRedactor

	id, model string
	created   int64
	// tools maps the upstream index of each tool_use block to its
	// tool_calls index, which counts tool_use blocks only.
	tools    []int64
	usage    anthropicUsage
	hasUsage bool

	// begun: message_start came. started: a frame went out. finished:
	// the finish_reason chunk was built. done: message_stop came and
	// [DONE] is built.
	begun, started, finished, done bool
	// holding keeps the role chunk of message_start back until the next
	// frame, so an error event right after it can still fail over.
	holding bool
	frames
}

func newAnthropicStream(body io.Reader, clientUsage bool, created int64) *anthropicStream {
	return &anthropicStream{sse: newSSEReader(body), clientUsage: clientUsage, created: created}
}

var errAnthropicClosed = errors.New("anthropic stream used after Close")

// Next returns the next translated frame.
func (s *anthropicStream) Next() ([]byte, error) { return s.pass(s.next()) }

func (s *anthropicStream) next() ([]byte, error) {
	if f, ok := s.pop(); ok {
		return f, nil
	}
	if s.done {
		return nil, io.EOF
	}
	if s.sse == nil {
		return nil, errAnthropicClosed
	}
	s.reset()
	for {
		frame, err := s.sse.read()
		switch {
		case err == io.EOF:
			return nil, ErrStreamCut
		case err != nil:
			return nil, err
		}
		if f := s.event(frame); f != nil {
			return nil, f
		}
		if !s.holding {
			if f, ok := s.pop(); ok {
				return f, nil
			}
		}
	}
}

// pop returns the next built frame, if any.
func (s *anthropicStream) pop() ([]byte, bool) {
	f, ok := s.take()
	if ok {
		s.started = true
	}
	return f, ok
}

func (s *anthropicStream) chunk(d *ChatMessage, finish *string) {
	s.frame(Chunk{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
		Choices: []Choice{{Delta: d, FinishReason: finish}}})
}

func (s *anthropicStream) frame(c Chunk) {
	s.out = appendFrame(s.out, c)
	s.mark()
	s.holding = false
}

func (s *anthropicStream) toolCall(tc ToolCall) {
	s.chunk(&ChatMessage{ToolCalls: []ToolCall{tc}}, nil)
}

// toolIndex finds the tool_calls index of upstream block i.
func (s *anthropicStream) toolIndex(i int64) (int, bool) {
	for n := len(s.tools) - 1; n >= 0; n-- {
		if s.tools[n] == i {
			return n, true
		}
	}
	return 0, false
}

func (s *anthropicStream) addUsage(u gjson.Result) {
	s.hasUsage = s.usage.add(u) || s.hasUsage
}

// event translates one upstream event into the frames it yields.
func (s *anthropicStream) event(frame []byte) *Failure {
	data, ok := frameData(frame, s.scratch)
	if !ok {
		return nil
	}
	if CheckJSON(data) != nil {
		return &Failure{Class: Retryable, Msg: "upstream sent a stream event that is not JSON"}
	}
	ev := gjson.ParseBytes(data)
	typ := string(eventName(frame))
	if typ == "" {
		typ = ev.Get("type").Str
	}
	switch typ {
	case "ping":
		return nil
	case "error":
		return anthropicStreamFailure(ev.Get("error.type").Str, ev.Get("error.message").Str)
	case "message_start":
		if s.begun {
			return nil
		}
		s.begun = true
		m := ev.Get("message")
		s.id, s.model = m.Get("id").Str, m.Get("model").Str
		s.addUsage(m.Get("usage"))
		s.chunk(&ChatMessage{Role: "assistant", Content: Ptr("")}, nil)
		s.holding = true
		return nil
	case "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop":
		if !s.begun {
			return &Failure{Class: Retryable, Msg: "upstream stream sent " + typ + " before message_start"}
		}
	default:
		// Events a later API version may add.
		return nil
	}
	switch typ {
	case "content_block_start":
		b := ev.Get("content_block")
		switch b.Get("type").Str {
		case "text":
			if t := b.Get("text").Str; t != "" {
				s.chunk(&ChatMessage{Content: Ptr(t)}, nil)
			}
		case "tool_use":
			tc := ToolCall{Index: Ptr(len(s.tools)), ID: b.Get("id").Str, Type: "function"}
			tc.Function.Name = b.Get("name").Str
			s.tools = append(s.tools, ev.Get("index").Int())
			s.toolCall(tc)
		}
	case "content_block_delta":
		d := ev.Get("delta")
		switch d.Get("type").Str {
		case "text_delta":
			if t := d.Get("text").Str; t != "" {
				s.chunk(&ChatMessage{Content: Ptr(t)}, nil)
			}
		case "input_json_delta":
			// Relayed as it comes: clients assemble the arguments.
			if i, ok := s.toolIndex(ev.Get("index").Int()); ok {
				if p := d.Get("partial_json").Str; p != "" {
					tc := ToolCall{Index: Ptr(i)}
					tc.Function.Arguments = p
					s.toolCall(tc)
				}
			}
		}
	case "message_delta":
		s.addUsage(ev.Get("usage"))
		if !s.finished {
			s.finished = true
			s.chunk(&ChatMessage{}, Ptr(anthropicFinish(ev.Get("delta.stop_reason").Str)))
		}
	case "message_stop":
		if !s.finished {
			s.finished = true
			s.chunk(&ChatMessage{}, Ptr("stop"))
		}
		if s.clientUsage {
			s.frame(Chunk{ID: s.id, Object: "chat.completion.chunk", Created: s.created, Model: s.model,
				Choices: []Choice{}, Usage: s.usage.openAI()})
		}
		s.out = append(s.out, doneFrame...)
		s.mark()
		s.holding = false
		s.done = true
	}
	return nil
}

// Usage returns what message_start and message_delta reported.
func (s *anthropicStream) Usage() Usage {
	if !s.hasUsage {
		return Usage{}
	}
	return s.usage.usage()
}

func (s *anthropicStream) Close() {
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
