package engine

import (
	"strings"
	"testing"
)

// TestScanOnePass pins what the single pass must keep from the passes it
// replaced: a body invalid past a bad field is refused as invalid JSON;
// a message's first role and content count, as gjson's Get finds them,
// escaped keys included; tools holding only whitespace are no tools.
func TestScanOnePass(t *testing.T) {
	for _, tc := range []struct {
		name, body, code string
		check            func(*chatRequest) bool
	}{
		{"bad field, then invalid", `{"model":1,"messages":[}`, "invalid_json", nil},
		{"bad field, then too deep", `{"model":1,"x":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`, "invalid_json", nil},
		{"not an object", ` ["model"] `, "invalid_json", nil},
		{"bad field first", `{"stream":"yes","model":1,"messages":[{"role":"user"}]}`, "invalid_type", nil},
		{"first role and content", `{"model":"a","messages":[{"content":"one","r\u006fle":"system","role":"user","content":"two"},{"role":"user","content":"u"}]}`, "",
			func(r *chatRequest) bool { return r.system == `"one"` && r.firstUser == `"u"` && r.messages == 2 }},
		{"empty tools", `{"model":"a","tools":[ ],"messages":[{"role":"user"}]}`, "", func(r *chatRequest) bool { return !r.tools }},
		{"tools", `{"model":"a","tools":[ {} ],"messages":[{"role":"user"}]}`, "", func(r *chatRequest) bool { return r.tools }},
		{"model offsets", ` { "model" : "a\"b" , "messages":[{"role":"user"}]}`, "",
			func(r *chatRequest) bool { return r.model == `a"b` && r.modelStart == 13 && r.modelEnd == 19 }},
	} {
		var r chatRequest
		err := scan([]byte(tc.body), &r, opChat)
		switch {
		case tc.code != "" && (err == nil || err.code != tc.code):
			t.Errorf("%s: got %+v, want code %s", tc.name, err, tc.code)
		case tc.code == "" && err != nil:
			t.Errorf("%s: %+v", tc.name, err)
		case tc.check != nil && !tc.check(&r):
			t.Errorf("%s: scanned %+v", tc.name, r)
		}
	}
}

// BenchmarkScan is the body scan of BenchmarkChat's request ("short"),
// and of a longer conversation with an image part ("long").
func BenchmarkScan(b *testing.B) {
	for _, bc := range []struct {
		name string
		body []byte
	}{{"short", []byte(benchChatBody)}, {"long", longChatBody()}} {
		b.Run(bc.name, func(b *testing.B) {
			var r chatRequest
			b.SetBytes(int64(len(bc.body)))
			b.ReportAllocs()
			for b.Loop() {
				if err := scan(bc.body, &r, opChat); err != nil {
					b.Fatal(err.msg)
				}
			}
		})
	}
}

const benchChatBody = `{"model":"auto","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}]}`

// longChatBody is a 20-message conversation whose second message holds a
// 4 KB image, with tools and stream options.
func longChatBody() []byte {
	var sb strings.Builder
	sb.WriteString(`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_tokens":512,"messages":[`)
	sb.WriteString(`{"role":"system","content":"You are a helpful assistant that answers briefly and cites \"sources\"."}`)
	sb.WriteString(`,{"role":"user","content":[{"type":"text","text":"What is in this picture?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,` +
		strings.Repeat("iVBORw0KGgo", 372) + `","detail":"high"}}]}`)
	for i := 0; i < 9; i++ {
		sb.WriteString(`,{"role":"assistant","content":"It shows a small cat sitting on a wooden table next to a cup of coffee, in soft morning light."}`)
		sb.WriteString(`,{"role":"user","content":"Tell me more about the cat: its colour, its pose, and what it might be looking at.\nBe brief."}`)
	}
	sb.WriteString(`],"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather for a city",` +
		`"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}],"metadata":{"user":"u-1"}}`)
	return []byte(sb.String())
}
