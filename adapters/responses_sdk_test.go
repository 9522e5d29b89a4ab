package adapters

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go"
	"github.com/openai/openai-go/option"
	"github.com/openai/openai-go/responses"
	"github.com/openai/openai-go/shared"
	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// sdkGateway is a Responses endpoint made of this file's translations
// alone: the official SDK's request goes through ResponsesToChat, a
// canned chat answer (a tool call when the request has tools, else text)
// comes back through ChatToResponse or ResponsesStream. It records the
// chat bodies it made.
type sdkGateway struct {
	mu    sync.Mutex
	chats []string
}

// Canned chat answers.
const (
	sdkText     = `{"id":"c1","object":"chat.completion","created":1,"model":"x","choices":[{"index":0,"message":{"role":"assistant","content":"pong"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6,"prompt_tokens_details":{"cached_tokens":2}}}`
	sdkToolCall = `{"id":"c2","object":"chat.completion","created":1,"model":"x","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29}}`
)

var (
	sdkTextChunks = []string{
		`data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}` + "\n\n",
		`data: {"choices":[{"index":0,"delta":{"content":"po"}}]}` + "\n\n",
		`data: {"choices":[{"index":0,"delta":{"content":"ng"}}]}` + "\n\n",
		`data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n",
		`data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}` + "\n\n",
		"data: [DONE]\n\n",
	}
	sdkToolChunks = []string{
		`data: {"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}` + "\n\n",
		`data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}` + "\n\n",
		`data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}}]}` + "\n\n",
		`data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}` + "\n\n",
		`data: {"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29}}` + "\n\n",
		"data: [DONE]\n\n",
	}
)

func (g *sdkGateway) serve(ctx *fasthttp.RequestCtx) {
	chat, req, f := ResponsesToChat(ctx.PostBody(), nil)
	if f != nil {
		ctx.SetStatusCode(f.Status)
		ctx.SetContentType("application/json")
		ctx.SetBody(f.Body)
		return
	}
	g.mu.Lock()
	g.chats = append(g.chats, string(chat))
	g.mu.Unlock()
	tools := string(req.Tools) != "[]"
	if !req.Stream {
		answer := sdkText
		if tools {
			answer = sdkToolCall
		}
		resp, _, f := ChatToResponse([]byte(answer), req, testResponseID, testResponseCreated)
		if f != nil {
			ctx.Error(f.Msg, 500)
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBody(resp)
		return
	}
	chunks := sdkTextChunks
	if tools {
		chunks = sdkToolChunks
	}
	s := NewResponsesStream(&frameStream{frames: chunks}, req, testResponseID, testResponseCreated)
	ctx.SetContentType("text/event-stream")
	for {
		frame, err := s.Next()
		if err != nil {
			if err != io.EOF {
				ctx.Error(err.Error(), 500)
			}
			return
		}
		ctx.Write(frame)
	}
}

func (g *sdkGateway) lastChat(t *testing.T) string {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.chats) == 0 {
		t.Fatal("no chat request was made")
	}
	return g.chats[len(g.chats)-1]
}

// newSDKGateway serves a sdkGateway in memory and returns the official
// OpenAI Go SDK pointed at it.
func newSDKGateway(t *testing.T) (*sdkGateway, openai.Client) {
	g := &sdkGateway{}
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: g.serve, Logger: quietLogger{}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return ln.Dial() },
	}}
	return g, openai.NewClient(option.WithBaseURL("http://gateway.test/v1"), option.WithAPIKey("k"),
		option.WithHTTPClient(hc), option.WithMaxRetries(0))
}

var sdkWeatherTool = responses.ToolParamOfFunction("get_weather",
	map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}, "additionalProperties": false}, true)

// TestResponsesSDKNonStream drives a tool round trip with openai-go's
// Responses client: the SDK's requests translate, and it parses the
// Responses made of the chat answers, with every required field present.
func TestResponsesSDKNonStream(t *testing.T) {
	g, client := newSDKGateway(t)
	ctx := context.Background()

	resp, err := client.Responses.New(ctx, responses.ResponseNewParams{
		Model:           "m",
		Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String("ping")},
		Instructions:    openai.String("Be brief."),
		MaxOutputTokens: openai.Int(50),
		Temperature:     openai.Float(0.5),
		Metadata:        shared.Metadata{"k": "v"},
	})
	if err != nil {
		t.Fatal(err)
	}
	j := resp.JSON
	for name, f := range map[string]interface{ Valid() bool }{"id": j.ID, "created_at": j.CreatedAt, "model": j.Model, "object": j.Object,
		"output": j.Output, "parallel_tool_calls": j.ParallelToolCalls, "tool_choice": j.ToolChoice, "tools": j.Tools, "status": j.Status,
		"usage": j.Usage, "text": j.Text, "instructions": j.Instructions, "metadata": j.Metadata, "temperature": j.Temperature} {
		if !f.Valid() {
			t.Errorf("the SDK finds no valid %s in %s", name, resp.RawJSON())
		}
	}
	if resp.OutputText() != "pong" || resp.Status != responses.ResponseStatusCompleted || resp.ID != testResponseID || resp.Model != "m" ||
		resp.Usage.TotalTokens != 6 || resp.Usage.InputTokensDetails.CachedTokens != 2 || resp.Instructions.OfString != "Be brief." ||
		resp.Temperature != 0.5 || resp.MaxOutputTokens != 50 || resp.Metadata["k"] != "v" || resp.Text.Format.Type != "text" || resp.ToolChoice.OfToolChoiceMode != "auto" {
		t.Errorf("the SDK read %s", resp.RawJSON())
	}
	if chat := g.lastChat(t); gjson.Get(chat, "messages.#").Int() != 2 || gjson.Get(chat, "max_tokens").Int() != 50 {
		t.Errorf("chat request %s", chat)
	}

	tools := []responses.ToolUnionParam{sdkWeatherTool}
	resp, err = client.Responses.New(ctx, responses.ResponseNewParams{
		Model: "m", Tools: tools,
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Weather in Paris?")},
	})
	if err != nil {
		t.Fatal(err)
	}
	call := resp.Output[0].AsFunctionCall()
	if len(resp.Output) != 1 || resp.Output[0].Type != "function_call" || call.CallID != "call_1" || call.Name != "get_weather" ||
		call.Arguments != `{"city":"Paris"}` || !strings.HasPrefix(call.ID, "fc_") || resp.Tools[0].Name != "get_weather" || !resp.Tools[0].Strict {
		t.Fatalf("the SDK read %s", resp.RawJSON())
	}
	_, err = client.Responses.New(ctx, responses.ResponseNewParams{
		Model: "m", Tools: tools,
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			responses.ResponseInputItemParamOfMessage("Weather in Paris?", responses.EasyInputMessageRoleUser),
			responses.ResponseInputItemParamOfFunctionCall(call.Arguments, call.CallID, call.Name),
			responses.ResponseInputItemParamOfFunctionCallOutput(call.CallID, "sunny"),
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	chat := g.lastChat(t)
	if gjson.Get(chat, "messages.1.tool_calls.0.id").Str != "call_1" || gjson.Get(chat, "messages.2.role").Str != "tool" ||
		gjson.Get(chat, "messages.2.tool_call_id").Str != "call_1" || gjson.Get(chat, "messages.2.content").Str != "sunny" {
		t.Errorf("the round trip's chat request %s", chat)
	}

	_, err = client.Responses.New(ctx, responses.ResponseNewParams{
		Model: "m", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")},
		Tools: []responses.ToolUnionParam{responses.ToolParamOfFileSearch([]string{"vs_1"})},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "tools[0].type" || apiErr.Type != "invalid_request_error" {
		t.Errorf("a hosted tool gave %v", err)
	}
}

// TestResponsesSDKStream reads streamed text and a streamed tool call
// with openai-go's Responses stream: every event decodes as its type,
// numbered in order, and the final Response holds the whole answer.
func TestResponsesSDKStream(t *testing.T) {
	_, client := newSDKGateway(t)
	for _, c := range []struct {
		name   string
		tools  []responses.ToolUnionParam
		events []string
	}{
		{"text", nil, []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
			"response.output_text.delta", "response.output_text.delta", "response.output_text.done", "response.content_part.done",
			"response.output_item.done", "response.completed"}},
		{"tool call", []responses.ToolUnionParam{sdkWeatherTool}, []string{"response.created", "response.in_progress", "response.output_item.added",
			"response.function_call_arguments.delta", "response.function_call_arguments.delta", "response.function_call_arguments.done",
			"response.output_item.done", "response.completed"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			stream := client.Responses.NewStreaming(context.Background(), responses.ResponseNewParams{
				Model: "m", Tools: c.tools, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("ping")},
			})
			defer stream.Close()
			var types []string
			var text, args string
			var final responses.Response
			for stream.Next() {
				ev := stream.Current()
				if ev.SequenceNumber != int64(len(types)) {
					t.Errorf("event %d (%s) has sequence_number %d", len(types), ev.Type, ev.SequenceNumber)
				}
				types = append(types, ev.Type)
				switch e := ev.AsAny().(type) {
				case responses.ResponseTextDeltaEvent:
					text += e.Delta
				case responses.ResponseTextDoneEvent:
					if e.Text != text {
						t.Errorf("text done %q after deltas %q", e.Text, text)
					}
				case responses.ResponseFunctionCallArgumentsDeltaEvent:
					args += e.Delta
				case responses.ResponseFunctionCallArgumentsDoneEvent:
					if e.Arguments != args || !strings.HasPrefix(e.ItemID, "fc_") {
						t.Errorf("arguments done %q for %s after deltas %q", e.Arguments, e.ItemID, args)
					}
				case responses.ResponseOutputItemAddedEvent:
					if e.Item.Status != "in_progress" {
						t.Errorf("item added with status %q", e.Item.Status)
					}
				case responses.ResponseCompletedEvent:
					final = e.Response
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if strings.Join(types, " ") != strings.Join(c.events, " ") {
				t.Errorf("events\n%v\nwant\n%v", types, c.events)
			}
			if final.Status != responses.ResponseStatusCompleted || final.Usage.TotalTokens == 0 || final.OutputText() != text {
				t.Errorf("final response %s", final.RawJSON())
			}
			if c.tools != nil {
				if call := final.Output[0].AsFunctionCall(); call.Arguments != args || call.CallID != "call_1" || call.Name != "get_weather" {
					t.Errorf("final call %+v, streamed arguments %q", call, args)
				}
			}
		})
	}
}
