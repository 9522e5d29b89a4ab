package adapters

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/config"
)

func init() { register("anthropic", newAnthropic) }

// anthropic speaks Anthropic's Messages API. Unlike the openai adapter it
// must re-encode: the OpenAI request is decoded and rebuilt as a Messages
// request, and the reply, whole or streamed, is rebuilt in OpenAI shape.
type anthropic struct {
	client    *fasthttp.HostClient
	url       string
	timeout   time.Duration
	firstByte time.Duration
	idle      time.Duration
	// maxTokens is sent when the client sets no limit: Anthropic requires
	// max_tokens, OpenAI does not.
	maxTokens int
	headers   [][2]string
	keys      [][]byte
	// now stamps "created"; tests fix it.
	now func() time.Time
}

func newAnthropic(p *config.Provider, client *fasthttp.HostClient) Provider {
	a := &anthropic{
		client:    client,
		url:       p.BaseURL + "/v1/messages",
		timeout:   p.Timeout.D(),
		firstByte: p.FirstByteTimeout.D(),
		idle:      p.IdleTimeout.D(),
		maxTokens: p.DefaultMaxTokens,
		now:       time.Now,
	}
	if strings.HasSuffix(p.BaseURL, "/v1") {
		// A base_url written with the version, the way OpenAI-style
		// configs are.
		a.url = p.BaseURL + "/messages"
	}
	if a.maxTokens <= 0 {
		a.maxTokens = 1024
	}
	for k, v := range p.Headers {
		a.headers = append(a.headers, [2]string{k, v})
	}
	for _, k := range p.Keys {
		a.keys = append(a.keys, []byte(k.Reveal()))
	}
	return a
}

func (a *anthropic) key(i int) []byte {
	if i >= 0 && i < len(a.keys) {
		return a.keys[i]
	}
	return nil
}

// Chat translates the request, sends it with c.Key's key and translates
// the answer back.
func (a *anthropic) Chat(c *Call, r *Reply) error {
	body, f := anthropicRequestOf(c, a.maxTokens)
	if f != nil {
		return f
	}
	req := a.request(c.Key, nil)
	req.SetBodyRaw(body)
	resp, f := a.exchange(req, c.Stream, r)
	if f != nil {
		return f
	}
	if c.Stream {
		s := newAnthropicStream(resp.BodyStream(), c.ClientUsage, a.now().Unix())
		s.resp = resp
		s.sse.max = a.client.MaxResponseBodySize
		s.sse.watch(resp, a.firstByte, a.idle)
		r.Stream = s
		return nil
	}
	defer fasthttp.ReleaseResponse(resp)
	out, u, f := anthropicReply(r.Body[:0], resp.Body(), a.now().Unix())
	if f != nil {
		f.Status = resp.StatusCode()
		return f
	}
	r.Body, r.Usage = out, u
	return nil
}

// exchange sends req and classifies a failure; a success's response is
// the caller's to release, and r.Exhausted says whether its key is spent.
func (a *anthropic) exchange(req *fasthttp.Request, stream bool, r *Reply) (*fasthttp.Response, *Failure) {
	resp, f := send(a.client, req, stream, a.firstByte, a.timeout)
	if f != nil {
		return nil, f
	}
	now := time.Now()
	if status := resp.StatusCode(); status < 200 || status > 299 {
		f := anthropicFailure(status, &resp.Header, resp.Body(), now)
		fasthttp.ReleaseResponse(resp)
		return nil, f
	}
	r.Exhausted = anthropicExhausted(&resp.Header, now)
	return resp, nil
}

// request starts a Messages API request with key i's key, the client's
// anthropic-beta (native calls only) and the configured headers.
func (a *anthropic) request(i int, beta []byte) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.SetRequestURI(a.url)
	req.Header.SetMethodBytes(strPost)
	req.Header.SetContentTypeBytes(strJSON)
	if k := a.key(i); k != nil {
		req.Header.SetBytesV("X-Api-Key", k)
	}
	req.Header.Set("Anthropic-Version", AnthropicVersion)
	if len(beta) > 0 {
		req.Header.SetBytesV("Anthropic-Beta", beta)
	}
	// Configured headers come last, so anthropic-beta can be added and
	// anthropic-version pinned.
	for _, h := range a.headers {
		req.Header.Set(h[0], h[1])
	}
	return req
}

// Messages sends c.Body, a client's Messages request, with only its model
// replaced, and relays the answer as the upstream sent it: a reply body
// once it is known to be JSON, a stream event by event (pings included),
// reading the usage on the way. Failures are classified as Chat's are.
// TokenCounter is a Provider whose upstream counts a Messages request's
// input tokens itself (Anthropic's POST /v1/messages/count_tokens).
type TokenCounter interface {
	// CountTokens sends c.Body, a count_tokens request with "model" at
	// ModelStart:ModelEnd, patched to UpstreamJSON; r.Body is the
	// upstream's {"input_tokens": N}.
	CountTokens(c *Call, r *Reply) error
}

// CountTokens asks Anthropic's own count.
func (a *anthropic) CountTokens(c *Call, r *Reply) error {
	req := a.request(c.Key, c.Beta)
	req.SetRequestURI(a.url + "/count_tokens")
	req.AppendBody(c.Body[:c.ModelStart])
	req.AppendBody(c.UpstreamJSON)
	req.AppendBody(c.Body[c.ModelEnd:])
	resp, f := a.exchange(req, false, r)
	if f != nil {
		return f
	}
	defer fasthttp.ReleaseResponse(resp)
	body := resp.Body()
	if CheckJSON(body) != nil || gjson.GetBytes(body, "input_tokens").Type != gjson.Number {
		return &Failure{Class: Retryable, Status: resp.StatusCode(), Msg: "upstream answered count_tokens without input_tokens"}
	}
	r.Body = append(r.Body[:0], body...)
	return nil
}

func (a *anthropic) Messages(c *Call, r *Reply) error {
	req := a.request(c.Key, c.Beta)
	req.AppendBody(c.Body[:c.ModelStart])
	req.AppendBody(c.UpstreamJSON)
	req.AppendBody(c.Body[c.ModelEnd:])
	resp, f := a.exchange(req, c.Stream, r)
	if f != nil {
		return f
	}
	if c.Stream {
		s := &anthropicRelay{resp: resp, sse: newSSEReader(resp.BodyStream())}
		s.sse.max = a.client.MaxResponseBodySize
		s.sse.watch(resp, a.firstByte, a.idle)
		r.Stream = s
		return nil
	}
	defer fasthttp.ReleaseResponse(resp)
	body := resp.Body()
	if CheckJSON(body) != nil {
		return &Failure{Class: Retryable, Status: resp.StatusCode(), Msg: "upstream sent a body that is not JSON"}
	}
	if typ := gjson.GetBytes(body, "type").Str; typ != "message" {
		// An error object with a 200, or something else entirely.
		msg := "upstream answered 200 without a message"
		if e := gjson.GetBytes(body, "error.message"); e.Type == gjson.String {
			msg = "upstream error: " + truncate(e.Str, 300)
		}
		return &Failure{Class: Retryable, Status: resp.StatusCode(), Msg: msg}
	}
	var u anthropicUsage
	r.Usage = Usage{}
	if u.add(gjson.GetBytes(body, "usage")) {
		r.Usage = u.usage()
	}
	r.Body = append(r.Body[:0], body...)
	return nil
}

// The Messages API request, as far as an OpenAI request can fill it.
type (
	anthropicRequest struct {
		Model         string                `json:"model"`
		MaxTokens     int                   `json:"max_tokens"`
		System        string                `json:"system,omitempty"`
		Messages      []anthropicMessage    `json:"messages"`
		Tools         []anthropicTool       `json:"tools,omitempty"`
		ToolChoice    *anthropicToolChoice  `json:"tool_choice,omitempty"`
		Temperature   *float64              `json:"temperature,omitempty"`
		TopP          *float64              `json:"top_p,omitempty"`
		StopSequences []string              `json:"stop_sequences,omitempty"`
		Metadata      *anthropicRequestMeta `json:"metadata,omitempty"`
		Stream        bool                  `json:"stream,omitempty"`
	}
	anthropicMessage struct {
		Role    string           `json:"role"`
		Content []anthropicBlock `json:"content"`
	}
	// anthropicBlock is a request content block: text, image, tool_use
	// or tool_result.
	anthropicBlock struct {
		Type      string           `json:"type"`
		Text      string           `json:"text,omitempty"`
		Source    *anthropicSource `json:"source,omitempty"`
		ID        string           `json:"id,omitempty"`
		Name      string           `json:"name,omitempty"`
		Input     json.RawMessage  `json:"input,omitempty"`
		ToolUseID string           `json:"tool_use_id,omitempty"`
		Content   string           `json:"content,omitempty"`
	}
	anthropicSource struct {
		Type      string `json:"type"`
		URL       string `json:"url,omitempty"`
		MediaType string `json:"media_type,omitempty"`
		Data      string `json:"data,omitempty"`
	}
	anthropicTool struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		InputSchema json.RawMessage `json:"input_schema"`
	}
	anthropicToolChoice struct {
		Type                   string `json:"type"`
		Name                   string `json:"name,omitempty"`
		DisableParallelToolUse bool   `json:"disable_parallel_tool_use,omitempty"`
	}
	anthropicRequestMeta struct {
		UserID string `json:"user_id"`
	}
)

// anthropicObjectSchema is the input_schema of a tool declared without
// parameters: Anthropic requires one.
var anthropicObjectSchema = json.RawMessage(`{"type":"object"}`)

// anthropicRequestOf translates the client's OpenAI request into a
// Messages request body.
func anthropicRequestOf(c *Call, defaultMax int) ([]byte, *Failure) {
	req, f := anthropicTranslate(c, defaultMax)
	if f != nil {
		return nil, f
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, untranslatable("encoding the anthropic request: %v", err)
	}
	return b, nil
}

func anthropicTranslate(c *Call, defaultMax int) (*anthropicRequest, *Failure) {
	var in ChatRequest
	if err := json.Unmarshal(c.Body, &in); err != nil {
		return nil, untranslatable("reading the request to translate it for anthropic: %v", err)
	}
	out := &anthropicRequest{
		Model:         c.Upstream,
		MaxTokens:     in.Limit(defaultMax),
		Temperature:   in.Temperature,
		TopP:          in.TopP,
		StopSequences: in.Stop,
		Stream:        c.Stream,
	}
	var system []string
	for i, m := range in.Messages {
		var role string
		var blocks []anthropicBlock
		var f *Failure
		switch m.Role {
		case "system", "developer":
			// Anthropic takes the instructions once, at the top.
			for j, p := range m.Content.Parts {
				if p.Type != "text" {
					return nil, untranslatable("messages[%d].content[%d]: a %s message may hold only text, not %q", i, j, m.Role, p.Type)
				}
			}
			if s := m.Content.String(); s != "" {
				system = append(system, s)
			}
			continue
		case "user":
			role = "user"
			blocks, f = anthropicParts(i, m.Content, true)
		case "assistant":
			role = "assistant"
			blocks, f = anthropicParts(i, m.Content, false)
			for j, tc := range m.ToolCalls {
				if tc.Type != "" && tc.Type != "function" {
					return nil, untranslatable("messages[%d].tool_calls[%d]: type %q is not supported by anthropic", i, j, tc.Type)
				}
				input, err := anthropicInput(tc.Function.Arguments)
				if err != nil {
					return nil, untranslatable("messages[%d].tool_calls[%d].function.arguments: %v", i, j, err)
				}
				blocks = append(blocks, anthropicBlock{Type: "tool_use", ID: tc.ID, Name: tc.Function.Name, Input: input})
			}
		case "tool":
			// A tool's answer is the user's turn to Anthropic.
			role = "user"
			blocks = []anthropicBlock{{Type: "tool_result", ToolUseID: m.ToolCallID, Content: m.Content.String()}}
		default:
			return nil, untranslatable("messages[%d].role: %q is not supported by anthropic", i, m.Role)
		}
		if f != nil {
			return nil, f
		}
		if len(blocks) == 0 {
			continue
		}
		// Anthropic wants turns to alternate: consecutive turns of one
		// role (tool results and the user's next words) become one.
		if n := len(out.Messages); n > 0 && out.Messages[n-1].Role == role {
			out.Messages[n-1].Content = append(out.Messages[n-1].Content, blocks...)
		} else {
			out.Messages = append(out.Messages, anthropicMessage{Role: role, Content: blocks})
		}
	}
	out.System = strings.Join(system, "\n\n")
	if out.Messages == nil {
		out.Messages = []anthropicMessage{}
	}
	for i, t := range in.Tools {
		if t.Type != "" && t.Type != "function" {
			return nil, untranslatable("tools[%d].type: %q is not supported by anthropic", i, t.Type)
		}
		schema := t.Function.Parameters
		if len(bytes.TrimSpace(schema)) == 0 || bytes.Equal(bytes.TrimSpace(schema), []byte("null")) {
			schema = anthropicObjectSchema
		}
		out.Tools = append(out.Tools, anthropicTool{Name: t.Function.Name, Description: t.Function.Description, InputSchema: schema})
	}
	if raw := bytes.TrimSpace(in.ToolChoice); len(raw) > 0 && !bytes.Equal(raw, []byte("null")) {
		mode, name := ToolChoiceOf(raw)
		switch mode {
		case "auto", "none":
			out.ToolChoice = &anthropicToolChoice{Type: mode}
		case "required":
			out.ToolChoice = &anthropicToolChoice{Type: "any"}
		case "function":
			out.ToolChoice = &anthropicToolChoice{Type: "tool", Name: name}
		default:
			return nil, untranslatable(`tool_choice: want "auto", "none", "required" or {"type":"function","function":{"name":...}}, got %s`, raw)
		}
	}
	if p := gjson.GetBytes(c.Body, "parallel_tool_calls"); p.Type == gjson.False && len(out.Tools) > 0 {
		if out.ToolChoice == nil {
			out.ToolChoice = &anthropicToolChoice{Type: "auto"}
		}
		if out.ToolChoice.Type != "none" {
			out.ToolChoice.DisableParallelToolUse = true
		}
	}
	user := in.User
	if id, ok := in.Metadata["user_id"].(string); ok && id != "" {
		user = id
	}
	if user != "" {
		out.Metadata = &anthropicRequestMeta{UserID: user}
	}
	return out, nil
}

// anthropicParts translates message i's content parts; images are taken
// only from the user.
func anthropicParts(i int, c Content, images bool) ([]anthropicBlock, *Failure) {
	var blocks []anthropicBlock
	for j, p := range c.Parts {
		switch {
		case p.Type == "text":
			// Anthropic refuses empty text blocks; OpenAI clients send
			// them, as the content of a turn that only calls tools.
			if p.Text != "" {
				blocks = append(blocks, anthropicBlock{Type: "text", Text: p.Text})
			}
		case p.Type == "image_url" && images:
			if p.ImageURL == nil || p.ImageURL.URL == "" {
				return nil, untranslatable("messages[%d].content[%d].image_url.url: missing", i, j)
			}
			src, err := anthropicImage(p.ImageURL.URL)
			if err != nil {
				return nil, untranslatable("messages[%d].content[%d].image_url.url: %v", i, j, err)
			}
			blocks = append(blocks, anthropicBlock{Type: "image", Source: src})
		default:
			return nil, untranslatable("messages[%d].content[%d]: part type %q is not supported by anthropic here", i, j, p.Type)
		}
	}
	return blocks, nil
}

// anthropicImage turns an image URL into an image source: a data: URL
// into base64 data, an http(s) URL into a URL for Anthropic to fetch.
func anthropicImage(u string) (*anthropicSource, error) {
	if rest, ok := strings.CutPrefix(u, "data:"); ok {
		meta, data, ok := strings.Cut(rest, ",")
		media, b64 := strings.CutSuffix(meta, ";base64")
		if !ok || !b64 || media == "" || data == "" {
			return nil, errors.New("a data: URL must read data:<media type>;base64,<data>")
		}
		return &anthropicSource{Type: "base64", MediaType: media, Data: data}, nil
	}
	if strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://") {
		return &anthropicSource{Type: "url", URL: u}, nil
	}
	return nil, errors.New("want an https:// or a data: URL")
}

// anthropicInput parses a tool call's arguments into a tool_use input,
// which must be an object; no arguments at all is an empty one.
func anthropicInput(args string) (json.RawMessage, error) {
	a := strings.TrimSpace(args)
	if a == "" {
		return json.RawMessage("{}"), nil
	}
	if a[0] != '{' || !json.Valid([]byte(a)) {
		return nil, errors.New("not a JSON object")
	}
	var b bytes.Buffer
	_ = json.Compact(&b, []byte(a))
	return b.Bytes(), nil
}

// anthropicUsage is a Messages usage object. The cache counts are kept
// apart from input_tokens by Anthropic, so a prompt is their sum.
type anthropicUsage struct {
	InputTokens   int  `json:"input_tokens"`
	OutputTokens  int  `json:"output_tokens"`
	CacheRead     *int `json:"cache_read_input_tokens"`
	CacheCreation *int `json:"cache_creation_input_tokens"`
}

func (u *anthropicUsage) prompt() int {
	n := u.InputTokens
	if u.CacheRead != nil {
		n += *u.CacheRead
	}
	if u.CacheCreation != nil {
		n += *u.CacheCreation
	}
	return n
}

// add takes the counts a usage object (a reply's, or a stream event's)
// reports; it reports whether r is one.
func (u *anthropicUsage) add(r gjson.Result) bool {
	if !r.IsObject() {
		return false
	}
	if v := r.Get("input_tokens"); v.Type == gjson.Number {
		u.InputTokens = int(v.Int())
	}
	if v := r.Get("output_tokens"); v.Type == gjson.Number {
		u.OutputTokens = int(v.Int())
	}
	if v := r.Get("cache_read_input_tokens"); v.Type == gjson.Number {
		u.CacheRead = Ptr(int(v.Int()))
	}
	if v := r.Get("cache_creation_input_tokens"); v.Type == gjson.Number {
		u.CacheCreation = Ptr(int(v.Int()))
	}
	return true
}

func (u *anthropicUsage) openAI() *UsageJS {
	p := u.prompt()
	js := &UsageJS{PromptTokens: p, CompletionTokens: u.OutputTokens, TotalTokens: p + u.OutputTokens}
	if u.CacheRead != nil {
		js.PromptTokensDetails = &struct {
			CachedTokens int `json:"cached_tokens"`
		}{*u.CacheRead}
	}
	return js
}

func (u *anthropicUsage) usage() Usage {
	return Usage{Prompt: u.prompt(), Completion: u.OutputTokens, Known: true}
}

// anthropicResponse is a Messages response, as far as OpenAI can show it.
type anthropicResponse struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Model   string `json:"model"`
	Content []struct {
		Type  string          `json:"type"`
		Text  string          `json:"text"`
		ID    string          `json:"id"`
		Name  string          `json:"name"`
		Input json.RawMessage `json:"input"`
	} `json:"content"`
	StopReason string          `json:"stop_reason"`
	Usage      *anthropicUsage `json:"usage"`
	Error      *struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

// anthropicFinish maps a stop_reason to a finish_reason.
func anthropicFinish(stop string) string {
	switch stop {
	case "max_tokens", "model_context_window_exceeded":
		return "length"
	case "tool_use":
		return "tool_calls"
	case "refusal":
		return "content_filter"
	}
	// end_turn, stop_sequence, pause_turn: the model stopped by itself.
	return "stop"
}

// anthropicReply appends the OpenAI completion for a Messages response
// body to dst.
func anthropicReply(dst, body []byte, created int64) ([]byte, Usage, *Failure) {
	var m anthropicResponse
	if err := decodeUpstream(body, &m); err != nil {
		return nil, Usage{}, &Failure{Class: Retryable, Msg: "upstream sent a body that is not a Messages response"}
	}
	if m.Type == "error" || m.Error != nil {
		msg := ""
		if m.Error != nil {
			msg = m.Error.Message
		}
		return nil, Usage{}, &Failure{Class: Retryable, Msg: "upstream error: " + truncate(msg, 300)}
	}
	var text strings.Builder
	var calls []ToolCall
	for _, b := range m.Content {
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
		case "tool_use":
			tc := ToolCall{ID: b.ID, Type: "function"}
			tc.Function.Name = b.Name
			tc.Function.Arguments = "{}"
			var args bytes.Buffer
			if len(b.Input) > 0 && json.Compact(&args, b.Input) == nil && args.String() != "null" {
				tc.Function.Arguments = args.String()
			}
			calls = append(calls, tc)
		}
	}
	msg := &ChatMessage{Role: "assistant", ToolCalls: calls}
	if text.Len() > 0 || len(calls) == 0 {
		msg.Content = Ptr(text.String())
	}
	out := Completion{
		ID: m.ID, Object: "chat.completion", Created: created, Model: m.Model,
		Choices: []Choice{{Message: msg, FinishReason: Ptr(anthropicFinish(m.StopReason))}},
	}
	var u Usage
	if m.Usage != nil {
		out.Usage = m.Usage.openAI()
		u = m.Usage.usage()
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, Usage{}, &Failure{Class: Retryable, Msg: "encoding the translated reply: " + err.Error()}
	}
	return append(dst, b...), u, nil
}

// anthropicTooLong tells a prompt over the model's context window from
// the other invalid_request_errors.
func anthropicTooLong(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "prompt is too long") || strings.Contains(m, "exceed context limit")
}

// anthropicFailure classifies a non-2xx answer. The upstream's message is
// kept except for auth failures, whose messages may quote the key.
func anthropicFailure(status int, h *fasthttp.ResponseHeader, body []byte, now time.Time) *Failure {
	f := &Failure{
		Class:      classifyStatus(status),
		Status:     status,
		RetryAfter: retryAfter(h.Peek(fasthttp.HeaderRetryAfter), now),
		Msg:        "upstream error",
	}
	if f.Class == RateLimited && f.RetryAfter == 0 {
		f.RetryAfter = anthropicResetIn(h, now)
	}
	if f.Class == Auth {
		f.Msg = "upstream rejected the provider key"
		return f
	}
	msg := gjson.GetBytes(body, "error.message")
	if msg.Type == gjson.String {
		f.Msg = truncate(msg.Str, 300)
	}
	switch {
	case f.Class != BadRequest:
	case anthropicTooLong(msg.Str):
		f.Class = ContextTooLong
	case aboutTarget(gjson.GetBytes(body, "error.type").Str, msg.Str):
		f.Class = Unsupported
	}
	if f.Class == BadRequest || f.Class == ContextTooLong || f.Class == Unsupported {
		typ := gjson.GetBytes(body, "error.type").Str
		if typ == "" {
			typ = "invalid_request_error"
		}
		full := msg.Str
		if full == "" {
			full = "upstream rejected the request"
		}
		f.Body = errorBody(full, typ, status)
	}
	return f
}

// anthropicLimits are the anthropic-ratelimit-<kind>-remaining/-reset
// pairs; resets are RFC 3339 times.
var anthropicLimits = [...][2]string{
	{"Anthropic-Ratelimit-Requests-Remaining", "Anthropic-Ratelimit-Requests-Reset"},
	{"Anthropic-Ratelimit-Tokens-Remaining", "Anthropic-Ratelimit-Tokens-Reset"},
	{"Anthropic-Ratelimit-Input-Tokens-Remaining", "Anthropic-Ratelimit-Input-Tokens-Reset"},
	{"Anthropic-Ratelimit-Output-Tokens-Remaining", "Anthropic-Ratelimit-Output-Tokens-Reset"},
}

// anthropicResetAt reads an RFC 3339 reset header as a wait from now.
func anthropicResetAt(v []byte, now time.Time) time.Duration {
	if len(v) == 0 {
		return 0
	}
	t, err := time.Parse(time.RFC3339, string(v))
	if err != nil || !t.After(now) {
		return 0
	}
	return t.Sub(now)
}

// anthropicExhausted says how long a key whose requests or tokens
// remaining reached 0 has nothing left for. An exhausted key whose reset
// is unreadable is held for a minute, Anthropic's window.
func anthropicExhausted(h *fasthttp.ResponseHeader, now time.Time) time.Duration {
	var d time.Duration
	for _, kind := range anthropicLimits {
		if rem := h.Peek(kind[0]); len(rem) == 1 && rem[0] == '0' {
			r := anthropicResetAt(h.Peek(kind[1]), now)
			if r <= 0 {
				r = time.Minute
			}
			d = max(d, r)
		}
	}
	return d
}

// anthropicResetIn is the wait a 429 without retry-after implies: until
// the exhausted limits reset, else until the first limit resets.
func anthropicResetIn(h *fasthttp.ResponseHeader, now time.Time) time.Duration {
	if d := anthropicExhausted(h, now); d > 0 {
		return d
	}
	var first time.Duration
	for _, kind := range anthropicLimits {
		if r := anthropicResetAt(h.Peek(kind[1]), now); r > 0 && (first == 0 || r < first) {
			first = r
		}
	}
	return first
}

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
