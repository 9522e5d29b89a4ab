package engine

import (
	"bytes"
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
// fields, at most 16, no two alike but for case (TestDecidedFieldsDiffer),
// so a key that is one of them folds onto no other. An ASCII key can only
// fold onto a name of its length; another may fold onto any (the Kelvin
// sign is three bytes).
func (f *fieldSet) see(k string, names []string) *apiError {
	for i, name := range names {
		if k == name {
			if *f&(1<<i) != 0 {
				return badRequest(name, "duplicate_field", "field "+strconv.Quote(name)+" appears more than once")
			}
			*f |= 1 << i
			return nil
		}
	}
	ascii := true
	for i := 0; i < len(k); i++ {
		if k[i] >= 0x80 {
			ascii = false
			break
		}
	}
	for _, name := range names {
		if (!ascii || len(k) == len(name)) && strings.EqualFold(k, name) {
			return badRequest(name, "ambiguous_field", "field "+strconv.Quote(k)+" differs from "+strconv.Quote(name)+
				" only in case; send it once, as "+strconv.Quote(name))
		}
	}
	return nil
}

// scan validates a request body for op and fills r with what routing
// needs, in the one pass that bounds the body: it reads the fields it
// decides on as the walk passes them and skips the rest, the content
// included, without decoding it. A failure names the field.
func scan(body []byte, r *chatRequest, op *operation) *apiError {
	*r = chatRequest{modelStart: -1}
	var j adapters.JSONReader
	j.Reset(body)
	var bad *apiError
	var seen fieldSet
	haveBody, object := false, j.Next() == adapters.JSONObject
	for object && j.Member() {
		key, tok := j.Key(), j.Token()
		if bad == nil {
			bad = seen.see(key, op.decided)
		}
		// Another operation's content is skipped: the upstream reads it.
		if bad == nil && (key == op.body || key != "messages" && key != "input" && key != "prompt") {
			haveBody = haveBody || key == op.body
			bad = r.field(&j, key, tok)
		}
		// Past the rest of the value, wherever field stopped.
		j.Leave(1)
	}
	// A body found invalid fails as such, whatever its fields showed
	// before the walk got there.
	switch err := j.Finish(); {
	case err != nil:
		return jsonError(err)
	case !object:
		return badRequest("", "invalid_json", "request body must be a JSON object")
	case bad != nil:
		return bad
	}
	return r.required(op, haveBody)
}

// tokenCap takes n, the value of key (max_tokens, max_completion_tokens),
// as the answer's token cap: the larger of the two counts.
func (r *chatRequest) tokenCap(key string, n float64) *apiError {
	if n < 1 || n > maxTokensBound || n != float64(int64(n)) {
		return badRequest(key, "invalid_value", key+" must be a whole number from 1 to "+strconv.Itoa(maxTokensBound))
	}
	r.maxTokens = max(r.maxTokens, int(n))
	return nil
}

// required checks that a body which read well had what op needs: a model,
// its content field, and a message.
func (r *chatRequest) required(op *operation, haveBody bool) *apiError {
	switch {
	case r.modelStart < 0:
		return badRequest("model", "missing_field", "missing required field: model")
	case !haveBody:
		return badRequest(op.body, "missing_field", "missing required field: "+op.body)
	case r.messages == 0:
		return badRequest("messages", "invalid_value", "messages must hold at least one message")
	}
	return nil
}

// field reads the top-level field key, whose value's first token j just
// read as tok, into r. It may stop anywhere in the value.
func (r *chatRequest) field(j *adapters.JSONReader, key string, tok adapters.JSONToken) *apiError {
	start := j.Start
	switch key {
	case "model":
		if tok != adapters.JSONString {
			return badRequest("model", "invalid_type", "model must be a non-empty string")
		}
		if r.model = j.Str(); r.model == "" {
			return badRequest("model", "invalid_type", "model must be a non-empty string")
		}
		r.modelStart, r.modelEnd = start, j.End
	case "stream":
		switch tok {
		case adapters.JSONTrue:
			r.stream = true
		case adapters.JSONFalse, adapters.JSONNull:
		default:
			return badRequest("stream", "invalid_type", "stream must be true or false")
		}
	case "messages":
		return r.readMessages(j, tok)
	case "input", "prompt":
		// Embedding inputs and completion prompts: a string, a list of
		// them, or token ids; only their size matters here.
		if tok != adapters.JSONString && tok != adapters.JSONArray {
			return badRequest(key, "invalid_type", key+" must be a string or an array")
		}
		j.Skip()
		r.tokens += (j.End - start + 3) / 4
		r.messages = 1
	case "tools":
		// Tool definitions are part of the prompt. An array is not empty
		// when its next token does not close it.
		tools := tok == adapters.JSONArray && j.Next() != adapters.JSONArrayEnd
		j.Leave(1)
		r.tokens += (j.End - start + 3) / 4
		switch tok {
		case adapters.JSONArray:
			r.tools = tools
		case adapters.JSONNull:
		default:
			return badRequest("tools", "invalid_type", "tools must be an array")
		}
	case "max_tokens", "max_completion_tokens":
		switch tok {
		case adapters.JSONNumber:
			return r.tokenCap(key, number(j.Since(start)))
		case adapters.JSONNull:
		default:
			return badRequest(key, "invalid_type", key+" must be a number")
		}
	case "stream_options":
		// Present even as null: the adapter must not add a second one.
		// Only an object's members count, as gjson iterates them.
		r.streamOptions = true
		var inner fieldSet
		for tok == adapters.JSONObject && j.Member() {
			k := j.Key()
			if bad := inner.see(k, streamOptionFields[:]); bad != nil {
				bad.param = "stream_options." + bad.param
				return bad
			}
			if k == "include_usage" {
				r.clientUsage = j.Token() == adapters.JSONTrue
			}
			j.Skip()
		}
	case "metadata":
		if tok != adapters.JSONObject && tok != adapters.JSONNull {
			return badRequest("metadata", "invalid_type", "metadata must be an object")
		}
		j.Skip()
		// An object's or null's gjson value costs no parse.
		r.metadata = gjson.Parse(bytesString(j.Since(start)))
	}
	return nil
}

// number is a JSON number's value as gjson reads it (strconv's); an
// integer short enough to be exact, as max_tokens are, is read directly.
func number(raw []byte) float64 {
	n := 0
	for i, c := range raw {
		if c < '0' || c > '9' || i == 15 {
			f, _ := strconv.ParseFloat(bytesString(raw), 64)
			return f
		}
		n = n*10 + int(c-'0')
	}
	return float64(n)
}

// readMessages reads the messages array whose first token j just read as
// tok: each message's first role and first content, as gjson's Get finds
// them, and the size of it all. It may stop anywhere in the array.
func (r *chatRequest) readMessages(j *adapters.JSONReader, tok adapters.JSONToken) *apiError {
	if tok != adapters.JSONArray {
		return badRequest("messages", "invalid_type", "messages must be an array of message objects")
	}
	start := j.Start
	// images is what image parts change in the estimate; plain: one of
	// them has its type unescaped, so the text holds "image_url".
	images, plain := 0, false
	for {
		switch j.Next() {
		case adapters.JSONObject:
		case adapters.JSONArrayEnd, adapters.JSONInvalid:
			raw := j.Since(start)
			r.tokens += (len(raw) + 3) / 4
			// Image parts count only where the text holds "image_url"
			// as such: a part typed "image\u005furl" alone does not.
			if images != 0 && (plain || bytes.Contains(raw, []byte(`"image_url"`))) {
				r.tokens += images
			}
			return nil
		default:
			return badRequest(messageParam(r.messages), "invalid_type", "each message must be an object with a role")
		}
		var role adapters.JSONToken
		var roleName, content string
		var haveRole, haveContent bool
		for j.Member() {
			switch {
			case !haveRole && j.KeyIs("role"):
				haveRole = true
				if role = j.Token(); role == adapters.JSONString {
					roleName = j.Str()
				}
			case !haveContent && j.KeyIs("content"):
				haveContent = true
				cstart := j.Start
				if j.Token() == adapters.JSONArray {
					n, p := imageParts(j)
					images, plain = images+n, plain || p
				}
				j.Skip()
				content = bytesString(j.Since(cstart))
				continue
			}
			j.Skip()
		}
		if role != adapters.JSONString {
			return badRequest(messageParam(r.messages)+".role", "invalid_type", "each message needs a string role")
		}
		switch roleName {
		case "system", "developer":
			if r.system == "" {
				r.system = content
			}
		case "user":
			if r.firstUser == "" {
				r.firstUser = content
			}
		case "assistant":
			r.assistant = true
		}
		r.messages++
	}
}

// imageTokens is what one image counts for in the prompt estimate:
// OpenAI's count for a 1024x1024 image at high detail. Providers count
// pixels, not the bytes of a base64 data URL, which would make a single
// photo look like hundreds of thousands of tokens.
const imageTokens = 765

// imageParts reads a message's content array, whose opening j just read,
// to its end, and returns how its image parts (a "type" of "image_url",
// the first one as gjson's Get finds it) correct the bytes/4 estimate:
// their bytes out, imageTokens each in. plain reports an image part whose
// type holds no escape.
func imageParts(j *adapters.JSONReader) (n int, plain bool) {
	for {
		switch j.Next() {
		case adapters.JSONArrayEnd, adapters.JSONInvalid:
			return n, plain
		case adapters.JSONObject:
		default:
			j.Skip()
			continue
		}
		start, typed, image := j.Start, false, false
		for j.Member() {
			if !typed && j.KeyIs("type") {
				typed = true
				if j.Token() == adapters.JSONString && j.Is("image_url") {
					image, plain = true, plain || !j.Escaped
				}
			}
			j.Skip()
		}
		if image {
			n += imageTokens - (len(j.Since(start))+3)/4
		}
	}
}

func messageParam(i int) string {
	return "messages[" + strconv.Itoa(i) + "]"
}
