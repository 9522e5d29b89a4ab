package engine

import (
	"strings"

	"github.com/tidwall/gjson"

	"gateway/adapters"
)

// scanOracle is the scan that gjson's parser served before the one-pass
// reader, kept as the oracle FuzzScan holds scan to: the same error, the
// same fields, for any body.
func scanOracle(body []byte, r *chatRequest, op *operation) *apiError {
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
		bad = oracleField(r, key, gjson.Parse(bytesString(body[start:end])), start)
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
	}
	return r.required(op, haveBody)
}

func oracleField(r *chatRequest, key string, v gjson.Result, start int) (bad *apiError) {
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
				r.tokens += oracleImageAdjustment(content)
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
			return r.tokenCap(key, v.Num)
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

func oracleImageAdjustment(content gjson.Result) int {
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
