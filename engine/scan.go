package engine

import (
	"errors"
	"strconv"
	"strings"
	"unsafe"

	"github.com/tidwall/gjson"

	"gateway/adapters"
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

// maxTokensBound is the largest max_tokens a request may ask for: above
// any model's output limit, and far enough from overflow that every sum
// of token counts stays exact.
const maxTokensBound = 10_000_000

// jsonError answers a client's body that CheckJSON refused with err.
func jsonError(err error) *apiError {
	if errors.Is(err, adapters.ErrJSONDepth) {
		return badRequest("", "invalid_json", "request body nests deeper than "+strconv.Itoa(adapters.MaxJSONDepth)+" levels")
	}
	return badRequest("", "invalid_json", "request body is not valid JSON")
}

// chatFields are the top-level fields the gateway decides on in a chat
// body; each operation has such a list. A body that holds one twice, or
// in another case, is refused: upstream parsers differ on which copy
// wins, and Go's encoding/json matches keys without regard to case
// (Unicode folding included), so the gateway and an upstream could read
// different models, streams or limits.
var chatFields = []string{"model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "tools", "messages", "metadata"}

// streamOptionFields are the fields of stream_options the gateway decides
// on: whether to strip the usage chunk it asks for.
var streamOptionFields = [...]string{"include_usage"}

// fieldSet tracks which decided fields a body has shown.
type fieldSet uint16

// see records key k of an object and returns an error when it repeats a
// decided field or spells one in another case. names are the decided
// fields, at most 16.
func (f *fieldSet) see(k string, names []string) *apiError {
	ascii := true
	for i := 0; i < len(k); i++ {
		if k[i] >= 0x80 {
			ascii = false
			break
		}
	}
	for i, name := range names {
		switch {
		case k == name:
			if *f&(1<<i) != 0 {
				return badRequest(name, "duplicate_field", "field "+strconv.Quote(name)+" appears more than once")
			}
			*f |= 1 << i
			return nil
		case (!ascii || len(k) == len(name)) && strings.EqualFold(k, name):
			return badRequest(name, "ambiguous_field", "field "+strconv.Quote(k)+" differs from "+strconv.Quote(name)+
				" only in case; send it once, as "+strconv.Quote(name))
		}
	}
	return nil
}

// scan validates a request body for op and fills r with what routing
// needs, in one pass that does not decode the content: the walk that
// bounds the body hands over each top-level field as it passes it. A
// failure names the field.
func scan(body []byte, r *chatRequest, op *operation) *apiError {
	*r = chatRequest{modelStart: -1}
	var bad *apiError
	var seen fieldSet
	haveBody := false
	err := adapters.CheckJSONMembers(body, func(key string, start, end int) {
		if bad != nil {
			return
		}
		if bad = seen.see(key, op.decided); bad != nil {
			return
		}
		if key != op.body && (key == "messages" || key == "input" || key == "prompt") {
			// Another operation's content: the upstream reads it.
			return
		}
		switch key {
		case "messages", "input", "prompt":
			haveBody = true
		}
		bad = r.field(key, gjson.Parse(bytesString(body[start:end])), start)
	})
	// A body found invalid fails as such, whatever its fields showed
	// before the walk got there.
	switch {
	case err != nil:
		return jsonError(err)
	case !gjson.Parse(bytesString(body)).IsObject():
		return badRequest("", "invalid_json", "request body must be a JSON object")
	case bad != nil:
		return bad
	case r.modelStart < 0:
		return badRequest("model", "missing_field", "missing required field: model")
	case !haveBody:
		return badRequest(op.body, "missing_field", "missing required field: "+op.body)
	case r.messages == 0:
		return badRequest("messages", "invalid_value", "messages must hold at least one message")
	}
	return nil
}

// field reads the top-level field key, whose value v starts at offset
// start of the body, into r.
func (r *chatRequest) field(key string, v gjson.Result, start int) (bad *apiError) {
	switch key {
	case "model":
		if v.Type != gjson.String || v.Str == "" {
			return badRequest("model", "invalid_type", "model must be a non-empty string")
		}
		r.model, r.modelStart, r.modelEnd = v.Str, start, start+len(v.Raw)
	case "stream":
		switch v.Type {
		case gjson.True:
			r.stream = true
		case gjson.False, gjson.Null:
		default:
			return badRequest("stream", "invalid_type", "stream must be true or false")
		}
	case "messages":
		if !v.IsArray() {
			return badRequest("messages", "invalid_type", "messages must be an array of message objects")
		}
		r.tokens += (len(v.Raw) + 3) / 4
		images := strings.Contains(v.Raw, `"image_url"`)
		v.ForEach(func(_, m gjson.Result) bool {
			if !m.IsObject() {
				bad = badRequest(messageParam(r.messages), "invalid_type", "each message must be an object with a role")
				return false
			}
			// One pass over the message finds its role and content, the
			// first of each as gjson's Get would.
			var role, content gjson.Result
			var haveRole, haveContent bool
			m.ForEach(func(k, f gjson.Result) bool {
				switch {
				case k.Str == "role" && !haveRole:
					role, haveRole = f, true
				case k.Str == "content" && !haveContent:
					content, haveContent = f, true
				}
				return !haveRole || !haveContent
			})
			if role.Type != gjson.String {
				bad = badRequest(messageParam(r.messages)+".role", "invalid_type", "each message needs a string role")
				return false
			}
			switch role.Str {
			case "system", "developer":
				if r.system == "" {
					r.system = content.Raw
				}
			case "user":
				if r.firstUser == "" {
					r.firstUser = content.Raw
				}
			case "assistant":
				r.assistant = true
			}
			if images {
				r.tokens += imageAdjustment(content)
			}
			r.messages++
			return true
		})
	case "input", "prompt":
		// Embedding inputs and completion prompts: a string, a list of
		// them, or token ids; only their size matters here.
		if v.Type != gjson.String && !v.IsArray() {
			return badRequest(key, "invalid_type", key+" must be a string or an array")
		}
		r.tokens += (len(v.Raw) + 3) / 4
		r.messages = 1
	case "tools":
		// Tool definitions are part of the prompt.
		r.tokens += (len(v.Raw) + 3) / 4
		switch {
		case v.IsArray():
			// Not empty: something other than whitespace before "]".
			r.tools = strings.TrimLeft(v.Raw[1:], " \t\r\n")[0] != ']'
		case v.Type != gjson.Null:
			return badRequest("tools", "invalid_type", "tools must be an array")
		}
	case "max_tokens", "max_completion_tokens":
		switch v.Type {
		case gjson.Number:
			if v.Num < 1 || v.Num > maxTokensBound || v.Num != float64(int64(v.Num)) {
				return badRequest(key, "invalid_value", key+" must be a whole number from 1 to "+strconv.Itoa(maxTokensBound))
			}
			r.maxTokens = max(r.maxTokens, int(v.Num))
		case gjson.Null:
		default:
			return badRequest(key, "invalid_type", key+" must be a number")
		}
	case "stream_options":
		// Present even as null: the adapter must not add a second one.
		r.streamOptions = true
		var inner fieldSet
		v.ForEach(func(k, o gjson.Result) bool {
			if bad = inner.see(k.Str, streamOptionFields[:]); bad != nil {
				bad.param = "stream_options." + bad.param
				return false
			}
			if k.Str == "include_usage" {
				r.clientUsage = o.Type == gjson.True
			}
			return true
		})
	case "metadata":
		if !v.IsObject() && v.Type != gjson.Null {
			return badRequest("metadata", "invalid_type", "metadata must be an object")
		}
		r.metadata = v
	}
	return bad
}

// imageTokens is what one image counts for in the prompt estimate:
// OpenAI's count for a 1024x1024 image at high detail. Providers count
// pixels, not the bytes of a base64 data URL, which would make a single
// photo look like hundreds of thousands of tokens.
const imageTokens = 765

// imageAdjustment corrects the bytes/4 estimate of a message's content
// for its image parts: their bytes out, imageTokens each in.
func imageAdjustment(content gjson.Result) int {
	n := 0
	if content.IsArray() {
		content.ForEach(func(_, part gjson.Result) bool {
			if part.Get("type").Str == "image_url" {
				n += imageTokens - (len(part.Raw)+3)/4
			}
			return true
		})
	}
	return n
}

func messageParam(i int) string {
	return "messages[" + strconv.Itoa(i) + "]"
}
