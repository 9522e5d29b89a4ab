package adapters

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// This file holds the OpenAI Chat Completions shapes that adapters for
// other protocols decode requests from and encode replies into. The
// openai adapter never uses them: it forwards bytes.

// ChatRequest is an OpenAI chat completion request, as far as translating
// it to another protocol needs.
type ChatRequest struct {
	Model               string          `json:"model"`
	Messages            []Message       `json:"messages"`
	Stream              bool            `json:"stream,omitempty"`
	MaxTokens           *int            `json:"max_tokens,omitempty"`
	MaxCompletionTokens *int            `json:"max_completion_tokens,omitempty"`
	Temperature         *float64        `json:"temperature,omitempty"`
	TopP                *float64        `json:"top_p,omitempty"`
	Stop                StringList      `json:"stop,omitempty"`
	Tools               []Tool          `json:"tools,omitempty"`
	ToolChoice          json.RawMessage `json:"tool_choice,omitempty"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls,omitempty"`
	ResponseFormat      *ResponseFormat `json:"response_format,omitempty"`
	Metadata            map[string]any  `json:"metadata,omitempty"`
	User                string          `json:"user,omitempty"`
	Seed                *int            `json:"seed,omitempty"`
	PresencePenalty     *float64        `json:"presence_penalty,omitempty"`
	FrequencyPenalty    *float64        `json:"frequency_penalty,omitempty"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options,omitempty"`
}

// Limit returns max_completion_tokens or max_tokens, else def.
func (r *ChatRequest) Limit(def int) int {
	switch {
	case r.MaxCompletionTokens != nil:
		return *r.MaxCompletionTokens
	case r.MaxTokens != nil:
		return *r.MaxTokens
	}
	return def
}

// Message is one OpenAI chat message.
type Message struct {
	Role       string     `json:"role"`
	Content    Content    `json:"content"`
	Name       string     `json:"name,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

// Content is a message's content: a string, or a list of parts; both
// decode into Parts (a string as one text part).
type Content struct {
	Parts []Part
	// Text is set when the content was a plain string.
	Text  string
	IsStr bool
}

// Part is one content part: text or an image.
type Part struct {
	Type     string `json:"type"`
	Text     string `json:"text,omitempty"`
	ImageURL *struct {
		URL    string `json:"url"`
		Detail string `json:"detail,omitempty"`
	} `json:"image_url,omitempty"`
}

// UnmarshalJSON accepts a string, null or a list of parts.
func (c *Content) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || bytes.Equal(b, []byte("null")):
		return nil
	case b[0] == '"':
		if err := json.Unmarshal(b, &c.Text); err != nil {
			return err
		}
		c.IsStr = true
		c.Parts = []Part{{Type: "text", Text: c.Text}}
		return nil
	case b[0] == '[':
		return json.Unmarshal(b, &c.Parts)
	}
	return fmt.Errorf("content must be a string or a list of parts")
}

// MarshalJSON writes the content back in the form it came in.
func (c Content) MarshalJSON() ([]byte, error) {
	if c.IsStr {
		return marshalPlain(c.Text)
	}
	if c.Parts == nil {
		return []byte("null"), nil
	}
	return marshalPlain(c.Parts)
}

// marshalPlain encodes v as JSON without escaping <, > and &: prompts
// and answers are full of code, where each escape costs six bytes.
func marshalPlain(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// String joins the text parts.
func (c Content) String() string {
	if c.IsStr {
		return c.Text
	}
	var b bytes.Buffer
	for _, p := range c.Parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

// StringList is `stop`: a string or a list of strings.
type StringList []string

// UnmarshalJSON accepts a string, null or a list.
func (s *StringList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = StringList{one}
		return nil
	}
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	return json.Unmarshal(b, (*[]string)(s))
}

// Tool is a function the model may call.
type Tool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Parameters  json.RawMessage `json:"parameters,omitempty"`
		Strict      *bool           `json:"strict,omitempty"`
	} `json:"function"`
}

// ToolCall is a call the model made.
type ToolCall struct {
	// Index is set in stream deltas only.
	Index    *int   `json:"index,omitempty"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// ResponseFormat is `response_format`.
type ResponseFormat struct {
	Type       string `json:"type"`
	JSONSchema *struct {
		Name   string          `json:"name"`
		Schema json.RawMessage `json:"schema"`
		Strict *bool           `json:"strict,omitempty"`
	} `json:"json_schema,omitempty"`
}

// ToolChoiceOf decodes tool_choice: "auto", "none", "required", or a
// named function. It returns the mode and, for a named function, its name.
func ToolChoiceOf(raw json.RawMessage) (mode, name string) {
	if len(raw) == 0 {
		return "", ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, ""
	}
	var obj struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if json.Unmarshal(raw, &obj) == nil && obj.Function.Name != "" {
		return "function", obj.Function.Name
	}
	return "", ""
}

// Completion is an OpenAI chat.completion response.
type Completion struct {
	ID                string   `json:"id"`
	Object            string   `json:"object"`
	Created           int64    `json:"created"`
	Model             string   `json:"model"`
	Choices           []Choice `json:"choices"`
	Usage             *UsageJS `json:"usage,omitempty"`
	SystemFingerprint string   `json:"system_fingerprint,omitempty"`
}

// Choice is one choice of a completion or a chunk.
type Choice struct {
	Index        int          `json:"index"`
	Message      *ChatMessage `json:"message,omitempty"`
	Delta        *ChatMessage `json:"delta,omitempty"`
	FinishReason *string      `json:"finish_reason"`
}

// ChatMessage is a choice's message or delta.
type ChatMessage struct {
	Role      string     `json:"role,omitempty"`
	Content   *string    `json:"content,omitempty"`
	Refusal   *string    `json:"refusal,omitempty"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

// UsageJS is OpenAI's usage object.
type UsageJS struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details,omitempty"`
	CompletionTokensDetails *struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details,omitempty"`
}

// Usage converts the usage object for the engine.
func (u *UsageJS) Usage() Usage {
	if u == nil {
		return Usage{}
	}
	return Usage{Prompt: u.PromptTokens, Completion: u.CompletionTokens, Known: true}
}

// Chunk is an OpenAI chat.completion.chunk.
type Chunk struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []Choice `json:"choices"`
	Usage   *UsageJS `json:"usage,omitempty"`
}

// Ptr returns a pointer to v, for the optional fields above.
func Ptr[T any](v T) *T { return &v }

// appendFrame appends v as one SSE data frame.
func appendFrame(dst []byte, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("encoding an OpenAI chunk: " + err.Error())
	}
	dst = append(dst, "data: "...)
	dst = append(dst, b...)
	return append(dst, "\n\n"...)
}

// errorBody renders an OpenAI error object for relaying an upstream's
// refusal of the client's request.
func errorBody(msg, typ string, status int) []byte {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": msg, "type": typ, "param": nil, "code": strconv.Itoa(status)}})
	return b
}

// eventName returns the value of a frame's "event:" line, if any.
func eventName(frame []byte) []byte {
	for len(frame) > 0 {
		var line []byte
		line, frame = nextLine(frame)
		if v, ok := bytes.CutPrefix(line, []byte("event:")); ok {
			return bytes.TrimSpace(v)
		}
	}
	return nil
}
