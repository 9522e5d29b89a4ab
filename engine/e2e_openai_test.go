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
	"github.com/openai/openai-go/shared"
	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"gateway/engine"
)

// oaiFake is an OpenAI-compatible upstream for the tool conversation: it
// calls get_weather, then streams an answer once the tool result is in.
type oaiFake struct {
	ln     *fasthttputil.InmemoryListener
	mu     sync.Mutex
	bodies [][]byte
}

func (f *oaiFake) serve(ctx *fasthttp.RequestCtx) {
	body := bytes.Clone(ctx.PostBody())
	f.mu.Lock()
	f.bodies = append(f.bodies, body)
	f.mu.Unlock()
	msgs := gjson.GetBytes(body, "messages").Array()
	if msgs[len(msgs)-1].Get("role").Str != "tool" {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"id":"chatcmpl-t","object":"chat.completion","created":1,"model":"gpt-up","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":20,"completion_tokens":5,"total_tokens":25}}`)
		return
	}
	ctx.SetContentType("text/event-stream")
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		for _, piece := range []string{`{"role":"assistant","content":""}`, `{"content":"Paris is"}`, `{"content":" sunny."}`} {
			_, _ = w.WriteString(`data: {"id":"chatcmpl-f","object":"chat.completion.chunk","created":1,"model":"gpt-up","choices":[{"index":0,"delta":` + piece + `,"finish_reason":null}]}` + "\n\n")
			_ = w.Flush()
		}
		_, _ = w.WriteString(`data: {"id":"chatcmpl-f","object":"chat.completion.chunk","created":1,"model":"gpt-up","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\ndata: [DONE]\n\n")
	})
}

// newOAIFake starts an oaiFake and returns it with a dialer that reaches
// it as oai.test and refuses every other host.
func newOAIFake(t *testing.T) (*oaiFake, fasthttp.DialFunc) {
	f := &oaiFake{ln: fasthttputil.NewInmemoryListener()}
	srv := &fasthttp.Server{Handler: f.serve}
	go func() { _ = srv.Serve(f.ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return f, func(addr string) (net.Conn, error) {
		if addr != "oai.test:80" {
			return nil, errors.New("refused")
		}
		return f.ln.Dial()
	}
}

// TestOpenAIConversationThroughSDK runs the tool conversation every
// adapter's end-to-end test runs, against an OpenAI-compatible upstream:
// the body reaches it as the SDK sent it, with only model rewritten.
func TestOpenAIConversationThroughSDK(t *testing.T) {
	f, dial := newOAIFake(t)
	client := sdkClient(t, `
auth:
  keys: [{name: sdk, key: "${GW}"}]
providers:
  oai: {type: openai, base_url: http://oai.test/v1, keys: ["${OAI}"], stream_usage: false, models: {gpt: {upstream: gpt-up}}}
models:
  weather: {targets: [oai/gpt]}
`, engine.Options{Dial: dial})
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model: "weather",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("You are a weather assistant."),
			openai.UserMessage("Weather in Paris?"),
		},
		Tools: []openai.ChatCompletionToolParam{{Function: shared.FunctionDefinitionParam{
			Name:       "get_weather",
			Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}},
		}}},
	}
	res, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	calls := res.Choices[0].Message.ToolCalls
	if len(calls) != 1 || calls[0].ID != "call_1" || calls[0].Function.Arguments != `{"city":"Paris"}` {
		t.Fatalf("tool calls = %+v", calls)
	}
	params.Messages = append(params.Messages, res.Choices[0].Message.ToParam(), openai.ToolMessage(`{"temp":18}`, "call_1"))
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if got := acc.Choices[0].Message.Content; got != "Paris is sunny." {
		t.Errorf("final answer %q", got)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bodies) != 2 {
		t.Fatalf("upstream saw %d requests", len(f.bodies))
	}
	last := gjson.ParseBytes(f.bodies[1])
	if last.Get("model").Str != "gpt-up" || !strings.Contains(last.Get("messages.3").Raw, `"tool_call_id":"call_1"`) ||
		last.Get("messages.2.tool_calls.0.id").Str != "call_1" || last.Get("tools.0.function.name").Str != "get_weather" {
		t.Errorf("upstream got %s", f.bodies[1])
	}
}
