package adapters

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"

	"github.com/tidwall/gjson"
)

// This file holds the Messages API's wire types and the translation of an
// OpenAI chat request into one, and of its answer back.

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
