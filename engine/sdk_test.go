package engine_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go"
	"github.com/openai/openai-go/option"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"gateway/config"
	"gateway/engine"
)

// sdkGateway serves an engine for cfgYAML in memory, its ${X} references
// resolving to "v-X", and returns an HTTP client that reaches it, for
// the official SDKs to use.
func sdkGateway(t *testing.T, cfgYAML string, opt engine.Options) *http.Client {
	t.Helper()
	cfg, err := config.Parse([]byte(cfgYAML), config.Options{LookupEnv: func(k string) (string, bool) { return "v-" + k, true }})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: eng.Handler}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(); eng.Close() })
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return ln.Dial() },
	}}
}

// sdkClient returns the official OpenAI Go SDK pointed at a gateway for
// cfgYAML, so tests prove real SDKs parse what the gateway emits.
func sdkClient(t *testing.T, cfgYAML string, opt engine.Options) openai.Client {
	t.Helper()
	return openai.NewClient(option.WithBaseURL("http://gateway.test/v1"), option.WithAPIKey("v-GW"),
		option.WithHTTPClient(sdkGateway(t, cfgYAML, opt)), option.WithMaxRetries(0))
}

const sdkMockConfig = `
auth:
  keys: [{name: sdk, key: "${GW}"}]
providers:
  mock: {type: mock, models: {echo: {}}}
models:
  auto: {targets: [mock/echo]}
`

func TestSDKParsesMockReplies(t *testing.T) {
	client := sdkClient(t, sdkMockConfig, engine.Options{})
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model:    "auto",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("ping")},
	}
	var raw *http.Response
	res, err := client.Chat.Completions.New(ctx, params, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Choices[0].Message.Content; !strings.Contains(got, "You said: ping") {
		t.Errorf("content = %q", got)
	}
	if res.Usage.TotalTokens == 0 || res.Choices[0].FinishReason != "stop" {
		t.Errorf("usage %+v finish %q", res.Usage, res.Choices[0].FinishReason)
	}
	if via := raw.Header.Get("X-Routed-Via"); via != "mock/echo" {
		t.Errorf("x-routed-via = %q", via)
	}

	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	acc := openai.ChatCompletionAccumulator{}
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if got := acc.Choices[0].Message.Content; !strings.Contains(got, "You said: ping") {
		t.Errorf("streamed content = %q", got)
	}
	if acc.Usage.TotalTokens == 0 {
		t.Errorf("stream usage missing: %+v", acc.Usage)
	}
}

func TestSDKSeesGatewayErrors(t *testing.T) {
	client := sdkClient(t, sdkMockConfig, engine.Options{})
	_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "no-such-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %v, want *openai.Error", err)
	}
	if apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" || apiErr.Type != "invalid_request_error" {
		t.Errorf("status %d code %q type %q", apiErr.StatusCode, apiErr.Code, apiErr.Type)
	}
}
