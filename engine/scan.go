package engine

import (
	"strconv"
	"unsafe"

	"github.com/tidwall/gjson"
)

// chatRequest is what routing needs of a chat completion body, found in
// one pass without decoding the messages.
type chatRequest struct {
	// model points into the body; it must not outlive the handler.
	model                string
	modelStart, modelEnd int
	stream               bool
	messages             int
	tokens               int
	tools                bool
	metadata             gjson.Result
	// maxTokens is max_tokens or max_completion_tokens; 0 when unset.
	maxTokens int
	// clientUsage: stream_options.include_usage is true; streamOptions:
	// stream_options is present.
	clientUsage, streamOptions bool
	// system and firstUser are the raw contents that identify a
	// conversation for sticky routing; assistant is set once the history
	// holds an assistant turn.
	system, firstUser string
	assistant         bool
}

// bytesString views b as a string without copying; b must not change
// while the string is in use.
func bytesString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// scanChat validates body and fills r. A failure names the field.
func scanChat(body []byte, r *chatRequest) *apiError {
	*r = chatRequest{modelStart: -1}
	if !gjson.ValidBytes(body) {
		return badRequest("", "invalid_json", "request body is not valid JSON")
	}
	root := gjson.Parse(bytesString(body))
	if !root.IsObject() {
		return badRequest("", "invalid_json", "request body must be a JSON object")
	}
	var bad *apiError
	haveMessages := false
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "model":
			if v.Type != gjson.String || v.Str == "" {
				bad = badRequest("model", "invalid_type", "model must be a non-empty string")
				return false
			}
			r.model, r.modelStart, r.modelEnd = v.Str, v.Index, v.Index+len(v.Raw)
		case "stream":
			switch v.Type {
			case gjson.True:
				r.stream = true
			case gjson.False, gjson.Null:
			default:
				bad = badRequest("stream", "invalid_type", "stream must be true or false")
				return false
			}
		case "messages":
			if !v.IsArray() {
				bad = badRequest("messages", "invalid_type", "messages must be an array of message objects")
				return false
			}
			haveMessages = true
			r.tokens = (len(v.Raw) + 3) / 4
			v.ForEach(func(_, m gjson.Result) bool {
				if !m.IsObject() {
					bad = badRequest(messageParam(r.messages), "invalid_type", "each message must be an object with a role")
					return false
				}
				role := m.Get("role")
				if role.Type != gjson.String {
					bad = badRequest(messageParam(r.messages)+".role", "invalid_type", "each message needs a string role")
					return false
				}
				switch role.Str {
				case "system", "developer":
					if r.system == "" {
						r.system = m.Get("content").Raw
					}
				case "user":
					if r.firstUser == "" {
						r.firstUser = m.Get("content").Raw
					}
				case "assistant":
					r.assistant = true
				}
				r.messages++
				return true
			})
		case "tools":
			switch {
			case v.IsArray():
				r.tools = len(v.Raw) > 2 && v.Get("#").Int() > 0
			case v.Type != gjson.Null:
				bad = badRequest("tools", "invalid_type", "tools must be an array")
				return false
			}
		case "max_tokens", "max_completion_tokens":
			switch v.Type {
			case gjson.Number:
				if v.Num < 0 || v.Num != float64(int64(v.Num)) {
					bad = badRequest(k.Str, "invalid_value", k.Str+" must be a positive whole number")
					return false
				}
				r.maxTokens = max(r.maxTokens, int(v.Num))
			case gjson.Null:
			default:
				bad = badRequest(k.Str, "invalid_type", k.Str+" must be a number")
				return false
			}
		case "stream_options":
			// Present even as null: the adapter must not add a second one.
			r.streamOptions = true
			r.clientUsage = v.Get("include_usage").Type == gjson.True
		case "metadata":
			if !v.IsObject() && v.Type != gjson.Null {
				bad = badRequest("metadata", "invalid_type", "metadata must be an object")
				return false
			}
			r.metadata = v
		}
		return bad == nil
	})
	switch {
	case bad != nil:
		return bad
	case r.modelStart < 0:
		return badRequest("model", "missing_field", "missing required field: model")
	case !haveMessages:
		return badRequest("messages", "missing_field", "missing required field: messages")
	case r.messages == 0:
		return badRequest("messages", "invalid_value", "messages must hold at least one message")
	}
	return nil
}

func messageParam(i int) string {
	return "messages[" + strconv.Itoa(i) + "]"
}
