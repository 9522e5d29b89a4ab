package engine

import (
	"fmt"
	"reflect"
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

// TestDecidedFieldsDiffer pins what fieldSet.see relies on to try a
// key's exact spelling before any folding: no two decided fields of an
// operation are alike but for case, and a fieldSet holds them all.
func TestDecidedFieldsDiffer(t *testing.T) {
	lists := [][]string{streamOptionFields[:]}
	for _, op := range append(operations, opResponsesNative) {
		lists = append(lists, op.decided)
	}
	for _, names := range lists {
		if len(names) > 16 {
			t.Errorf("%q: more names than a fieldSet holds", names)
		}
		for i, a := range names {
			for _, b := range names[i+1:] {
				if strings.EqualFold(a, b) {
					t.Errorf("%q: %q and %q differ only in case", names, a, b)
				}
			}
		}
	}
}

// scanEdges are bodies at the edges of the one-pass reader: escaped and
// repeated keys, keys that fold onto a decided one, messages that are no
// objects or have no string role, nesting bombs inside messages, bodies
// that turn invalid after valid fields, whitespace everywhere, and
// "image_url" where it is no image part's type.
var scanEdges = []string{
	`{"mod\u0065l":"a","messages":[{"role":"user"}]}`,
	`{"model":"a","model":"b","messages":[{"role":"user"}]}`,
	`{"model":"a","Model":"b","messages":[{"role":"user"}]}`,
	`{"model":"a","\u017ftream":true,"messages":[{"role":"user"}]}`,
	`{"model":"a","max_to\u212aens":5,"messages":[{"role":"user"}]}`,
	`{"model":"a","messages":[{"role":"user"}],"messages":[{"role":"user"}]}`,
	`{"model":"a","messages":[1]}`,
	`{"model":"a","messages":[{"role":"user"},[]]}`,
	`{"model":"a","messages":[{"role":"user"},null]}`,
	`{"model":"a","messages":[{"role":1}]}`,
	`{"model":"a","messages":[{}]}`,
	`{"model":"a","messages":[{"content":"x","role":{"a":[1]}}]}`,
	`{"model":"a","messages":{"role":"user"}}`,
	`{"model":"a","messages":[]}`,
	`{"model":"a","messages":[{"role":"user","content":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}]}`,
	`{"model":"a","messages":[{"role":"user","content":` + strings.Repeat(`{"a":`, 127) + `1` + strings.Repeat("}", 127) + `}]}`,
	`{"model":"a","messages":[1,` + strings.Repeat("[", 100000),
	`{"model":"a","messages":[{"role":"user"}],"x":tru}`,
	`{"model":"a","messages":[{"role":"user"}]} x`,
	`{"model":1,"messages":[{"role":"user"}],`,
	`{"messages":[{"role":"user"}],"model":"a"`,
	" \n{ \"model\" :\t\"a\" , \"stream\" : true , \"messages\" : [ { \"role\" : \"user\" , \"content\" : [ { \"type\" : \"image_url\" , \"image_url\" : { } } ] } ] } \r\n",
	`{"model":"a","messages":[{"role":"user","content":[{"type":"text","text":"image_url"}]}]}`,
	`{"model":"a","messages":[{"role":"user","content":[{"type":"text","text":"see \"image_url"}]}]}`,
	`{"model":"a","messages":[{"role":"user","content":[{"type":"image\u005furl","image_url":{"url":"x"}}]}]}`,
	`{"model":"a","messages":[{"role":"user","content":[{"type":"image\u005furl"}]},{"role":"user","content":"\"image_url"}]}`,
	`{"model":"a","messages":[{"role":"user","content":[{"type":"text","type":"image_url"},{"type":"image_url","x":1},"image_url",["image_url"]]}]}`,
	`{"model":"a","messages":[{"role":"user","content":"one","content":[{"type":"image_url"}]}]}`,
	`{"model":"a","messages":[{"r\u006fle":"sys\u0074em","c\u006fntent":"s"},{"role":"developer","content":"d"},{"role":"user"},{"role":"user","content":"u"},{"role":"assistant"}]}`,
	`{"model":"a","messages":[{"role":"system"},{"role":"system","content":{"a":1}}]}`,
	`{"model":"a","messages":[{"role":"user"}],"stream_options":{"include_usage":true,"include_usage":false}}`,
	`{"model":"a","messages":[{"role":"user"}],"stream_options":{"Include_usage":true}}`,
	`{"model":"a","messages":[{"role":"user"}],"stream_options":{"x":[1],"include_usage":true}}`,
	`{"model":"a","messages":[{"role":"user"}],"stream_options":[{"include_usage":true}]}`,
	`{"model":"a","messages":[{"role":"user"}],"stream_options":null,"stream_options":true}`,
	`{"model":"a","messages":[{"role":"user"}],"max_tokens":1e3,"max_completion_tokens":5.0}`,
	`{"model":"a","messages":[{"role":"user"}],"max_tokens":1.5}`,
	`{"model":"a","messages":[{"role":"user"}],"max_tokens":0}`,
	`{"model":"a","messages":[{"role":"user"}],"max_tokens":-0}`,
	`{"model":"a","messages":[{"role":"user"}],"max_tokens":10000001}`,
	`{"model":"a","messages":[{"role":"user"}],"max_tokens":10000000.00000000001}`,
	`{"model":"a","messages":[{"role":"user"}],"max_tokens":123456789012345678}`,
	`{"model":"a","messages":[{"role":"user"}],"max_tokens":1e400}`,
	`{"model":"a","messages":[{"role":"user"}],"max_tokens":"5"}`,
	`{"model":"a","messages":[{"role":"user"}],"max_tokens":null,"max_completion_tokens":[]}`,
	`{"model":"a","messages":[{"role":"user"}],"tools":[ ]}`,
	`{"model":"a","messages":[{"role":"user"}],"tools":null}`,
	`{"model":"a","messages":[{"role":"user"}],"tools":{}}`,
	`{"model":"a","messages":[{"role":"user"}],"tools":[1],"tools":[]}`,
	`{"model":"a","messages":[{"role":"user"}],"metadata":{"user":"u"}}`,
	`{"model":"a","messages":[{"role":"user"}],"metadata":null}`,
	`{"model":"a","messages":[{"role":"user"}],"metadata":[]}`,
	`{"model":"a","messages":[{"role":"user"}],"stream":null}`,
	`{"model":"a","messages":[{"role":"user"}],"stream":1}`,
	`{"model":"a","messages":[{"role":"user"}],"stream":true,"stream":false}`,
	`{"model":"","messages":[{"role":"user"}]}`,
	`{"model":"\u0000","messages":[{"role":"user"}]}`,
	`{"model":null,"messages":[{"role":"user"}]}`,
	`{"messages":[{"role":"user"}]}`,
	`{"model":"a"}`,
	`{"model":"a","input":"hi","prompt":["p"],"messages":[{"role":"user"}]}`,
	`{"model":"a","input":1}`,
	`{"model":"a","prompt":{}}`,
	`{"model":"a","input":"x","input":"y"}`,
	`{"model":"a","input":"x","dimensions":1,"Dimensions":2}`,
	`[]`, `"x"`, `1`, ``, `{`, `{}`, ` {} `,
}

// scanOps are the operations whose bodies scan reads, each with its own
// content field and decided fields.
var scanOps = []*operation{opChat, opEmbeddings, opCompletions, opResponsesNative, opMessages}

// TestScanMatchesOracle holds the one-pass scan to the gjson-based one it
// replaced on the edges above, for every operation.
func TestScanMatchesOracle(t *testing.T) {
	for _, body := range append(scanEdges, benchChatBody, string(longChatBody())) {
		for _, op := range scanOps {
			if msg := scanDiff([]byte(body), op); msg != "" {
				t.Errorf("%s %.120q: %s", op.name, body, msg)
			}
		}
	}
}

// FuzzScan holds the one-pass scan to the gjson-based one it replaced.
func FuzzScan(f *testing.F) {
	for _, body := range scanEdges {
		f.Add([]byte(body))
	}
	f.Add([]byte(benchChatBody))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, op := range scanOps {
			if msg := scanDiff(body, op); msg != "" {
				t.Fatalf("%s %q: %s", op.name, body, msg)
			}
		}
	})
}

// scanDiff says how scan and scanOracle differ on body, or "".
func scanDiff(body []byte, op *operation) string {
	var got, want chatRequest
	gotErr, wantErr := scan(body, &got, op), scanOracle(body, &want, op)
	switch {
	case !reflect.DeepEqual(gotErr, wantErr):
		return "error " + errString(gotErr) + ", oracle " + errString(wantErr)
	case wantErr == nil && !reflect.DeepEqual(got, want):
		return fmt.Sprintf("scanned %+v, oracle %+v", got, want)
	}
	return ""
}

func errString(e *apiError) string {
	if e == nil {
		return "none"
	}
	return e.code + " (" + e.param + "): " + e.msg
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

// benchChatBody is BenchmarkChat's request, as bench/ sends it too.
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
