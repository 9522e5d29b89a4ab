package adapters

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unsafe"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// This file serves Anthropic's Messages API (POST /v1/messages) as an
// ingress. A Messages request is translated once into a chat completions
// body, which any target can serve; the chat answer is translated back
// into a Message (messagesin_stream.go does streams). An Anthropic target
// skips both translations: it gets the client's body with only "model"
// patched (anthropic.Messages).
//
// What the translation keeps: system (a string or text blocks, joined by
// blank lines) as a leading system message; text, image (base64 and url
// sources), tool_use and tool_result blocks; tools and tool_choice
// (disable_parallel_tool_use as parallel_tool_calls); max_tokens,
// temperature, top_p, stop_sequences, stream and metadata.user_id. What it
// drops, since chat completions has no form for them: top_k, thinking
// (and thinking blocks of earlier turns), cache_control, service_tier and
// any field it does not know. What a chat target cannot serve at all
// (documents, server tools, Files API sources) marks the request
// Untranslatable rather than being dropped.

// MessagesRequest is what the gateway keeps of a client's Messages
// request: what the native path and the reply need.
type MessagesRequest struct {
	// Model is "model" as the client asked for it. Translated replies
	// name it, whichever target answered.
	Model string
	// ModelStart and ModelEnd bound the raw JSON value of "model" in the
	// client's Messages body, for Call on the native path.
	ModelStart, ModelEnd int
	// Stream is the client's "stream" flag.
	Stream bool
	// StopSequences are the client's stop_sequences, to report which one
	// stopped the model where the upstream says.
	StopSequences []string
	// InputTokens is the gateway's estimate of the prompt, as CountTokens
	// makes it. A translated stream's message_start reports it, since a
	// chat stream tells its usage only at the end; message_delta then
	// carries the real count.
	InputTokens int
	// Untranslatable, when set, says what in the request chat
	// completions cannot express: only a target that serves Messages
	// natively can take it, and other targets must refuse it as
	// Unsupported with this reason. The chat body is still built, without
	// those parts, for routing to read.
	Untranslatable string
}

// messagesImageTokens is what one image counts for in the prompt
// estimate, the same as the engine's imageTokens: OpenAI's count for a
// 1024x1024 image, as providers count pixels, not base64 bytes.
const messagesImageTokens = 765

// MessagesToChat validates a client's Messages request body as Anthropic
// does (model, max_tokens and messages required) and translates it into an
// OpenAI chat completions body, whose "model" is the client's, once. A
// stream asks for the usage chunk. A failure is a BadRequest whose Body is
// in Anthropic's error shape.
func MessagesToChat(body []byte) (chat []byte, req *MessagesRequest, f *Failure) {
	if err := CheckJSON(body); err != nil {
		return nil, nil, messagesBad("request body: %v", err)
	}
	root := gjson.Parse(unsafe.String(unsafe.SliceData(body), len(body)))
	if !root.IsObject() {
		return nil, nil, messagesBad("request body must be a JSON object")
	}
	t := messagesTranslator{req: &MessagesRequest{ModelStart: -1}}
	out := &t.chat
	var system, messages, tools, toolChoice gjson.Result
	var seen uint32
	root.ForEach(func(k, v gjson.Result) bool {
		bit := messagesFieldBit(k.Str)
		if bit != 0 && seen&bit != 0 {
			// Anthropic reads the last of duplicate keys, the gateway the
			// first: a second "model" would route one way and run another.
			f = messagesBad("%s: sent twice", k.Str)
			return false
		}
		seen |= bit
		switch k.Str {
		case "model":
			if v.Type != gjson.String || v.Str == "" {
				f = messagesBad("model: must be a non-empty string")
				return false
			}
			t.req.Model = strings.Clone(v.Str)
			t.req.ModelStart, t.req.ModelEnd = v.Index, v.Index+len(v.Raw)
		case "max_tokens":
			if v.Type != gjson.Number || v.Num < 1 || v.Num > 1<<31-1 || v.Num != float64(int64(v.Num)) {
				f = messagesBad("max_tokens: must be a whole number from 1")
				return false
			}
			out.MaxTokens = Ptr(int(v.Num))
		case "messages":
			messages = v
		case "system":
			system = v
		case "tools":
			tools = v
		case "tool_choice":
			toolChoice = v
		case "stream":
			switch v.Type {
			case gjson.True:
				t.req.Stream = true
			case gjson.False, gjson.Null:
			default:
				f = messagesBad("stream: must be true or false")
				return false
			}
		case "temperature", "top_p":
			switch v.Type {
			case gjson.Number:
				if k.Str == "temperature" {
					out.Temperature = Ptr(v.Num)
				} else {
					out.TopP = Ptr(v.Num)
				}
			case gjson.Null:
			default:
				f = messagesBad("%s: must be a number", k.Str)
				return false
			}
		case "stop_sequences":
			f = t.stopSequences(v)
		case "metadata":
			switch {
			case v.IsObject():
				if id := v.Get("user_id"); id.Type == gjson.String {
					out.User = id.Str
				}
			case v.Type != gjson.Null:
				f = messagesBad("metadata: must be an object")
			}
		}
		return f == nil
	})
	switch {
	case f != nil:
		return nil, nil, f
	case t.req.ModelStart < 0:
		return nil, nil, messagesBad("model: field required")
	case out.MaxTokens == nil:
		return nil, nil, messagesBad("max_tokens: field required")
	case !messages.Exists():
		return nil, nil, messagesBad("messages: field required")
	case !messages.IsArray() || messages.Get("#").Int() == 0:
		return nil, nil, messagesBad("messages: must be a list of at least one message")
	}
	out.Model = t.req.Model
	if f := t.system(system); f != nil {
		return nil, nil, f
	}
	messages.ForEach(func(i, m gjson.Result) bool {
		f = t.turn(int(i.Int()), m)
		return f == nil
	})
	if f != nil {
		return nil, nil, f
	}
	if len(out.Messages) == 0 {
		if t.req.Untranslatable == "" {
			return nil, nil, messagesBad("messages: nothing to send: every message is empty")
		}
		out.Messages = []Message{}
	}
	if f := t.tools(tools, toolChoice); f != nil {
		return nil, nil, f
	}
	if t.req.Stream {
		out.Stream = true
		out.StreamOptions = &struct {
			IncludeUsage bool `json:"include_usage"`
		}{true}
	}
	t.req.InputTokens = messagesEstimate(system, messages, tools)
	b, err := marshalPlain(out)
	if err != nil {
		return nil, nil, messagesBad("encoding the chat request: %v", err)
	}
	return b, t.req, nil
}

// messagesFieldBit gives each top-level field the gateway reads a bit, to
// find one sent twice.
func messagesFieldBit(k string) uint32 {
	switch k {
	case "model":
		return 1 << 0
	case "max_tokens":
		return 1 << 1
	case "messages":
		return 1 << 2
	case "system":
		return 1 << 3
	case "tools":
		return 1 << 4
	case "tool_choice":
		return 1 << 5
	case "stream":
		return 1 << 6
	case "temperature":
		return 1 << 7
	case "top_p":
		return 1 << 8
	case "stop_sequences":
		return 1 << 9
	case "metadata":
		return 1 << 10
	}
	return 0
}

// messagesTranslator builds the chat request of one Messages request.
type messagesTranslator struct {
	req  *MessagesRequest
	chat ChatRequest
	// parts collects a user turn's text and images; text its texts.
	parts []Part
	text  []string
}

// messagesBad is the client's mistake, in Anthropic's error shape.
func messagesBad(format string, args ...any) *Failure {
	msg := fmt.Sprintf(format, args...)
	return &Failure{Class: BadRequest, Status: fasthttp.StatusBadRequest, Msg: msg,
		Body: MessagesErrorBody(fasthttp.StatusBadRequest, msg)}
}

// untranslatable records the first part of the request that chat
// completions cannot express.
func (t *messagesTranslator) untranslatable(format string, args ...any) {
	if t.req.Untranslatable == "" {
		t.req.Untranslatable = fmt.Sprintf(format, args...)
	}
}

func (t *messagesTranslator) stopSequences(v gjson.Result) *Failure {
	if v.Type == gjson.Null {
		return nil
	}
	if !v.IsArray() {
		return messagesBad("stop_sequences: must be a list of strings")
	}
	var f *Failure
	v.ForEach(func(i, s gjson.Result) bool {
		if s.Type != gjson.String {
			f = messagesBad("stop_sequences.%d: must be a string", i.Int())
			return false
		}
		t.req.StopSequences = append(t.req.StopSequences, strings.Clone(s.Str))
		return true
	})
	t.chat.Stop = t.req.StopSequences
	return f
}

// system adds the system prompt, a string or text blocks, as the leading
// system message.
func (t *messagesTranslator) system(v gjson.Result) *Failure {
	switch {
	case !v.Exists() || v.Type == gjson.Null:
		return nil
	case v.Type == gjson.String:
		t.text = append(t.text[:0], v.Str)
	case v.IsArray():
		t.text = t.text[:0]
		var f *Failure
		v.ForEach(func(i, b gjson.Result) bool {
			if b.Get("type").Str != "text" || b.Get("text").Type != gjson.String {
				f = messagesBad("system.%d: must be a text block", i.Int())
				return false
			}
			t.text = append(t.text, b.Get("text").Str)
			return true
		})
		if f != nil {
			return f
		}
	default:
		return messagesBad("system: must be a string or a list of text blocks")
	}
	if s := strings.Join(t.text, "\n\n"); s != "" {
		t.chat.Messages = append(t.chat.Messages, Message{Role: "system", Content: Content{Text: s, IsStr: true}})
	}
	return nil
}

// turn translates messages.i.
func (t *messagesTranslator) turn(i int, m gjson.Result) *Failure {
	if !m.IsObject() {
		return messagesBad("messages.%d: must be an object with a role and content", i)
	}
	role := m.Get("role")
	if role.Str != "user" && role.Str != "assistant" || role.Type != gjson.String {
		return messagesBad(`messages.%d.role: must be "user" or "assistant"`, i)
	}
	content := m.Get("content")
	switch {
	case content.Type == gjson.String:
		t.chat.Messages = append(t.chat.Messages, Message{Role: role.Str, Content: Content{Text: content.Str, IsStr: true}})
		return nil
	case !content.IsArray():
		return messagesBad("messages.%d.content: must be a string or a list of content blocks", i)
	case role.Str == "user":
		return t.user(i, content)
	}
	return t.assistant(i, content)
}

// user translates a user turn's blocks: each tool_result becomes a tool
// message, and the rest, text and images, one user message after them,
// since chat wants a call's results right after the call.
func (t *messagesTranslator) user(i int, content gjson.Result) *Failure {
	t.parts, t.text = t.parts[:0], t.text[:0]
	var f *Failure
	content.ForEach(func(jr, b gjson.Result) bool {
		j := int(jr.Int())
		if !b.IsObject() {
			f = messagesBad("messages.%d.content.%d: must be a content block object", i, j)
			return false
		}
		switch typ := b.Get("type").Str; typ {
		case "text":
			f = t.textBlock(b, "messages.%d.content.%d.text", i, j)
		case "image":
			f = t.image(b, "messages.%d.content.%d", i, j)
		case "tool_result":
			var m Message
			m, f = t.toolResult(i, j, b)
			if f == nil {
				t.chat.Messages = append(t.chat.Messages, m)
			}
		case "thinking", "redacted_thinking":
			// Reasoning belongs to the assistant; a user turn has none.
		case "tool_use":
			f = messagesBad("messages.%d.content.%d: tool_use blocks belong in assistant messages", i, j)
		case "":
			f = messagesBad("messages.%d.content.%d.type: field required", i, j)
		default:
			t.untranslatable("messages.%d.content.%d: a %q block has no chat completions form", i, j, typ)
		}
		return f == nil
	})
	if f != nil || len(t.parts) == 0 {
		return f
	}
	m := Message{Role: "user"}
	// Every text part is in t.text too: more parts are images.
	if len(t.parts) > len(t.text) {
		m.Content.Parts = append([]Part(nil), t.parts...)
	} else {
		// Text alone goes as a string: not every compatible server takes a
		// list of parts.
		m.Content = Content{Text: strings.Join(t.text, "\n\n"), IsStr: true}
	}
	t.chat.Messages = append(t.chat.Messages, m)
	return nil
}

// textBlock adds a text block's text to the turn's parts.
func (t *messagesTranslator) textBlock(b gjson.Result, path string, args ...any) *Failure {
	v := b.Get("text")
	if v.Type != gjson.String {
		return messagesBad(path+": must be a string", args...)
	}
	if v.Str != "" {
		t.text = append(t.text, v.Str)
		t.parts = append(t.parts, Part{Type: "text", Text: v.Str})
	}
	return nil
}

// image adds an image block to the turn's parts: a base64 source as a
// data: URL, a url source as it is.
func (t *messagesTranslator) image(b gjson.Result, path string, args ...any) *Failure {
	at := fmt.Sprintf(path, args...)
	src := b.Get("source")
	var url string
	switch typ := src.Get("type").Str; typ {
	case "base64":
		media, data := src.Get("media_type"), src.Get("data")
		if media.Type != gjson.String || media.Str == "" || data.Type != gjson.String || data.Str == "" {
			return messagesBad("%s.source: a base64 source needs media_type and data", at)
		}
		url = "data:" + media.Str + ";base64," + data.Str
	case "url":
		u := src.Get("url")
		if u.Type != gjson.String || u.Str == "" {
			return messagesBad("%s.source.url: field required", at)
		}
		url = u.Str
	case "file":
		t.untranslatable("%s: an image from the Files API has no chat completions form", at)
		return nil
	default:
		return messagesBad(`%s.source.type: must be "base64", "url" or "file"`, at)
	}
	p := Part{Type: "image_url"}
	p.ImageURL = &struct {
		URL    string `json:"url"`
		Detail string `json:"detail,omitempty"`
	}{URL: url}
	t.parts = append(t.parts, p)
	return nil
}

// toolResult translates a tool_result block into a tool message. Its
// text blocks are joined; its images join the user message that follows
// the tool messages, as a tool message holds only text.
func (t *messagesTranslator) toolResult(i, j int, b gjson.Result) (Message, *Failure) {
	id := b.Get("tool_use_id")
	if id.Type != gjson.String || id.Str == "" {
		return Message{}, messagesBad("messages.%d.content.%d.tool_use_id: field required", i, j)
	}
	var text []string
	switch c := b.Get("content"); {
	case !c.Exists() || c.Type == gjson.Null:
	case c.Type == gjson.String:
		text = append(text, c.Str)
	case c.IsArray():
		var f *Failure
		c.ForEach(func(kr, cb gjson.Result) bool {
			k := int(kr.Int())
			switch typ := cb.Get("type").Str; typ {
			case "text":
				if v := cb.Get("text"); v.Type == gjson.String {
					text = append(text, v.Str)
				} else {
					f = messagesBad("messages.%d.content.%d.content.%d.text: must be a string", i, j, k)
				}
			case "image":
				f = t.image(cb, "messages.%d.content.%d.content.%d", i, j, k)
			default:
				t.untranslatable("messages.%d.content.%d.content.%d: a %q block in a tool result has no chat completions form", i, j, k, typ)
			}
			return f == nil
		})
		if f != nil {
			return Message{}, f
		}
	default:
		return Message{}, messagesBad("messages.%d.content.%d.content: must be a string or a list of content blocks", i, j)
	}
	s := strings.Join(text, "\n\n")
	if b.Get("is_error").Type == gjson.True {
		// Chat has no error flag; the model reads it in the text.
		s = "Error: " + s
	}
	return Message{Role: "tool", ToolCallID: id.Str, Content: Content{Text: s, IsStr: true}}, nil
}

// assistant translates an assistant turn: its text joined, its tool_use
// blocks as tool_calls. Thinking blocks are dropped: they are the model's
// own, for an Anthropic model to read back.
func (t *messagesTranslator) assistant(i int, content gjson.Result) *Failure {
	t.parts, t.text = t.parts[:0], t.text[:0]
	var calls []ToolCall
	var f *Failure
	content.ForEach(func(jr, b gjson.Result) bool {
		j := int(jr.Int())
		if !b.IsObject() {
			f = messagesBad("messages.%d.content.%d: must be a content block object", i, j)
			return false
		}
		switch typ := b.Get("type").Str; typ {
		case "text":
			f = t.textBlock(b, "messages.%d.content.%d.text", i, j)
		case "tool_use":
			var tc ToolCall
			tc, f = toolUseCall(i, j, b)
			calls = append(calls, tc)
		case "thinking", "redacted_thinking":
		case "image", "tool_result":
			f = messagesBad("messages.%d.content.%d: an assistant message cannot hold a %s block", i, j, typ)
		case "":
			f = messagesBad("messages.%d.content.%d.type: field required", i, j)
		default:
			t.untranslatable("messages.%d.content.%d: a %q block has no chat completions form", i, j, typ)
		}
		return f == nil
	})
	if f != nil || len(t.text) == 0 && len(calls) == 0 {
		return f
	}
	m := Message{Role: "assistant", ToolCalls: calls}
	if len(t.text) > 0 {
		m.Content = Content{Text: strings.Join(t.text, "\n\n"), IsStr: true}
	}
	t.chat.Messages = append(t.chat.Messages, m)
	return nil
}

// toolUseCall translates a tool_use block into a tool call whose
// arguments are its input as JSON.
func toolUseCall(i, j int, b gjson.Result) (ToolCall, *Failure) {
	id, name, input := b.Get("id"), b.Get("name"), b.Get("input")
	switch {
	case id.Type != gjson.String || id.Str == "":
		return ToolCall{}, messagesBad("messages.%d.content.%d.id: field required", i, j)
	case name.Type != gjson.String || name.Str == "":
		return ToolCall{}, messagesBad("messages.%d.content.%d.name: field required", i, j)
	case !input.IsObject():
		return ToolCall{}, messagesBad("messages.%d.content.%d.input: must be an object", i, j)
	}
	tc := ToolCall{ID: id.Str, Type: "function"}
	tc.Function.Name = name.Str
	var args bytes.Buffer
	_ = json.Compact(&args, []byte(input.Raw))
	tc.Function.Arguments = args.String()
	return tc, nil
}

// tools translates tools and tool_choice. Server tools (web search, code
// execution...) run at Anthropic: a chat target cannot serve them.
func (t *messagesTranslator) tools(tools, choice gjson.Result) *Failure {
	switch {
	case !tools.Exists() || tools.Type == gjson.Null:
	case !tools.IsArray():
		return messagesBad("tools: must be a list of tools")
	}
	var f *Failure
	// ForEach visits a value that is no list, null included, as one item.
	if !tools.IsArray() {
		tools = gjson.Result{}
	}
	tools.ForEach(func(jr, tool gjson.Result) bool {
		j := int(jr.Int())
		if !tool.IsObject() {
			f = messagesBad("tools.%d: must be a tool object", j)
			return false
		}
		if typ := tool.Get("type"); typ.Exists() && typ.Type != gjson.Null && typ.Str != "custom" {
			t.untranslatable("tools.%d: the server tool %s runs at Anthropic; chat completions has no form for it", j, typ.Raw)
			return true
		}
		name, schema, desc := tool.Get("name"), tool.Get("input_schema"), tool.Get("description")
		switch {
		case name.Type != gjson.String || name.Str == "":
			f = messagesBad("tools.%d.name: field required", j)
		case !schema.IsObject():
			f = messagesBad("tools.%d.input_schema: must be a JSON schema object", j)
		case desc.Exists() && desc.Type != gjson.String && desc.Type != gjson.Null:
			f = messagesBad("tools.%d.description: must be a string", j)
		}
		if f != nil {
			return false
		}
		tl := Tool{Type: "function"}
		tl.Function.Name, tl.Function.Description = name.Str, desc.Str
		tl.Function.Parameters = json.RawMessage(schema.Raw)
		t.chat.Tools = append(t.chat.Tools, tl)
		return true
	})
	if f != nil {
		return f
	}
	switch {
	case !choice.Exists() || choice.Type == gjson.Null:
		return nil
	case !choice.IsObject():
		return messagesBad("tool_choice: must be an object with a type")
	}
	var mode []byte
	switch typ := choice.Get("type").Str; typ {
	case "auto", "none":
		mode = []byte(`"` + typ + `"`)
	case "any":
		mode = []byte(`"required"`)
	case "tool":
		name := choice.Get("name")
		if name.Type != gjson.String || name.Str == "" {
			return messagesBad("tool_choice.name: field required")
		}
		n, _ := json.Marshal(name.Str)
		mode = append(append([]byte(`{"type":"function","function":{"name":`), n...), "}}"...)
	default:
		return messagesBad(`tool_choice.type: must be "auto", "any", "tool" or "none"`)
	}
	// Chat refuses tool_choice and parallel_tool_calls without tools.
	if len(t.chat.Tools) == 0 {
		return nil
	}
	t.chat.ToolChoice = mode
	if choice.Get("disable_parallel_tool_use").Type == gjson.True && choice.Get("type").Str != "none" {
		t.chat.ParallelToolCalls = Ptr(false)
	}
	return nil
}

// messagesEstimate is the gateway's prompt estimate for a Messages
// request: a token per 4 bytes of system, messages and tools, and
// messagesImageTokens for each image instead of its bytes.
func messagesEstimate(system, messages, tools gjson.Result) int {
	n := (len(system.Raw)+3)/4 + (len(messages.Raw)+3)/4 + (len(tools.Raw)+3)/4
	if !strings.Contains(messages.Raw, `"image"`) {
		return n
	}
	image := func(b gjson.Result) {
		if b.Get("type").Str == "image" {
			n += messagesImageTokens - (len(b.Raw)+3)/4
		}
	}
	messages.ForEach(func(_, m gjson.Result) bool {
		if c := m.Get("content"); c.IsArray() {
			c.ForEach(func(_, b gjson.Result) bool {
				image(b)
				if r := b.Get("content"); r.IsArray() && b.Get("type").Str == "tool_result" {
					r.ForEach(func(_, rb gjson.Result) bool { image(rb); return true })
				}
				return true
			})
		}
		return true
	})
	return max(n, 0)
}

// CountTokens answers POST /v1/messages/count_tokens with the gateway's
// estimate, the same as MessagesRequest.InputTokens: it validates what
// Anthropic requires there (model and messages) and returns the count;
// the engine writes Anthropic's {"input_tokens": N} body. A failure is a
// BadRequest in Anthropic's error shape.
func CountTokens(body []byte) (int, *Failure) {
	if err := CheckJSON(body); err != nil {
		return 0, messagesBad("request body: %v", err)
	}
	root := gjson.Parse(unsafe.String(unsafe.SliceData(body), len(body)))
	if !root.IsObject() {
		return 0, messagesBad("request body must be a JSON object")
	}
	model, messages := root.Get("model"), root.Get("messages")
	switch {
	case !model.Exists():
		return 0, messagesBad("model: field required")
	case model.Type != gjson.String || model.Str == "":
		return 0, messagesBad("model: must be a non-empty string")
	case !messages.Exists():
		return 0, messagesBad("messages: field required")
	case !messages.IsArray():
		return 0, messagesBad("messages: must be a list of messages")
	}
	return messagesEstimate(root.Get("system"), messages, root.Get("tools")), nil
}
