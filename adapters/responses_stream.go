package adapters

import (
	"bytes"
	"errors"
	"io"
	"strconv"

	"github.com/tidwall/gjson"
)

// ResponsesStream translates a stream of OpenAI chat chunks into the
// Responses API's event stream: response.created and
// response.in_progress, then for each output item
// response.output_item.added, its content (for text
// response.content_part.added, response.output_text.delta...,
// response.output_text.done, response.content_part.done; for a refusal
// the response.refusal.* events instead; for a function call
// response.function_call_arguments.delta... and .done) and
// response.output_item.done, and last response.completed (or
// response.incomplete) with the whole Response. Every event is framed
// "event: <type>\ndata: {...}\n\n" and numbered by sequence_number from 0.
// No [DONE] ends it: the Responses API sends none.
type ResponsesStream struct {
	up    Stream
	reply reply
	seq   int
	// frames holds the events not yet returned.
	frames
	// started is set once the response.created event is queued; ended
	// once the final event is.
	started, ended bool
	// err is the upstream failure Next returns after response.failed.
	err error
	// open is the item being written: always the last one, nil before
	// the first.
	open *outputItem
	// calls maps a chat tool call's index to its item; lastCall is the
	// index of the last one opened.
	calls     map[int64]*outputItem
	lastCall  int64
	assistant []byte
	// response is the final Response object, once the stream ended.
	response []byte
	scratch  []byte
}

// NewResponsesStream wraps up, a chat stream whose request asked for the
// usage chunk, into the Responses events of req's response, named id and
// created at created (Unix seconds). It reads up only when asked for an
// event, so an upstream that fails before its first frame fails Next with
// its own error, before anything reached the client, and another target
// may be tried. A failure after that ends the stream with a
// response.failed event (the Response, status "failed", with its error);
// the next call returns the upstream's error, for the caller to record,
// and the client needs nothing more.
func NewResponsesStream(up Stream, req *ResponsesRequest, id string, created int64) *ResponsesStream {
	return &ResponsesStream{up: up, reply: reply{req: req, id: id, created: created}}
}

var _ Stream = (*ResponsesStream)(nil)

// Next returns the next event, valid until the next call; io.EOF after
// the last.
func (s *ResponsesStream) Next() ([]byte, error) {
	for {
		if f, ok := s.take(); ok {
			return f, nil
		}
		if s.ended {
			if s.err != nil {
				return nil, s.err
			}
			return nil, io.EOF
		}
		s.reset()
		if err := s.step(); err != nil {
			return nil, err
		}
	}
}

// Close closes the upstream stream.
func (s *ResponsesStream) Close() { s.up.Close() }

// Usage returns the upstream's usage, once the stream has ended.
func (s *ResponsesStream) Usage() Usage { return s.up.Usage() }

// Assistant returns the answer as a chat assistant message, for the
// conversation's store (ResponsesRequest.History), once the stream has
// ended with response.completed or response.incomplete; nil before, and
// after a failure.
func (s *ResponsesStream) Assistant() []byte { return s.assistant }

// Response returns the final Response object, as response.completed
// carries it, once the stream has ended; nil before, and after a failure.
func (s *ResponsesStream) Response() []byte { return s.response }

// step reads one upstream frame and queues the events it makes. Before
// anything is queued, an upstream failure is returned as it is.
func (s *ResponsesStream) step() error {
	frame, err := s.up.Next()
	if err == io.EOF {
		s.begin()
		s.finish()
		return nil
	}
	var chunk gjson.Result
	if err == nil {
		data, ok := frameData(frame, s.scratch)
		switch {
		case !ok:
			// A comment, kept alive by the events that follow.
			return nil
		case bytes.Equal(data, strDone):
			s.begin()
			s.finish()
			return nil
		case CheckJSON(data) != nil:
			err = &Failure{Class: Retryable, Msg: "upstream sent a stream event that is not JSON"}
		default:
			chunk = gjson.ParseBytes(data)
			if e := chunk.Get("error"); e.Exists() {
				err = &Failure{Class: Retryable, Msg: "upstream stream error: " + truncate(chunk.Get("error.message").String(), 300)}
			}
		}
	}
	if err != nil {
		if !s.started {
			s.ended, s.err = true, err
			return err
		}
		s.fail(err)
		return nil
	}
	s.begin()
	s.chunk(chunk)
	return nil
}

// begin queues the events that open the response, once.
func (s *ResponsesStream) begin() {
	if s.started {
		return
	}
	s.started = true
	for _, typ := range [...]string{"response.created", "response.in_progress"} {
		s.event(typ)
		s.out = append(s.out, `,"response":`...)
		s.out = s.reply.response(s.out, "in_progress", nil)
		s.end()
	}
}

// chunk queues the events of one chat chunk: of its first choice, the
// only one a Response has.
func (s *ResponsesStream) chunk(c gjson.Result) {
	if u := c.Get("usage"); u.IsObject() {
		s.reply.usage = &UsageJS{PromptTokens: int(u.Get("prompt_tokens").Int()), CompletionTokens: int(u.Get("completion_tokens").Int()),
			TotalTokens: int(u.Get("total_tokens").Int())}
		if n := u.Get("prompt_tokens_details.cached_tokens"); n.Exists() {
			s.reply.usage.PromptTokensDetails = &struct {
				CachedTokens int `json:"cached_tokens"`
			}{int(n.Int())}
		}
		if n := u.Get("completion_tokens_details.reasoning_tokens"); n.Exists() {
			s.reply.usage.CompletionTokensDetails = &struct {
				ReasoningTokens int `json:"reasoning_tokens"`
			}{int(n.Int())}
		}
	}
	choice := c.Get("choices.0")
	delta := choice.Get("delta")
	if t := delta.Get("content"); t.Type == gjson.String && t.Str != "" {
		s.text(false, t)
	}
	if t := delta.Get("refusal"); t.Type == gjson.String && t.Str != "" {
		s.text(true, t)
	}
	delta.Get("tool_calls").ForEach(func(_, tc gjson.Result) bool {
		s.toolCall(tc)
		return true
	})
	if f := choice.Get("finish_reason"); f.Type == gjson.String {
		s.reply.finish = f.Str
	}
}

// text queues a text or refusal delta, opening a message item and a part
// of its kind when the open ones are not.
func (s *ResponsesStream) text(refusal bool, delta gjson.Result) {
	it := s.open
	if it == nil || it.call != nil {
		s.closeItem("completed")
		it = s.reply.message()
		s.open = it
		s.itemEvent("response.output_item.added", it)
	}
	if n := len(it.parts); n == 0 || it.parts[n-1].refusal != refusal {
		if n > 0 {
			s.closePart(it)
		}
		it.parts = append(it.parts, outputPart{refusal: refusal})
		s.partEvent("response.content_part.added", it)
	}
	p := &it.parts[len(it.parts)-1]
	p.text = append(p.text, delta.Str...)
	if refusal {
		s.event("response.refusal.delta")
	} else {
		s.event("response.output_text.delta")
	}
	s.where(it, true)
	// The upstream's own JSON string, checked, goes out as it came.
	s.out = append(s.out, `,"delta":`...)
	s.out = append(s.out, delta.Raw...)
	if !refusal {
		s.out = append(s.out, `,"logprobs":[]`...)
	}
	s.end()
}

// toolCall queues a tool call delta. A call opens its function_call item
// when its index is new. Arguments for a call already done, which an
// upstream interleaving its calls may send, still reach the final
// Response and the stored answer, though no event can carry them.
func (s *ResponsesStream) toolCall(tc gjson.Result) {
	idx := tc.Get("index")
	i := idx.Int()
	if !idx.Exists() {
		// Without an index, a delta continues the open call or starts
		// another.
		i = s.lastCall
		if s.open == nil || s.open.call == nil {
			for i = 0; s.calls[i] != nil; i++ {
			}
		}
	}
	name := tc.Get("function.name").Str
	it := s.calls[i]
	if it == nil {
		s.closeItem("completed")
		it = s.reply.call(tc.Get("id").Str, name)
		if s.calls == nil {
			s.calls = map[int64]*outputItem{}
		}
		s.calls[i] = it
		s.open, s.lastCall = it, i
		s.itemEvent("response.output_item.added", it)
	} else if it.call.name == "" {
		it.call.name = name
	}
	args := tc.Get("function.arguments")
	if args.Type != gjson.String || args.Str == "" {
		return
	}
	it.call.args = append(it.call.args, args.Str...)
	if it == s.open {
		s.event("response.function_call_arguments.delta")
		s.where(it, false)
		s.out = append(s.out, `,"delta":`...)
		s.out = append(s.out, args.Raw...)
		s.end()
	}
}

// closePart queues the events that end a message's last part.
func (s *ResponsesStream) closePart(it *outputItem) {
	p := &it.parts[len(it.parts)-1]
	if p.refusal {
		s.event("response.refusal.done")
		s.where(it, true)
		s.out = append(s.out, `,"refusal":`...)
		s.out = appendString(s.out, string(p.text))
	} else {
		s.event("response.output_text.done")
		s.where(it, true)
		s.out = append(s.out, `,"text":`...)
		s.out = appendString(s.out, string(p.text))
		s.out = append(s.out, `,"logprobs":[]`...)
	}
	s.end()
	s.partEvent("response.content_part.done", it)
}

// closeItem queues the events that end the open item, which ends in
// status.
func (s *ResponsesStream) closeItem(status string) {
	it := s.open
	if it == nil {
		return
	}
	s.open = nil
	if it.call != nil {
		s.event("response.function_call_arguments.done")
		s.where(it, false)
		s.out = append(s.out, `,"name":`...)
		s.out = appendString(s.out, it.call.name)
		s.out = append(s.out, `,"arguments":`...)
		s.out = appendString(s.out, string(it.call.args))
		s.end()
	} else {
		s.closePart(it)
	}
	it.status = status
	s.itemEvent("response.output_item.done", it)
}

// finish ends the response: an answer with no output at all still gets
// its (empty) message, as ChatToResponse gives it.
func (s *ResponsesStream) finish() {
	if len(s.reply.items) == 0 {
		it := s.reply.message()
		s.open = it
		s.itemEvent("response.output_item.added", it)
		it.parts = append(it.parts, outputPart{})
		s.partEvent("response.content_part.added", it)
	}
	status, _ := s.reply.outcome()
	if status == "incomplete" {
		s.closeItem("incomplete")
	} else {
		s.closeItem("completed")
	}
	s.ended = true
	s.assistant = s.reply.assistant()
	s.response = s.reply.response(nil, status, nil)
	s.event("response." + status)
	s.out = append(s.out, `,"response":`...)
	s.out = s.reply.response(s.out, status, nil)
	s.end()
}

// fail ends the response with response.failed; Next then returns err.
func (s *ResponsesStream) fail(err error) {
	s.ended = true
	s.err = err
	if s.open != nil {
		s.open.status = "incomplete"
	}
	msg := "upstream stream failed"
	var f *Failure
	switch {
	case errors.Is(err, ErrStreamCut):
		msg = "upstream stream ended before the answer was complete"
	case errors.As(err, &f):
		msg = "upstream stream failed: " + f.Msg
	}
	s.event("response.failed")
	s.out = append(s.out, `,"response":`...)
	s.out = s.reply.response(s.out, "failed", &responseError{Code: "server_error", Message: msg})
	s.end()
}

// itemEvent queues an output_item event carrying the item.
func (s *ResponsesStream) itemEvent(typ string, it *outputItem) {
	s.event(typ)
	s.out = append(s.out, `,"output_index":`...)
	s.out = strconv.AppendInt(s.out, int64(it.index), 10)
	s.out = append(s.out, `,"item":`...)
	if typ == "response.output_item.added" {
		// The item as it starts: no content, no arguments yet.
		shell := *it
		shell.parts = nil
		if it.call != nil {
			shell.call = &functionCall{callID: it.call.callID, name: it.call.name}
		}
		s.out = shell.appendJSON(s.out)
	} else {
		s.out = it.appendJSON(s.out)
	}
	s.end()
}

// partEvent queues a content_part event carrying the item's last part.
func (s *ResponsesStream) partEvent(typ string, it *outputItem) {
	s.event(typ)
	s.where(it, true)
	s.out = append(s.out, `,"part":`...)
	p := it.parts[len(it.parts)-1]
	if typ == "response.content_part.added" {
		p.text = nil
	}
	s.out = p.appendJSON(s.out)
	s.end()
}

// event starts queuing an event of type typ.
func (s *ResponsesStream) event(typ string) {
	s.out = append(s.out, "event: "...)
	s.out = append(s.out, typ...)
	s.out = append(s.out, "\ndata: {\"type\":\""...)
	s.out = append(s.out, typ...)
	s.out = append(s.out, '"')
}

// where appends the item's id and index, and with part its last part's.
func (s *ResponsesStream) where(it *outputItem, part bool) {
	s.out = append(s.out, `,"item_id":`...)
	s.out = append(s.out, it.id...)
	s.out = append(s.out, `,"output_index":`...)
	s.out = strconv.AppendInt(s.out, int64(it.index), 10)
	if part {
		s.out = append(s.out, `,"content_index":`...)
		s.out = strconv.AppendInt(s.out, int64(len(it.parts)-1), 10)
	}
}

// end closes the event being queued with its sequence number.
func (s *ResponsesStream) end() {
	s.out = append(s.out, `,"sequence_number":`...)
	s.out = strconv.AppendInt(s.out, int64(s.seq), 10)
	s.out = append(s.out, "}\n\n"...)
	s.seq++
	s.mark()
}
