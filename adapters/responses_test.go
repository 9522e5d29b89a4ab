package adapters

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// The id and clock the responses tests pin.
const (
	testResponseID      = "resp_0123456789abcdef"
	testResponseCreated = 1767225600
)

// TestResponsesGolden replays every transcript in testdata/responses: the
// Responses request (with history.json, the stored conversation, when it
// continues one) must reach a fake OpenAI upstream, through the openai
// adapter, as upstream-request.json; that upstream's answer
// (upstream-response.json or upstream-stream.sse) must come back to the
// client as response.json or stream.sse, and to the store as
// assistant.json. A request the translation refuses ends as "error" says,
// with nothing sent. Run with -update to rewrite the expected sections.
func TestResponsesGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/responses/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			g := readGolden(t, path)
			var history []byte
			if h, ok := g.sections["history.json"]; ok {
				history = []byte(h)
			}
			chat, req, f := ResponsesToChat([]byte(g.sections["request.json"]), history)
			var got responsesTranscript
			if f != nil {
				got.end = failureText(f) + "\n" + string(f.Body)
			} else {
				got = runResponses(t, g, chat, req)
			}
			if *updateGolden {
				got.update(g)
				g.write(t)
				return
			}
			got.check(t, g)
		})
	}
}

// responsesTranscript is what one golden exchange produced.
type responsesTranscript struct {
	upstream, response, assistant []byte
	stream                        string
	end                           string
}

// runResponses sends chat through the openai adapter to a fake upstream
// that answers as the golden file says, and translates the answer back.
func runResponses(t *testing.T, g *golden, chat []byte, req *ResponsesRequest) responsesTranscript {
	t.Helper()
	if n := topLevelCount(chat, "model"); n != 1 {
		t.Errorf("the chat body holds %d models, want 1: %s", n, chat)
	}
	_, streamed := g.sections["upstream-stream.sse"]
	u := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if streamed {
			ctx.SetContentType("text/event-stream")
			ctx.SetBodyString(g.sections["upstream-stream.sse"])
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(g.sections["upstream-response.json"])
	})
	call := geminiCall(chat, "up-model-é", 0)
	if call.Stream != streamed || call.Stream != req.Stream {
		t.Fatalf("chat stream=%v, request stream=%v, but the upstream answer is streamed=%v", call.Stream, req.Stream, streamed)
	}
	var r Reply
	if err := newTestOpenAI(t, u, "5s").Chat(call, &r); err != nil {
		t.Fatal(err)
	}
	out := responsesTranscript{upstream: u.requests()[0].body}
	if !streamed {
		var f *Failure
		if out.response, out.assistant, f = ChatToResponse(r.Body, req, testResponseID, testResponseCreated); f != nil {
			out.end = failureText(f)
		}
		return out
	}
	s := NewResponsesStream(r.Stream, req, testResponseID, testResponseCreated)
	defer s.Close()
	var b strings.Builder
	var err error
	for range 1000 {
		var frame []byte
		if frame, err = s.Next(); err != nil {
			break
		}
		b.Write(frame)
	}
	if err != io.EOF {
		out.end = failureText(err)
	}
	out.stream, out.assistant = b.String(), s.Assistant()
	checkEvents(t, out.stream)
	return out
}

func (x *responsesTranscript) update(g *golden) {
	set := func(name string, v []byte, ok bool) {
		if ok {
			g.set(name, string(v))
			return
		}
		delete(g.sections, name)
		g.names = slices.DeleteFunc(g.names, func(n string) bool { return n == name })
	}
	set("upstream-request.json", []byte(indentJSON(x.upstream)), x.upstream != nil)
	set("response.json", []byte(indentJSON(x.response)), x.response != nil)
	set("stream.sse", []byte(x.stream), x.stream != "")
	set("assistant.json", []byte(indentJSON(x.assistant)), x.assistant != nil)
	set("error", []byte(x.end+"\n"), x.end != "")
}

func (x *responsesTranscript) check(t *testing.T, g *golden) {
	t.Helper()
	if want := strings.TrimSpace(g.sections["error"]); strings.TrimSpace(x.end) != want {
		t.Errorf("ended with %q, want %q", x.end, want)
	}
	for _, c := range []struct {
		name string
		got  []byte
	}{{"upstream-request.json", x.upstream}, {"response.json", x.response}, {"assistant.json", x.assistant}} {
		want, ok := g.sections[c.name]
		switch {
		case ok != (c.got != nil):
			t.Errorf("%s: got %s, want %q", c.name, c.got, want)
		case ok:
			sameJSON(t, c.name, c.got, want)
		}
	}
	if want := g.sections["stream.sse"]; x.stream != want {
		t.Errorf("stream differs\n got:\n%s\nwant:\n%s", x.stream, want)
	}
}

// topLevelCount counts the top-level members of a JSON object named key.
func topLevelCount(obj []byte, key string) int {
	n := 0
	gjson.ParseBytes(obj).ForEach(func(k, _ gjson.Result) bool {
		if k.Str == key {
			n++
		}
		return true
	})
	return n
}

// checkEvents checks a Responses event stream's framing: each event an
// "event:" line naming the JSON type of its one "data:" line, numbered
// from 0 without a gap, the last one terminal.
func checkEvents(t testing.TB, stream string) {
	t.Helper()
	if stream == "" {
		return
	}
	events := strings.Split(strings.TrimSuffix(stream, "\n\n"), "\n\n")
	for i, ev := range events {
		name, data, ok := strings.Cut(ev, "\n")
		name, ok1 := strings.CutPrefix(name, "event: ")
		data, ok2 := strings.CutPrefix(data, "data: ")
		if !ok || !ok1 || !ok2 || strings.Contains(data, "\n") {
			t.Fatalf("event %d is not one event line and one data line: %q", i, ev)
		}
		var head struct {
			Type string `json:"type"`
			Seq  *int   `json:"sequence_number"`
		}
		if err := json.Unmarshal([]byte(data), &head); err != nil || head.Type != name || head.Seq == nil || *head.Seq != i {
			t.Fatalf("event %d (%s) has type %q and sequence_number %v: %s (%v)", i, name, head.Type, head.Seq, data, err)
		}
		terminal := name == "response.completed" || name == "response.incomplete" || name == "response.failed"
		if terminal != (i == len(events)-1) {
			t.Fatalf("event %d of %d is %s", i, len(events), name)
		}
	}
}

func TestResponsesToChatRejects(t *testing.T) {
	const tools = `"tools":[{"type":"function","name":"f","parameters":{"type":"object"}}]`
	for _, c := range []struct {
		name, body, history string
		class               Class
		param               any
	}{
		{"not json", `{"model":`, "", BadRequest, nil},
		{"an array", `[]`, "", BadRequest, nil},
		{"no model", `{"input":"hi"}`, "", BadRequest, "model"},
		{"model not a string", `{"model":5,"input":"hi"}`, "", BadRequest, "model"},
		{"no input", `{"model":"m"}`, "", BadRequest, "input"},
		{"input a number", `{"model":"m","input":5}`, "", BadRequest, "input"},
		{"no message at all", `{"model":"m","input":[]}`, "", BadRequest, "input"},
		{"item not an object", `{"model":"m","input":["hi"]}`, "", BadRequest, "input[0]"},
		{"item without type or role", `{"model":"m","input":[{"content":"hi"}]}`, "", BadRequest, "input[0].type"},
		{"unknown role", `{"model":"m","input":[{"role":"robot","content":"hi"}]}`, "", BadRequest, "input[0].role"},
		{"role not a string", `{"model":"m","input":[{"role":1,"content":"hi"}]}`, "", BadRequest, "input[0].role"},
		{"no content", `{"model":"m","input":[{"role":"user"}]}`, "", BadRequest, "input[0].content"},
		{"unknown part", `{"model":"m","input":[{"role":"user","content":[{"type":"input_video"}]}]}`, "", BadRequest, "input[0].content[0].type"},
		{"image without url", `{"model":"m","input":[{"role":"user","content":[{"type":"input_image"}]}]}`, "", BadRequest, "input[0].content[0].image_url"},
		{"image in a system message", `{"model":"m","input":[{"role":"system","content":[{"type":"input_image","image_url":"https://x/a.png"}]}]}`, "", BadRequest, "input[0].content[0].type"},
		{"call without call_id", `{"model":"m","input":[{"type":"function_call","name":"f","arguments":"{}"}]}`, "", BadRequest, "input[0].call_id"},
		{"call without name", `{"model":"m","input":[{"type":"function_call","call_id":"c","arguments":"{}"}]}`, "", BadRequest, "input[0].name"},
		{"output without call_id", `{"model":"m","input":[{"type":"function_call_output","output":"1"}]}`, "", BadRequest, "input[0].call_id"},
		{"output without output", `{"model":"m","input":[{"type":"function_call_output","call_id":"c"}]}`, "", BadRequest, "input[0].output"},
		{"instructions an array", `{"model":"m","input":"hi","instructions":[]}`, "", BadRequest, "instructions"},
		{"temperature a string", `{"model":"m","input":"hi","temperature":"hot"}`, "", BadRequest, "temperature"},
		{"max_output_tokens 0", `{"model":"m","input":"hi","max_output_tokens":0}`, "", BadRequest, "max_output_tokens"},
		{"max_output_tokens fractional", `{"model":"m","input":"hi","max_output_tokens":1.5}`, "", BadRequest, "max_output_tokens"},
		{"stream a string", `{"model":"m","input":"hi","stream":"yes"}`, "", BadRequest, "stream"},
		{"metadata a list", `{"model":"m","input":"hi","metadata":[]}`, "", BadRequest, "metadata"},
		{"metadata a number value", `{"model":"m","input":"hi","metadata":{"a":1}}`, "", BadRequest, "metadata"},
		{"metadata too many keys", `{"model":"m","input":"hi","metadata":{"1":"","2":"","3":"","4":"","5":"","6":"","7":"","8":"","9":"","10":"","11":"","12":"","13":"","14":"","15":"","16":"","17":""}}`, "", BadRequest, "metadata"},
		{"tool without name", `{"model":"m","input":"hi","tools":[{"type":"function"}]}`, "", BadRequest, "tools[0].name"},
		{"tool_choice unknown", `{"model":"m","input":"hi",` + tools + `,"tool_choice":"always"}`, "", BadRequest, "tool_choice"},
		{"tool_choice without name", `{"model":"m","input":"hi",` + tools + `,"tool_choice":{"type":"function"}}`, "", BadRequest, "tool_choice.name"},
		{"text format unknown", `{"model":"m","input":"hi","text":{"format":{"type":"yaml"}}}`, "", BadRequest, "text.format.type"},
		{"json_schema without name", `{"model":"m","input":"hi","text":{"format":{"type":"json_schema","schema":{}}}}`, "", BadRequest, "text.format.name"},
		{"json_schema without schema", `{"model":"m","input":"hi","text":{"format":{"type":"json_schema","name":"n"}}}`, "", BadRequest, "text.format.schema"},
		{"history not an array", `{"model":"m","input":"hi","previous_response_id":"resp_1"}`, `{"role":"user"}`, BadRequest, "previous_response_id"},
		{"history not json", `{"model":"m","input":"hi","previous_response_id":"resp_1"}`, `[{`, BadRequest, "previous_response_id"},
		{"hosted tool", `{"model":"m","input":"hi","tools":[{"type":"web_search_preview"}]}`, "", Unsupported, "tools[0].type"},
		{"hosted tool_choice", `{"model":"m","input":"hi",` + tools + `,"tool_choice":{"type":"file_search"}}`, "", Unsupported, "tool_choice.type"},
		{"file part", `{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"file-1"}]}]}`, "", Unsupported, "input[0].content[0].type"},
		{"image by file id", `{"model":"m","input":[{"role":"user","content":[{"type":"input_image","file_id":"file-1"}]}]}`, "", Unsupported, "input[0].content[0].file_id"},
		{"image in a tool output", `{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":[{"type":"input_image","image_url":"https://x/a.png"}]}]}`, "", Unsupported, "input[0].output[0].type"},
		{"item reference", `{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}`, "", Unsupported, "input[0].type"},
		{"background", `{"model":"m","input":"hi","background":true}`, "", Unsupported, "background"},
		{"conversation", `{"model":"m","input":"hi","conversation":"conv_1"}`, "", Unsupported, "conversation"},
		{"stored prompt", `{"model":"m","prompt":{"id":"pmpt_1"}}`, "", Unsupported, "prompt"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var history []byte
			if c.history != "" {
				history = []byte(c.history)
			}
			chat, req, f := ResponsesToChat([]byte(c.body), history)
			if f == nil {
				t.Fatalf("accepted, as %s", chat)
			}
			if chat != nil || req != nil {
				t.Errorf("a refusal returned chat %q and request %+v", chat, req)
			}
			var body struct {
				Error struct {
					Message string `json:"message"`
					Type    string `json:"type"`
					Param   any    `json:"param"`
					Code    string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(f.Body, &body); err != nil {
				t.Fatalf("error body %q: %v", f.Body, err)
			}
			e := body.Error
			if f.Class != c.class || f.Status != 400 || e.Param != c.param || e.Type != "invalid_request_error" || e.Message != f.Msg || e.Message == "" || e.Code == "" {
				t.Errorf("failure %s %d %q, body %s; want %s with param %v", f.Class, f.Status, f.Msg, f.Body, c.class, c.param)
			}
		})
	}
}

// TestResponsesConversation continues a conversation: the instructions
// lead, the history follows, then the new input; what is kept for the
// next turn leaves the instructions out and appends the answer.
func TestResponsesConversation(t *testing.T) {
	history := []byte(` [{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"}] `)
	chat, req, f := ResponsesToChat([]byte(`{"model":"m","instructions":"Be brief.","previous_response_id":"resp_1","input":"And now?"}`), history)
	if f != nil {
		t.Fatal(f)
	}
	want := `{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"},{"role":"user","content":"And now?"}]}`
	if string(chat) != want {
		t.Errorf("chat = %s\nwant %s", chat, want)
	}
	wantKept := `[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"},{"role":"user","content":"And now?"}]`
	if string(req.Messages) != wantKept {
		t.Errorf("Messages = %s\nwant %s", req.Messages, wantKept)
	}
	if req.PreviousResponseID != "resp_1" {
		t.Errorf("PreviousResponseID = %q", req.PreviousResponseID)
	}
	next := req.History([]byte(`{"role":"assistant","content":"Later."}`))
	if want := wantKept[:len(wantKept)-1] + `,{"role":"assistant","content":"Later."}]`; string(next) != want {
		t.Errorf("History = %s\nwant %s", next, want)
	}
	// The next turn takes it back as it is.
	if _, _, f := ResponsesToChat([]byte(`{"model":"m","input":"ok"}`), next); f != nil {
		t.Errorf("the history History made is refused: %v", f)
	}
	// Only the new input is kept when there is no history.
	_, req, _ = ResponsesToChat([]byte(`{"model":"m","input":"x"}`), nil)
	if string(req.Messages) != `[{"role":"user","content":"x"}]` || !req.Store || !req.ParallelToolCalls {
		t.Errorf("request %+v, Messages %s", req, req.Messages)
	}
}

func TestChatToResponseRefusesNonCompletions(t *testing.T) {
	req := mustResponsesRequest(t, `{"model":"m","input":"hi"}`)
	for _, body := range []string{``, `{`, `{"choices":5}`, `{"choices":[]}`, `{"choices":[{"index":0}]}`, `[1]`} {
		resp, assistant, f := ChatToResponse([]byte(body), req, testResponseID, testResponseCreated)
		if f == nil || f.Class != Retryable || resp != nil || assistant != nil {
			t.Errorf("%q: response %s, failure %v; want a Retryable failure", body, resp, f)
		}
	}
}

func mustResponsesRequest(t testing.TB, body string) *ResponsesRequest {
	t.Helper()
	_, req, f := ResponsesToChat([]byte(body), nil)
	if f != nil {
		t.Fatal(f)
	}
	return req
}

// frameStream is an upstream chat stream that plays its frames, then
// ends with err (io.EOF when nil).
type frameStream struct {
	frames []string
	err    error
	closed bool
}

func (s *frameStream) Next() ([]byte, error) {
	if len(s.frames) == 0 {
		if s.err == nil {
			return nil, io.EOF
		}
		return nil, s.err
	}
	f := s.frames[0]
	s.frames = s.frames[1:]
	return []byte(f), nil
}

func (s *frameStream) Close()       { s.closed = true }
func (s *frameStream) Usage() Usage { return Usage{Prompt: 3, Completion: 4, Known: true} }

// TestResponsesStreamFailures: an upstream that fails before its first
// frame fails the stream with its own error, with nothing sent, so
// another target may serve the request; one that fails later ends the
// stream with response.failed, then the error, for the engine to record.
func TestResponsesStreamFailures(t *testing.T) {
	req := mustResponsesRequest(t, `{"model":"m","input":"hi","stream":true}`)
	boom := &Failure{Class: Retryable, Msg: "upstream timed out"}
	hi := `data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}` + "\n\n"
	for _, c := range []struct {
		name   string
		up     *frameStream
		events []string
		err    error
		msg    string
	}{
		{"before the first frame", &frameStream{err: boom}, nil, boom, ""},
		{"an error event first", &frameStream{frames: []string{`data: {"error":{"message":"overloaded"}}` + "\n\n"}}, nil,
			&Failure{Class: Retryable, Msg: "upstream stream error: overloaded"}, ""},
		{"garbage first", &frameStream{frames: []string{"data: {nope\n\n"}}, nil,
			&Failure{Class: Retryable, Msg: "upstream sent a stream event that is not JSON"}, ""},
		{"mid-way", &frameStream{frames: []string{hi}, err: boom},
			[]string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added", "response.output_text.delta", "response.failed"},
			boom, "upstream stream failed: upstream timed out"},
		{"cut mid-way", &frameStream{frames: []string{hi}, err: ErrStreamCut},
			[]string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added", "response.output_text.delta", "response.failed"},
			ErrStreamCut, "upstream stream ended before the answer was complete"},
		{"an error event mid-way", &frameStream{frames: []string{hi, `data: {"error":{"message":"overloaded"}}` + "\n\n"}},
			[]string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added", "response.output_text.delta", "response.failed"},
			&Failure{Class: Retryable, Msg: "upstream stream error: overloaded"}, "upstream stream failed: upstream stream error: overloaded"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := NewResponsesStream(c.up, req, testResponseID, testResponseCreated)
			var names []string
			var last []byte
			var err error
			for range 100 {
				var frame []byte
				if frame, err = s.Next(); err != nil {
					break
				}
				names = append(names, string(eventName(frame)))
				last = bytes.Clone(frame)
			}
			if !slices.Equal(names, c.events) {
				t.Errorf("events %v, want %v", names, c.events)
			}
			var f, want *Failure
			switch {
			case errors.As(c.err, &want):
				if !errors.As(err, &f) || f.Class != want.Class || f.Msg != want.Msg {
					t.Errorf("ended with %v, want %v", err, c.err)
				}
			case err != c.err:
				t.Errorf("ended with %v, want %v", err, c.err)
			}
			if _, again := s.Next(); again != err {
				t.Errorf("the next call returned %v, then %v", err, again)
			}
			if s.Assistant() != nil {
				t.Errorf("a failed stream gave the answer %s to store", s.Assistant())
			}
			if c.msg != "" {
				_, data, _ := bytes.Cut(last, []byte("data: "))
				r := gjson.GetBytes(data, "response")
				if r.Get("status").Str != "failed" || r.Get("error.code").Str != "server_error" || r.Get("error.message").Str != c.msg {
					t.Errorf("response.failed carries %s", r.Raw)
				}
				if item := r.Get("output.0"); item.Get("status").Str != "incomplete" || item.Get("content.0.text").Str != "Hi" {
					t.Errorf("the failed response's output %s", r.Get("output").Raw)
				}
			}
			s.Close()
			if !c.up.closed {
				t.Error("Close did not close the upstream")
			}
		})
	}
}

// TestResponsesStreamInterleavedCalls: an upstream that sends a call's
// arguments after it moved on to the next call still gets them into the
// final Response and the stored answer.
func TestResponsesStreamInterleavedCalls(t *testing.T) {
	req := mustResponsesRequest(t, `{"model":"m","input":"hi","stream":true}`)
	up := &frameStream{frames: []string{
		`data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","function":{"name":"a","arguments":"{\"x\""}}]}}]}` + "\n\n",
		`data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"b","arguments":"{}"}}]}}]}` + "\n\n",
		`data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}` + "\n\n",
		`data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}` + "\n\n",
		"data: [DONE]\n\n",
	}}
	s := NewResponsesStream(up, req, testResponseID, testResponseCreated)
	var b strings.Builder
	for {
		frame, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b.Write(frame)
	}
	checkEvents(t, b.String())
	events := strings.Split(strings.TrimSuffix(b.String(), "\n\n"), "\n\n")
	_, final, _ := strings.Cut(events[len(events)-1], "data: ")
	if got := gjson.Get(final, "response.output.0.arguments").Str; got != `{"x":1}` {
		t.Errorf("the final response has the first call's arguments %q", got)
	}
	if got := gjson.GetBytes(s.Assistant(), "tool_calls.0.function.arguments").Str; got != `{"x":1}` {
		t.Errorf("the stored answer has the first call's arguments %q", got)
	}
}

func FuzzResponsesToChat(f *testing.F) {
	for _, path := range must(filepath.Glob("testdata/responses/*.txt")) {
		b := must(os.ReadFile(path))
		_, req, _ := strings.Cut(string(b), "-- request.json --\n")
		req, _, _ = strings.Cut(req, "\n-- ")
		f.Add([]byte(req), []byte(nil))
	}
	f.Add([]byte(`{"model":"m","input":[{"type":"function_call","call_id":"c","name":"f"},{"type":"function_call_output","call_id":"c","output":[{"type":"input_text","text":"1"}]}]}`), []byte(`[{"role":"user","content":"hi"}]`))
	f.Add([]byte(`{"model":"m","input":[{"role":"assistant","content":[{"type":"refusal","refusal":"no"}]},{"type":"reasoning"}]}`), []byte(` [ ] `))
	f.Fuzz(func(t *testing.T, body, history []byte) {
		if len(history) == 0 {
			history = nil
		}
		chat, req, fail := ResponsesToChat(body, history)
		if fail != nil {
			if fail.Class != BadRequest && fail.Class != Unsupported || fail.Status != 400 || !json.Valid(fail.Body) {
				t.Fatalf("failure %+v is not a relayable 400", fail)
			}
			return
		}
		var out ChatRequest
		if err := json.Unmarshal(chat, &out); err != nil {
			t.Fatalf("translated %q into invalid JSON %q: %v", body, chat, err)
		}
		if topLevelCount(chat, "model") != 1 || len(out.Messages) == 0 || out.Stream != req.Stream {
			t.Fatalf("translated %q into %s", body, chat)
		}
		var kept []json.RawMessage
		if err := json.Unmarshal(req.Messages, &kept); err != nil || len(kept) == 0 {
			t.Fatalf("Messages %q: %v", req.Messages, err)
		}
		for _, echo := range [][]byte{req.Instructions, req.Tools, req.ToolChoice, req.Text, req.Metadata, req.History([]byte(`{"role":"assistant","content":""}`))} {
			if !json.Valid(echo) {
				t.Fatalf("echo %q is not JSON", echo)
			}
		}
		resp, _, fail := ChatToResponse([]byte(`{"choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"stop"}]}`), req, testResponseID, testResponseCreated)
		if fail != nil || !json.Valid(resp) {
			t.Fatalf("response %q for request %q: %v", resp, body, fail)
		}
	})
}

func FuzzResponsesStream(f *testing.F) {
	for _, path := range must(filepath.Glob("testdata/responses/*.txt")) {
		b := must(os.ReadFile(path))
		if _, s, ok := strings.Cut(string(b), "-- upstream-stream.sse --\n"); ok {
			s, _, _ = strings.Cut(s, "\n-- ")
			f.Add([]byte(s), []byte{3, 9})
		}
	}
	f.Add([]byte(`data: {"choices":[{"delta":{"refusal":"no"}}]}`+"\n\n"+`data: {"choices":[{"delta":{"content":"a","tool_calls":[{"function":{"arguments":"1"}}]}}]}`+"\n\n"), []byte{1})
	f.Add([]byte(`data: {"choices":[{"delta":{"tool_calls":[{"index":3,"function":{"name":"f"}},{"index":-1,"id":"\"","function":{"arguments":"\u0000"}}]},"finish_reason":"length"}],"usage":{"prompt_tokens":1e300}}`+"\n\n"), []byte{2})
	f.Add([]byte(": ping\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"\\ud800\"}}]}\n\ndata: {\"error\":{}}\n\n"), []byte{5})
	req := mustResponsesRequest(f, `{"model":"m","input":"hi","stream":true}`)
	f.Fuzz(func(t *testing.T, data, sizes []byte) {
		up := &openAIStream{sse: newSSEReader(&splitReader{data: data, sizes: sizes})}
		defer up.sse.release()
		s := NewResponsesStream(up, req, testResponseID, testResponseCreated)
		var b strings.Builder
		for i := 0; ; i++ {
			if i > 16*len(data)+16 {
				t.Fatalf("the stream gave %d events from %d bytes", i, len(data))
			}
			frame, err := s.Next()
			if err != nil {
				if err != io.EOF && b.Len() > 0 && !strings.Contains(b.String(), "event: response.failed\n") {
					t.Fatalf("error %v after events without response.failed", err)
				}
				break
			}
			b.Write(frame)
		}
		checkEvents(t, b.String())
		for ev := range strings.SplitSeq(b.String(), "\n\n") {
			if _, data, ok := strings.Cut(ev, "data: "); ok && !json.Valid([]byte(data)) {
				t.Fatalf("event data %q is not JSON", data)
			}
		}
	})
}
