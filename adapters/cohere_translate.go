package adapters

import (
	"encoding/json"
	"fmt"
)

// This file holds Cohere's v2 chat request shapes and the translation of
// an OpenAI chat request into one.

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
