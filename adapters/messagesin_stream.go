package adapters

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"unsafe"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// This file holds the two streams of the Messages ingress: chat chunks
// translated into Anthropic's events, and a native Anthropic stream
// relayed as it comes.

// messagesStream translates a stream of chat chunks into Anthropic's
// event sequence: message_start, ping, then per content block
// content_block_start, its deltas and content_block_stop, then
// message_delta and message_stop. Each frame is built by appending: the
// upstream's JSON strings (text, arguments, ids, names) are copied as they
// came, already valid after CheckJSON, never decoded and encoded again.
type messagesStream struct {
	up  Stream
	req *MessagesRequest
	// model is req.Model as a JSON string.
	model   []byte
	scratch []byte

	// frames holds those built from one upstream frame.
	frames

	// begun: message_start is built. started: a frame went out, so a
	// failure can no longer fail over. done: message_stop is built.
	begun, started, done bool
	// err ends the stream after its error event went out.
	err error

	// blocks counts the content blocks started; open is the index of the
	// one being streamed, -1 for none, and text says it is a text block.
	blocks, open int
	text         bool
	// tools maps each chat tool call index to its block.
	tools []messagesTool
	// finish and matched are the choice's finish_reason and, from vLLM,
	// the stop sequence that matched.
	finish, matched string
	usage           UsageJS
	hasUsage        bool
}

// messagesTool is a chat tool call's index and its content block's.
type messagesTool struct{ call, block int }

// NewMessagesStream wraps up, a stream of OpenAI chat chunks ending with
// "data: [DONE]" (the usage chunk included, as MessagesToChat asks), into
// Anthropic's Messages event stream for req, each frame an "event: X"
// line and its data. message_start reports req.InputTokens, the
// estimate; message_delta the upstream's usage. An upstream failure
// before the first frame is returned as it is, so the attempt can fail
// over; after it, the stream ends with an Anthropic error event, and the
// Next after that returns the failure, for the caller to count the
// interrupted stream: it must write nothing more for it. Usage is up's.
func NewMessagesStream(up Stream, req *MessagesRequest) Stream {
	model, _ := json.Marshal(req.Model)
	return &messagesStream{up: up, req: req, model: model, open: -1}
}

// Next returns the next event.
func (s *messagesStream) Next() ([]byte, error) {
	if f, ok := s.pop(); ok {
		return f, nil
	}
	switch {
	case s.err != nil:
		return nil, s.err
	case s.done:
		return nil, io.EOF
	}
	s.reset()
	for {
		frame, err := s.up.Next()
		if err == io.EOF {
			// A chat stream ends with [DONE]; without it, it was cut.
			err = ErrStreamCut
		}
		if err != nil {
			return s.fail(err)
		}
		data, ok := frameData(frame, s.scratch)
		if !ok {
			// A comment: keep-alive for a chat client, nothing here.
			continue
		}
		if bytes.Equal(data, strDone) {
			s.end()
			f, _ := s.pop()
			return f, nil
		}
		if CheckJSON(data) != nil {
			return s.fail(&Failure{Class: Retryable, Msg: "upstream sent a stream event that is not JSON"})
		}
		if f := s.chunk(data); f != nil {
			return s.fail(f)
		}
		if f, ok := s.pop(); ok {
			return f, nil
		}
	}
}

// pop returns the next built frame, if any.
func (s *messagesStream) pop() ([]byte, bool) {
	f, ok := s.take()
	if ok {
		s.started = true
	}
	return f, ok
}

// fail ends the stream with err: as it is before any frame went out,
// else as an error event, err coming after it.
func (s *messagesStream) fail(err error) ([]byte, error) {
	if !s.started {
		return nil, err
	}
	s.err = err
	return messagesErrorEvent(err), nil
}

// messagesErrorEvent is the error event that ends a Messages stream the
// upstream failed after it started.
func messagesErrorEvent(err error) []byte {
	msg := err.Error()
	var f *Failure
	if errors.As(err, &f) {
		msg = f.Msg
	}
	m, _ := json.Marshal(msg)
	b := append([]byte(`event: error
data: {"type":"error","error":{"type":"api_error","message":`), m...)
	return append(b, "}}\n\n"...)
}

// event opens a frame: its event line and the start of its data.
func (s *messagesStream) event(name, data string) {
	s.out = append(s.out, "event: "...)
	s.out = append(s.out, name...)
	s.out = append(s.out, "\ndata: "...)
	s.out = append(s.out, data...)
}

// close ends a frame with tail.
func (s *messagesStream) close(tail string) {
	s.out = append(s.out, tail...)
	s.out = append(s.out, "\n\n"...)
	s.mark()
}

// begin builds message_start, with id the chunk's raw JSON id, and the
// ping Anthropic sends after it.
func (s *messagesStream) begin(id string) {
	s.begun = true
	s.event("message_start", `{"type":"message_start","message":{"id":"msg_`)
	if len(id) > 2 && id[0] == '"' {
		s.out = append(s.out, bytes.TrimPrefix([]byte(id[1:]), []byte("msg_"))...)
	} else {
		s.out = append(s.out, randomHex()...)
		s.out = append(s.out, '"')
	}
	s.out = append(s.out, `,"type":"message","role":"assistant","model":`...)
	s.out = append(s.out, s.model...)
	s.out = append(s.out, `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":`...)
	s.out = strconv.AppendInt(s.out, int64(s.req.InputTokens), 10)
	s.close(`,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0}}}`)
	s.event("ping", `{"type":"ping"}`)
	s.close("")
}

// chunk translates one chat chunk.
func (s *messagesStream) chunk(data []byte) *Failure {
	var id, choices, usage, errv gjson.Result
	gjson.Parse(unsafe.String(unsafe.SliceData(data), len(data))).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "id":
			id = v
		case "choices":
			choices = v
		case "usage":
			usage = v
		case "error":
			errv = v
		}
		return true
	})
	if errv.Exists() && errv.Type != gjson.Null {
		msg := errv.Get("message").Str
		if msg == "" {
			msg = errv.String()
		}
		return &Failure{Class: Retryable, Msg: "upstream stream error: " + truncate(msg, 300)}
	}
	if !s.begun {
		raw := ""
		if id.Type == gjson.String && id.Str != "" {
			raw = id.Raw
		}
		s.begin(raw)
	}
	if usage.IsObject() {
		s.hasUsage = true
		s.usage.PromptTokens = int(usage.Get("prompt_tokens").Int())
		s.usage.CompletionTokens = int(usage.Get("completion_tokens").Int())
		s.usage.PromptTokensDetails = nil
		if c := usage.Get("prompt_tokens_details.cached_tokens"); c.Type == gjson.Number {
			s.usage.PromptTokensDetails = &struct {
				CachedTokens int `json:"cached_tokens"`
			}{int(c.Int())}
		}
	}
	if !choices.IsArray() {
		return nil
	}
	// One choice: a Messages request asks for no more.
	choice := choices.Get("0")
	if f := choice.Get("finish_reason"); f.Type == gjson.String {
		s.finish = f.Str
	}
	if m := choice.Get("stop_reason"); m.Type == gjson.String {
		s.matched = m.Str
	}
	delta := choice.Get("delta")
	for _, key := range [...]string{"content", "refusal"} {
		if t := delta.Get(key); t.Type == gjson.String && t.Str != "" {
			s.textDelta(t.Raw)
		}
	}
	if calls := delta.Get("tool_calls"); calls.IsArray() {
		calls.ForEach(func(_, tc gjson.Result) bool {
			s.toolDelta(tc)
			return true
		})
	}
	return nil
}

// stopBlock ends the open block, if any.
func (s *messagesStream) stopBlock() {
	if s.open < 0 {
		return
	}
	s.event("content_block_stop", `{"type":"content_block_stop","index":`)
	s.out = strconv.AppendInt(s.out, int64(s.open), 10)
	s.close("}")
	s.open = -1
}

// startBlock ends the open block and starts the next, whose
// content_block holds the JSON in parts.
func (s *messagesStream) startBlock(text bool, parts ...string) int {
	s.stopBlock()
	s.open, s.text = s.blocks, text
	s.blocks++
	s.event("content_block_start", `{"type":"content_block_start","index":`)
	s.out = strconv.AppendInt(s.out, int64(s.open), 10)
	s.out = append(s.out, `,"content_block":`...)
	for _, p := range parts {
		s.out = append(s.out, p...)
	}
	s.close("}")
	return s.open
}

// delta builds a content_block_delta for block i; raw is a JSON string.
func (s *messagesStream) delta(i int, kind, field, raw string) {
	s.event("content_block_delta", `{"type":"content_block_delta","index":`)
	s.out = strconv.AppendInt(s.out, int64(i), 10)
	s.out = append(s.out, `,"delta":{"type":"`...)
	s.out = append(s.out, kind...)
	s.out = append(s.out, `","`...)
	s.out = append(s.out, field...)
	s.out = append(s.out, `":`...)
	s.out = append(s.out, raw...)
	s.close("}}")
}

func (s *messagesStream) textDelta(raw string) {
	if s.open < 0 || !s.text {
		s.startBlock(true, `{"type":"text","text":""}`)
	}
	s.delta(s.open, "text_delta", "text", raw)
}

// toolDelta translates one tool call delta: the first of a call starts
// its tool_use block, and arguments go out as input_json_delta.
// Arguments of a call whose block another already followed (chat servers
// do not interleave calls, but may) still go to its own block.
func (s *messagesStream) toolDelta(tc gjson.Result) {
	call := len(s.tools) - 1
	if i := tc.Get("index"); i.Type == gjson.Number {
		call = int(i.Int())
	} else if id := tc.Get("id"); id.Type == gjson.String && id.Str != "" {
		// Without an index, a new id is a new call.
		call = len(s.tools)
	}
	block := -1
	for _, t := range s.tools {
		if t.call == call {
			block = t.block
		}
	}
	if block < 0 {
		id, name := tc.Get("id"), tc.Get("function.name")
		idRaw := id.Raw
		if id.Type != gjson.String || id.Str == "" {
			idRaw = `"toolu_` + randomHex() + `"`
		}
		nameRaw := name.Raw
		if name.Type != gjson.String {
			nameRaw = `""`
		}
		block = s.startBlock(false, `{"type":"tool_use","id":`, idRaw, `,"name":`, nameRaw, `,"input":{}}`)
		s.tools = append(s.tools, messagesTool{call: call, block: block})
	}
	if args := tc.Get("function.arguments"); args.Type == gjson.String && args.Str != "" {
		s.delta(block, "input_json_delta", "partial_json", args.Raw)
	}
}

// end builds the stream's last events at [DONE].
func (s *messagesStream) end() {
	if !s.begun {
		s.begin("")
	}
	s.stopBlock()
	stop, seq := messagesStop(s.finish, s.matched, len(s.tools) > 0, s.req.StopSequences)
	s.event("message_delta", `{"type":"message_delta","delta":{"stop_reason":"`)
	s.out = append(s.out, stop...)
	s.out = append(s.out, `","stop_sequence":`...)
	if seq != nil {
		q, _ := json.Marshal(*seq)
		s.out = append(s.out, q...)
	} else {
		s.out = append(s.out, "null"...)
	}
	s.out = append(s.out, `},"usage":{`...)
	u := messagesUsage(&s.usage, 0)
	if s.hasUsage {
		// Cumulative counts, as Anthropic's message_delta has them: they
		// replace message_start's estimate.
		s.out = append(s.out, `"input_tokens":`...)
		s.out = strconv.AppendInt(s.out, int64(u.InputTokens), 10)
		s.out = append(s.out, `,"cache_creation_input_tokens":0,"cache_read_input_tokens":`...)
		s.out = strconv.AppendInt(s.out, int64(*u.CacheRead), 10)
		s.out = append(s.out, ',')
	}
	s.out = append(s.out, `"output_tokens":`...)
	s.out = strconv.AppendInt(s.out, int64(u.OutputTokens), 10)
	s.close("}}")
	s.event("message_stop", `{"type":"message_stop"}`)
	s.close("")
	s.done = true
}

// Usage returns the upstream's usage.
func (s *messagesStream) Usage() Usage { return s.up.Usage() }

// Close closes the upstream.
func (s *messagesStream) Close() { s.up.Close() }

// anthropicRelay relays a native Messages stream frame by frame, as the
// upstream sent it, reading the usage on the way. message_start is held
// back until the next event other than a ping, so that an error event
// right after it, Anthropic's way of saying overloaded, can still fail
// over.
type anthropicRelay struct {
	resp    *fasthttp.Response
	sse     *sseReader
	scratch []byte
	streamRedactor

	usage    anthropicUsage
	hasUsage bool
	// holding: message_start is in out, not yet sent. started: a frame
	// went out. done: message_stop went out.
	holding, started, done bool
	// err ends the stream after its error event went out.
	err error
	frames
}

var errRelayClosed = errors.New("anthropic stream used after Close")

// Next returns the next event, as the upstream sent it.
func (s *anthropicRelay) Next() ([]byte, error) { return s.pass(s.next()) }

func (s *anthropicRelay) next() ([]byte, error) {
	if f, ok := s.pop(); ok {
		return f, nil
	}
	switch {
	case s.err != nil:
		return nil, s.err
	case s.done:
		return nil, io.EOF
	case s.sse == nil:
		return nil, errRelayClosed
	}
	s.reset()
	for {
		frame, err := s.sse.read()
		if err == io.EOF {
			err = ErrStreamCut
		}
		if err != nil {
			return s.fail(err)
		}
		data, ok := frameData(frame, s.scratch)
		if !ok {
			if s.started {
				return frame, nil
			}
			continue
		}
		if CheckJSON(data) != nil {
			return s.fail(&Failure{Class: Retryable, Msg: "upstream sent a stream event that is not JSON"})
		}
		typ := string(eventName(frame))
		if typ == "" {
			typ = gjson.GetBytes(data, "type").Str
		}
		switch typ {
		case "error":
			f := anthropicStreamFailure(gjson.GetBytes(data, "error.type").Str, gjson.GetBytes(data, "error.message").Str)
			if !s.started {
				return nil, f
			}
			// The client reads the upstream's own error event, and the
			// stream ends with it.
			s.err = f
			return frame, nil
		case "message_start":
			s.holding = !s.started
			s.hasUsage = s.usage.add(gjson.GetBytes(data, "message.usage")) || s.hasUsage
		case "message_delta":
			s.hasUsage = s.usage.add(gjson.GetBytes(data, "usage")) || s.hasUsage
		case "message_stop":
			s.done = true
		}
		s.out = append(s.out, frame...)
		s.mark()
		if s.holding && (typ == "message_start" || typ == "ping") {
			continue
		}
		s.holding = false
		f, _ := s.pop()
		return f, nil
	}
}

// fail ends the stream with err: as it is before any frame went out (a
// held message_start is dropped), else as an error event, err after it.
func (s *anthropicRelay) fail(err error) ([]byte, error) {
	if !s.started {
		return nil, err
	}
	s.err = err
	return messagesErrorEvent(err), nil
}

func (s *anthropicRelay) pop() ([]byte, bool) {
	if s.holding {
		return nil, false
	}
	f, ok := s.take()
	if ok {
		s.started = true
	}
	return f, ok
}

// Usage returns what message_start and message_delta reported.
func (s *anthropicRelay) Usage() Usage {
	if !s.hasUsage {
		return Usage{}
	}
	return s.usage.usage()
}

// Close releases the upstream connection.
func (s *anthropicRelay) Close() {
	if s.sse == nil {
		return
	}
	s.sse.stop()
	endBody(s.resp, s.sse, s.done)
	s.sse.release()
	s.sse = nil
}
