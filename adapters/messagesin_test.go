package adapters

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// The Messages ingress golden transcripts share the anthropic ones'
// format and -anthropic.update flag. Inputs are "messages request",
// "chat response" and "chat stream"; each has its expected output
// ("chat request", "messages response", "messages stream" and "stream
// end"). "sdk message" is checked by TestMessagesSDK.

// scriptStream is an upstream chat stream that yields frames, then end
// (io.EOF when nil).
type scriptStream struct {
	frames [][]byte
	end    error
	usage  Usage
	closed bool
}

func (s *scriptStream) Next() ([]byte, error) {
	if len(s.frames) == 0 {
		if s.end != nil {
			return nil, s.end
		}
		return nil, io.EOF
	}
	f := s.frames[0]
	s.frames = s.frames[1:]
	return f, nil
}

func (s *scriptStream) Close()       { s.closed = true }
func (s *scriptStream) Usage() Usage { return s.usage }

// chatFrames splits a chat stream transcript into its frames.
func chatFrames(s string) [][]byte {
	var frames [][]byte
	for f := range strings.SplitAfterSeq(s, "\n\n") {
		if strings.TrimSpace(f) != "" {
			frames = append(frames, []byte(f))
		}
	}
	return frames
}

// checkMessagesFrame fails unless frame is one Anthropic event: its
// event line, then data whose type is the event's name.
func checkMessagesFrame(t testing.TB, frame []byte) string {
	t.Helper()
	name, rest, ok := bytes.Cut(frame, []byte("\n"))
	ev, isEvent := bytes.CutPrefix(name, []byte("event: "))
	data, isData := bytes.CutPrefix(rest, []byte("data: "))
	if !ok || !isEvent || !isData || !bytes.HasSuffix(data, []byte("\n\n")) || bytes.Count(data, []byte("\n")) != 2 {
		t.Fatalf("frame %q is not one event", frame)
	}
	data = data[:len(data)-2]
	if CheckJSON(data) != nil || gjson.GetBytes(data, "type").Str != string(ev) {
		t.Fatalf("frame %q: data is not JSON of type %s", frame, ev)
	}
	return string(ev)
}

func TestMessagesGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/messagesin/*.txt")
	if err != nil || len(files) < 7 {
		t.Fatalf("testdata/messagesin/*.txt: %d files (err %v)", len(files), err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			g := anthReadGolden(t, path)
			chat, req, f := MessagesToChat([]byte(g.secs["messages request"]))
			if f != nil {
				t.Fatalf("translating: %v", f)
			}
			if req.Untranslatable != "" {
				t.Errorf("untranslatable: %s", req.Untranslatable)
			}
			g.checkJSON(t, "chat request", chat)
			if n := strings.Count(string(chat), `"model":`); n != 1 {
				t.Errorf("chat request holds %d models", n)
			}
			if resp, ok := g.secs["chat response"]; ok {
				out, f := ChatToMessage([]byte(resp), req)
				if f != nil {
					t.Fatalf("translating the reply: %v", f)
				}
				g.checkJSON(t, "messages response", out)
			}
			if in, ok := g.secs["chat stream"]; ok {
				up := &scriptStream{frames: chatFrames(in), usage: Usage{Prompt: 1, Completion: 2, Known: true}}
				s := NewMessagesStream(up, req)
				frames, end := anthDrain(t, s)
				for _, f := range frames {
					checkMessagesFrame(t, []byte(f))
				}
				g.checkExact(t, "messages stream", strings.Join(frames, ""))
				g.checkExact(t, "stream end", end+"\n")
				if s.Usage() != up.usage {
					t.Errorf("usage %+v, want the upstream's %+v", s.Usage(), up.usage)
				}
				s.Close()
				if !up.closed {
					t.Error("Close does not close the upstream")
				}
			}
			if *anthUpdate && g.changed {
				g.write(t, path)
			}
		})
	}
}

func TestMessagesToChatFields(t *testing.T) {
	const msgs = `"messages":[{"role":"user","content":"x"}]`
	tests := []struct {
		name, body string
		// want holds gjson paths of the chat request and their JSON; ""
		// is a path that must be absent.
		want map[string]string
		// untranslatable is the start of the reason, when there is one.
		untranslatable string
	}{
		{"fields kept", `{"model":"m","max_tokens":9,"temperature":1,"top_p":0.5,"stop_sequences":["a"],"metadata":{"user_id":"u"},` + msgs + `}`,
			map[string]string{"model": `"m"`, "max_tokens": "9", "temperature": "1", "top_p": "0.5", "stop": `["a"]`, "user": `"u"`, "stream": "", "stream_options": ""}, ""},
		{"dropped", `{"model":"m","max_tokens":9,"top_k":3,"thinking":{"type":"enabled","budget_tokens":10},"service_tier":"auto","container":"c",` + msgs + `}`,
			map[string]string{"top_k": "", "thinking": "", "service_tier": "", "container": "", "metadata": ""}, ""},
		{"nulls", `{"model":"m","max_tokens":9,"system":null,"stream":null,"temperature":null,"stop_sequences":null,"tools":null,"tool_choice":null,"metadata":null,` + msgs + `}`,
			map[string]string{"messages": `[{"role":"user","content":"x"}]`, "temperature": "", "stop": "", "tools": "", "tool_choice": ""}, ""},
		{"stream", `{"model":"m","max_tokens":9,"stream":true,` + msgs + `}`,
			map[string]string{"stream": "true", "stream_options": `{"include_usage":true}`}, ""},
		{"stream false", `{"model":"m","max_tokens":9,"stream":false,` + msgs + `}`, map[string]string{"stream": "", "stream_options": ""}, ""},
		{"system string", `{"model":"m","max_tokens":9,"system":"be nice",` + msgs + `}`,
			map[string]string{"messages.0": `{"role":"system","content":"be nice"}`}, ""},
		{"empty system", `{"model":"m","max_tokens":9,"system":[],` + msgs + `}`, map[string]string{"messages.#": "1"}, ""},
		{"tool_choice auto", `{"model":"m","max_tokens":9,"tools":[{"name":"f","input_schema":{}}],"tool_choice":{"type":"auto"},` + msgs + `}`,
			map[string]string{"tool_choice": `"auto"`, "parallel_tool_calls": ""}, ""},
		{"tool_choice none keeps parallel", `{"model":"m","max_tokens":9,"tools":[{"name":"f","input_schema":{}}],"tool_choice":{"type":"none","disable_parallel_tool_use":true},` + msgs + `}`,
			map[string]string{"tool_choice": `"none"`, "parallel_tool_calls": ""}, ""},
		{"tool_choice tool", `{"model":"m","max_tokens":9,"tools":[{"name":"f\"","input_schema":{}}],"tool_choice":{"type":"tool","name":"f\""},` + msgs + `}`,
			map[string]string{"tool_choice": `{"type":"function","function":{"name":"f\""}}`, "tools.0.function.name": `"f\""`}, ""},
		{"tool_choice without tools", `{"model":"m","max_tokens":9,"tool_choice":{"type":"any","disable_parallel_tool_use":true},` + msgs + `}`,
			map[string]string{"tool_choice": "", "parallel_tool_calls": ""}, ""},
		{"tool_use without text", `{"model":"m","max_tokens":9,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"a":[1, 2]}}]}]}`,
			map[string]string{"messages.0": `{"role":"assistant","content":null,"tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"{\"a\":[1,2]}"}}]}`}, ""},
		{"empty tool result", `{"model":"m","max_tokens":9,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t"}]}]}`,
			map[string]string{"messages": `[{"role":"tool","content":"","tool_call_id":"t"}]`}, ""},
		{"empty text blocks", `{"model":"m","max_tokens":9,"messages":[{"role":"user","content":[{"type":"text","text":""},{"type":"text","text":"a"}]},{"role":"assistant","content":[{"type":"thinking","thinking":"t"}]}]}`,
			map[string]string{"messages": `[{"role":"user","content":"a"}]`}, ""},
		{"server tool", `{"model":"m","max_tokens":9,"tools":[{"type":"web_search_20250305","name":"web_search"},{"name":"f","input_schema":{}}],` + msgs + `}`,
			map[string]string{"tools.#": "1"}, `tools.0: the server tool "web_search_20250305"`},
		{"document", `{"model":"m","max_tokens":9,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"d"}},{"type":"text","text":"sum up"}]}]}`,
			map[string]string{"messages": `[{"role":"user","content":"sum up"}]`}, `messages.0.content.0: a "document" block`},
		{"document in a tool result", `{"model":"m","max_tokens":9,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"search_result"}]}]}]}`,
			map[string]string{"messages.0.content": `""`}, `messages.0.content.0.content.0: a "search_result" block`},
		{"server tool use", `{"model":"m","max_tokens":9,"messages":[{"role":"user","content":"q"},{"role":"assistant","content":[{"type":"server_tool_use","id":"s","name":"web_search","input":{}}]}]}`,
			map[string]string{"messages.#": "1"}, `messages.1.content.0: a "server_tool_use" block`},
		{"file image", `{"model":"m","max_tokens":9,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}]}`,
			map[string]string{"messages.#": "0"}, "messages.0.content.0: an image from the Files API"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chat, req, f := MessagesToChat([]byte(tt.body))
			if f != nil {
				t.Fatal(f)
			}
			if !strings.HasPrefix(req.Untranslatable, tt.untranslatable) || (tt.untranslatable == "") != (req.Untranslatable == "") {
				t.Errorf("untranslatable %q, want %q...", req.Untranslatable, tt.untranslatable)
			}
			for path, want := range tt.want {
				got := gjson.GetBytes(chat, path)
				if want == "" {
					if got.Exists() {
						t.Errorf("%s = %s, want none", path, got.Raw)
					}
					continue
				}
				if !anthJSONEqual(t, []byte(got.Raw), []byte(want)) {
					t.Errorf("%s = %s, want %s", path, got.Raw, want)
				}
			}
		})
	}
}

func TestMessagesToChatRequest(t *testing.T) {
	body := `{"stream":true,"stop_sequences":["x","y"], "model" : "auto" ,"max_tokens":3,"messages":[{"role":"user","content":"<b>"}]}`
	chat, req, f := MessagesToChat([]byte(body))
	if f != nil {
		t.Fatal(f)
	}
	if req.Model != "auto" || body[req.ModelStart:req.ModelEnd] != `"auto"` || !req.Stream ||
		strings.Join(req.StopSequences, ",") != "x,y" || req.InputTokens != 9 {
		t.Errorf("request %+v", req)
	}
	// Code in prompts and answers goes as it is, not as \u003c escapes.
	if !bytes.Contains(chat, []byte(`"content":"<b>"`)) {
		t.Errorf("chat body %s", chat)
	}
	out, _ := ChatToMessage([]byte(`{"choices":[{"message":{"content":"a && b"}}]}`), req)
	if !bytes.Contains(out, []byte(`"text":"a && b"`)) {
		t.Errorf("message %s", out)
	}
}

func TestMessagesToChatRejects(t *testing.T) {
	const msgs = `"messages":[{"role":"user","content":"x"}]`
	tests := []struct{ name, body, msg string }{
		{"not JSON", `{"model":`, "request body: not valid JSON"},
		{"too deep", strings.Repeat("[", 200), "request body: JSON nested deeper than 128 levels"},
		{"not an object", `[1]`, "request body must be a JSON object"},
		{"no model", `{"max_tokens":1,` + msgs + `}`, "model: field required"},
		{"model type", `{"model":1,"max_tokens":1,` + msgs + `}`, "model: must be a non-empty string"},
		{"empty model", `{"model":"","max_tokens":1,` + msgs + `}`, "model: must be a non-empty string"},
		{"two models", `{"model":"a","max_tokens":1,"model":"b",` + msgs + `}`, "model: sent twice"},
		{"two messages", `{"model":"a","max_tokens":1,` + msgs + `,` + msgs + `}`, "messages: sent twice"},
		{"no max_tokens", `{"model":"m",` + msgs + `}`, "max_tokens: field required"},
		{"max_tokens 0", `{"model":"m","max_tokens":0,` + msgs + `}`, "max_tokens: must be a whole number from 1"},
		{"max_tokens fraction", `{"model":"m","max_tokens":1.5,` + msgs + `}`, "max_tokens: must be a whole number from 1"},
		{"max_tokens string", `{"model":"m","max_tokens":"1",` + msgs + `}`, "max_tokens: must be a whole number from 1"},
		{"no messages", `{"model":"m","max_tokens":1}`, "messages: field required"},
		{"empty messages", `{"model":"m","max_tokens":1,"messages":[]}`, "messages: must be a list of at least one message"},
		{"messages object", `{"model":"m","max_tokens":1,"messages":{}}`, "messages: must be a list of at least one message"},
		{"stream type", `{"model":"m","max_tokens":1,"stream":"yes",` + msgs + `}`, "stream: must be true or false"},
		{"temperature type", `{"model":"m","max_tokens":1,"temperature":"hot",` + msgs + `}`, "temperature: must be a number"},
		{"stop_sequences type", `{"model":"m","max_tokens":1,"stop_sequences":"x",` + msgs + `}`, "stop_sequences: must be a list of strings"},
		{"stop_sequences item", `{"model":"m","max_tokens":1,"stop_sequences":["x",1],` + msgs + `}`, "stop_sequences.1: must be a string"},
		{"metadata type", `{"model":"m","max_tokens":1,"metadata":[],` + msgs + `}`, "metadata: must be an object"},
		{"system type", `{"model":"m","max_tokens":1,"system":3,` + msgs + `}`, "system: must be a string or a list of text blocks"},
		{"system image", `{"model":"m","max_tokens":1,"system":[{"type":"image"}],` + msgs + `}`, "system.0: must be a text block"},
		{"message type", `{"model":"m","max_tokens":1,"messages":["x"]}`, "messages.0: must be an object with a role and content"},
		{"role", `{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"x"}]}`, `messages.0.role: must be "user" or "assistant"`},
		{"content type", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":3}]}`, "messages.0.content: must be a string or a list of content blocks"},
		{"no content", `{"model":"m","max_tokens":1,"messages":[{"role":"user"}]}`, "messages.0.content: must be a string or a list of content blocks"},
		{"block type", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":["x"]}]}`, "messages.0.content.0: must be a content block object"},
		{"no block type", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"text":"x"}]}]}`, "messages.0.content.0.type: field required"},
		{"text type", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"text","text":1}]}]}`, "messages.0.content.0.text: must be a string"},
		{"image source", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"ftp"}}]}]}`,
			`messages.0.content.0.source.type: must be "base64", "url" or "file"`},
		{"image data", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png"}}]}]}`,
			"messages.0.content.0.source: a base64 source needs media_type and data"},
		{"image url", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url"}}]}]}`,
			"messages.0.content.0.source.url: field required"},
		{"user tool_use", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_use","id":"t","name":"f","input":{}}]}]}`,
			"messages.0.content.0: tool_use blocks belong in assistant messages"},
		{"tool_result id", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_result","content":"x"}]}]}`,
			"messages.0.content.0.tool_use_id: field required"},
		{"tool_result content", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":3}]}]}`,
			"messages.0.content.0.content: must be a string or a list of content blocks"},
		{"tool_result text", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text"}]}]}]}`,
			"messages.0.content.0.content.0.text: must be a string"},
		{"assistant image", `{"model":"m","max_tokens":1,"messages":[{"role":"assistant","content":[{"type":"image","source":{"type":"url","url":"u"}}]}]}`,
			"messages.0.content.0: an assistant message cannot hold a image block"},
		{"tool_use id", `{"model":"m","max_tokens":1,"messages":[{"role":"assistant","content":[{"type":"tool_use","name":"f","input":{}}]}]}`,
			"messages.0.content.0.id: field required"},
		{"tool_use name", `{"model":"m","max_tokens":1,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","input":{}}]}]}`,
			"messages.0.content.0.name: field required"},
		{"tool_use input", `{"model":"m","max_tokens":1,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":"{}"}]}]}`,
			"messages.0.content.0.input: must be an object"},
		{"only thinking", `{"model":"m","max_tokens":1,"messages":[{"role":"assistant","content":[{"type":"redacted_thinking","data":"x"}]}]}`,
			"messages: nothing to send: every message is empty"},
		{"tools type", `{"model":"m","max_tokens":1,"tools":{},` + msgs + `}`, "tools: must be a list of tools"},
		{"tool type", `{"model":"m","max_tokens":1,"tools":[1],` + msgs + `}`, "tools.0: must be a tool object"},
		{"tool name", `{"model":"m","max_tokens":1,"tools":[{"input_schema":{}}],` + msgs + `}`, "tools.0.name: field required"},
		{"tool schema", `{"model":"m","max_tokens":1,"tools":[{"name":"f"}],` + msgs + `}`, "tools.0.input_schema: must be a JSON schema object"},
		{"tool description", `{"model":"m","max_tokens":1,"tools":[{"name":"f","input_schema":{},"description":1}],` + msgs + `}`, "tools.0.description: must be a string"},
		{"tool_choice type", `{"model":"m","max_tokens":1,"tool_choice":"auto",` + msgs + `}`, "tool_choice: must be an object with a type"},
		{"tool_choice mode", `{"model":"m","max_tokens":1,"tool_choice":{"type":"required"},` + msgs + `}`, `tool_choice.type: must be "auto", "any", "tool" or "none"`},
		{"tool_choice name", `{"model":"m","max_tokens":1,"tool_choice":{"type":"tool"},` + msgs + `}`, "tool_choice.name: field required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chat, req, f := MessagesToChat([]byte(tt.body))
			if f == nil {
				t.Fatalf("accepted: %s", chat)
			}
			if chat != nil || req != nil {
				t.Error("a failure returns a chat body or a request")
			}
			if f.Class != BadRequest || f.Status != 400 || f.Msg != tt.msg {
				t.Errorf("failure = %v %d %q, want bad_request 400 %q", f.Class, f.Status, f.Msg, tt.msg)
			}
			if string(f.Body) != string(MessagesErrorBody(400, tt.msg)) {
				t.Errorf("body %s", f.Body)
			}
		})
	}
}

func TestMessagesErrorBody(t *testing.T) {
	for status, typ := range map[int]string{
		400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
		413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error",
		503: "overloaded_error", 422: "invalid_request_error", 502: "api_error",
	} {
		b := MessagesErrorBody(status, `bad "thing"`)
		want := `{"type":"error","error":{"type":"` + typ + `","message":"bad \"thing\""}}`
		if string(b) != want {
			t.Errorf("%d: %s, want %s", status, b, want)
		}
	}
}

func TestCountTokens(t *testing.T) {
	img := `{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + strings.Repeat("A", 4000) + `"}}`
	msgs := `[{"role":"user","content":[` + img + `,{"type":"tool_result","tool_use_id":"t","content":[` + img + `]}]}]`
	tests := []struct {
		name, body string
		want       int
		msg        string
	}{
		{"text", `{"model":"m","messages":[{"role":"user","content":"hello world"}]}`, 11, ""},
		{"system and tools", `{"model":"m","system":"abcd","tools":[{"name":"f"}],"messages":[]}`, 2 + 4 + 1, ""},
		{"images", `{"model":"m","messages":` + msgs + `}`,
			(len(msgs)+3)/4 + 2*messagesImageTokens - 2*((len(img)+3)/4), ""},
		{"no model", `{"messages":[]}`, 0, "model: field required"},
		{"model type", `{"model":[],"messages":[]}`, 0, "model: must be a non-empty string"},
		{"no messages", `{"model":"m"}`, 0, "messages: field required"},
		{"messages type", `{"model":"m","messages":"x"}`, 0, "messages: must be a list of messages"},
		{"not JSON", `{`, 0, "request body: not valid JSON"},
		{"not an object", `"x"`, 0, "request body must be a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, f := CountTokens([]byte(tt.body))
			switch {
			case tt.msg != "":
				if f == nil || f.Msg != tt.msg || f.Class != BadRequest || gjson.GetBytes(f.Body, "error.type").Str != "invalid_request_error" {
					t.Errorf("got %d %v, want failure %q", n, f, tt.msg)
				}
			case f != nil:
				t.Fatal(f)
			case n != tt.want:
				t.Errorf("count %d, want %d", n, tt.want)
			}
		})
	}
	// The request's estimate is the same count.
	body := `{"model":"m","max_tokens":5,"system":"abcd","messages":` + msgs + `}`
	_, req, f := MessagesToChat([]byte(body))
	if f != nil {
		t.Fatal(f)
	}
	if n, _ := CountTokens([]byte(body)); req.InputTokens != n {
		t.Errorf("InputTokens %d, CountTokens %d", req.InputTokens, n)
	}
}

func TestChatToMessage(t *testing.T) {
	req := &MessagesRequest{Model: "asked", StopSequences: []string{"STOP"}, InputTokens: 42}
	choice := func(msg, finish string) string {
		return `{"id":"c1","choices":[{"index":0,"message":` + msg + `,"finish_reason":` + finish + `}]}`
	}
	tests := []struct {
		name, completion string
		// want holds gjson paths of the Message and their JSON.
		want map[string]string
		msg  string
	}{
		{"end_turn", choice(`{"role":"assistant","content":"hi"}`, `"stop"`),
			map[string]string{"id": `"msg_c1"`, "model": `"asked"`, "stop_reason": `"end_turn"`, "stop_sequence": "null",
				"usage": `{"input_tokens":42,"output_tokens":0,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}`}, ""},
		{"null finish", choice(`{"role":"assistant","content":"hi"}`, `null`), map[string]string{"stop_reason": `"end_turn"`}, ""},
		{"stop_sequence", `{"id":"msg_x","choices":[{"message":{"content":"a"},"finish_reason":"stop","stop_reason":"STOP"}]}`,
			map[string]string{"id": `"msg_x"`, "stop_reason": `"stop_sequence"`, "stop_sequence": `"STOP"`}, ""},
		{"unknown stop_reason", `{"id":"c","choices":[{"message":{"content":"a"},"finish_reason":"stop","stop_reason":"OTHER"}]}`,
			map[string]string{"stop_reason": `"end_turn"`, "stop_sequence": "null"}, ""},
		{"token stop_reason", `{"id":"c","choices":[{"message":{"content":"a"},"finish_reason":"stop","stop_reason":128001}]}`,
			map[string]string{"stop_reason": `"end_turn"`}, ""},
		{"length", choice(`{"content":"a"}`, `"length"`), map[string]string{"stop_reason": `"max_tokens"`}, ""},
		{"content_filter", choice(`{"content":""}`, `"content_filter"`), map[string]string{"stop_reason": `"refusal"`, "content": `[]`}, ""},
		{"refusal", choice(`{"content":null,"refusal":"I can't"}`, `"stop"`),
			map[string]string{"stop_reason": `"refusal"`, "content": `[{"type":"text","text":"I can't"}]`}, ""},
		{"tools with stop", choice(`{"tool_calls":[{"id":"call_1","function":{"name":"f","arguments":"{\"a\": 1}"}}]}`, `"stop"`),
			map[string]string{"stop_reason": `"tool_use"`, "content": `[{"type":"tool_use","id":"call_1","name":"f","input":{"a":1}}]`}, ""},
		{"bad arguments", choice(`{"tool_calls":[{"id":"c","function":{"name":"f","arguments":"{\"a\": "}},{"id":"d","function":{"name":"g","arguments":"[1]"}},{"id":"e","function":{"name":"h","arguments":""}}]}`, `"length"`),
			map[string]string{"content.#.input": `[{},{},{}]`, "stop_reason": `"max_tokens"`}, ""},
		{"cached usage", `{"id":"c","choices":[{"message":{"content":"a"},"finish_reason":"stop"}],"usage":{"prompt_tokens":100,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":60}}}`,
			map[string]string{"usage": `{"input_tokens":40,"output_tokens":5,"cache_read_input_tokens":60,"cache_creation_input_tokens":0}`}, ""},
		{"hostile usage", `{"id":"c","choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":-100,"completion_tokens":-5,"prompt_tokens_details":{"cached_tokens":60}}}`,
			map[string]string{"usage": `{"input_tokens":0,"output_tokens":0,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}`}, ""},
		{"not JSON", `{"id":`, nil, "upstream sent a body that is not a chat completion"},
		{"no choices", `{"id":"c","choices":[]}`, nil, "upstream answered without a choice"},
		{"error object", `{"error":{"message":"boom"}}`, nil, "upstream answered without a choice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, f := ChatToMessage([]byte(tt.completion), req)
			if tt.msg != "" {
				if f == nil || f.Class != Retryable || f.Msg != tt.msg {
					t.Fatalf("got %s %v, want failure %q", out, f, tt.msg)
				}
				return
			}
			if f != nil {
				t.Fatal(f)
			}
			if gjson.GetBytes(out, "type").Str != "message" || gjson.GetBytes(out, "role").Str != "assistant" {
				t.Errorf("not a Message: %s", out)
			}
			for path, want := range tt.want {
				if got := gjson.GetBytes(out, path); !anthJSONEqual(t, []byte(got.Raw), []byte(want)) {
					t.Errorf("%s = %s, want %s", path, got.Raw, want)
				}
			}
		})
	}
	// Without ids, the Message and its tool_use blocks get their own.
	out, f := ChatToMessage([]byte(`{"choices":[{"message":{"tool_calls":[{"function":{"name":"f"}}]}}]}`), req)
	if f != nil {
		t.Fatal(f)
	}
	if !strings.HasPrefix(gjson.GetBytes(out, "id").Str, "msg_") || len(gjson.GetBytes(out, "content.0.id").Str) < 10 {
		t.Errorf("ids of %s", out)
	}
}

func TestMessagesStream(t *testing.T) {
	req := &MessagesRequest{Model: "m", InputTokens: 7}
	chunk := func(delta string) string {
		return `data: {"id":"c","choices":[{"index":0,"delta":` + delta + `,"finish_reason":null}]}` + "\n\n"
	}
	text := chunk(`{"content":"a"}`)
	done := "data: [DONE]\n\n"
	cut := &Failure{Class: Retryable, Msg: `upstream "went" away`}
	tests := []struct {
		name   string
		frames []string
		end    error
		// events are the events that go out; last is how the stream ends.
		events, last string
	}{
		{"text", []string{text, done}, nil,
			"message_start ping content_block_start content_block_delta content_block_stop message_delta message_stop", "EOF"},
		{"empty reply", []string{done}, nil, "message_start ping message_delta message_stop", "EOF"},
		{"failure first", nil, cut, "", `retryable: upstream "went" away`},
		{"failure after a comment", []string{": hi\n\n"}, cut, "", `retryable: upstream "went" away`},
		{"failure mid-stream", []string{text}, cut,
			"message_start ping content_block_start content_block_delta error", `retryable: upstream "went" away`},
		{"end without DONE", []string{text}, nil,
			"message_start ping content_block_start content_block_delta error", "cut"},
		{"garbage first", []string{"data: {\n\n"}, nil, "", "retryable: upstream sent a stream event that is not JSON"},
		{"garbage mid-stream", []string{text, "data: [1,\n\n"}, nil,
			"message_start ping content_block_start content_block_delta error", "retryable: upstream sent a stream event that is not JSON"},
		{"error chunk", []string{text, `data: {"error":{"message":"quota"}}` + "\n\n"}, nil,
			"message_start ping content_block_start content_block_delta error", "retryable: upstream stream error: quota"},
		{"text, tool, text", []string{text, chunk(`{"tool_calls":[{"index":0,"id":"t","function":{"name":"f","arguments":"{}"}}]}`), text, done}, nil,
			"message_start ping content_block_start content_block_delta content_block_stop content_block_start content_block_delta " +
				"content_block_stop content_block_start content_block_delta content_block_stop message_delta message_stop", "EOF"},
		{"late arguments", []string{
			chunk(`{"tool_calls":[{"index":0,"id":"t0","function":{"name":"f","arguments":"{"}}]}`),
			chunk(`{"tool_calls":[{"index":1,"id":"t1","function":{"name":"g"}}]}`),
			chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"}"}}]}`), done}, nil,
			"message_start ping content_block_start content_block_delta content_block_stop content_block_start content_block_delta " +
				"content_block_stop message_delta message_stop", "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := &scriptStream{end: tt.end}
			for _, f := range tt.frames {
				up.frames = append(up.frames, []byte(f))
			}
			s := NewMessagesStream(up, req)
			frames, end := anthDrain(t, s)
			var events []string
			for _, f := range frames {
				events = append(events, checkMessagesFrame(t, []byte(f)))
			}
			if strings.Join(events, " ") != tt.events || end != tt.last {
				t.Errorf("events %q, end %q\nwant   %q, end %q", events, end, tt.events, tt.last)
			}
			if strings.HasSuffix(tt.events, "error") {
				msg := gjson.GetBytes(bytes.TrimPrefix([]byte(frames[len(frames)-1]), []byte("event: error\ndata: ")), "error")
				want := strings.TrimPrefix(tt.last, "retryable: ")
				if tt.last == "cut" {
					want = ErrStreamCut.Error()
				}
				if msg.Get("type").Str != "api_error" || msg.Get("message").Str != want {
					t.Errorf("error event %s", frames[len(frames)-1])
				}
				if _, err := s.Next(); err == nil || err == io.EOF {
					t.Errorf("after the error event: %v, want the failure again", err)
				}
			}
		})
	}
	// The late arguments go to their own block, as the SDK accumulates.
	up := &scriptStream{frames: chatFrames(chunk(`{"tool_calls":[{"index":0,"id":"t0","function":{"name":"f","arguments":"{"}}]}`) +
		chunk(`{"tool_calls":[{"index":1,"id":"t1","function":{"name":"g"}}]}`) + chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"}"}}]}`) + done)}
	frames, _ := anthDrain(t, NewMessagesStream(up, req))
	if !strings.Contains(frames[6], `"index":0,"delta":{"type":"input_json_delta","partial_json":"}"}`) {
		t.Errorf("late arguments: %s", frames[6])
	}
}

func TestMessagesStreamToolsWithoutIndex(t *testing.T) {
	// Some servers send whole calls without an index: each id is a call.
	frames := `data: {"id":"c","choices":[{"delta":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":"{}"}},{"id":"b","function":{"name":"g","arguments":"{"}}]}}]}` + "\n\n" +
		`data: {"id":"c","choices":[{"delta":{"tool_calls":[{"function":{"arguments":"}"}}]},"finish_reason":"stop"}]}` + "\n\n" + "data: [DONE]\n\n"
	out, _ := anthDrain(t, NewMessagesStream(&scriptStream{frames: chatFrames(frames)}, &MessagesRequest{Model: "m"}))
	all := strings.Join(out, "")
	for _, want := range []string{
		`"index":0,"content_block":{"type":"tool_use","id":"a","name":"f","input":{}}`,
		`"index":1,"content_block":{"type":"tool_use","id":"b","name":"g","input":{}}`,
		`"index":1,"delta":{"type":"input_json_delta","partial_json":"}"}`,
		`"stop_reason":"tool_use"`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no %s in\n%s", want, all)
		}
	}
}

// messagesSeeds are the fuzz seeds: every golden request, and a few
// edges.
func messagesSeeds(f *testing.F, section string) [][]byte {
	files, _ := filepath.Glob("testdata/messagesin/*.txt")
	var seeds [][]byte
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		if _, rest, ok := strings.Cut(string(b), "-- "+section+" --\n"); ok {
			in, _, _ := strings.Cut(rest, "\n-- ")
			seeds = append(seeds, []byte(in))
		}
	}
	return seeds
}

func FuzzMessagesToChat(f *testing.F) {
	for _, s := range messagesSeeds(f, "messages request") {
		f.Add(s)
	}
	for _, s := range []string{
		``, `{}`, `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{"type":"url","url":"u"}}]}]}]}`,
		`{"model":"m","max_tokens":1,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"a":{"b":[]}}}]}],"tools":[{"name":"f","input_schema":{}}],"tool_choice":{"type":"tool","name":"f"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		chat, req, fail := MessagesToChat(body)
		if fail != nil {
			if fail.Class != BadRequest || CheckJSON(fail.Body) != nil || gjson.GetBytes(fail.Body, "type").Str != "error" {
				t.Fatalf("failure %+v", fail)
			}
			return
		}
		if CheckJSON(chat) != nil {
			t.Fatalf("chat body is not JSON: %s", chat)
		}
		var c ChatRequest
		if err := json.Unmarshal(chat, &c); err != nil || c.Model != req.Model || c.Model == "" || len(c.Messages) == 0 && req.Untranslatable == "" {
			t.Fatalf("chat body %s (%v) for %+v", chat, err, req)
		}
		if got := gjson.GetBytes(body, "model"); body[req.ModelStart] != '"' || got.Raw != string(body[req.ModelStart:req.ModelEnd]) {
			t.Fatalf("model at %d:%d of %s", req.ModelStart, req.ModelEnd, body)
		}
		if n, _ := CountTokens(body); n != req.InputTokens || n < 0 {
			t.Fatalf("estimate %d, count %d", req.InputTokens, n)
		}
	})
}

func FuzzMessagesStream(f *testing.F) {
	for i, s := range messagesSeeds(f, "chat stream") {
		f.Add(s, byte(i))
	}
	for i, s := range []string{
		"", "data: [DONE]\n\n", ": x\n\ndata: {}\n\n",
		`data: {"choices":[{"delta":{"tool_calls":[{"index":99999999999,"function":{"arguments":"x"}}]}}],"usage":{"prompt_tokens":1e30}}` + "\n\ndata: [DONE]\n\n",
		`data: {"id":"\u0000","choices":[{"delta":{"content":"\ud800"}}]}` + "\n\n",
	} {
		f.Add([]byte(s), byte(i))
	}
	f.Fuzz(func(t *testing.T, in []byte, fail byte) {
		up := &scriptStream{frames: chatFrames(string(in))}
		if fail%2 == 1 {
			up.end = &Failure{Class: Retryable, Msg: "cut"}
		}
		s := NewMessagesStream(up, &MessagesRequest{Model: "m\"", StopSequences: []string{"x"}})
		var events []string
		for i := 0; ; i++ {
			if i > 8*len(in)+8 {
				t.Fatalf("%d events from %d bytes", i, len(in))
			}
			frame, err := s.Next()
			if err != nil {
				var f *Failure
				switch {
				case err == io.EOF:
					if len(events) == 0 || events[len(events)-1] != "message_stop" {
						t.Fatalf("clean end after %q", events)
					}
				case !errors.Is(err, ErrStreamCut) && !errors.As(err, &f):
					t.Fatalf("stream error %T %v", err, err)
				case len(events) > 0 && events[len(events)-1] != "error":
					t.Fatalf("failure %v after %q, not an error event", err, events)
				}
				return
			}
			events = append(events, checkMessagesFrame(t, frame))
		}
	})
}
