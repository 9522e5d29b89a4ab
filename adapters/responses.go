package adapters

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
)

// This file serves the OpenAI Responses API (POST /v1/responses) on any
// chat-capable target: a Responses request becomes a chat completions
// request, and the chat answer becomes a Response object shaped as
// OpenAI's, so its SDKs parse it. The stream's translation is in
// responses_stream.go. Nothing here keeps state or speaks HTTP: the engine
// stores conversations and hands their history back.

// ResponsesRequest is what the answer to a Responses request echoes, and
// what the engine keeps of it.
type ResponsesRequest struct {
	// Model is the "model" the client asked for; the Response reports it.
	Model string
	// Stream is the client's "stream" flag.
	Stream bool
	// Store is the client's "store", true unless it sent false: a
	// response not stored can be neither fetched nor continued.
	Store bool
	// PreviousResponseID is the response this one continues; "" for none.
	PreviousResponseID string
	// Messages is the conversation as a chat "messages" JSON array: the
	// history, then the new input, without the instructions, which a
	// later response does not inherit. History appends the answer to it.
	Messages []byte
	// Instructions, Tools, ToolChoice and Text are the JSON the Response
	// echoes for them, in the Responses shape, with OpenAI's defaults.
	Instructions, Tools, ToolChoice, Text json.RawMessage
	// Metadata is the client's metadata object, "{}" when it sent none.
	Metadata json.RawMessage
	// User is the client's "user"; "" when it sent none.
	User string
	// Temperature, TopP and MaxOutputTokens are nil when the client sent
	// none.
	Temperature, TopP *float64
	MaxOutputTokens   *int64
	// ParallelToolCalls is the client's, true by default.
	ParallelToolCalls bool
}

// History returns the conversation a later previous_response_id continues
// from: Messages followed by the assistant's answer (from ChatToResponse
// or ResponsesStream.Assistant). It is the history to hand ResponsesToChat.
func (r *ResponsesRequest) History(assistant []byte) []byte {
	return joinJSON(nil, r.Messages, assistant)
}

// responsesBody is a Responses request, each value kept raw until it is
// read, so that a wrong one is named in the error.
type responsesBody struct {
	Model              json.RawMessage `json:"model"`
	Input              json.RawMessage `json:"input"`
	Instructions       json.RawMessage `json:"instructions"`
	Tools              json.RawMessage `json:"tools"`
	ToolChoice         json.RawMessage `json:"tool_choice"`
	Text               json.RawMessage `json:"text"`
	MaxOutputTokens    json.RawMessage `json:"max_output_tokens"`
	Temperature        json.RawMessage `json:"temperature"`
	TopP               json.RawMessage `json:"top_p"`
	ParallelToolCalls  json.RawMessage `json:"parallel_tool_calls"`
	Stream             json.RawMessage `json:"stream"`
	Store              json.RawMessage `json:"store"`
	PreviousResponseID json.RawMessage `json:"previous_response_id"`
	Metadata           json.RawMessage `json:"metadata"`
	User               json.RawMessage `json:"user"`
	Background         json.RawMessage `json:"background"`
	Conversation       json.RawMessage `json:"conversation"`
	Prompt             json.RawMessage `json:"prompt"`
}

// chatParams are the chat request's fields after its model and messages.
type chatParams struct {
	Tools             []Tool          `json:"tools,omitempty"`
	ToolChoice        json.RawMessage `json:"tool_choice,omitempty"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls,omitempty"`
	ResponseFormat    *ResponseFormat `json:"response_format,omitempty"`
	MaxTokens         *int64          `json:"max_tokens,omitempty"`
	Temperature       *float64        `json:"temperature,omitempty"`
	TopP              *float64        `json:"top_p,omitempty"`
	User              string          `json:"user,omitempty"`
	Stream            bool            `json:"stream,omitempty"`
	StreamOptions     *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options,omitempty"`
}

// Bounds OpenAI sets on metadata, kept so that what the engine stores
// stays small.
const (
	maxMetadataKeys  = 16
	maxMetadataKey   = 64
	maxMetadataValue = 512
)

// ResponsesToChat validates a Responses request body and translates it
// into an OpenAI chat completions request body, whose "model" is the
// client's, as it sent it. history is the chat "messages" array of the
// conversation previous_response_id continues (ResponsesRequest.History of
// that response), nil for none; its messages come before the new input,
// after the instructions' system message.
//
// Kept: input (a string, or message, function_call and
// function_call_output items; user text and images, system and developer
// text as system messages, assistant text and refusals), instructions,
// function tools, tool_choice, text.format (json_schema, json_object),
// max_output_tokens (as max_tokens), temperature, top_p,
// parallel_tool_calls, stream (with the usage chunk) and user. Reasoning
// items, reasoning, include, truncation, service_tier and the like are
// dropped; metadata is echoed, not sent, as chat completions refuse it
// unless they store the completion. Hosted tools, files, stored prompts,
// conversations and background responses have no chat form: a Failure
// of class Unsupported, which a target serving the Responses API
// natively may take. Anything else wrong is a BadRequest whose body names
// the parameter.
func ResponsesToChat(body, history []byte) (chat []byte, req *ResponsesRequest, f *Failure) {
	body = bytes.TrimSpace(body)
	if CheckJSON(body) != nil || body[0] != '{' {
		return nil, nil, invalid("", "invalid_json", "The request body must be a JSON object.")
	}
	var in responsesBody
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, nil, invalid("", "invalid_json", "The request body must be a JSON object.")
	}
	req = &ResponsesRequest{
		Store: true, ParallelToolCalls: true, Instructions: json.RawMessage("null"), Tools: json.RawMessage("[]"),
		ToolChoice: json.RawMessage(`"auto"`), Text: json.RawMessage(`{"format":{"type":"text"}}`),
		Metadata: json.RawMessage("{}"),
	}
	var out chatParams
	if f := responsesOptions(&in, req, &out); f != nil {
		return nil, nil, f
	}
	var system []byte
	if !absent(in.Instructions) {
		var text string
		if f := field(in.Instructions, &text, "instructions"); f != nil {
			return nil, nil, f
		}
		req.Instructions = in.Instructions
		system, _ = json.Marshal(Message{Role: "system", Content: Content{Text: text, IsStr: true}})
	}
	if f := responsesTools(&in, req, &out); f != nil {
		return nil, nil, f
	}
	if f := responsesText(in.Text, req, &out); f != nil {
		return nil, nil, f
	}
	msgs, f := chatInput(in.Input)
	if f != nil {
		return nil, nil, f
	}
	if history != nil {
		history = bytes.TrimSpace(history)
		if CheckJSON(history) != nil || history[0] != '[' {
			return nil, nil, invalid("previous_response_id", "invalid_value", "The conversation of previous_response_id cannot be read.")
		}
	}
	newMsgs, _ := json.Marshal(msgs)
	req.Messages = joinJSON(nil, history, newMsgs)
	if len(req.Messages) == 2 {
		return nil, nil, invalid("input", "invalid_value", "input must hold at least one message.")
	}
	rest, _ := json.Marshal(&out)
	chat = make([]byte, 0, len(in.Model)+len(system)+len(req.Messages)+len(rest)+32)
	chat = append(chat, `{"model":`...)
	chat = append(chat, in.Model...)
	chat = append(chat, `,"messages":`...)
	chat = joinJSON(chat, system, req.Messages)
	if len(rest) > 2 {
		chat = append(append(chat, ','), rest[1:]...)
	} else {
		chat = append(chat, '}')
	}
	return chat, req, nil
}

// responsesOptions reads the request's scalar parameters.
func responsesOptions(in *responsesBody, req *ResponsesRequest, out *chatParams) *Failure {
	if absent(in.Model) {
		return missingParam("model")
	}
	if f := field(in.Model, &req.Model, "model"); f != nil {
		return f
	}
	if req.Model == "" {
		return invalid("model", "invalid_value", "model must not be empty.")
	}
	var background bool
	if f := field(in.Background, &background, "background"); f != nil {
		return f
	}
	switch {
	case background:
		return unsupported("background", "Background responses need a target that serves the Responses API natively.")
	case !absent(in.Conversation):
		return unsupported("conversation", "Conversations need a target that serves the Responses API natively; use previous_response_id.")
	case !absent(in.Prompt):
		return unsupported("prompt", "Stored prompts need a target that serves the Responses API natively.")
	}
	for _, v := range []struct {
		raw   json.RawMessage
		to    any
		param string
	}{
		{in.Temperature, &req.Temperature, "temperature"},
		{in.TopP, &req.TopP, "top_p"},
		{in.MaxOutputTokens, &req.MaxOutputTokens, "max_output_tokens"},
		{in.ParallelToolCalls, &req.ParallelToolCalls, "parallel_tool_calls"},
		{in.Stream, &req.Stream, "stream"},
		{in.Store, &req.Store, "store"},
		{in.PreviousResponseID, &req.PreviousResponseID, "previous_response_id"},
		{in.User, &req.User, "user"},
	} {
		if f := field(v.raw, v.to, v.param); f != nil {
			return f
		}
	}
	if req.MaxOutputTokens != nil && *req.MaxOutputTokens < 1 {
		return invalid("max_output_tokens", "invalid_value", "max_output_tokens must be at least 1.")
	}
	if !absent(in.Metadata) {
		var md map[string]string
		if f := field(in.Metadata, &md, "metadata"); f != nil {
			return f
		}
		if len(md) > maxMetadataKeys {
			return invalid("metadata", "invalid_value", fmt.Sprintf("metadata may hold at most %d keys.", maxMetadataKeys))
		}
		for k, v := range md {
			if len(k) > maxMetadataKey || len(v) > maxMetadataValue {
				return invalid("metadata", "invalid_value", fmt.Sprintf("metadata keys may be %d characters long and values %d at most.", maxMetadataKey, maxMetadataValue))
			}
		}
		req.Metadata = in.Metadata
	}
	out.MaxTokens, out.Temperature, out.TopP, out.User = req.MaxOutputTokens, req.Temperature, req.TopP, req.User
	if req.Stream {
		out.Stream = true
		out.StreamOptions = &struct {
			IncludeUsage bool `json:"include_usage"`
		}{IncludeUsage: true}
	}
	return nil
}

// responsesTool is a Responses tool; the function kind is the one chat
// completions can call.
type responsesTool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Description *string         `json:"description"`
	Parameters  json.RawMessage `json:"parameters"`
	Strict      *bool           `json:"strict"`
}

// responsesTools reads tools and tool_choice. Chat completions refuse
// tool_choice and parallel_tool_calls without tools, so they go up only
// with tools.
func responsesTools(in *responsesBody, req *ResponsesRequest, out *chatParams) *Failure {
	var tools []responsesTool
	if f := field(in.Tools, &tools, "tools"); f != nil {
		return f
	}
	for i := range tools {
		t := &tools[i]
		p := "tools[" + strconv.Itoa(i) + "]"
		switch {
		case t.Type != "function":
			return unsupported(p+".type", fmt.Sprintf("Tools of type %q have no chat completions form; only function tools do.", t.Type))
		case t.Name == "":
			return missingParam(p + ".name")
		}
		if absent(t.Parameters) {
			t.Parameters = nil
		}
		var ct Tool
		ct.Type = "function"
		ct.Function.Name, ct.Function.Parameters, ct.Function.Strict = t.Name, t.Parameters, t.Strict
		if t.Description != nil {
			ct.Function.Description = *t.Description
		}
		out.Tools = append(out.Tools, ct)
	}
	if tools != nil {
		req.Tools, _ = json.Marshal(tools)
	}
	if !absent(in.ToolChoice) {
		chat, echo, f := chatToolChoice(in.ToolChoice)
		if f != nil {
			return f
		}
		req.ToolChoice = echo
		if len(tools) > 0 {
			out.ToolChoice = chat
		}
	}
	if len(tools) > 0 && !absent(in.ParallelToolCalls) {
		out.ParallelToolCalls = &req.ParallelToolCalls
	}
	return nil
}

// chatToolChoice translates tool_choice, returning its chat form and the
// Response's echo of it.
func chatToolChoice(raw json.RawMessage) (chat, echo json.RawMessage, f *Failure) {
	if raw[0] == '"' {
		var mode string
		_ = json.Unmarshal(raw, &mode)
		if mode != "auto" && mode != "none" && mode != "required" {
			return nil, nil, invalid("tool_choice", "invalid_value", fmt.Sprintf("Invalid value for 'tool_choice': %q; expected auto, none, required or a function.", mode))
		}
		return raw, raw, nil
	}
	var tc struct {
		Type string `json:"type"`
		Name string `json:"name"`
	}
	if f := field(raw, &tc, "tool_choice"); f != nil {
		return nil, nil, f
	}
	switch {
	case tc.Type != "function":
		return nil, nil, unsupported("tool_choice.type", fmt.Sprintf("A tool_choice of type %q has no chat completions form.", tc.Type))
	case tc.Name == "":
		return nil, nil, missingParam("tool_choice.name")
	}
	name, _ := json.Marshal(tc.Name)
	chat = append(append([]byte(`{"type":"function","function":{"name":`), name...), "}}"...)
	echo = append(append([]byte(`{"type":"function","name":`), name...), '}')
	return chat, echo, nil
}

// responsesText reads text.format: plain text, json_schema or
// json_object. A json_schema's description has no place in chat's.
func responsesText(raw json.RawMessage, req *ResponsesRequest, out *chatParams) *Failure {
	var text struct {
		Format *struct {
			Type   string          `json:"type"`
			Name   string          `json:"name"`
			Schema json.RawMessage `json:"schema"`
			Strict *bool           `json:"strict"`
		} `json:"format"`
	}
	if f := field(raw, &text, "text"); f != nil || absent(raw) {
		return f
	}
	req.Text = raw
	switch format := text.Format; {
	case format == nil || format.Type == "text":
	case format.Type == "json_object":
		out.ResponseFormat = &ResponseFormat{Type: "json_object"}
	case format.Type == "json_schema":
		if format.Name == "" {
			return missingParam("text.format.name")
		}
		if absent(format.Schema) {
			return missingParam("text.format.schema")
		}
		if format.Schema[0] != '{' {
			return invalid("text.format.schema", "invalid_type", "Invalid type for 'text.format.schema': expected an object.")
		}
		out.ResponseFormat = &ResponseFormat{Type: "json_schema", JSONSchema: &struct {
			Name   string          `json:"name"`
			Schema json.RawMessage `json:"schema"`
			Strict *bool           `json:"strict,omitempty"`
		}{Name: format.Name, Schema: format.Schema, Strict: format.Strict}}
	default:
		return invalid("text.format.type", "invalid_value", fmt.Sprintf("Invalid value for 'text.format.type': %q; expected text, json_schema or json_object.", format.Type))
	}
	return nil
}

// responsesItem is one item of a Responses input list, as far as chat
// completions can carry it.
type responsesItem struct {
	Type      string          `json:"type"`
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	CallID    string          `json:"call_id"`
	Name      string          `json:"name"`
	Arguments string          `json:"arguments"`
	Output    json.RawMessage `json:"output"`
}

// responsesPart is one content part of an input message or of a function
// call's output.
type responsesPart struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	Refusal  string `json:"refusal"`
	ImageURL string `json:"image_url"`
	FileID   string `json:"file_id"`
	Detail   string `json:"detail"`
}

// chatInput translates input into chat messages. The function_call items
// that follow an assistant message, or each other, are that one
// assistant message's tool calls, as chat completions carry them.
func chatInput(raw json.RawMessage) ([]Message, *Failure) {
	if absent(raw) {
		return nil, missingParam("input")
	}
	if raw[0] == '"' {
		var s string
		_ = json.Unmarshal(raw, &s)
		return []Message{{Role: "user", Content: Content{Text: s, IsStr: true}}}, nil
	}
	var items []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return nil, invalid("input", "invalid_type", "Invalid type for 'input': expected a string or an array of input items.")
	}
	msgs := make([]Message, 0, len(items))
	// calls is the index of the assistant message a function_call joins;
	// -1 when the next one starts its own.
	calls := -1
	for i, raw := range items {
		p := "input[" + strconv.Itoa(i) + "]"
		var it responsesItem
		if raw[0] != '{' {
			return nil, invalid(p, "invalid_type", fmt.Sprintf("Invalid type for '%s': expected an object.", p))
		}
		if f := field(raw, &it, p); f != nil {
			return nil, f
		}
		switch it.Type {
		case "message", "":
			if it.Type == "" && it.Role == "" {
				return nil, missingParam(p + ".type")
			}
			m, f := chatMessage(p, &it)
			if f != nil {
				return nil, f
			}
			msgs = append(msgs, m)
			calls = -1
			if m.Role == "assistant" {
				calls = len(msgs) - 1
			}
		case "function_call":
			if it.CallID == "" {
				return nil, missingParam(p + ".call_id")
			}
			if it.Name == "" {
				return nil, missingParam(p + ".name")
			}
			if calls < 0 {
				msgs = append(msgs, Message{Role: "assistant"})
				calls = len(msgs) - 1
			}
			tc := ToolCall{ID: it.CallID, Type: "function"}
			tc.Function.Name, tc.Function.Arguments = it.Name, it.Arguments
			msgs[calls].ToolCalls = append(msgs[calls].ToolCalls, tc)
		case "function_call_output":
			if it.CallID == "" {
				return nil, missingParam(p + ".call_id")
			}
			c, f := chatContent(p+".output", "tool", it.Output)
			if f != nil {
				return nil, f
			}
			msgs = append(msgs, Message{Role: "tool", ToolCallID: it.CallID, Content: c})
			calls = -1
		case "reasoning":
			// The model's own reasoning, replayed: no chat target takes
			// it back, and the answer stands without it.
		default:
			return nil, unsupported(p+".type", fmt.Sprintf("Input items of type %q have no chat completions form.", it.Type))
		}
	}
	return msgs, nil
}

// chatMessage translates a message item. Developer messages become system
// messages, which every chat target knows.
func chatMessage(p string, it *responsesItem) (Message, *Failure) {
	role := it.Role
	switch role {
	case "user", "assistant", "system":
	case "developer":
		role = "system"
	case "":
		return Message{}, missingParam(p + ".role")
	default:
		return Message{}, invalid(p+".role", "invalid_value", fmt.Sprintf("Invalid value for '%s.role': %q; expected user, system, developer or assistant.", p, role))
	}
	c, f := chatContent(p+".content", role, it.Content)
	return Message{Role: role, Content: c}, f
}

// chatContent translates a message's content, or a function call's
// output (role "tool"). Only user messages hold images. A single text
// part becomes a plain string, the form every chat target takes.
func chatContent(p, role string, raw json.RawMessage) (Content, *Failure) {
	if absent(raw) {
		return Content{}, missingParam(p)
	}
	if raw[0] == '"' {
		var s string
		if f := field(raw, &s, p); f != nil {
			return Content{}, f
		}
		return Content{Text: s, IsStr: true}, nil
	}
	if raw[0] != '[' {
		return Content{}, invalid(p, "invalid_type", fmt.Sprintf("Invalid type for '%s': expected a string or an array of content parts.", p))
	}
	var parts []responsesPart
	if f := field(raw, &parts, p); f != nil {
		return Content{}, f
	}
	out := make([]Part, 0, len(parts))
	for j, part := range parts {
		pp := p + "[" + strconv.Itoa(j) + "]"
		switch part.Type {
		case "input_text", "output_text":
			out = append(out, Part{Type: "text", Text: part.Text})
		case "refusal":
			if role != "assistant" {
				return Content{}, invalid(pp+".type", "invalid_value", fmt.Sprintf("Only assistant messages may hold a refusal (%s).", pp))
			}
			out = append(out, Part{Type: "text", Text: part.Refusal})
		case "input_image":
			switch {
			case role == "tool":
				return Content{}, unsupported(pp+".type", "A function_call_output with images has no chat completions form.")
			case role != "user":
				return Content{}, invalid(pp+".type", "invalid_value", fmt.Sprintf("Only user messages may hold images (%s).", pp))
			case part.ImageURL == "" && part.FileID != "":
				return Content{}, unsupported(pp+".file_id", "Images given by file_id need a target that serves the Responses API natively; send an image_url (a data URL will do).")
			case part.ImageURL == "":
				return Content{}, missingParam(pp + ".image_url")
			}
			img := Part{Type: "image_url", ImageURL: &struct {
				URL    string `json:"url"`
				Detail string `json:"detail,omitempty"`
			}{URL: part.ImageURL, Detail: part.Detail}}
			out = append(out, img)
		case "input_file", "input_audio":
			return Content{}, unsupported(pp+".type", fmt.Sprintf("Content parts of type %q have no chat completions form.", part.Type))
		default:
			return Content{}, invalid(pp+".type", "invalid_value", fmt.Sprintf("Invalid value for '%s.type': %q.", pp, part.Type))
		}
	}
	if len(out) == 1 && out[0].Type == "text" {
		return Content{Text: out[0].Text, IsStr: true}, nil
	}
	return Content{Parts: out}, nil
}

// absent reports whether a raw value is missing or null.
func absent(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// field decodes raw into v unless it is absent. A value of the wrong type
// is the client's error, named by param and the path below it.
func field(raw json.RawMessage, v any, param string) *Failure {
	if absent(raw) {
		return nil
	}
	err := json.Unmarshal(raw, v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) || te.Type == nil {
		return invalid(param, "invalid_value", fmt.Sprintf("Invalid value for '%s'.", param))
	}
	if te.Field != "" {
		param += "." + te.Field
	}
	got, _, _ := strings.Cut(te.Value, " ")
	return invalid(param, "invalid_type", fmt.Sprintf("Invalid type for '%s': expected %s, but got %s.", param, kindName(te.Type), got))
}

// kindName names a Go type as a JSON value, for an error message.
func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "an object"
}

// missingParam is a request without a parameter it needs.
func missingParam(param string) *Failure {
	return invalid(param, "missing_required_parameter", "Missing required parameter: '"+param+"'.")
}

// invalid is a request the Responses API refuses, in OpenAI's error shape
// with param naming the field ("" for the whole body).
func invalid(param, code, msg string) *Failure {
	return paramFailure(BadRequest, param, code, msg)
}

// unsupported is a request chat completions cannot express; a target that
// serves the Responses API natively may still take it.
func unsupported(param, msg string) *Failure {
	return paramFailure(Unsupported, param, "unsupported_value", msg)
}

func paramFailure(class Class, param, code, msg string) *Failure {
	var p *string
	if param != "" {
		p = &param
	}
	b, _ := json.Marshal(struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    string  `json:"code"`
		} `json:"error"`
	}{Error: struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	}{Message: msg, Type: "invalid_request_error", Param: p, Code: code}})
	return &Failure{Class: class, Status: fasthttp.StatusBadRequest, Msg: msg, Body: b}
}

// joinJSON appends to dst one JSON array holding, in order, the elements
// of each part that is an array and each part that is an object itself;
// nil parts add nothing. Elements are copied, not re-encoded.
func joinJSON(dst []byte, parts ...[]byte) []byte {
	dst = append(dst, '[')
	n := len(dst)
	for _, p := range parts {
		p = bytes.TrimSpace(p)
		if len(p) >= 2 && p[0] == '[' {
			p = bytes.TrimSpace(p[1 : len(p)-1])
		}
		if len(p) == 0 {
			continue
		}
		if len(dst) > n {
			dst = append(dst, ',')
		}
		dst = append(dst, p...)
	}
	return append(dst, ']')
}
