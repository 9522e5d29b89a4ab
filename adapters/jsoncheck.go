package adapters

import (
	"bytes"
	"encoding/json"
	"errors"
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
func CheckJSON(b []byte) error { return CheckJSONMembers(b, nil) }

// CheckJSONMembers is CheckJSON that also hands visit, when b is an
// object, each of its members in order as it passes them: the key
// unescaped, as gjson reads it, and where the raw value starts and ends
// in b. Its caller learns the top-level fields in the same pass that
// bounds the body, instead of a second one after it. A body that turns
// out invalid after some members were visited still fails: the caller
// must judge what it saw only once the error is nil.
func CheckJSONMembers(b []byte, visit func(key string, start, end int)) error {
	// open records, per depth, whether the container there is an object.
	var open [MaxJSONDepth]bool
	depth := 0
	// The top-level member being read: its key, raw, and value's start.
	keyStart, keyEnd, valStart := 0, 0, 0
	i := skipSpace(b, 0)
value:
	if i >= len(b) {
		return ErrJSONSyntax
	}
	if depth == 1 {
		valStart = i
	}
	switch c := b[i]; c {
	case '{', '[':
		if depth == MaxJSONDepth {
			return ErrJSONDepth
		}
		open[depth] = c == '{'
		depth++
		i = skipSpace(b, i+1)
		if i < len(b) && (b[i] == '}' && c == '{' || b[i] == ']' && c == '[') {
			depth--
			i++
			goto after
		}
		if c == '{' {
			goto key
		}
		goto value
	case '"':
		if i = skipString(b, i); i < 0 {
			return ErrJSONSyntax
		}
	case 't':
		i = literal(b, i, "true")
	case 'f':
		i = literal(b, i, "false")
	case 'n':
		i = literal(b, i, "null")
	default:
		i = skipNumber(b, i)
	}
	if i < 0 {
		return ErrJSONSyntax
	}
after:
	if depth == 1 && visit != nil && open[0] {
		visit(memberKey(b[keyStart:keyEnd]), valStart, i)
	}
	i = skipSpace(b, i)
	if depth == 0 {
		if i != len(b) {
			return ErrJSONSyntax
		}
		return nil
	}
	if i >= len(b) {
		return ErrJSONSyntax
	}
	switch obj := open[depth-1]; {
	case b[i] == ',':
		i = skipSpace(b, i+1)
		if obj {
			goto key
		}
		goto value
	case b[i] == '}' && obj, b[i] == ']' && !obj:
		depth--
		i++
		goto after
	}
	return ErrJSONSyntax
key:
	if i >= len(b) || b[i] != '"' {
		return ErrJSONSyntax
	}
	if depth == 1 {
		keyStart = i
	}
	if i = skipString(b, i); i < 0 {
		return ErrJSONSyntax
	}
	if depth == 1 {
		keyEnd = i
	}
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		return ErrJSONSyntax
	}
	i = skipSpace(b, i+1)
	goto value
}

// memberKey is a valid JSON string (quotes included) as a Go string: a
// view of its bytes, or decoded (allocated) when it holds an escape.
func memberKey(raw []byte) string {
	s := unsafe.String(unsafe.SliceData(raw), len(raw))
	if bytes.IndexByte(raw, '\\') < 0 {
		return s[1 : len(s)-1]
	}
	return gjson.Parse(s).Str
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// plainByte marks the string bytes that need no look: not a quote, a
// backslash or a control character.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// skipString returns the index after the string starting at b[i] (a
// quote), or -1 when it is not a valid JSON string.
func skipString(b []byte, i int) int {
	i++
	for i < len(b) {
		c := b[i]
		if plainByte[c] {
			i++
			continue
		}
		switch c {
		case '"':
			return i + 1
		case '\\':
			if i+1 >= len(b) {
				return -1
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return -1
				}
				i += 6
			default:
				return -1
			}
		default:
			// A raw control character.
			return -1
		}
	}
	return -1
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
