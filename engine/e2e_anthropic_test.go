package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go"
	"github.com/openai/openai-go/option"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"gateway/engine"
)

// anthSeen is what the fake Anthropic API recorded of one request.
type anthSeen struct {
	method, path, apiKey, version, contentType, auth string
	body                                             []byte
}

// anthFake is an in-process Anthropic Messages API: it speaks the wire
// format (typed SSE events, error objects) and records what it was sent.
type anthFake struct {
	ln     *fasthttputil.InmemoryListener
	answer func(ctx *fasthttp.RequestCtx, body []byte)
	mu     sync.Mutex
	seen   []anthSeen
}

type anthQuiet struct{}

func (anthQuiet) Printf(string, ...any) {}

func anthNewFake(t *testing.T, answer func(ctx *fasthttp.RequestCtx, body []byte)) *anthFake {
	f := &anthFake{ln: fasthttputil.NewInmemoryListener(), answer: answer}
	srv := &fasthttp.Server{Logger: anthQuiet{}, Handler: func(ctx *fasthttp.RequestCtx) {
		s := anthSeen{
			method:      string(ctx.Method()),
			path:        string(ctx.Path()),
			apiKey:      string(ctx.Request.Header.Peek("x-api-key")),
			version:     string(ctx.Request.Header.Peek("anthropic-version")),
			contentType: string(ctx.Request.Header.ContentType()),
			auth:        string(ctx.Request.Header.Peek("Authorization")),
			body:        bytes.Clone(ctx.PostBody()),
		}
		f.mu.Lock()
		f.seen = append(f.seen, s)
		f.mu.Unlock()
		if s.method == "POST" && s.path == "/v1/messages/count_tokens" {
			// Anthropic's own count, told apart from the gateway's estimate.
			anthJSON(ctx, 200, `{"input_tokens":4242}`)
			return
		}
		if s.method != "POST" || s.path != "/v1/messages" {
			ctx.SetStatusCode(fasthttp.StatusNotFound)
			ctx.SetBodyString(`{"type":"error","error":{"type":"not_found_error","message":"Not found"}}`)
			return
		}
		f.answer(ctx, s.body)
	}}
	done := make(chan struct{})
	go func() { _ = srv.Serve(f.ln); close(done) }()
	t.Cleanup(func() { _ = f.ln.Close(); <-done })
	return f
}

func (f *anthFake) requests() []anthSeen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]anthSeen(nil), f.seen...)
}

// anthDial routes each fake's host name to it.
func anthDial(fakes map[string]*anthFake) fasthttp.DialFunc {
	return func(addr string) (net.Conn, error) {
		if f := fakes[strings.TrimSuffix(addr, ":80")]; f != nil {
			return f.ln.Dial()
		}
		return nil, errors.New("dial " + addr + ": no such host")
	}
}

// anthEvents answers with Anthropic SSE events, given as (name, data)
// pairs, each flushed on its own as the real API does.
func anthEvents(ctx *fasthttp.RequestCtx, pairs ...string) {
	ctx.SetContentType("text/event-stream; charset=utf-8")
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		for i := 0; i+1 < len(pairs); i += 2 {
			_, _ = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", pairs[i], pairs[i+1])
			_ = w.Flush()
		}
	})
}

func anthJSON(ctx *fasthttp.RequestCtx, status int, body string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBodyString(body)
}

func anthMessageStart(id string, input int) string {
	return `{"type":"message_start","message":{"id":"` + id + `","type":"message","role":"assistant","content":[],"model":"claude-sonnet-test","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":` + fmt.Sprint(input) + `,"output_tokens":1}}}`
}

func anthTextDelta(index int, text string) string {
	b, _ := json.Marshal(map[string]any{"type": "content_block_delta", "index": index, "delta": map[string]any{"type": "text_delta", "text": text}})
	return string(b)
}

func anthJSONDelta(index int, partial string) string {
	b, _ := json.Marshal(map[string]any{"type": "content_block_delta", "index": index, "delta": map[string]any{"type": "input_json_delta", "partial_json": partial}})
	return string(b)
}

const (
	anthTextStart   = `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`
	anthStop0       = `{"type":"content_block_stop","index":0}`
	anthMessageStop = `{"type":"message_stop"}`
	anthOverloaded  = `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`
)

// anthWeather answers the weather conversation: a call to get_weather
// while no tool result came, whole or streamed, then a streamed answer.
func anthWeather(ctx *fasthttp.RequestCtx, body []byte) {
	stream := bytes.Contains(body, []byte(`"stream":true`))
	switch {
	case bytes.Contains(body, []byte(`"tool_result"`)):
		anthEvents(ctx,
			"message_start", anthMessageStart("msg_e2e_3", 200),
			"content_block_start", anthTextStart,
			"ping", `{"type": "ping"}`,
			"content_block_delta", anthTextDelta(0, "It is 18°C"),
			"content_block_delta", anthTextDelta(0, " and sunny"),
			"content_block_delta", anthTextDelta(0, " in Paris."),
			"content_block_stop", anthStop0,
			"message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":12}}`,
			"message_stop", anthMessageStop)
	case stream:
		anthEvents(ctx,
			"message_start", anthMessageStart("msg_e2e_2", 120),
			"content_block_start", anthTextStart,
			"content_block_delta", anthTextDelta(0, "Let me look that up."),
			"content_block_stop", anthStop0,
			"content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_e2e_1","name":"get_weather","input":{}}}`,
			"ping", `{"type": "ping"}`,
			"content_block_delta", anthJSONDelta(1, ""),
			"content_block_delta", anthJSONDelta(1, `{"city": "Pa`),
			"content_block_delta", anthJSONDelta(1, `ris", "unit"`),
			"content_block_delta", anthJSONDelta(1, `: "celsius"}`),
			"content_block_stop", `{"type":"content_block_stop","index":1}`,
			"message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":30}}`,
			"message_stop", anthMessageStop)
	default:
		anthJSON(ctx, 200, `{"id":"msg_e2e_1","type":"message","role":"assistant","model":"claude-sonnet-test",
			"content":[{"type":"text","text":"Let me look that up."},{"type":"tool_use","id":"toolu_e2e_1","name":"get_weather","input":{"city":"Paris","unit":"celsius"}}],
			"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":120,"output_tokens":30}}`)
	}
}

const anthConfig = `
auth:
  keys: [{name: sdk, key: "${GW}"}]
providers:
  claude:
    type: anthropic
    base_url: http://anthropic.test
    keys: ["${ANTH_KEY}"]
    models: {sonnet: {upstream: claude-sonnet-test}}
models:
  assistant: {targets: [claude/sonnet]}
`

// anthSameJSON compares JSON semantically.
func anthSameJSON(t *testing.T, got []byte, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%v in %s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%v in %s", err, want)
	}
	return reflect.DeepEqual(g, w)
}

const anthWeatherTools = `[{"name":"get_weather","description":"Current weather for a city.",
	"input_schema":{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["city"]}}]`

func TestAnthropicE2EConversation(t *testing.T) {
	fake := anthNewFake(t, anthWeather)
	client := sdkClient(t, anthConfig, engine.Options{Dial: anthDial(map[string]*anthFake{"anthropic.test": fake})})
	ctx := context.Background()
	msgs := []openai.ChatCompletionMessageParamUnion{
		openai.SystemMessage("You are a weather assistant."),
		openai.UserMessage("What is the weather in Paris?"),
	}
	params := openai.ChatCompletionNewParams{
		Model:     "assistant",
		Messages:  msgs,
		MaxTokens: openai.Int(400),
		Tools: []openai.ChatCompletionToolParam{{Function: openai.FunctionDefinitionParam{
			Name:        "get_weather",
			Description: openai.String("Current weather for a city."),
			Parameters: openai.FunctionParameters{
				"type": "object",
				"properties": map[string]any{
					"city": map[string]any{"type": "string"},
					"unit": map[string]any{"type": "string", "enum": []string{"celsius", "fahrenheit"}},
				},
				"required": []string{"city"},
			},
		}}},
	}
	wantArgs := `{"city":"Paris","unit":"celsius"}`

	// The model asks for the tool, in one piece.
	var raw *http.Response
	res, err := client.Chat.Completions.New(ctx, params, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if via := raw.Header.Get("X-Routed-Via"); via != "claude/sonnet" {
		t.Errorf("x-routed-via = %q", via)
	}
	c := res.Choices[0]
	if c.FinishReason != "tool_calls" || c.Message.Content != "Let me look that up." || len(c.Message.ToolCalls) != 1 {
		t.Fatalf("choice = %+v", c)
	}
	if tc := c.Message.ToolCalls[0]; tc.ID != "toolu_e2e_1" || tc.Function.Name != "get_weather" || tc.Function.Arguments != wantArgs {
		t.Errorf("tool call = %+v", tc)
	}
	if res.ID != "msg_e2e_1" || res.Model != "claude-sonnet-test" || res.Usage.PromptTokens != 120 || res.Usage.CompletionTokens != 30 || res.Usage.TotalTokens != 150 {
		t.Errorf("id %q model %q usage %+v", res.ID, res.Model, res.Usage)
	}

	// The same ask streamed: the argument deltas add up to the same call.
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	acc := openai.ChatCompletionAccumulator{}
	var finished []openai.FinishedChatCompletionToolCall
	for stream.Next() {
		if !acc.AddChunk(stream.Current()) {
			t.Fatalf("chunk %s does not belong to the stream", stream.Current().RawJSON())
		}
		if tc, ok := acc.JustFinishedToolCall(); ok {
			finished = append(finished, tc)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	_ = stream.Close()
	sc := acc.Choices[0]
	if sc.FinishReason != "tool_calls" || sc.Message.Content != "Let me look that up." || len(sc.Message.ToolCalls) != 1 {
		t.Fatalf("streamed choice = %+v", sc)
	}
	call := sc.Message.ToolCalls[0]
	if call.ID != "toolu_e2e_1" || call.Function.Name != "get_weather" || !anthSameJSON(t, []byte(call.Function.Arguments), wantArgs) {
		t.Errorf("streamed tool call = %+v", call)
	}
	if len(finished) != 1 || finished[0].ID != call.ID || finished[0].Arguments != call.Function.Arguments {
		t.Errorf("finished tool calls = %+v", finished)
	}

	// The tool's answer goes back; the final answer streams.
	params.Messages = append(msgs, sc.Message.ToParam(), openai.ToolMessage(`{"temp_c":18,"sky":"sunny"}`, call.ID))
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream = client.Chat.Completions.NewStreaming(ctx, params)
	acc = openai.ChatCompletionAccumulator{}
	chunks := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	_ = stream.Close()
	if got := acc.Choices[0]; got.Message.Content != "It is 18°C and sunny in Paris." || got.FinishReason != "stop" || got.Message.Role != "assistant" {
		t.Errorf("final answer = %+v", got)
	}
	if acc.Usage.PromptTokens != 200 || acc.Usage.CompletionTokens != 12 || acc.Usage.TotalTokens != 212 {
		t.Errorf("final usage = %+v", acc.Usage)
	}
	if chunks < 5 {
		t.Errorf("%d chunks: the answer did not stream", chunks)
	}

	seen := fake.requests()
	if len(seen) != 3 {
		t.Fatalf("upstream saw %d requests, want 3", len(seen))
	}
	for i, s := range seen {
		if s.method != "POST" || s.path != "/v1/messages" || s.apiKey != "v-ANTH_KEY" || s.version != "2023-06-01" ||
			s.contentType != "application/json" || s.auth != "" {
			t.Errorf("request %d: %s %s x-api-key %q anthropic-version %q content-type %q authorization %q",
				i, s.method, s.path, s.apiKey, s.version, s.contentType, s.auth)
		}
	}
	ask := `{"model":"claude-sonnet-test","max_tokens":400,"system":"You are a weather assistant.","tools":` + anthWeatherTools + `,
		"messages":[{"role":"user","content":[{"type":"text","text":"What is the weather in Paris?"}]}]`
	if !anthSameJSON(t, seen[0].body, ask+`}`) {
		t.Errorf("first request = %s", seen[0].body)
	}
	if !anthSameJSON(t, seen[1].body, ask+`,"stream":true}`) {
		t.Errorf("streamed request = %s", seen[1].body)
	}
	final := `{"model":"claude-sonnet-test","max_tokens":400,"system":"You are a weather assistant.","tools":` + anthWeatherTools + `,"stream":true,
		"messages":[
			{"role":"user","content":[{"type":"text","text":"What is the weather in Paris?"}]},
			{"role":"assistant","content":[{"type":"text","text":"Let me look that up."},
				{"type":"tool_use","id":"toolu_e2e_1","name":"get_weather","input":{"city":"Paris","unit":"celsius"}}]},
			{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_e2e_1","content":"{\"temp_c\":18,\"sky\":\"sunny\"}"}]}]}`
	if !anthSameJSON(t, seen[2].body, final) {
		t.Errorf("tool result request = %s", seen[2].body)
	}
}

const anthTwoConfig = `
auth:
  keys: [{name: sdk, key: "${GW}"}]
providers:
  claude-a:
    type: anthropic
    base_url: http://claude-a.test
    keys: ["${ANTH_A}"]
    models: {sonnet: {upstream: claude-sonnet-test}}
  claude-b:
    type: anthropic
    base_url: http://claude-b.test/v1
    keys: ["${ANTH_B}"]
    models: {sonnet: {upstream: claude-sonnet-test}}
models:
  assistant: {targets: [claude-a/sonnet, claude-b/sonnet]}
`

func TestAnthropicE2EFailures(t *testing.T) {
	params := openai.ChatCompletionNewParams{
		Model:    "assistant",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	}
	answerB := func(ctx *fasthttp.RequestCtx, body []byte) {
		if !bytes.Contains(body, []byte(`"stream":true`)) {
			anthJSON(ctx, 200, `{"id":"msg_b","type":"message","role":"assistant","model":"claude-sonnet-test","content":[{"type":"text","text":"from b"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}}`)
			return
		}
		// The answer starts, then the upstream gives out.
		anthEvents(ctx,
			"message_start", anthMessageStart("msg_b", 3),
			"content_block_start", anthTextStart,
			"content_block_delta", anthTextDelta(0, "Partial"),
			"error", anthOverloaded)
	}

	t.Run("529 fails over", func(t *testing.T) {
		a := anthNewFake(t, func(ctx *fasthttp.RequestCtx, _ []byte) {
			anthJSON(ctx, 529, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)
		})
		b := anthNewFake(t, answerB)
		client := sdkClient(t, anthTwoConfig, engine.Options{Dial: anthDial(map[string]*anthFake{"claude-a.test": a, "claude-b.test": b})})
		var raw *http.Response
		res, err := client.Chat.Completions.New(context.Background(), params, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		if res.Choices[0].Message.Content != "from b" || raw.Header.Get("X-Routed-Via") != "claude-b/sonnet" {
			t.Errorf("content %q via %q", res.Choices[0].Message.Content, raw.Header.Get("X-Routed-Via"))
		}
		if len(a.requests()) != 1 || len(b.requests()) != 1 || b.requests()[0].path != "/v1/messages" {
			t.Errorf("a saw %d requests, b %+v", len(a.requests()), b.requests())
		}
	})

	t.Run("error event before the answer fails over, after it ends the stream", func(t *testing.T) {
		a := anthNewFake(t, func(ctx *fasthttp.RequestCtx, _ []byte) {
			anthEvents(ctx, "message_start", anthMessageStart("msg_a", 3), "ping", `{"type": "ping"}`, "error", anthOverloaded)
		})
		b := anthNewFake(t, answerB)
		client := sdkClient(t, anthTwoConfig, engine.Options{Dial: anthDial(map[string]*anthFake{"claude-a.test": a, "claude-b.test": b})})
		var raw *http.Response
		stream := client.Chat.Completions.NewStreaming(context.Background(), params, option.WithResponseInto(&raw))
		acc := openai.ChatCompletionAccumulator{}
		for stream.Next() {
			acc.AddChunk(stream.Current())
		}
		err := stream.Err()
		_ = stream.Close()
		if err == nil || !strings.Contains(err.Error(), "overloaded_error") || !strings.Contains(err.Error(), "stream_interrupted") {
			t.Errorf("stream err = %v, want the upstream's overload as a stream_interrupted error", err)
		}
		if acc.Choices[0].Message.Content != "Partial" || raw.Header.Get("X-Routed-Via") != "claude-b/sonnet" {
			t.Errorf("content %q via %q", acc.Choices[0].Message.Content, raw.Header.Get("X-Routed-Via"))
		}
		if err != nil && (strings.Contains(err.Error(), "v-ANTH_A") || strings.Contains(err.Error(), "v-ANTH_B")) {
			t.Errorf("stream error leaks a key: %v", err)
		}
		if len(a.requests()) != 1 || len(b.requests()) != 1 {
			t.Errorf("a saw %d requests, b %d", len(a.requests()), len(b.requests()))
		}
	})
}
