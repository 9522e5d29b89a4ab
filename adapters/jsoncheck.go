package adapters

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/bits"
	"unsafe"

	"github.com/tidwall/gjson"
)

// MaxJSONDepth bounds how deeply any JSON the gateway reads may nest,
// from clients and upstreams alike. Real requests stay far below it: a
// chat body puts a tool's schema about six levels down (tools, function,
// parameters, properties, ...), and providers cap schemas themselves
// (OpenAI's structured outputs allow 10 levels of nesting, each costing
// two or three JSON levels), so 128 leaves room for any real schema while
// every recursive reader after the check (gjson, encoding/json, expr)
// runs at a depth that costs a few kilobytes of stack.
const MaxJSONDepth = 128

// Errors of CheckJSON.
var (
	ErrJSONSyntax = errors.New("not valid JSON")
	ErrJSONDepth  = errors.New("JSON nested deeper than 128 levels")
)

// CheckJSON reports whether b holds exactly one valid JSON value nested
// at most MaxJSONDepth deep. It never recurses and allocates nothing, so
// a nesting bomb costs one pass over its bytes: it must run before
// anything recursive reads untrusted JSON.
func CheckJSON(b []byte) error {
	var r JSONReader
	r.Reset(b)
	return r.Finish()
}

// CheckJSONMembers is CheckJSON that also hands visit, when b is an
// object, each of its members in order as it passes them: the key
// unescaped, as gjson reads it, and where the raw value starts and ends
// in b. Its caller learns the top-level fields in the same pass that
// bounds the body, instead of a second one after it. A body that turns
// out invalid after some members were visited still fails: the caller
// must judge what it saw only once the error is nil.
func CheckJSONMembers(b []byte, visit func(key string, start, end int)) error {
	var r JSONReader
	r.Reset(b)
	if r.Next() == JSONObject && visit != nil {
		for r.Member() {
			key, start := r.Key(), r.Start
			if !r.Skip() {
				break
			}
			visit(key, start, r.End)
		}
	}
	return r.Finish()
}

// JSONToken is the kind of token a JSONReader read.
type JSONToken uint8

// The tokens of JSON text. A value is one token, or for an object or
// array its opening token, its members or elements, and its closing one.
const (
	// JSONInvalid: the text is not valid JSON or nests too deep; every
	// later Next says so again.
	JSONInvalid JSONToken = iota
	// JSONEnd: the text held one valid value and nothing after it.
	JSONEnd
	JSONObject
	JSONObjectEnd
	JSONArray
	JSONArrayEnd
	// JSONKey is an object member's key; Next then reads its value.
	JSONKey
	JSONString
	JSONNumber
	JSONTrue
	JSONFalse
	JSONNull
)

// JSONReader reads JSON text one token at a time, checking it as
// CheckJSON does: it never recurses, allocates nothing, and refuses a
// nesting past MaxJSONDepth where it starts. Its caller reads what it
// needs of a body and skips the rest, all in the pass that bounds it.
// The zero value reads nothing; Reset it with the text.
type JSONReader struct {
	b []byte
	i int
	// Start and End bound the last token in b: a key or string with its
	// quotes, a bracket alone. After Skip, End is the end of the value.
	Start, End int
	depth      int
	err        error
	// object has bit d set when the container at depth d is an object:
	// two words, so that Reset clears 16 bytes, not MaxJSONDepth.
	object [MaxJSONDepth / 64]uint64
	// key bounds the key Member read, with its quotes; keyEscaped: it
	// holds an escape.
	keyStart, keyEnd int
	keyEscaped       bool
	// Escaped reports that the last key or string holds an escape.
	Escaped bool
	last    JSONToken
	state   readerState
}

// readerState is what a JSONReader expects next.
type readerState uint8

const (
	expectValue      readerState = iota // a value: at the start or after ':'
	expectFirstValue                    // after '[': a value or ']'
	expectFirstKey                      // after '{': a key or '}'
	expectMore                          // after a value: ',', a closing bracket, or the end
	expectNothing                       // after the end or an error
)

// Reset makes r read b from its start.
func (r *JSONReader) Reset(b []byte) { *r = JSONReader{b: b, i: skipSpace(b, 0)} }

// Err is why the text is invalid, once Next returned JSONInvalid:
// ErrJSONSyntax or ErrJSONDepth.
func (r *JSONReader) Err() error { return r.err }

// Depth is how many objects and arrays are open.
func (r *JSONReader) Depth() int { return r.depth }

// Next reads the next token.
func (r *JSONReader) Next() JSONToken { return r.read(MaxJSONDepth, false) }

// Member reads the next member of the object whose opening or last
// member was just read: its key, which Key then gives, and its value's
// first token, which Token gives, in one step. It reports false when the
// object ends instead, or the text proves invalid.
func (r *JSONReader) Member() bool {
	tok := r.read(MaxJSONDepth, true)
	return tok != JSONObjectEnd && tok != JSONInvalid
}

// Token is the last token read.
func (r *JSONReader) Token() JSONToken { return r.last }

// Skip reads on to the end of the value whose first token Next just
// returned, so that End is where the value ends; it reports whether the
// text is valid so far.
func (r *JSONReader) Skip() bool {
	if r.last == JSONObject || r.last == JSONArray {
		return r.Leave(r.depth - 1)
	}
	return r.last != JSONInvalid
}

// Leave reads on until only depth objects and arrays are open, and
// reports whether the text is valid so far.
func (r *JSONReader) Leave(depth int) bool {
	if r.depth > depth {
		r.read(depth, false)
	}
	return r.last != JSONInvalid
}

// Finish reads the rest of the text and returns nil when all of it is
// valid, or why not.
func (r *JSONReader) Finish() error {
	if r.read(-1, false) == JSONEnd {
		return nil
	}
	return r.err
}

// read reads tokens until one leaves at most leave objects and arrays
// open, the text ends, or it proves invalid, and returns that token. Its
// state lives in locals while it loops, so skipping a value costs no
// call per token; obj is whether the innermost open container is an
// object, kept in a local so that a comma or a closing bracket needs no
// look at r.object. With member, a key it stops at is read on to its
// value's first token, and kept as Key.
func (r *JSONReader) read(leave int, member bool) JSONToken {
	b, i, depth := r.b, r.i, r.depth
	var tok JSONToken
	var start, end int
	esc := r.Escaped
	// Inside a container, a value is expected only after a key.
	obj := true
	switch r.state {
	case expectMore:
		obj = r.inObject(depth)
		goto more
	case expectFirstKey:
		goto firstKey
	case expectFirstValue:
		obj = false
		goto firstValue
	case expectNothing:
		return r.last
	}
	// expectValue: past any space already, at the start or after ':'.
	goto value
firstKey:
	if i = skipSpace(b, i); i < len(b) && b[i] == '}' {
		tok = JSONObjectEnd
		goto closing
	}
	goto key
firstValue:
	if i = skipSpace(b, i); i < len(b) && b[i] == ']' {
		tok = JSONArrayEnd
		goto closing
	}
	goto value
more:
	i = skipSpace(b, i)
	if depth == 0 {
		if i != len(b) {
			return r.fail(ErrJSONSyntax)
		}
		r.Start, r.End, r.Escaped, r.i, r.state, r.last = i, i, esc, i, expectNothing, JSONEnd
		return JSONEnd
	}
	if i >= len(b) {
		return r.fail(ErrJSONSyntax)
	}
	switch c := b[i]; {
	case c == ',':
		i = skipSpace(b, i+1)
		if obj {
			goto key
		}
		goto value
	case c == '}' && obj:
		tok = JSONObjectEnd
	case c == ']' && !obj:
		tok = JSONArrayEnd
	default:
		return r.fail(ErrJSONSyntax)
	}
closing:
	depth--
	start, i, end = i, i+1, i+1
	obj = r.inObject(depth)
	if depth <= leave {
		r.Start, r.End, r.Escaped, r.i, r.depth, r.state, r.last = start, end, esc, i, depth, expectMore, tok
		return tok
	}
	goto more
key:
	if i >= len(b) || b[i] != '"' {
		return r.fail(ErrJSONSyntax)
	}
	start = i
	if i = plain(b, i+1); i < len(b) && b[i] == '"' {
		i, esc = i+1, false
	} else if i, esc = skipRest(b, i); i < 0 {
		return r.fail(ErrJSONSyntax)
	}
	end = i
	if i < len(b) && b[i] == ':' {
		i++
	} else if i = skipSpace(b, i); i < len(b) && b[i] == ':' {
		i++
	} else {
		return r.fail(ErrJSONSyntax)
	}
	i = skipSpace(b, i)
	if depth <= leave {
		if !member {
			r.Start, r.End, r.Escaped, r.i, r.depth, r.state, r.last = start, end, esc, i, depth, expectValue, JSONKey
			return JSONKey
		}
		r.keyStart, r.keyEnd, r.keyEscaped = start, end, esc
	}
value:
	if i >= len(b) {
		return r.fail(ErrJSONSyntax)
	}
	start = i
	switch c := b[i]; c {
	case '"':
		tok = JSONString
		if i = plain(b, i+1); i < len(b) && b[i] == '"' {
			i, esc = i+1, false
		} else {
			i, esc = skipRest(b, i)
		}
	case '{', '[':
		if depth == MaxJSONDepth {
			return r.fail(ErrJSONDepth)
		}
		bit := uint64(1) << (uint(depth) % 64)
		r.object[uint(depth)/64%2] &^= bit
		opened, next := JSONArray, expectFirstValue
		if obj = c == '{'; obj {
			r.object[uint(depth)/64%2] |= bit
			opened, next = JSONObject, expectFirstKey
		}
		depth++
		i++
		if depth <= leave {
			r.Start, r.End, r.Escaped, r.i, r.depth, r.state, r.last = start, i, esc, i, depth, next, opened
			return opened
		}
		if obj {
			goto firstKey
		}
		goto firstValue
	case 't':
		tok, i = JSONTrue, literal(b, i, "true")
	case 'f':
		tok, i = JSONFalse, literal(b, i, "false")
	case 'n':
		tok, i = JSONNull, literal(b, i, "null")
	default:
		// A whole number, as counts are, ends without a call: digits, no
		// leading zero, and no fraction or exponent after them.
		tok = JSONNumber
		if j := skipDigits(b, i+1); c-'0' < 10 && (c != '0' || j == i+1) && (j == len(b) || b[j] != '.' && b[j]|0x20 != 'e') {
			i = j
		} else {
			i = skipNumber(b, i)
		}
	}
	if i < 0 {
		return r.fail(ErrJSONSyntax)
	}
	if depth <= leave {
		r.Start, r.End, r.Escaped, r.i, r.depth, r.state, r.last = start, i, esc, i, depth, expectMore, tok
		return tok
	}
	goto more
}

// inObject reports whether the innermost of depth open containers is an
// object; at depth 0 there is none.
func (r *JSONReader) inObject(depth int) bool {
	d := uint(depth - 1)
	return depth > 0 && r.object[d/64%2]&(1<<(d%64)) != 0
}

func (r *JSONReader) fail(err error) JSONToken {
	r.err, r.state, r.last = err, expectNothing, JSONInvalid
	return JSONInvalid
}

// Str is the last key or string read, unescaped as gjson reads it: a
// view of the text, or decoded (allocated) when it holds an escape.
func (r *JSONReader) Str() string {
	if r.Escaped {
		return r.unescapedStr()
	}
	return unsafe.String(unsafe.SliceData(r.b[r.Start+1:]), r.End-r.Start-2)
}

// Key is the key of the member Member read, unescaped as Str is.
func (r *JSONReader) Key() string {
	if r.keyEscaped {
		return r.unescapedKey()
	}
	return unsafe.String(unsafe.SliceData(r.b[r.keyStart+1:]), r.keyEnd-r.keyStart-2)
}

// Is reports whether the last key or string read, unescaped, is s; it
// allocates only for an escaped one.
func (r *JSONReader) Is(s string) bool {
	if r.Escaped {
		return r.unescapedStr() == s
	}
	return string(r.b[r.Start+1:r.End-1]) == s
}

// KeyIs reports whether Key is s; it allocates only for an escaped key.
func (r *JSONReader) KeyIs(s string) bool {
	if r.keyEscaped {
		return r.unescapedKey() == s
	}
	return string(r.b[r.keyStart+1:r.keyEnd-1]) == s
}

// unescapedStr and unescapedKey are Str and Key for one that holds an
// escape; out of line, so that Str and Key inline.
//
//go:noinline
func (r *JSONReader) unescapedStr() string { return unquote(r.b[r.Start:r.End]) }

//go:noinline
func (r *JSONReader) unescapedKey() string { return unquote(r.b[r.keyStart:r.keyEnd]) }

// unquote decodes the JSON string quoted, as gjson does.
func unquote(quoted []byte) string {
	return gjson.Parse(unsafe.String(unsafe.SliceData(quoted), len(quoted))).Str
}

// Since is the text from start to the end of the last token read.
func (r *JSONReader) Since(start int) []byte { return r.b[start:r.End] }

// skipSpace returns the index of the first byte from b[i] on that is not
// JSON whitespace; one comparison passes any byte above a space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && b[i] <= ' ' && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// skipRest returns the index after a string whose opening quote read
// passed and whose bytes up to b[i] plain passed, stopping short of a
// closing quote: at an escape, a control character, or fewer than eight
// bytes before the end. It returns -1 when the string is not valid JSON,
// and whether it holds an escape.
func skipRest(b []byte, i int) (int, bool) {
	esc := false
	for i < len(b) {
		switch c := b[i]; {
		case c == '"':
			return i + 1, esc
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				return -1, esc
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return -1, esc
				}
				i += 6
			default:
				return -1, esc
			}
			i = plain(b, i)
		case c < 0x20:
			// A raw control character.
			return -1, esc
		default:
			i++
		}
	}
	return -1, esc
}

// plain returns the index of the first byte from b[i] on that ends a run
// of plain string bytes (a quote, a backslash or a control character),
// eight bytes at a time; where fewer than eight remain, it stops.
func plain(b []byte, i int) int {
	for ; i+8 <= len(b); i += 8 {
		if m := special(binary.LittleEndian.Uint64(b[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	return i
}

// special marks, in the high bit of each byte of w, the bytes that end a
// run of plain string bytes: a quote, a backslash or a control
// character. Marks above the lowest true one may be false (a borrow
// carries), so only the lowest may be trusted. A byte whose own high bit
// is set is none of them, and for one below 0x80 a subtraction's high
// bit is set only when it went below zero, so the three tests share one
// mask.
func special(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q := w ^ (ones * '"')
	s := w ^ (ones * '\\')
	return ((q - ones) | (s - ones) | (w - ones*0x20)) &^ w & highs
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func literal(b []byte, i int, word string) int {
	if len(b)-i < len(word) || string(b[i:i+len(word)]) != word {
		return -1
	}
	return i + len(word)
}

// skipNumber returns the index after the number starting at b[i], or -1.
func skipNumber(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = skipDigits(b, i)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		j := skipDigits(b, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := skipDigits(b, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// decodeUpstream decodes an upstream's JSON into v once CheckJSON has
// bounded its depth: encoding/json recurses once per level, up to 10,000.
func decodeUpstream(b []byte, v any) error {
	if err := CheckJSON(b); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
