package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go"
	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"gateway/engine"
)

// gemKey is the provider key sdkClient's environment resolves
// ${GEMINI_KEY} to.
const gemKey = "v-GEMINI_KEY"

const gemConfig = `
auth:
  keys: [{name: sdk, key: "${GW}"}]
providers:
  google:
    type: gemini
    base_url: http://gemini.test/v1beta
    keys: ["${GEMINI_KEY}"]
    models: {flash: {upstream: gemini-2.5-flash}}
models:
  assistant: {targets: [google/flash]}
`

// gemSeen is what the fake Gemini recorded of one request.
type gemSeen struct {
	uri, apiKey, header string
	body                []byte
}

// gemServer is an in-process Gemini API speaking its real wire format:
// generateContent answers JSON, streamGenerateContent?alt=sse answers
// server-sent events with CRLF line ends.
type gemServer struct {
	ln   *fasthttputil.InmemoryListener
	mu   sync.Mutex
	seen []gemSeen
}

func newGemServer(t *testing.T) *gemServer {
	g := &gemServer{ln: fasthttputil.NewInmemoryListener()}
	srv := &fasthttp.Server{Handler: g.serve}
	done := make(chan struct{})
	go func() { _ = srv.Serve(g.ln); close(done) }()
	t.Cleanup(func() { _ = g.ln.Close(); <-done })
	return g
}

func (g *gemServer) dial(addr string) (net.Conn, error) {
	if addr != "gemini.test:80" {
		return nil, errors.New("dial " + addr + ": connection refused")
	}
	return g.ln.Dial()
}

func (g *gemServer) requests() []gemSeen {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]gemSeen(nil), g.seen...)
}

// gemToolCall is the model's first move: it asks for the weather.
const gemToolCall = `{"candidates":[{"content":{"parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris","unit":"celsius"}},"thoughtSignature":"c2ln"}],"role":"model"},"finishReason":"STOP","index":0}],` +
	`"usageMetadata":{"promptTokenCount":41,"candidatesTokenCount":9,"totalTokenCount":50},"modelVersion":"gemini-2.5-flash","responseId":"gem-turn-1"}`

// gemAnswer is the final answer, streamed in three events.
var gemAnswer = []string{
	`{"candidates":[{"content":{"parts":[{"text":"It is 21°C"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":70,"totalTokenCount":70},"modelVersion":"gemini-2.5-flash","responseId":"gem-turn-2"}`,
	`{"candidates":[{"content":{"parts":[{"text":" and sunny"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":70,"candidatesTokenCount":5,"totalTokenCount":75},"modelVersion":"gemini-2.5-flash","responseId":"gem-turn-2"}`,
	`{"candidates":[{"content":{"parts":[{"text":" in Paris."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":70,"candidatesTokenCount":8,"totalTokenCount":78},"modelVersion":"gemini-2.5-flash","responseId":"gem-turn-2"}`,
}

func (g *gemServer) serve(ctx *fasthttp.RequestCtx) {
	g.mu.Lock()
	g.seen = append(g.seen, gemSeen{
		uri:    string(ctx.RequestURI()),
		apiKey: string(ctx.Request.Header.Peek("x-goog-api-key")),
		header: ctx.Request.Header.String(),
		body:   bytes.Clone(ctx.PostBody()),
	})
	g.mu.Unlock()
	if len(ctx.Request.Header.Peek("x-goog-api-key")) == 0 {
		ctx.SetStatusCode(fasthttp.StatusForbidden)
		ctx.SetBodyString(`{"error":{"code":403,"message":"Method doesn't allow unregistered callers.","status":"PERMISSION_DENIED"}}`)
		return
	}
	answered := bytes.Contains(ctx.PostBody(), []byte(`"functionResponse"`))
	switch string(ctx.Path()) {
	case "/v1beta/models/gemini-2.5-flash:generateContent":
		ctx.SetContentType("application/json; charset=UTF-8")
		ctx.SetBodyString(gemToolCall)
	case "/v1beta/models/gemini-2.5-flash:streamGenerateContent":
		events := gemAnswer
		if !answered {
			events = []string{gemToolCall}
		}
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for _, e := range events {
				_, _ = w.WriteString("data: " + e + "\r\n\r\n")
				_ = w.Flush()
			}
		})
	default:
		ctx.SetStatusCode(fasthttp.StatusNotFound)
		ctx.SetBodyString(`{"error":{"code":404,"message":"not found","status":"NOT_FOUND"}}`)
	}
}

// gemCheckSeen checks what reached the fake: the endpoint, the key in its
// header and nowhere in the URL, and no OpenAI-style Authorization.
func gemCheckSeen(t *testing.T, s gemSeen, stream bool) {
	t.Helper()
	want := "/v1beta/models/gemini-2.5-flash:generateContent"
	if stream {
		want = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
	}
	if s.uri != want {
		t.Errorf("upstream got %s, want %s", s.uri, want)
	}
	if s.apiKey != gemKey {
		t.Errorf("upstream got x-goog-api-key %q, want the provider key", s.apiKey)
	}
	if strings.Contains(s.uri, gemKey) || strings.Contains(s.uri, "key=") {
		t.Errorf("the key is in the URL %s", s.uri)
	}
	if strings.Contains(strings.ToLower(s.header), "authorization:") || strings.Contains(s.header, "v-GW") {
		t.Errorf("upstream got the client's credentials:\n%s", s.header)
	}
}

// gemCheckFirstTurn checks the translation of system prompt, question and
// tool definition.
func gemCheckFirstTurn(t *testing.T, body []byte) {
	t.Helper()
	checks := map[string]string{
		"systemInstruction.parts.0.text":                                 "You are a weather assistant.",
		"contents.#":                                                     "1",
		"contents.0.role":                                                "user",
		"contents.0.parts.0.text":                                        "What is the weather in Paris?",
		"tools.0.functionDeclarations.0.name":                            "get_weather",
		"tools.0.functionDeclarations.0.parameters.type":                 "OBJECT",
		"tools.0.functionDeclarations.0.parameters.properties.city.type": "STRING",
		"tools.0.functionDeclarations.0.parameters.properties.unit.enum": `["celsius","fahrenheit"]`,
		"tools.0.functionDeclarations.0.parameters.required":             `["city"]`,
		"toolConfig.functionCallingConfig.mode":                          "AUTO",
	}
	for path, want := range checks {
		if got := gjson.GetBytes(body, path); got.String() != want && got.Raw != want {
			t.Errorf("upstream body %s = %s, want %s", path, got.Raw, want)
		}
	}
	if gjson.GetBytes(body, "tools.0.functionDeclarations.0.parameters.additionalProperties").Exists() ||
		gjson.GetBytes(body, "model").Exists() || gjson.GetBytes(body, "messages").Exists() {
		t.Errorf("upstream body kept OpenAI fields: %s", body)
	}
}

func TestGeminiConversationThroughSDK(t *testing.T) {
	fake := newGemServer(t)
	client := sdkClient(t, gemConfig, engine.Options{Dial: fake.dial})
	ctx := context.Background()
	weather := openai.ChatCompletionToolParam{Function: openai.FunctionDefinitionParam{
		Name:        "get_weather",
		Description: openai.String("Current weather for a city."),
		Parameters: openai.FunctionParameters{
			"type":                 "object",
			"additionalProperties": false,
			"properties": map[string]any{
				"city": map[string]any{"type": "string"},
				"unit": map[string]any{"type": "string", "enum": []string{"celsius", "fahrenheit"}},
			},
			"required": []string{"city"},
		},
	}}
	params := openai.ChatCompletionNewParams{
		Model: "assistant",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("You are a weather assistant."),
			openai.UserMessage("What is the weather in Paris?"),
		},
		Tools:      []openai.ChatCompletionToolParam{weather},
		ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("auto")},
	}

	// Turn 1 without streaming: the model calls the tool.
	res, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if len(fake.requests()) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(fake.requests()))
	}
	first := fake.requests()[0]
	gemCheckSeen(t, first, false)
	gemCheckFirstTurn(t, first.body)
	msg := res.Choices[0].Message
	if res.Choices[0].FinishReason != "tool_calls" || len(msg.ToolCalls) != 1 {
		t.Fatalf("finish %q with %d tool calls, want one tool call", res.Choices[0].FinishReason, len(msg.ToolCalls))
	}
	call := msg.ToolCalls[0]
	if call.Function.Name != "get_weather" || call.Function.Arguments != `{"city":"Paris","unit":"celsius"}` || !strings.HasPrefix(call.ID, "call_") {
		t.Errorf("tool call = %+v", call)
	}
	if res.Model != "gemini-2.5-flash" || res.Usage.PromptTokens != 41 || res.Usage.CompletionTokens != 9 || res.Usage.TotalTokens != 50 {
		t.Errorf("model %q usage %+v", res.Model, res.Usage)
	}

	// Turn 1 streamed: the same call, assembled by the SDK's accumulator.
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	acc := openai.ChatCompletionAccumulator{}
	var finished []openai.FinishedChatCompletionToolCall
	for stream.Next() {
		acc.AddChunk(stream.Current())
		if tc, ok := acc.JustFinishedToolCall(); ok {
			finished = append(finished, tc)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	gemCheckSeen(t, fake.requests()[1], true)
	gemCheckFirstTurn(t, fake.requests()[1].body)
	streamed := acc.Choices[0].Message
	if len(streamed.ToolCalls) != 1 || acc.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("streamed message %+v finish %q, want one tool call", streamed, acc.Choices[0].FinishReason)
	}
	if got := streamed.ToolCalls[0]; got.ID != call.ID || got.Function.Name != call.Function.Name || got.Function.Arguments != call.Function.Arguments {
		t.Errorf("streamed tool call %+v, want the same call and id as %+v", got, call)
	}
	if len(finished) != 1 || finished[0].ID != call.ID {
		t.Errorf("the accumulator saw finished tool calls %+v", finished)
	}

	// Turn 2, streamed: the tool's result goes back, the answer streams.
	params.Messages = append(params.Messages, streamed.ToParam(),
		openai.ToolMessage(`{"temp_c":21,"sky":"sunny"}`, streamed.ToolCalls[0].ID))
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
	if got := acc.Choices[0].Message.Content; got != "It is 21°C and sunny in Paris." || acc.Choices[0].FinishReason != "stop" {
		t.Errorf("answer %q finish %q", got, acc.Choices[0].FinishReason)
	}
	if chunks < 5 {
		t.Errorf("%d chunks, want the role, three deltas, the finish and the usage", chunks)
	}
	if acc.Usage.PromptTokens != 70 || acc.Usage.CompletionTokens != 8 || acc.Usage.TotalTokens != 78 {
		t.Errorf("stream usage %+v", acc.Usage)
	}
	reqs := fake.requests()
	if len(reqs) != 3 {
		t.Fatalf("upstream got %d requests, want 3", len(reqs))
	}
	last := reqs[2]
	gemCheckSeen(t, last, true)
	checks := map[string]string{
		"systemInstruction.parts.0.text":                      "You are a weather assistant.",
		"contents.#":                                          "3",
		"contents.0.role":                                     "user",
		"contents.1.role":                                     "model",
		"contents.1.parts.0.functionCall.name":                "get_weather",
		"contents.1.parts.0.functionCall.args":                `{"city":"Paris","unit":"celsius"}`,
		"contents.2.role":                                     "user",
		"contents.2.parts.0.functionResponse.name":            "get_weather",
		"contents.2.parts.0.functionResponse.response.result": `{"temp_c":21,"sky":"sunny"}`,
		"tools.0.functionDeclarations.0.name":                 "get_weather",
	}
	for path, want := range checks {
		if got := gjson.GetBytes(last.body, path); got.String() != want && got.Raw != want {
			t.Errorf("upstream body %s = %s, want %s", path, got.Raw, want)
		}
	}
}
