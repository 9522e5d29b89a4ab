package adapters

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/config"
)

func init() { register("cohere", newCohere) }

// cohere speaks Cohere's v2 Chat API (POST /v2/chat). Requests are
// decoded from OpenAI shape and encoded anew; replies and stream events are
// translated back into OpenAI completions and chunks.
//
// What has no OpenAI counterpart is left out on purpose: a reply's
// tool_plan (the model's note on which tools it will call) and its
// thinking blocks are not shown to the client, and citations are dropped.
type cohere struct {
	// http holds what the openai adapter prepares for any upstream: the
	// shared client, the timeouts, extra headers and the ready
	// Authorization value of each key. Only its URL is Cohere's.
	http *openAI
	// now stamps "created"; tests fix it.
	now func() time.Time
}

func newCohere(p *config.Provider, client *fasthttp.HostClient) Provider {
	h := newOpenAI(p, client).(*openAI)
	h.url = p.BaseURL + "/v2/chat"
	h.embeddings = p.BaseURL + "/v2/embed"
	return &cohere{http: h, now: time.Now}
}

// cohereRequest is the body of POST /v2/chat.
type cohereRequest struct {
	Model            string                `json:"model"`
	Messages         []cohereMessage       `json:"messages"`
	Tools            []Tool                `json:"tools,omitempty"`
	ToolChoice       string                `json:"tool_choice,omitempty"`
	StrictTools      *bool                 `json:"strict_tools,omitempty"`
	MaxTokens        *int                  `json:"max_tokens,omitempty"`
	Temperature      *float64              `json:"temperature,omitempty"`
	P                *float64              `json:"p,omitempty"`
	StopSequences    []string              `json:"stop_sequences,omitempty"`
	Seed             *int                  `json:"seed,omitempty"`
	FrequencyPenalty *float64              `json:"frequency_penalty,omitempty"`
	PresencePenalty  *float64              `json:"presence_penalty,omitempty"`
	ResponseFormat   *cohereResponseFormat `json:"response_format,omitempty"`
	Stream           bool                  `json:"stream"`
}

// cohereMessage is one v2 message. Content is a string, or a list of
// coherePart for a user message that carries images.
type cohereMessage struct {
	Role       string     `json:"role"`
	Content    any        `json:"content,omitempty"`
	ToolPlan   string     `json:"tool_plan,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

type cohereImage struct {
	URL    string `json:"url"`
	Detail string `json:"detail,omitempty"`
}

type coherePart struct {
	Type     string       `json:"type"`
	Text     string       `json:"text,omitempty"`
	ImageURL *cohereImage `json:"image_url,omitempty"`
}

type cohereResponseFormat struct {
	Type       string          `json:"type"`
	JSONSchema json.RawMessage `json:"json_schema,omitempty"`
}

// cohereRequestOf translates the client's OpenAI request.
func cohereRequestOf(c *Call) ([]byte, *Failure) {
	var in ChatRequest
	if err := json.Unmarshal(c.Body, &in); err != nil {
		return nil, untranslatable("invalid chat request: %v", err)
	}
	out := cohereRequest{
		Model:            c.Upstream,
		Messages:         make([]cohereMessage, 0, len(in.Messages)),
		MaxTokens:        in.MaxCompletionTokens,
		Temperature:      in.Temperature,
		P:                in.TopP,
		StopSequences:    in.Stop,
		Seed:             in.Seed,
		FrequencyPenalty: in.FrequencyPenalty,
		PresencePenalty:  in.PresencePenalty,
		Stream:           c.Stream,
	}
	if out.MaxTokens == nil {
		out.MaxTokens = in.MaxTokens
	}
	for i, m := range in.Messages {
		cm, why := cohereMessageOf(&m)
		if why != "" {
			return nil, untranslatable("messages[%d]: %s", i, why)
		}
		out.Messages = append(out.Messages, cm)
	}
	if f := cohereTools(&in, &out); f != nil {
		return nil, f
	}
	if rf := in.ResponseFormat; rf != nil {
		switch rf.Type {
		case "json_object":
			out.ResponseFormat = &cohereResponseFormat{Type: "json_object"}
		case "json_schema":
			out.ResponseFormat = &cohereResponseFormat{Type: "json_object"}
			if rf.JSONSchema != nil {
				out.ResponseFormat.JSONSchema = rf.JSONSchema.Schema
			}
		}
	}
	b, err := json.Marshal(&out)
	if err != nil {
		return nil, untranslatable("invalid chat request: %v", err)
	}
	return b, nil
}

// cohereMessageOf maps one message, or says why it cannot.
func cohereMessageOf(m *Message) (cohereMessage, string) {
	switch m.Role {
	case "system", "developer":
		return cohereMessage{Role: "system", Content: m.Content.String()}, ""
	case "user":
		return cohereUser(&m.Content)
	case "assistant":
		out := cohereMessage{Role: "assistant"}
		text := m.Content.String()
		if len(m.ToolCalls) == 0 {
			out.Content = text
			return out, ""
		}
		// Text said alongside tool calls is what Cohere calls the tool
		// plan; it takes no content next to them.
		out.ToolPlan = text
		for _, tc := range m.ToolCalls {
			call := ToolCall{ID: tc.ID, Type: "function"}
			call.Function.Name, call.Function.Arguments = tc.Function.Name, tc.Function.Arguments
			out.ToolCalls = append(out.ToolCalls, call)
		}
		return out, ""
	case "tool":
		if m.ToolCallID == "" {
			return cohereMessage{}, "a tool message needs tool_call_id"
		}
		return cohereMessage{Role: "tool", ToolCallID: m.ToolCallID, Content: m.Content.String()}, ""
	}
	return cohereMessage{}, fmt.Sprintf("role %q is not supported by the Cohere API", m.Role)
}

// cohereUser keeps a user's images as image_url parts, for vision models;
// text alone goes as one string, which every model takes.
func cohereUser(c *Content) (cohereMessage, string) {
	out := cohereMessage{Role: "user"}
	images := false
	for _, p := range c.Parts {
		switch p.Type {
		case "text":
		case "image_url":
			if p.ImageURL == nil || p.ImageURL.URL == "" {
				return out, "an image_url part needs image_url.url"
			}
			images = true
		default:
			return out, fmt.Sprintf("content part type %q is not supported by the Cohere API", p.Type)
		}
	}
	if !images {
		out.Content = c.String()
		return out, ""
	}
	parts := make([]coherePart, 0, len(c.Parts))
	for _, p := range c.Parts {
		if p.Type == "text" {
			parts = append(parts, coherePart{Type: "text", Text: p.Text})
			continue
		}
		parts = append(parts, coherePart{Type: "image_url", ImageURL: &cohereImage{URL: p.ImageURL.URL, Detail: p.ImageURL.Detail}})
	}
	out.Content = parts
	return out, ""
}

// cohereTools maps tools and tool_choice. Cohere has no way to name the
// function to call, so a named choice sends that tool alone, required.
func cohereTools(in *ChatRequest, out *cohereRequest) *Failure {
	if len(in.Tools) == 0 {
		return nil
	}
	strict := true
	for i, t := range in.Tools {
		if t.Type != "function" {
			return untranslatable("tools[%d]: tool type %q is not supported by the Cohere API", i, t.Type)
		}
		strict = strict && t.Function.Strict != nil && *t.Function.Strict
		// Cohere has one strict_tools switch, not a flag per function.
		t.Function.Strict = nil
		out.Tools = append(out.Tools, t)
	}
	if strict {
		out.StrictTools = Ptr(true)
	}
	switch mode, name := ToolChoiceOf(in.ToolChoice); mode {
	case "none":
		out.ToolChoice = "NONE"
	case "required":
		out.ToolChoice = "REQUIRED"
	case "function":
		for _, t := range out.Tools {
			if t.Function.Name == name {
				out.Tools, out.ToolChoice = []Tool{t}, "REQUIRED"
				return nil
			}
		}
		return untranslatable("tool_choice names function %q, which is not in tools", name)
	}
	return nil
}

var strCohereAccept = []byte("text/event-stream")

// Chat sends one attempt with the key at c.Key.
func (co *cohere) Chat(c *Call, r *Reply) error {
	body, f := cohereRequestOf(c)
	if f != nil {
		return f
	}
	h := co.http
	req := h.request(h.url, c.Key)
	if c.Stream {
		req.Header.SetBytesV(fasthttp.HeaderAccept, strCohereAccept)
	}
	req.SetBodyRaw(body)
	resp, f := send(h.client, req, c.Stream, h.firstByte, h.timeout)
	if f != nil {
		return f
	}
	if status := resp.StatusCode(); status < 200 || status > 299 {
		f := co.failure(resp)
		fasthttp.ReleaseResponse(resp)
		return f
	}
	r.Exhausted = exhaustedFor(&resp.Header)
	if c.Stream {
		s := newCohereStream(resp.BodyStream(), c.Upstream, co.now().Unix(), c.ClientUsage)
		s.resp = resp
		s.sse.max = h.client.MaxResponseBodySize
		s.sse.watch(resp, h.firstByte, h.idle)
		r.Stream = s
		return nil
	}
	defer fasthttp.ReleaseResponse(resp)
	return co.reply(c, resp, r)
}

// reply translates a non-stream answer.
func (co *cohere) reply(c *Call, resp *fasthttp.Response, r *Reply) error {
	body := resp.Body()
	if CheckJSON(body) != nil {
		return &Failure{Class: Retryable, Status: resp.StatusCode(), Msg: "upstream sent a body that is not JSON"}
	}
	res := gjson.ParseBytes(body)
	msg := res.Get("message")
	if !msg.IsObject() {
		return &Failure{Class: Retryable, Status: resp.StatusCode(), Msg: "upstream sent a reply without a message"}
	}
	finish, failed := cohereFinish(res.Get("finish_reason").Str)
	if failed {
		// Nothing has reached the client: another candidate can answer.
		return &Failure{Class: Retryable, Status: resp.StatusCode(), Msg: cohereGenerationFailed(res.Get("finish_reason").Str, "")}
	}
	var text strings.Builder
	if content := msg.Get("content"); content.Type == gjson.String {
		text.WriteString(content.Str)
	} else {
		for _, part := range content.Array() {
			if t := part.Get("type").Str; t == "text" || t == "" {
				text.WriteString(part.Get("text").Str)
			}
		}
	}
	out := ChatMessage{Role: "assistant"}
	for _, tc := range msg.Get("tool_calls").Array() {
		call := ToolCall{ID: tc.Get("id").Str, Type: "function"}
		call.Function.Name = tc.Get("function.name").Str
		call.Function.Arguments = cohereArguments(tc.Get("function.arguments"))
		out.ToolCalls = append(out.ToolCalls, call)
	}
	if s := text.String(); s != "" || len(out.ToolCalls) == 0 {
		out.Content = &s
	}
	id := res.Get("id").Str
	if id == "" {
		id = res.Get("generation_id").Str
	}
	comp := Completion{
		ID: id, Object: "chat.completion", Created: co.now().Unix(), Model: c.Upstream,
		Choices: []Choice{{Index: 0, Message: &out, FinishReason: &finish}},
	}
	r.Usage, comp.Usage = cohereUsage(res.Get("usage"))
	b, err := json.Marshal(&comp)
	if err != nil {
		return &Failure{Class: Retryable, Msg: "encoding the reply: " + err.Error()}
	}
	r.Body = append(r.Body[:0], b...)
	return nil
}

// cohereArguments returns a tool call's arguments as the JSON string
// OpenAI clients parse: the string as given, or the raw value if Cohere
// sent an object.
func cohereArguments(v gjson.Result) string {
	if v.Type == gjson.String {
		return v.Str
	}
	return v.Raw
}

// cohereFinish maps a finish_reason; failed is set for a generation that
// broke off (ERROR, TIMEOUT), which is no answer at all.
func cohereFinish(reason string) (finish string, failed bool) {
	switch reason {
	case "MAX_TOKENS":
		return "length", false
	case "TOOL_CALL":
		return "tool_calls", false
	case "ERROR_TOXIC":
		return "content_filter", false
	case "ERROR", "TIMEOUT":
		return "", true
	}
	// COMPLETE and STOP_SEQUENCE, and whatever a later API version adds.
	return "stop", false
}

func cohereGenerationFailed(reason, detail string) string {
	msg := "upstream generation failed (" + reason + ")"
	if detail != "" {
		msg += ": " + truncate(detail, 300)
	}
	return msg
}

// cohereUsage reads a usage object. tokens counts everything the model
// read and wrote, as OpenAI's usage does; billed_units leaves out what
// Cohere does not bill, so it is only the fallback.
func cohereUsage(u gjson.Result) (Usage, *UsageJS) {
	counts := u.Get("tokens")
	if !counts.Get("input_tokens").Exists() && !counts.Get("output_tokens").Exists() {
		counts = u.Get("billed_units")
	}
	if !counts.IsObject() {
		return Usage{}, nil
	}
	js := &UsageJS{PromptTokens: int(counts.Get("input_tokens").Int()), CompletionTokens: int(counts.Get("output_tokens").Int())}
	js.TotalTokens = js.PromptTokens + js.CompletionTokens
	if cached := u.Get("cached_tokens"); cached.Exists() {
		js.PromptTokensDetails = &struct {
			CachedTokens int `json:"cached_tokens"`
		}{int(cached.Int())}
	}
	return js.Usage(), js
}

// failure classifies a non-2xx answer. Cohere's error body is
// {"message": "..."}; the message is kept for the client except on auth
// failures, whose messages may quote the key.
func (co *cohere) failure(resp *fasthttp.Response) *Failure {
	status := resp.StatusCode()
	f := &Failure{
		Class:      classifyStatus(status),
		Status:     status,
		RetryAfter: retryAfter(resp.Header.Peek(fasthttp.HeaderRetryAfter), time.Now()),
		Msg:        "upstream error",
	}
	switch status {
	case fasthttp.StatusPaymentRequired:
		// The account behind the key cannot pay; other keys may.
		f.Class = Auth
	case 499:
		// Cohere's "request cancelled": we did not cancel it.
		f.Class = Retryable
	}
	if f.Class == RateLimited && f.RetryAfter == 0 {
		f.RetryAfter = exhaustedFor(&resp.Header)
	}
	if f.Class == Auth {
		f.Msg = "upstream rejected the provider key"
		return f
	}
	body := resp.Body()
	msg := gjson.GetBytes(body, "message")
	if msg.Type != gjson.String {
		msg = gjson.GetBytes(body, "error.message")
	}
	if msg.Type == gjson.String && msg.Str != "" {
		f.Msg = truncate(msg.Str, 300)
	}
	switch {
	case f.Class != BadRequest:
	case cohereTooLong(f.Msg):
		f.Class = ContextTooLong
	case aboutTarget("", f.Msg):
		f.Class = Unsupported
	}
	switch f.Class {
	case BadRequest, Unsupported:
		text := "upstream rejected the request"
		if msg.Type == gjson.String && msg.Str != "" {
			text = truncate(msg.Str, 2000)
		}
		f.Body = errorBody(text, "invalid_request_error", status)
	case ContextTooLong:
		f.Body, _ = json.Marshal(map[string]any{"error": map[string]any{
			"message": truncate(msg.Str, 2000), "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
	}
	return f
}

// cohereTooLong recognizes Cohere's "too many tokens: ..." refusals and
// other context-window messages: this model cannot take the prompt.
func cohereTooLong(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "too many tokens") || strings.Contains(m, "context length") ||
		strings.Contains(m, "context window") || strings.Contains(m, "prompt is too long")
}

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
