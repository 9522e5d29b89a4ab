package adapters

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"path"
	"strings"

	"github.com/valyala/fasthttp"
)

// This file holds Gemini's wire shapes and the translation of an OpenAI
// chat request into a GenerateContentRequest, and of its answer back.

// The Gemini wire shapes, as far as the translation needs them.
type (
	geminiRequest struct {
		Contents          []*geminiContent  `json:"contents"`
		SystemInstruction *geminiContent    `json:"systemInstruction,omitempty"`
		Tools             []geminiTool      `json:"tools,omitempty"`
		ToolConfig        *geminiToolConfig `json:"toolConfig,omitempty"`
		GenerationConfig  *geminiGenConfig  `json:"generationConfig,omitempty"`
	}
	geminiContent struct {
		Role  string       `json:"role,omitempty"`
		Parts []geminiPart `json:"parts"`
	}
	geminiPart struct {
		Text             string                  `json:"text,omitempty"`
		InlineData       *geminiBlob             `json:"inlineData,omitempty"`
		FileData         *geminiFile             `json:"fileData,omitempty"`
		FunctionCall     *geminiFunctionCall     `json:"functionCall,omitempty"`
		FunctionResponse *geminiFunctionResponse `json:"functionResponse,omitempty"`
		// Thought marks a thought summary, which is not the answer.
		Thought          bool   `json:"thought,omitempty"`
		ThoughtSignature string `json:"thoughtSignature,omitempty"`
	}
	geminiBlob struct {
		MimeType string `json:"mimeType"`
		Data     string `json:"data"`
	}
	geminiFile struct {
		MimeType string `json:"mimeType,omitempty"`
		FileURI  string `json:"fileUri"`
	}
	geminiFunctionCall struct {
		Name string          `json:"name"`
		Args json.RawMessage `json:"args,omitempty"`
	}
	geminiFunctionResponse struct {
		Name     string          `json:"name"`
		Response json.RawMessage `json:"response"`
	}
	geminiTool struct {
		FunctionDeclarations []geminiFunctionDecl `json:"functionDeclarations"`
	}
	geminiFunctionDecl struct {
		Name        string        `json:"name"`
		Description string        `json:"description,omitempty"`
		Parameters  *geminiSchema `json:"parameters,omitempty"`
	}
	geminiToolConfig struct {
		FunctionCallingConfig geminiFunctionCalling `json:"functionCallingConfig"`
	}
	geminiFunctionCalling struct {
		Mode                 string   `json:"mode"`
		AllowedFunctionNames []string `json:"allowedFunctionNames,omitempty"`
	}
	geminiGenConfig struct {
		Temperature      *float64      `json:"temperature,omitempty"`
		TopP             *float64      `json:"topP,omitempty"`
		MaxOutputTokens  *int          `json:"maxOutputTokens,omitempty"`
		StopSequences    []string      `json:"stopSequences,omitempty"`
		ResponseMimeType string        `json:"responseMimeType,omitempty"`
		ResponseSchema   *geminiSchema `json:"responseSchema,omitempty"`
	}

	geminiResponse struct {
		Candidates []struct {
			Content struct {
				Parts []geminiPart `json:"parts"`
			} `json:"content"`
			FinishReason string `json:"finishReason"`
		} `json:"candidates"`
		PromptFeedback *struct {
			BlockReason string `json:"blockReason"`
		} `json:"promptFeedback"`
		UsageMetadata *geminiUsage `json:"usageMetadata"`
		ModelVersion  string       `json:"modelVersion"`
		ResponseID    string       `json:"responseId"`
		Error         *geminiError `json:"error"`
	}
	geminiUsage struct {
		PromptTokenCount        int `json:"promptTokenCount"`
		CandidatesTokenCount    int `json:"candidatesTokenCount"`
		ThoughtsTokenCount      int `json:"thoughtsTokenCount"`
		TotalTokenCount         int `json:"totalTokenCount"`
		CachedContentTokenCount int `json:"cachedContentTokenCount"`
	}
	geminiError struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type       string `json:"@type"`
			Reason     string `json:"reason"`
			RetryDelay string `json:"retryDelay"`
		} `json:"details"`
	}
)

// geminiSkipSignature is the placeholder Google documents for function
// calls whose thought signature is not at hand: the gateway's tool call
// ids do not carry Gemini's signatures, and Gemini 3 refuses the first
// function call of a turn without one.
const geminiSkipSignature = "skip_thought_signature_validator"

// geminiRequestBody translates an OpenAI chat request into a
// GenerateContentRequest.
func geminiRequestBody(body []byte) ([]byte, *Failure) {
	var in ChatRequest
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, untranslatable("cannot translate the request for gemini: %v", err)
	}
	out := geminiRequest{Contents: []*geminiContent{}}
	// names remembers each tool call's function, which Gemini's
	// functionResponse names instead of a call id.
	names := map[string]string{}
	add := func(role string, parts ...geminiPart) {
		if len(parts) == 0 {
			return
		}
		// Gemini wants turns to alternate; consecutive messages of one
		// role (parallel tool results, say) are one turn.
		if n := len(out.Contents); n > 0 && out.Contents[n-1].Role == role {
			out.Contents[n-1].Parts = append(out.Contents[n-1].Parts, parts...)
			return
		}
		out.Contents = append(out.Contents, &geminiContent{Role: role, Parts: parts})
	}
	for i, m := range in.Messages {
		switch m.Role {
		case "system", "developer":
			if text := m.Content.String(); text != "" {
				if out.SystemInstruction == nil {
					out.SystemInstruction = &geminiContent{}
				}
				out.SystemInstruction.Parts = append(out.SystemInstruction.Parts, geminiPart{Text: text})
			}
		case "user":
			parts, f := geminiUserParts(i, m.Content)
			if f != nil {
				return nil, f
			}
			add("user", parts...)
		case "assistant":
			var parts []geminiPart
			if text := m.Content.String(); text != "" {
				parts = append(parts, geminiPart{Text: text})
			}
			for j, tc := range m.ToolCalls {
				args := bytes.TrimSpace([]byte(tc.Function.Arguments))
				if len(args) == 0 {
					args = []byte("{}")
				}
				if CheckJSON(args) != nil || args[0] != '{' {
					return nil, untranslatable("messages[%d].tool_calls[%d].function.arguments must be a JSON object", i, j)
				}
				names[tc.ID] = tc.Function.Name
				p := geminiPart{FunctionCall: &geminiFunctionCall{Name: tc.Function.Name, Args: args}}
				if j == 0 {
					p.ThoughtSignature = geminiSkipSignature
				}
				parts = append(parts, p)
			}
			add("model", parts...)
		case "tool", "function":
			name := names[m.ToolCallID]
			if name == "" {
				name = m.Name
			}
			if name == "" {
				return nil, untranslatable("messages[%d]: tool_call_id %q matches no earlier tool call", i, m.ToolCallID)
			}
			add("user", geminiPart{FunctionResponse: &geminiFunctionResponse{Name: name, Response: geminiToolResult(m.Content.String())}})
		default:
			return nil, untranslatable("messages[%d].role %q is not supported", i, m.Role)
		}
	}
	var decls []geminiFunctionDecl
	for i, t := range in.Tools {
		if t.Type != "" && t.Type != "function" {
			return nil, untranslatable("tools[%d].type %q is not supported; gemini takes functions", i, t.Type)
		}
		d := geminiFunctionDecl{Name: t.Function.Name, Description: t.Function.Description}
		if len(t.Function.Parameters) > 0 {
			s := cleanSchema(t.Function.Parameters, false)
			// Gemini refuses an OBJECT without properties: a function
			// that takes nothing declares no parameters.
			if s.Type != "OBJECT" || s.Properties != nil {
				d.Parameters = s
			}
		}
		decls = append(decls, d)
	}
	if len(decls) > 0 {
		out.Tools = []geminiTool{{FunctionDeclarations: decls}}
		mode, name := ToolChoiceOf(in.ToolChoice)
		switch mode {
		case "auto":
			out.ToolConfig = &geminiToolConfig{geminiFunctionCalling{Mode: "AUTO"}}
		case "none":
			out.ToolConfig = &geminiToolConfig{geminiFunctionCalling{Mode: "NONE"}}
		case "required":
			out.ToolConfig = &geminiToolConfig{geminiFunctionCalling{Mode: "ANY"}}
		case "function":
			out.ToolConfig = &geminiToolConfig{geminiFunctionCalling{Mode: "ANY", AllowedFunctionNames: []string{name}}}
		}
	}
	gc := &geminiGenConfig{Temperature: in.Temperature, TopP: in.TopP, StopSequences: in.Stop}
	if n := in.Limit(0); n > 0 {
		gc.MaxOutputTokens = &n
	}
	if rf := in.ResponseFormat; rf != nil {
		switch rf.Type {
		case "json_object":
			gc.ResponseMimeType = "application/json"
		case "json_schema":
			gc.ResponseMimeType = "application/json"
			if rf.JSONSchema != nil && len(rf.JSONSchema.Schema) > 0 {
				gc.ResponseSchema = cleanSchema(rf.JSONSchema.Schema, true)
			}
		}
	}
	if gc.Temperature != nil || gc.TopP != nil || gc.MaxOutputTokens != nil || len(gc.StopSequences) > 0 || gc.ResponseMimeType != "" {
		out.GenerationConfig = gc
	}
	b, err := json.Marshal(&out)
	if err != nil {
		return nil, untranslatable("cannot translate the request for gemini: %v", err)
	}
	return b, nil
}

// geminiUserParts translates a user message's content.
func geminiUserParts(i int, c Content) ([]geminiPart, *Failure) {
	var parts []geminiPart
	for j, p := range c.Parts {
		switch p.Type {
		case "text":
			if p.Text != "" {
				parts = append(parts, geminiPart{Text: p.Text})
			}
		case "image_url":
			if p.ImageURL == nil || p.ImageURL.URL == "" {
				return nil, untranslatable("messages[%d].content[%d].image_url.url is missing", i, j)
			}
			part, ok := geminiImage(p.ImageURL.URL)
			if !ok {
				return nil, untranslatable("messages[%d].content[%d].image_url: a data: URL must be base64", i, j)
			}
			parts = append(parts, part)
		default:
			return nil, untranslatable("messages[%d].content[%d].type %q is not supported by gemini providers", i, j, p.Type)
		}
	}
	return parts, nil
}

// geminiImage turns an image URL into inline data (a data: URL) or a file
// reference (any other URL).
func geminiImage(u string) (geminiPart, bool) {
	if rest, ok := strings.CutPrefix(u, "data:"); ok {
		header, data, ok := strings.Cut(rest, ",")
		params := strings.Split(header, ";")
		if !ok || len(params) < 2 || params[len(params)-1] != "base64" {
			return geminiPart{}, false
		}
		mime := params[0]
		if mime == "" {
			mime = "image/jpeg"
		}
		return geminiPart{InlineData: &geminiBlob{MimeType: mime, Data: data}}, true
	}
	return geminiPart{FileData: &geminiFile{MimeType: geminiMimeOf(u), FileURI: u}}, true
}

// geminiMimeTypes maps the extensions of the image formats Gemini reads;
// a fixed table keeps the guess the same on every machine.
var geminiMimeTypes = map[string]string{
	".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
	".gif": "image/gif", ".heic": "image/heic", ".heif": "image/heif", ".pdf": "application/pdf",
}

func geminiMimeOf(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	if m, ok := geminiMimeTypes[strings.ToLower(path.Ext(u))]; ok {
		return m
	}
	return "image/jpeg"
}

// geminiToolResult wraps a tool message's content as a functionResponse's
// response, which must be an object: a JSON object is passed as it is,
// anything else as text.
func geminiToolResult(content string) json.RawMessage {
	var b []byte
	if t := bytes.TrimSpace([]byte(content)); len(t) > 0 && t[0] == '{' && CheckJSON(t) == nil {
		b = append([]byte(`{"result":`), t...)
	} else {
		text, _ := json.Marshal(content)
		b = append(append([]byte(`{"result":{"content":`), text...), "}"...)
	}
	return append(b, '}')
}

// geminiFinish maps a candidate's finishReason; tools says the answer
// called functions.
func geminiFinish(reason string, tools bool) string {
	switch reason {
	case "MAX_TOKENS":
		return "length"
	case "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY":
		return "content_filter"
	}
	if tools {
		return "tool_calls"
	}
	return "stop"
}

// geminiCallID makes a tool call id: Gemini names none, and the same
// answer must give the same ids, so they hash where the call stands.
func geminiCallID(responseID string, pos int, name string, args []byte) string {
	h := fnv.New64a()
	h.Write([]byte(responseID))
	h.Write([]byte{0})
	h.Write([]byte(name))
	h.Write([]byte{0, byte(pos >> 8), byte(pos)})
	h.Write(args)
	return fmt.Sprintf("call_%016x", h.Sum64())
}

// geminiToolCall translates one functionCall part.
func geminiToolCall(responseID string, pos int, fc *geminiFunctionCall) ToolCall {
	var args bytes.Buffer
	if len(fc.Args) == 0 || json.Compact(&args, fc.Args) != nil || args.Bytes()[0] != '{' {
		args.Reset()
		args.WriteString("{}")
	}
	tc := ToolCall{ID: geminiCallID(responseID, pos, fc.Name, args.Bytes()), Type: "function"}
	tc.Function.Name, tc.Function.Arguments = fc.Name, args.String()
	return tc
}

// usage converts usageMetadata; thinking counts as completion, as OpenAI
// counts reasoning tokens.
func (u *geminiUsage) usage() *UsageJS {
	if u == nil {
		return nil
	}
	out := &UsageJS{PromptTokens: u.PromptTokenCount, CompletionTokens: u.CandidatesTokenCount + u.ThoughtsTokenCount,
		TotalTokens: u.TotalTokenCount}
	if out.TotalTokens == 0 {
		out.TotalTokens = out.PromptTokens + out.CompletionTokens
	}
	if u.CachedContentTokenCount > 0 {
		out.PromptTokensDetails = &struct {
			CachedTokens int `json:"cached_tokens"`
		}{u.CachedContentTokenCount}
	}
	return out
}

// geminiID is the OpenAI id of an answer: Gemini's responseId, else a hash
// of the answer.
func geminiID(responseID string, data []byte) string {
	if responseID != "" {
		return responseID
	}
	h := fnv.New64a()
	h.Write(data)
	return fmt.Sprintf("chatcmpl-gemini-%016x", h.Sum64())
}

// geminiCompletion translates a GenerateContentResponse.
func geminiCompletion(body []byte, upstream string, created int64) ([]byte, Usage, *Failure) {
	var in geminiResponse
	if err := decodeUpstream(body, &in); err != nil {
		return nil, Usage{}, &Failure{Class: Retryable, Status: fasthttp.StatusOK, Msg: "upstream sent a body that is not a Gemini response"}
	}
	if in.Error != nil {
		return nil, Usage{}, geminiErrorFailure(in.Error, in.Error.status(), nil)
	}
	model := in.ModelVersion
	if model == "" {
		model = upstream
	}
	if len(in.Candidates) == 0 && (in.PromptFeedback == nil || in.PromptFeedback.BlockReason == "") {
		// Gemini leaves candidates out only for a blocked prompt.
		return nil, Usage{}, &Failure{Class: Retryable, Status: fasthttp.StatusOK, Msg: "upstream sent no candidates and no reason"}
	}
	id := geminiID(in.ResponseID, body)
	msg := &ChatMessage{Role: "assistant"}
	finish := "content_filter"
	if len(in.Candidates) > 0 {
		cand := in.Candidates[0]
		var text strings.Builder
		for _, p := range cand.Content.Parts {
			switch {
			case p.Thought:
			case p.FunctionCall != nil:
				msg.ToolCalls = append(msg.ToolCalls, geminiToolCall(id, len(msg.ToolCalls), p.FunctionCall))
			default:
				text.WriteString(p.Text)
			}
		}
		if text.Len() > 0 || len(msg.ToolCalls) == 0 {
			msg.Content = Ptr(text.String())
		}
		finish = geminiFinish(cand.FinishReason, len(msg.ToolCalls) > 0)
	} else {
		// No candidates: the prompt itself was blocked (promptFeedback).
		msg.Content = Ptr("")
	}
	out := Completion{
		ID: id, Object: "chat.completion", Created: created, Model: model,
		Choices: []Choice{{Message: msg, FinishReason: &finish}},
		Usage:   in.UsageMetadata.usage(),
	}
	b, err := json.Marshal(&out)
	if err != nil {
		return nil, Usage{}, &Failure{Class: Retryable, Msg: "encoding the translated response: " + err.Error()}
	}
	return b, out.Usage.Usage(), nil
}
