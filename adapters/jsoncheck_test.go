package adapters

import (
	"encoding/json"
	"errors"
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
// input shallow enough for both, and to a depth error on deeper ones.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}]}`, `"x\u0041"`, `[[[[]]]]`, `-1.5e10`, `{"a":"\\"}`, `[`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := CheckJSON(b)
		if depthOf(b) > MaxJSONDepth {
			if err != nil && json.Valid(b) && !errors.Is(err, ErrJSONDepth) {
				t.Fatalf("deep valid input: %v", err)
			}
			return
		}
		if want := json.Valid(b); (err == nil) != want {
			t.Fatalf("CheckJSON(%q) = %v, encoding/json says valid=%v", b, err, want)
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
