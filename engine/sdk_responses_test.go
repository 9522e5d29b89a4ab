package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/openai/openai-go"
	"github.com/openai/openai-go/option"
	"github.com/openai/openai-go/responses"

	"gateway/engine"
)

const sdkTwoKeys = `
auth:
  keys: [{name: sdk, key: "${GW}"}, {name: other, key: "${GW2}"}]
providers:
  down: {type: openai, base_url: "http://down.test/v1", keys: ["${DOWN}"], models: {m: {}}}
  mock: {type: mock, models: {echo: {}}}
models:
  auto: {targets: [down/m, mock/echo]}
`

// openai-go's Responses client through the gateway: a first target that
// cannot be reached fails over to the mock, previous_response_id carries
// the conversation, GET returns a stored answer to its key only, and a
// stream has the documented events.
func TestSDKResponses(t *testing.T) {
	client := sdkClient(t, sdkTwoKeys, engine.Options{})
	ctx := context.Background()
	first, err := client.Responses.New(ctx, responses.ResponseNewParams{
		Model:        "auto",
		Instructions: openai.String("Be brief."),
		Input:        responses.ResponseNewParamsInputUnion{OfString: openai.String("ping")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(first.OutputText(), "You said: ping") || first.Status != responses.ResponseStatusCompleted ||
		!strings.HasPrefix(first.ID, "resp_") || first.Usage.TotalTokens == 0 {
		t.Fatalf("first response: %q status %q id %q usage %+v", first.OutputText(), first.Status, first.ID, first.Usage)
	}
	second, err := client.Responses.New(ctx, responses.ResponseNewParams{
		Model:              "auto",
		PreviousResponseID: openai.String(first.ID),
		Input:              responses.ResponseNewParamsInputUnion{OfString: openai.String("pong")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(second.OutputText(), "You said: pong") {
		t.Errorf("second response %q", second.OutputText())
	}
	got, err := client.Responses.Get(ctx, first.ID, responses.ResponseGetParams{})
	if err != nil || got.ID != first.ID || got.OutputText() != first.OutputText() {
		t.Errorf("GET stored response: %v %+v", err, got)
	}
	var apiErr *openai.Error
	if _, err := client.Responses.Get(ctx, first.ID, responses.ResponseGetParams{}, option.WithAPIKey("v-GW2")); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		t.Errorf("another key read a stored response: %v", err)
	}
	if _, err := client.Responses.New(ctx, responses.ResponseNewParams{
		Model: "auto", PreviousResponseID: openai.String(first.ID),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")},
	}, option.WithAPIKey("v-GW2")); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Param != "previous_response_id" {
		t.Errorf("another key continued a stored response: %v", err)
	}
	unstored, err := client.Responses.New(ctx, responses.ResponseNewParams{
		Model: "auto", Store: openai.Bool(false),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("secret")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Responses.Get(ctx, unstored.ID, responses.ResponseGetParams{}); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		t.Errorf("store: false was stored: %v", err)
	}

	stream := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{
		Model: "auto", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("stream me")},
	})
	var types []string
	var text strings.Builder
	var final responses.Response
	for stream.Next() {
		ev := stream.Current()
		types = append(types, ev.Type)
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta.OfString)
		case "response.completed":
			final = ev.Response
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if types[0] != "response.created" || types[len(types)-1] != "response.completed" || !strings.Contains(text.String(), "stream me") ||
		final.OutputText() != text.String() {
		t.Errorf("events %v, text %q, final %q", types, text.String(), final.OutputText())
	}
	// The streamed answer was stored too.
	if got, err := client.Responses.Get(ctx, final.ID, responses.ResponseGetParams{}); err != nil || got.OutputText() != text.String() {
		t.Errorf("GET streamed response: %v", err)
	}
}
