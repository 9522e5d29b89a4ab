package adapters

// This file renders what goes back to a Messages API client: a chat
// completion as an Anthropic message, and errors in Anthropic's shape.
// messagesin.go translates the request.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"strings"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// MessagesErrorBody renders an error in Anthropic's shape,
// {"type":"error","error":{"type","message"}}, the type named for the
// HTTP status as Anthropic names it: for the gateway's own errors on the
// Messages endpoints.
func MessagesErrorBody(status int, msg string) []byte {
	b, _ := json.Marshal(messagesError{Type: "error", Error: messagesErrorDetail{Type: messagesErrorType(status), Message: msg}})
	return b
}

type (
	messagesError struct {
		Type  string              `json:"type"`
		Error messagesErrorDetail `json:"error"`
	}
	messagesErrorDetail struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	}
)

// messagesErrorType is Anthropic's error type for an HTTP status. Other
// 4xx are invalid_request_error, as Anthropic's docs say; other 5xx
// api_error.
func messagesErrorType(status int) string {
	switch status {
	case fasthttp.StatusUnauthorized:
		return "authentication_error"
	case fasthttp.StatusForbidden:
		return "permission_error"
	case fasthttp.StatusNotFound:
		return "not_found_error"
	case fasthttp.StatusRequestEntityTooLarge:
		return "request_too_large"
	case fasthttp.StatusTooManyRequests:
		return "rate_limit_error"
	case fasthttp.StatusServiceUnavailable, 529:
		return "overloaded_error"
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}

// messagesReply is a Message object, as Anthropic returns it.
type messagesReply struct {
	ID           string           `json:"id"`
	Type         string           `json:"type"`
	Role         string           `json:"role"`
	Model        string           `json:"model"`
	Content      []anthropicBlock `json:"content"`
	StopReason   string           `json:"stop_reason"`
	StopSequence *string          `json:"stop_sequence"`
	Usage        anthropicUsage   `json:"usage"`
}

// ChatToMessage translates a chat.completion into the Message Anthropic
// would have answered: its text as a text block, its tool calls as
// tool_use blocks (arguments that are not a JSON object become {}), the
// finish reason as a stop_reason, and its usage, cached prompt tokens as
// cache_read_input_tokens. The model is the one the client asked for.
func ChatToMessage(completion []byte, req *MessagesRequest) ([]byte, *Failure) {
	var c Completion
	if err := decodeUpstream(completion, &c); err != nil {
		return nil, &Failure{Class: Retryable, Msg: "upstream sent a body that is not a chat completion"}
	}
	if len(c.Choices) == 0 || c.Choices[0].Message == nil {
		return nil, &Failure{Class: Retryable, Msg: "upstream answered without a choice"}
	}
	m := c.Choices[0].Message
	out := messagesReply{ID: messagesID(c.ID), Type: "message", Role: "assistant", Model: req.Model, Content: []anthropicBlock{}}
	text := ""
	switch {
	case m.Content != nil && *m.Content != "":
		text = *m.Content
	case m.Refusal != nil:
		text = *m.Refusal
	}
	if text != "" {
		out.Content = append(out.Content, anthropicBlock{Type: "text", Text: text})
	}
	for _, tc := range m.ToolCalls {
		out.Content = append(out.Content, anthropicBlock{Type: "tool_use", ID: toolUseID(tc.ID), Name: tc.Function.Name,
			Input: toolInput(tc.Function.Arguments)})
	}
	finish := ""
	if f := c.Choices[0].FinishReason; f != nil {
		finish = *f
	}
	if m.Refusal != nil && *m.Refusal != "" {
		finish = "content_filter"
	}
	matched := gjson.GetBytes(completion, "choices.0.stop_reason")
	out.StopReason, out.StopSequence = messagesStop(finish, matched.Str, len(m.ToolCalls) > 0, req.StopSequences)
	out.Usage = messagesUsage(c.Usage, req.InputTokens)
	b, err := marshalPlain(out)
	if err != nil {
		return nil, &Failure{Class: Retryable, Msg: "encoding the translated reply: " + err.Error()}
	}
	return b, nil
}

// messagesID is a Message id for a chat completion's.
func messagesID(chatID string) string {
	switch {
	case chatID == "":
		return "msg_" + randomHex()
	case strings.HasPrefix(chatID, "msg_"):
		return chatID
	}
	return "msg_" + chatID
}

// toolUseID is a tool_use id for a tool call's; a client needs one to
// answer the call.
func toolUseID(callID string) string {
	if callID == "" {
		return "toolu_" + randomHex()
	}
	return callID
}

func randomHex() string {
	var b [12]byte
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return hex.EncodeToString(b[:])
}

// toolInput is a tool_use input for a tool call's arguments, which must
// be a JSON object; anything else (arguments cut short at max_tokens) is
// an empty one.
func toolInput(args string) json.RawMessage {
	a := []byte(strings.TrimSpace(args))
	if len(a) == 0 || a[0] != '{' || CheckJSON(a) != nil {
		return json.RawMessage("{}")
	}
	var b bytes.Buffer
	_ = json.Compact(&b, a)
	return b.Bytes()
}

// messagesStop maps a finish_reason to a stop_reason and stop_sequence.
// Chat does not say which stop sequence matched; vLLM does, in the
// choice's stop_reason, and only then is the stop a stop_sequence.
func messagesStop(finish, matched string, tools bool, stops []string) (string, *string) {
	switch finish {
	case "length":
		return "max_tokens", nil
	case "tool_calls", "function_call":
		return "tool_use", nil
	case "content_filter":
		return "refusal", nil
	}
	if tools {
		// Some servers finish a turn that calls tools with "stop";
		// Anthropic clients look for tool_use.
		return "tool_use", nil
	}
	for _, s := range stops {
		if s == matched && matched != "" {
			return "stop_sequence", &s
		}
	}
	return "end_turn", nil
}

// messagesUsage is a Messages usage for a chat usage: Anthropic counts
// cached prompt tokens apart from input_tokens. Without one, the prompt
// is the estimate.
func messagesUsage(u *UsageJS, estimate int) anthropicUsage {
	if u == nil {
		return anthropicUsage{InputTokens: estimate, CacheRead: Ptr(0), CacheCreation: Ptr(0)}
	}
	prompt, cached := max(u.PromptTokens, 0), 0
	if u.PromptTokensDetails != nil {
		cached = min(max(u.PromptTokensDetails.CachedTokens, 0), prompt)
	}
	return anthropicUsage{InputTokens: prompt - cached, OutputTokens: max(u.CompletionTokens, 0),
		CacheRead: Ptr(cached), CacheCreation: Ptr(0)}
}
