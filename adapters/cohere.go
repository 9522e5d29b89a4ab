package adapters

import (
	"encoding/json"
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
	h.url = newEndpoint(p.BaseURL + "/v2/chat")
	h.embeddings = newEndpoint(p.BaseURL + "/v2/embed")
	return &cohere{http: h, now: time.Now}
}

var strCohereAccept = []byte("text/event-stream")

// Chat sends one attempt with the key at c.Key.
func (co *cohere) Chat(c *Call, r *Reply) error {
	body, f := cohereRequestOf(c)
	if f != nil {
		return f
	}
	h := co.http
	req := h.request(&h.url, c.Key)
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
