package adapters

import (
	"encoding/json"
	"strconv"
	"strings"
)

// This file turns a chat answer into a Response object, shaped as OpenAI
// returns it; the stream in responses_stream.go builds the same object.

// ChatToResponse translates a chat.completion body into the Response
// object for req: its first choice's text and refusal as a message item,
// its tool calls as function_call items, finish_reason "length" (or
// "content_filter") as status "incomplete" with its reason, and the usage
// in the Responses shape; the request's parameters are echoed as OpenAI
// echoes them. id ("resp_...") names the response and its items; created
// is its Unix time. assistant is the answer as a chat assistant message,
// the tail of the stored conversation (ResponsesRequest.History). An
// upstream body that is no completion is a Retryable Failure.
func ChatToResponse(completion []byte, req *ResponsesRequest, id string, created int64) (response, assistant []byte, f *Failure) {
	var c Completion
	if err := decodeUpstream(completion, &c); err != nil {
		return nil, nil, &Failure{Class: Retryable, Msg: "upstream sent a completion that cannot be read"}
	}
	if len(c.Choices) == 0 || c.Choices[0].Message == nil {
		return nil, nil, &Failure{Class: Retryable, Msg: "upstream answered without a message"}
	}
	ch := &c.Choices[0]
	r := reply{req: req, id: id, created: created, usage: c.Usage}
	if ch.FinishReason != nil {
		r.finish = *ch.FinishReason
	}
	m := ch.Message
	text, refusal := deref(m.Content), deref(m.Refusal)
	if text != "" || refusal != "" || len(m.ToolCalls) == 0 {
		it := r.message()
		if text != "" || refusal == "" {
			it.parts = append(it.parts, outputPart{text: []byte(text)})
		}
		if refusal != "" {
			it.parts = append(it.parts, outputPart{refusal: true, text: []byte(refusal)})
		}
	}
	for _, tc := range m.ToolCalls {
		r.call(tc.ID, tc.Function.Name).call.args = []byte(tc.Function.Arguments)
	}
	status, _ := r.outcome()
	for i, it := range r.items {
		it.status = "completed"
		if status == "incomplete" && i == len(r.items)-1 {
			it.status = "incomplete"
		}
	}
	return r.response(nil, status, nil), r.assistant(), nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// reply is a chat answer on its way to becoming a Response.
type reply struct {
	req     *ResponsesRequest
	id      string
	created int64
	items   []*outputItem
	// finish is the chat finish_reason; usage the chat usage, nil until
	// known.
	finish string
	usage  *UsageJS
}

// outputItem is one item of a Response's output: a message, or a
// function call when call is set.
type outputItem struct {
	// id is the item's id as a JSON string.
	id     []byte
	index  int
	status string
	parts  []outputPart
	call   *functionCall
}

// outputPart is a message's content part: output_text, or a refusal.
type outputPart struct {
	refusal bool
	text    []byte
}

type functionCall struct {
	callID, name string
	args         []byte
}

// message adds a message item.
func (r *reply) message() *outputItem {
	return r.add("msg_", nil)
}

// call adds a function call item. A call the upstream left without an id
// gets one, as the client must answer it by id.
func (r *reply) call(callID, name string) *outputItem {
	if callID == "" {
		callID = "call_" + r.suffix() + "_" + strconv.Itoa(len(r.items))
	}
	return r.add("fc_", &functionCall{callID: callID, name: name})
}

func (r *reply) add(prefix string, call *functionCall) *outputItem {
	id := appendString(nil, prefix+r.suffix()+"_"+strconv.Itoa(len(r.items)))
	it := &outputItem{id: id, index: len(r.items), status: "in_progress", call: call}
	r.items = append(r.items, it)
	return it
}

// suffix is the response id without its prefix: the items' ids share it.
func (r *reply) suffix() string {
	return strings.TrimPrefix(r.id, "resp_")
}

// outcome maps the finish reason to the Response's status and, for an
// incomplete one, its reason.
func (r *reply) outcome() (status, reason string) {
	switch r.finish {
	case "length":
		return "incomplete", "max_output_tokens"
	case "content_filter":
		return "incomplete", "content_filter"
	}
	return "completed", ""
}

// responseError is a failed Response's error.
type responseError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// responseUsage is a Response's usage.
type responseUsage struct {
	InputTokens        int `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int `json:"total_tokens"`
}

// responseObject is a Response, its fields in OpenAI's order.
type responseObject struct {
	ID                string         `json:"id"`
	Object            string         `json:"object"`
	CreatedAt         int64          `json:"created_at"`
	Status            string         `json:"status"`
	Error             *responseError `json:"error"`
	IncompleteDetails *struct {
		Reason string `json:"reason"`
	} `json:"incomplete_details"`
	Instructions       json.RawMessage `json:"instructions"`
	MaxOutputTokens    *int64          `json:"max_output_tokens"`
	Model              string          `json:"model"`
	Output             json.RawMessage `json:"output"`
	ParallelToolCalls  bool            `json:"parallel_tool_calls"`
	PreviousResponseID *string         `json:"previous_response_id"`
	Reasoning          struct {
		Effort  *string `json:"effort"`
		Summary *string `json:"summary"`
	} `json:"reasoning"`
	Store       bool            `json:"store"`
	Temperature *float64        `json:"temperature"`
	Text        json.RawMessage `json:"text"`
	ToolChoice  json.RawMessage `json:"tool_choice"`
	Tools       json.RawMessage `json:"tools"`
	TopP        *float64        `json:"top_p"`
	Truncation  string          `json:"truncation"`
	Usage       *responseUsage  `json:"usage"`
	User        *string         `json:"user"`
	Metadata    json.RawMessage `json:"metadata"`
}

// response appends to dst the Response in the given status; a failed one
// carries fail. The usage is reported once the answer is done.
func (r *reply) response(dst []byte, status string, fail *responseError) []byte {
	q := r.req
	o := responseObject{
		ID: r.id, Object: "response", CreatedAt: r.created, Status: status, Error: fail,
		Instructions: q.Instructions, MaxOutputTokens: q.MaxOutputTokens, Model: q.Model,
		ParallelToolCalls: q.ParallelToolCalls, Store: q.Store, Temperature: q.Temperature,
		Text: q.Text, ToolChoice: q.ToolChoice, Tools: q.Tools, TopP: q.TopP, Truncation: "disabled",
		Metadata: q.Metadata,
	}
	if q.PreviousResponseID != "" {
		o.PreviousResponseID = &q.PreviousResponseID
	}
	if q.User != "" {
		o.User = &q.User
	}
	if _, reason := r.outcome(); status == "incomplete" {
		o.IncompleteDetails = &struct {
			Reason string `json:"reason"`
		}{reason}
	}
	o.Output = []byte{'['}
	for i, it := range r.items {
		if i > 0 {
			o.Output = append(o.Output, ',')
		}
		o.Output = it.appendJSON(o.Output)
	}
	o.Output = append(o.Output, ']')
	if status != "in_progress" && r.usage != nil {
		o.Usage = responseUsageOf(r.usage)
	}
	b, _ := json.Marshal(&o)
	return append(dst, b...)
}

// responseUsageOf converts chat usage, each count held within what any
// real answer costs, so no sum of them overflows.
func responseUsageOf(u *UsageJS) *responseUsage {
	bound := func(n int) int { return min(max(n, 0), maxReportedTokens) }
	out := &responseUsage{InputTokens: bound(u.PromptTokens), OutputTokens: bound(u.CompletionTokens), TotalTokens: bound(u.TotalTokens)}
	if out.TotalTokens == 0 {
		out.TotalTokens = out.InputTokens + out.OutputTokens
	}
	if d := u.PromptTokensDetails; d != nil {
		out.InputTokensDetails.CachedTokens = bound(d.CachedTokens)
	}
	if d := u.CompletionTokensDetails; d != nil {
		out.OutputTokensDetails.ReasoningTokens = bound(d.ReasoningTokens)
	}
	return out
}

// appendJSON appends the item as the Response's output lists it.
func (it *outputItem) appendJSON(dst []byte) []byte {
	if c := it.call; c != nil {
		dst = append(dst, `{"type":"function_call","id":`...)
		dst = append(dst, it.id...)
		dst = append(dst, `,"call_id":`...)
		dst = appendString(dst, c.callID)
		dst = append(dst, `,"name":`...)
		dst = appendString(dst, c.name)
		dst = append(dst, `,"arguments":`...)
		dst = appendString(dst, string(c.args))
		dst = append(dst, `,"status":"`...)
		dst = append(dst, it.status...)
		return append(dst, `"}`...)
	}
	dst = append(dst, `{"type":"message","id":`...)
	dst = append(dst, it.id...)
	dst = append(dst, `,"status":"`...)
	dst = append(dst, it.status...)
	dst = append(dst, `","role":"assistant","content":[`...)
	for i := range it.parts {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = it.parts[i].appendJSON(dst)
	}
	return append(dst, "]}"...)
}

// appendJSON appends the part as a message's content lists it.
func (p *outputPart) appendJSON(dst []byte) []byte {
	if p.refusal {
		dst = append(dst, `{"type":"refusal","refusal":`...)
	} else {
		dst = append(dst, `{"type":"output_text","annotations":[],"text":`...)
	}
	dst = appendString(dst, string(p.text))
	return append(dst, '}')
}

// appendString appends s as a JSON string.
func appendString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s)
	return append(dst, b...)
}

// assistant returns the answer as a chat assistant message: its text (or,
// with none, its refusal) and its tool calls.
func (r *reply) assistant() []byte {
	var text, refusal []byte
	m := Message{Role: "assistant"}
	for _, it := range r.items {
		if it.call != nil {
			tc := ToolCall{ID: it.call.callID, Type: "function"}
			tc.Function.Name, tc.Function.Arguments = it.call.name, string(it.call.args)
			m.ToolCalls = append(m.ToolCalls, tc)
			continue
		}
		for _, p := range it.parts {
			if p.refusal {
				refusal = append(refusal, p.text...)
			} else {
				text = append(text, p.text...)
			}
		}
	}
	if len(text) == 0 {
		text = refusal
	}
	if len(text) > 0 || len(m.ToolCalls) == 0 {
		// A message without text nor calls keeps an empty string: chat
		// targets refuse a null content there.
		m.Content = Content{Text: string(text), IsStr: true}
	}
	b, _ := json.Marshal(&m)
	return b
}
