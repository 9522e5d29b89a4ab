package adapters

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

func TestCheckJSON(t *testing.T) {
	deep := func(n int, open, close string) string {
		return strings.Repeat(open, n) + strings.Repeat(close, n)
	}
	for _, tc := range []struct {
		in   string
		want error
	}{
		{`{}`, nil},
		{` [ ] `, nil},
		{`{"a":[1,-2.5e+3,0,true,false,null,"x\u00e9\n\"y"],"b":{"c":{}}}`, nil},
		{`"just a string"`, nil},
		{`-0.0E-1`, nil},
		{deep(MaxJSONDepth, "[", "]"), nil},
		{strings.Repeat(`{"a":`, MaxJSONDepth) + `1` + strings.Repeat(`}`, MaxJSONDepth), nil},
		{deep(MaxJSONDepth+1, "[", "]"), ErrJSONDepth},
		{`{"model":"auto","x":` + strings.Repeat("[", 100000), ErrJSONDepth},
		{strings.Repeat(`{"a":`, 100000), ErrJSONDepth},
		{``, ErrJSONSyntax},
		{`{`, ErrJSONSyntax},
		{`{"a":1,}`, ErrJSONSyntax},
		{`[1,]`, ErrJSONSyntax},
		{`[1 2]`, ErrJSONSyntax},
		{`{"a" 1}`, ErrJSONSyntax},
		{`{a:1}`, ErrJSONSyntax},
		{`{"a":1]`, ErrJSONSyntax},
		{`[1}`, ErrJSONSyntax},
		{`01`, ErrJSONSyntax},
		{`1.`, ErrJSONSyntax},
		{`1e`, ErrJSONSyntax},
		{`-`, ErrJSONSyntax},
		{`tru`, ErrJSONSyntax},
		{`nul`, ErrJSONSyntax},
		{`"a\x"`, ErrJSONSyntax},
		{`"a\u12G4"`, ErrJSONSyntax},
		{"\"a\x01\"", ErrJSONSyntax},
		{`"abc`, ErrJSONSyntax},
		{`{} {}`, ErrJSONSyntax},
		{`{"a":1}x`, ErrJSONSyntax},
	} {
		if got := CheckJSON([]byte(tc.in)); !errors.Is(got, tc.want) {
			t.Errorf("CheckJSON(%.40q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// FuzzCheckJSON holds CheckJSON to encoding/json's verdict on every
// input shallow enough for both, and to a depth error on deeper valid
// ones (depthOf is exact on valid JSON): any other failure is a syntax
// error.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}]}`, `"x\u0041"`, `[[[[]]]]`, `-1.5e10`, `{"a":"\\"}`, `[`,
		strings.Repeat(`[{"a":`, 64) + `0` + strings.Repeat(`}]`, 64), strings.Repeat(`[`, MaxJSONDepth+1) + strings.Repeat(`]`, MaxJSONDepth+1)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := CheckJSON(b)
		valid, deep := json.Valid(b), depthOf(b) > MaxJSONDepth
		switch {
		case valid && deep:
			if !errors.Is(err, ErrJSONDepth) {
				t.Fatalf("CheckJSON(%q) = %v on valid input deeper than %d", b, err, MaxJSONDepth)
			}
		case valid:
			if err != nil {
				t.Fatalf("CheckJSON(%q) = %v, encoding/json says valid", b, err)
			}
		case !deep && !errors.Is(err, ErrJSONSyntax):
			t.Fatalf("CheckJSON(%q) = %v, encoding/json says invalid", b, err)
		case deep && err == nil:
			t.Fatalf("CheckJSON(%q) accepts invalid deep input", b)
		}
	})
}

// FuzzCheckJSONMembers holds the members CheckJSONMembers visits to
// gjson's iteration of the same object: the same keys, unescaped alike,
// the same raw values in the same order, and parsed from the raw value
// alone, the same value gjson's iteration gives.
func FuzzCheckJSONMembers(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}],"c":{"d":{}},"e":"x"}`, `{"\u0075sage":{"x":1},"a\"b":2}`,
		` { "a" : 1 , "a" : [ ] } `, `{}`, `[{"a":1}]`, `"x"`, `{"a":1,`, `{"k\ud83d\ude00":"\ud800"}`, "{\"\xff\":1}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		type member struct {
			key, raw string
			val      gjson.Result
		}
		var got []member
		err := CheckJSONMembers(b, func(k string, start, end int) {
			got = append(got, member{key: k, raw: string(b[start:end]), val: gjson.Parse(string(b[start:end]))})
		})
		if (err == nil) != (CheckJSON(b) == nil) {
			t.Fatalf("CheckJSONMembers and CheckJSON disagree on %q", b)
		}
		if err != nil {
			return
		}
		root := gjson.ParseBytes(b)
		if !root.IsObject() {
			if len(got) > 0 {
				t.Fatalf("%q is no object, yet members were visited", b)
			}
			return
		}
		var want []member
		root.ForEach(func(k, v gjson.Result) bool {
			want = append(want, member{key: k.Str, raw: v.Raw, val: v})
			return true
		})
		if len(got) != len(want) {
			t.Fatalf("%q: visited %d members, gjson iterates %d", b, len(got), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.key != w.key || g.raw != w.raw || g.val.Type != w.val.Type || g.val.Str != w.val.Str ||
				g.val.Num != w.val.Num && !(g.val.Num != g.val.Num && w.val.Num != w.val.Num) || g.val.Raw != w.val.Raw {
				t.Fatalf("%q member %d: got %+v, gjson %+v", b, i, g, w)
			}
		}
	})
}

// depthOf is the bracket depth of b ignoring strings, good enough to
// tell deep inputs from shallow ones.
func depthOf(b []byte) int {
	d, most, inStr := 0, 0, false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case inStr && c == '\\':
			i++
		case c == '"':
			inStr = !inStr
		case !inStr && (c == '{' || c == '['):
			d++
			most = max(most, d)
		case !inStr && (c == '}' || c == ']'):
			d--
		}
	}
	return most
}

var checkBenchBody = []byte(`{"model":"auto","stream":false,"max_tokens":256,"messages":[` +
	`{"role":"system","content":"You are a helpful assistant that answers briefly."},` +
	`{"role":"user","content":"What is the capital of France? Please answer in one word, and explain \"why\" after."}],` +
	`"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]}`)

func BenchmarkCheckJSON(b *testing.B) {
	b.SetBytes(int64(len(checkBenchBody)))
	for b.Loop() {
		if CheckJSON(checkBenchBody) != nil {
			b.Fatal("invalid")
		}
	}
}

func BenchmarkGjsonValid(b *testing.B) {
	b.SetBytes(int64(len(checkBenchBody)))
	for b.Loop() {
		if !gjson.ValidBytes(checkBenchBody) {
			b.Fatal("invalid")
		}
	}
}

// TestJSONReader pins the tokens, spans and skips a reader gives.
func TestJSONReader(t *testing.T) {
	b := []byte(` {"a\u0062" : [1, {"x":[]}, "s"], "c":true ,"d":{}} `)
	var r JSONReader
	r.Reset(b)
	var got []string
	for tok := r.Next(); tok != JSONEnd; tok = r.Next() {
		if tok == JSONInvalid {
			t.Fatalf("invalid at %v: %v", got, r.Err())
		}
		got = append(got, string(r.Since(r.Start)))
	}
	want := []string{`{`, `"a\u0062"`, `[`, `1`, `{`, `"x"`, `[`, `]`, `}`, `"s"`, `]`, `"c"`, `true`, `"d"`, `{`, `}`, `}`}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("tokens %q, want %q", got, want)
	}

	r.Reset(b)
	if r.Next() != JSONObject || r.Next() != JSONKey || !r.Escaped || r.Str() != "ab" || !r.Is("ab") || r.Is("a") {
		t.Fatalf("escaped key: %q", r.Str())
	}
	if r.Next() != JSONArray || r.Start != 14 || !r.Skip() || string(r.Since(14)) != `[1, {"x":[]}, "s"]` || r.Depth() != 1 {
		t.Fatalf("skip: at %d, depth %d", r.End, r.Depth())
	}
	if r.Next() != JSONKey || r.Escaped || !r.Is("c") || r.Next() != JSONTrue || !r.Skip() || r.Next() != JSONKey || r.Next() != JSONObject {
		t.Fatal("members after a skip")
	}
	if !r.Leave(0) || r.Next() != JSONEnd || r.Next() != JSONEnd || r.Finish() != nil {
		t.Fatal("end")
	}

	// Member reads a key and its value's first token in one step.
	r.Reset(b)
	if r.Next() != JSONObject || !r.Member() || r.Key() != "ab" || !r.KeyIs("ab") || r.KeyIs("a") || r.Token() != JSONArray || !r.Skip() {
		t.Fatalf("member with an escaped key: %q, %v", r.Key(), r.Token())
	}
	if !r.Member() || r.Key() != "c" || !r.KeyIs("c") || r.Token() != JSONTrue || string(r.Since(r.Start)) != "true" || !r.Skip() {
		t.Fatalf("member after a skip: %q, %v", r.Key(), r.Token())
	}
	if !r.Member() || r.Key() != "d" || r.Token() != JSONObject || r.Member() || r.Token() != JSONObjectEnd {
		t.Fatal("empty object member")
	}
	if r.Member() || r.Token() != JSONObjectEnd || r.Next() != JSONEnd || r.Finish() != nil {
		t.Fatal("member at the end")
	}
	r.Reset([]byte(`{"s":"v\n","t":x}`))
	if r.Next() != JSONObject || !r.Member() || r.Key() != "s" || r.Str() != "v\n" || !r.Escaped || r.Member() || r.Token() != JSONInvalid {
		t.Fatal("member with a string value, then an invalid one")
	}

	// An error sticks, whatever is asked after it.
	r.Reset([]byte(`{"a":[1,}`))
	if r.Finish() != ErrJSONSyntax || r.Next() != JSONInvalid || r.Skip() || r.Leave(0) || r.Finish() != ErrJSONSyntax {
		t.Fatal("error does not stick")
	}
	r.Reset([]byte(`[` + strings.Repeat(`{"a":[`, 100)))
	if r.Finish() != ErrJSONDepth || r.Err() != ErrJSONDepth {
		t.Fatal("depth")
	}
}

// FuzzJSONReader holds a reader's tokens to the text: on any input
// CheckJSON accepts, they rebuild it as json.Compact does.
func FuzzJSONReader(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}],"c":{}}`, ` [ "x\u0041" , -1.5e10 , true , false ] `, `{"a":"\\"}`, `{}`, `"x"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if CheckJSON(b) != nil {
			return
		}
		var r JSONReader
		r.Reset(b)
		var out []byte
		// first[d]: nothing was written yet in the container at depth d.
		first := []bool{true}
		afterKey := false
		for tok := r.Next(); tok != JSONEnd; tok = r.Next() {
			switch tok {
			case JSONInvalid:
				t.Fatalf("%q: invalid after CheckJSON accepted it: %v", b, r.Err())
			case JSONObjectEnd, JSONArrayEnd:
				first = first[:len(first)-1]
				out = append(out, r.Since(r.Start)...)
				afterKey = false
				continue
			}
			if !afterKey && !first[len(first)-1] {
				out = append(out, ',')
			}
			first[len(first)-1] = false
			out = append(out, r.Since(r.Start)...)
			afterKey = tok == JSONKey
			switch tok {
			case JSONKey:
				out = append(out, ':')
			case JSONObject, JSONArray:
				first = append(first, true)
			}
			if r.Depth() != len(first)-1 {
				t.Fatalf("%q: depth %d, %d open", b, r.Depth(), len(first)-1)
			}
		}
		var want bytes.Buffer
		if err := json.Compact(&want, b); err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		if !bytes.Equal(out, want.Bytes()) {
			t.Fatalf("%q: rebuilt %q, json.Compact %q", b, out, want.Bytes())
		}
	})
}

// BenchmarkCheckJSONMembers is the walk answerOf makes over a chat
// completion.
func BenchmarkCheckJSONMembers(b *testing.B) {
	reply := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how can I help?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16}}`)
	n := 0
	for b.Loop() {
		if CheckJSONMembers(reply, func(string, int, int) { n++ }) != nil {
			b.Fatal("invalid")
		}
	}
}
