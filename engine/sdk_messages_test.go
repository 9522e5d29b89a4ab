package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	sdk "github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/engine"
)

const sdkMessagesConfig = `
auth:
  keys: [{name: sdk, key: "${GW}"}]
providers:
  down: {type: openai, base_url: "http://down.test/v1", keys: ["${DOWN}"], models: {m: {}}}
  claude: {type: anthropic, base_url: "http://claude.test", keys: ["${ANTH}"], models: {sonnet: {upstream: claude-sonnet-test}}}
  mock: {type: mock, models: {echo: {}}}
models:
  native: {targets: [down/m, claude/sonnet]}
  translated: {targets: [down/m, mock/echo]}
`

// anthropicClient serves the gateway for cfgYAML in memory and returns
// the official Anthropic SDK pointed at its root, as Claude Code is.
func anthropicClient(t *testing.T, cfgYAML string, dial fasthttp.DialFunc) sdk.Client {
	t.Helper()
	return sdk.NewClient(option.WithBaseURL("http://gateway.test"), option.WithAPIKey("v-GW"),
		option.WithHTTPClient(sdkGateway(t, cfgYAML, engine.Options{Dial: dial})), option.WithMaxRetries(0))
}

// The Anthropic SDK through /v1/messages: an Anthropic target gets the
// client's body with only the model patched and answers as it is; a chat
// target is translated both ways; both fail over from an unreachable
// first target; errors come in Anthropic's shape.
func TestSDKMessages(t *testing.T) {
	claude := anthNewFake(t, func(ctx *fasthttp.RequestCtx, body []byte) {
		if gjson.GetBytes(body, "stream").Bool() {
			anthEvents(ctx, "message_start", anthMessageStart("msg_native", 9), "ping", `{"type":"ping"}`,
				"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
				"content_block_delta", anthTextDelta(0, "native stream"),
				"content_block_stop", `{"type":"content_block_stop","index":0}`,
				"message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3}}`,
				"message_stop", `{"type":"message_stop"}`)
			return
		}
		anthJSON(ctx, 200, `{"id":"msg_native","type":"message","role":"assistant","model":"claude-sonnet-test","content":[{"type":"text","text":"native answer"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":2}}`)
	})
	client := anthropicClient(t, sdkMessagesConfig, anthDial(map[string]*anthFake{"claude.test": claude}))
	ctx := context.Background()
	params := func(model string) sdk.MessageNewParams {
		return sdk.MessageNewParams{Model: sdk.Model(model), MaxTokens: 64,
			System:   []sdk.TextBlockParam{{Text: "Be brief."}},
			Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("hi there"))}}
	}

	msg, err := client.Messages.New(ctx, params("native"))
	if err != nil {
		t.Fatal(err)
	}
	if msg.ID != "msg_native" || msg.Content[0].Text != "native answer" {
		t.Errorf("native answer %+v", msg)
	}
	seen := claude.requests()[0]
	if gjson.GetBytes(seen.body, "model").Str != "claude-sonnet-test" || gjson.GetBytes(seen.body, "system.0.text").Str != "Be brief." ||
		seen.apiKey != "v-ANTH" {
		t.Errorf("the Anthropic target saw %s (key %q)", seen.body, seen.apiKey)
	}

	msg, err = client.Messages.New(ctx, params("translated"))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Type != "message" || msg.Role != "assistant" || !strings.Contains(msg.Content[0].Text, "You said: hi there") ||
		msg.StopReason != sdk.StopReasonEndTurn || msg.Usage.OutputTokens == 0 {
		t.Errorf("translated answer %+v", msg)
	}

	for model, want := range map[string]string{"native": "native stream", "translated": "You said: hi there"} {
		stream := client.Messages.NewStreaming(ctx, params(model))
		acc := sdk.Message{}
		for stream.Next() {
			if err := acc.Accumulate(stream.Current()); err != nil {
				t.Fatal(err)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("%s stream: %v", model, err)
		}
		if len(acc.Content) == 0 || !strings.Contains(acc.Content[0].Text, want) || acc.StopReason != sdk.StopReasonEndTurn {
			t.Errorf("%s stream: %+v", model, acc)
		}
	}

	var apiErr *sdk.Error
	if _, err := client.Messages.New(ctx, params("no-such-model")); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 ||
		gjson.Get(apiErr.RawJSON(), "error.type").Str != "not_found_error" {
		t.Errorf("unknown model: %v", err)
	}
	// count_tokens: the Anthropic target's own count where the model
	// routes to one, else the gateway's estimate.
	for model, want := range map[string]func(int64) bool{
		"native":     func(n int64) bool { return n == 4242 },
		"translated": func(n int64) bool { return n > 0 && n != 4242 },
	} {
		count, err := client.Messages.CountTokens(ctx, sdk.MessageCountTokensParams{Model: sdk.Model(model),
			Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("hi there"))}})
		if err != nil || !want(count.InputTokens) {
			t.Errorf("count_tokens for %s: %v %+v", model, err, count)
		}
	}
	if got := gjson.GetBytes(claude.requests()[len(claude.requests())-1].body, "model").Str; got != "claude-sonnet-test" {
		t.Errorf("count_tokens went upstream with model %q", got)
	}
}

// The Anthropic SDK's tool conversation through an OpenAI-compatible
// upstream: tool_use out of the upstream's tool_calls, tool_result back
// in as a tool message, the final answer streamed.
func TestSDKMessagesToolsTranslated(t *testing.T) {
	f, dial := newOAIFake(t)
	client := anthropicClient(t, `
auth:
  keys: [{name: sdk, key: "${GW}"}]
providers:
  oai: {type: openai, base_url: http://oai.test/v1, keys: ["${OAI}"], models: {gpt: {upstream: gpt-up}}}
models:
  weather: {targets: [oai/gpt]}
`, dial)
	ctx := context.Background()
	tool := sdk.ToolParam{Name: "get_weather", InputSchema: sdk.ToolInputSchemaParam{
		Properties: map[string]any{"city": map[string]any{"type": "string"}}}}
	params := sdk.MessageNewParams{Model: "weather", MaxTokens: 128,
		Tools:    []sdk.ToolUnionParam{{OfTool: &tool}},
		Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("Weather in Paris?"))}}
	msg, err := client.Messages.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if msg.StopReason != sdk.StopReasonToolUse || len(msg.Content) != 1 || msg.Content[0].Type != "tool_use" ||
		msg.Content[0].Name != "get_weather" || gjson.Get(string(msg.Content[0].Input), "city").Str != "Paris" {
		t.Fatalf("tool_use answer %+v", msg)
	}
	params.Messages = append(params.Messages, msg.ToParam(),
		sdk.NewUserMessage(sdk.NewToolResultBlock(msg.Content[0].ID, "sunny", false)))
	stream := client.Messages.NewStreaming(ctx, params)
	acc := sdk.Message{}
	for stream.Next() {
		if err := acc.Accumulate(stream.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(acc.Content) == 0 || acc.Content[0].Text != "Paris is sunny." {
		t.Errorf("final answer %+v", acc)
	}
	last := gjson.ParseBytes(f.bodies[len(f.bodies)-1])
	if last.Get("messages.1.tool_calls.0.function.name").Str != "get_weather" || last.Get("messages.2.role").Str != "tool" ||
		last.Get("messages.2.content").Str != "sunny" || last.Get("model").Str != "gpt-up" {
		t.Errorf("the upstream saw %s", last.Raw)
	}
}
