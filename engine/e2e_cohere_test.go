package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go"
	"github.com/openai/openai-go/shared"
	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"gateway/engine"
)

// cohSeen is what the fake Cohere recorded of one request.
type cohSeen struct {
	method, path, auth string
	body               []byte
}

// cohFake is an in-process Cohere v2 Chat API speaking the documented wire
// format: a weather model that calls get_weather for each city asked
// about, then answers from the tool results.
type cohFake struct {
	ln   *fasthttputil.InmemoryListener
	mu   sync.Mutex
	seen []cohSeen
}

func newCohFake(t *testing.T) *cohFake {
	f := &cohFake{ln: fasthttputil.NewInmemoryListener()}
	srv := &fasthttp.Server{Handler: f.serve}
	done := make(chan struct{})
	go func() { _ = srv.Serve(f.ln); close(done) }()
	t.Cleanup(func() {
		_ = f.ln.Close()
		<-done
	})
	return f
}

// dial reaches the fake at cohere.test and nothing else.
func (f *cohFake) dial(addr string) (net.Conn, error) {
	if addr != "cohere.test:80" {
		return nil, errors.New("dial " + addr + ": connection refused")
	}
	return f.ln.Dial()
}

func (f *cohFake) requests() []cohSeen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]cohSeen(nil), f.seen...)
}

// cohCities are the calls the fake model makes, in order.
var cohCities = []struct{ id, city string }{
	{"get_weather_pa7x2kq", "Paris"},
	{"get_weather_ly4m9zw", "Lyon"},
}

func (f *cohFake) serve(ctx *fasthttp.RequestCtx) {
	body := bytes.Clone(ctx.PostBody())
	f.mu.Lock()
	f.seen = append(f.seen, cohSeen{method: string(ctx.Method()), path: string(ctx.Path()),
		auth: string(ctx.Request.Header.Peek("Authorization")), body: body})
	f.mu.Unlock()
	if string(ctx.Path()) != "/v2/chat" {
		ctx.SetStatusCode(404)
		ctx.SetBodyString(`{"message":"not found"}`)
		return
	}
	req := gjson.ParseBytes(body)
	msgs := req.Get("messages").Array()
	answering := len(msgs) > 0 && msgs[len(msgs)-1].Get("role").Str == "tool"
	usage := `{"billed_units":{"input_tokens":40,"output_tokens":12},"tokens":{"input_tokens":812,"output_tokens":31}}`
	if !req.Get("stream").Bool() {
		ctx.SetContentType("application/json")
		if answering {
			ctx.SetBodyString(`{"id":"co-final","finish_reason":"COMPLETE","message":{"role":"assistant","content":[{"type":"text","text":"Sunny."}]},"usage":` + usage + `}`)
			return
		}
		var calls []string
		for _, c := range cohCities {
			calls = append(calls, `{"id":"`+c.id+`","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"`+c.city+`\"}"}}`)
		}
		ctx.SetBodyString(`{"id":"co-tools","finish_reason":"TOOL_CALL","message":{"role":"assistant",` +
			`"tool_plan":"I will look up the weather in both cities.","tool_calls":[` + strings.Join(calls, ",") + `]},"usage":` + usage + `}`)
		return
	}
	var events [][2]string
	add := func(typ, data string) { events = append(events, [2]string{typ, data}) }
	id := "co-tools-stream"
	if answering {
		id = "co-final-stream"
	}
	add("message-start", `{"id":"`+id+`","type":"message-start","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}}`)
	if answering {
		add("content-start", `{"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}`)
		for _, piece := range []string{"Paris is 18°C", " and sunny;", " Lyon is 21°C."} {
			add("content-delta", `{"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"`+piece+`"}}}}`)
		}
		add("content-end", `{"type":"content-end","index":0}`)
		add("message-end", `{"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":`+usage+`}}`)
	} else {
		for _, piece := range []string{"I will", " look up", " both cities."} {
			add("tool-plan-delta", `{"type":"tool-plan-delta","delta":{"message":{"tool_plan":"`+piece+`"}}}`)
		}
		for i, c := range cohCities {
			add("tool-call-start", fmt.Sprintf(`{"type":"tool-call-start","index":%d,"delta":{"message":{"tool_calls":{"id":"%s","type":"function","function":{"name":"get_weather","arguments":""}}}}}`, i, c.id))
			for _, piece := range []string{`{\"city\"`, `: \"` + c.city, `\"}`} {
				add("tool-call-delta", fmt.Sprintf(`{"type":"tool-call-delta","index":%d,"delta":{"message":{"tool_calls":{"function":{"arguments":"%s"}}}}}`, i, piece))
			}
			add("tool-call-end", fmt.Sprintf(`{"type":"tool-call-end","index":%d}`, i))
		}
		add("message-end", `{"type":"message-end","delta":{"finish_reason":"TOOL_CALL","usage":`+usage+`}}`)
	}
	ctx.SetContentType("text/event-stream")
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		for _, ev := range events {
			_, _ = w.WriteString("event: " + ev[0] + "\ndata: " + ev[1] + "\n\n")
			if w.Flush() != nil {
				return
			}
		}
	})
}

const cohConfig = `
auth:
  keys: [{name: sdk, key: "${GW}"}]
providers:
  co:
    type: cohere
    base_url: http://cohere.test
    keys: ["${CO_KEY}"]
    models:
      command: {upstream: command-a-03-2025}
models:
  weather: {targets: [co/command]}
`

// cohCheckRequest checks the fake saw a Cohere request: the path, the
// provider key, the upstream model and the stream flag.
func cohCheckRequest(t *testing.T, s cohSeen, stream bool) gjson.Result {
	t.Helper()
	if s.method != "POST" || s.path != "/v2/chat" || s.auth != "Bearer v-CO_KEY" {
		t.Errorf("cohere got %s %s with Authorization %q", s.method, s.path, s.auth)
	}
	b := gjson.ParseBytes(s.body)
	if b.Get("model").Str != "command-a-03-2025" || b.Get("stream").Type == gjson.Null || b.Get("stream").Bool() != stream {
		t.Errorf("cohere got model %q stream %s in %s", b.Get("model").Str, b.Get("stream").Raw, s.body)
	}
	return b
}

// TestCohereConversationThroughSDK drives a whole tool-use conversation
// with the official OpenAI SDK through the gateway to a Cohere upstream:
// the system prompt and tool definition go out translated, the tool calls
// come back (as one reply and as a stream of parallel calls), the tool
// results go out as tool turns, and the final answer streams back.
func TestCohereConversationThroughSDK(t *testing.T) {
	fake := newCohFake(t)
	client := sdkClient(t, cohConfig, engine.Options{Dial: fake.dial})
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model: "weather",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("You are a weather assistant. Use the tools."),
			openai.UserMessage("What is the weather in Paris and Lyon?"),
		},
		Tools: []openai.ChatCompletionToolParam{{Function: shared.FunctionDefinitionParam{
			Name:        "get_weather",
			Description: openai.String("Current weather for a city"),
			Parameters: shared.FunctionParameters{
				"type":       "object",
				"properties": map[string]any{"city": map[string]any{"type": "string"}},
				"required":   []string{"city"},
			},
		}}},
	}
	wantCall := func(t *testing.T, got []openai.ChatCompletionMessageToolCall) {
		t.Helper()
		if len(got) != len(cohCities) {
			t.Fatalf("%d tool calls, want %d: %+v", len(got), len(cohCities), got)
		}
		for i, c := range cohCities {
			var args struct{ City string }
			if err := json.Unmarshal([]byte(got[i].Function.Arguments), &args); err != nil || args.City != c.city ||
				got[i].ID != c.id || got[i].Function.Name != "get_weather" || got[i].Type != "function" {
				t.Errorf("tool call %d = %+v (%v), want %s get_weather(%s)", i, got[i], err, c.id, c.city)
			}
		}
	}

	// Turn one, in one reply: the model calls the tool for each city.
	res, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if res.Choices[0].FinishReason != "tool_calls" || res.Usage.PromptTokens != 812 || res.Usage.CompletionTokens != 31 {
		t.Errorf("finish %q usage %+v", res.Choices[0].FinishReason, res.Usage)
	}
	wantCall(t, res.Choices[0].Message.ToolCalls)
	seen := fake.requests()
	if len(seen) != 1 {
		t.Fatalf("cohere got %d requests, want 1", len(seen))
	}
	first := cohCheckRequest(t, seen[0], false)
	if got := first.Get("messages").Raw; !cohSameJSON(got, `[
		{"role":"system","content":"You are a weather assistant. Use the tools."},
		{"role":"user","content":"What is the weather in Paris and Lyon?"}]`) {
		t.Errorf("cohere got messages %s", got)
	}
	if got := first.Get("tools").Raw; !cohSameJSON(got, `[{"type":"function","function":{"name":"get_weather","description":"Current weather for a city",
		"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]`) {
		t.Errorf("cohere got tools %s", got)
	}
	if first.Get("tool_choice").Exists() {
		t.Errorf("cohere got tool_choice %s, want none for auto", first.Get("tool_choice").Raw)
	}

	// Turn one again, streamed: the parallel calls arrive as deltas the
	// SDK's accumulator puts together.
	acc := openai.ChatCompletionAccumulator{}
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	for stream.Next() {
		if !acc.AddChunk(stream.Current()) {
			t.Fatalf("the accumulator refused chunk %s", stream.Current().RawJSON())
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if acc.Choices[0].FinishReason != "tool_calls" || acc.Choices[0].Message.Content != "" || acc.ID != "co-tools-stream" {
		t.Errorf("streamed finish %q content %q id %q", acc.Choices[0].FinishReason, acc.Choices[0].Message.Content, acc.ID)
	}
	wantCall(t, acc.Choices[0].Message.ToolCalls)
	if seen = fake.requests(); len(seen) != 2 {
		t.Fatalf("cohere got %d requests, want 2", len(seen))
	}
	cohCheckRequest(t, seen[1], true)

	// Turn two: the tool results go back; the answer streams, with usage.
	params.Messages = append(params.Messages, acc.Choices[0].Message.ToParam())
	for i, c := range cohCities {
		params.Messages = append(params.Messages, openai.ToolMessage(fmt.Sprintf(`{"city":%q,"temp_c":%d}`, c.city, 18+3*i), c.id))
	}
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	acc = openai.ChatCompletionAccumulator{}
	stream = client.Chat.Completions.NewStreaming(ctx, params)
	for stream.Next() {
		if !acc.AddChunk(stream.Current()) {
			t.Fatalf("the accumulator refused chunk %s", stream.Current().RawJSON())
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if got := acc.Choices[0].Message.Content; got != "Paris is 18°C and sunny; Lyon is 21°C." {
		t.Errorf("streamed answer = %q", got)
	}
	if acc.Choices[0].FinishReason != "stop" || len(acc.Choices[0].Message.ToolCalls) != 0 {
		t.Errorf("streamed finish %q, tool calls %+v", acc.Choices[0].FinishReason, acc.Choices[0].Message.ToolCalls)
	}
	if acc.Usage.PromptTokens != 812 || acc.Usage.CompletionTokens != 31 || acc.Usage.TotalTokens != 843 {
		t.Errorf("streamed usage = %+v", acc.Usage)
	}
	if seen = fake.requests(); len(seen) != 3 {
		t.Fatalf("cohere got %d requests, want 3", len(seen))
	}
	last := cohCheckRequest(t, seen[2], true)
	if got := last.Get("messages").Raw; !cohSameJSON(got, `[
		{"role":"system","content":"You are a weather assistant. Use the tools."},
		{"role":"user","content":"What is the weather in Paris and Lyon?"},
		{"role":"assistant","tool_calls":[
			{"id":"get_weather_pa7x2kq","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}},
			{"id":"get_weather_ly4m9zw","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Lyon\"}"}}]},
		{"role":"tool","tool_call_id":"get_weather_pa7x2kq","content":"{\"city\":\"Paris\",\"temp_c\":18}"},
		{"role":"tool","tool_call_id":"get_weather_ly4m9zw","content":"{\"city\":\"Lyon\",\"temp_c\":21}"}]`) {
		t.Errorf("cohere got messages %s", got)
	}
	for _, s := range seen {
		if bytes.Contains(s.body, []byte("v-GW")) {
			t.Errorf("the gateway key reached the upstream: %s", s.body)
		}
	}
}

// cohSameJSON compares two JSON texts as values.
func cohSameJSON(got, want string) bool {
	var g, w any
	if json.Unmarshal([]byte(got), &g) != nil || json.Unmarshal([]byte(want), &w) != nil {
		return false
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	return bytes.Equal(gb, wb)
}
