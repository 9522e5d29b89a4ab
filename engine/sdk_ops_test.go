package engine_test

import (
	"context"
	"strings"
	"testing"

	"github.com/openai/openai-go"

	"gateway/engine"
)

const sdkOpsConfig = `
auth:
  keys: [{name: sdk, key: "${GW}"}]
providers:
  mock: {type: mock, models: {echo: {}, vec: {operations: [embeddings]}}}
models:
  auto: {targets: [mock/echo]}
  embed: {targets: [mock/vec]}
`

// The official SDK parses the gateway's embeddings and legacy completions.
func TestSDKEmbeddingsAndCompletions(t *testing.T) {
	client := sdkClient(t, sdkOpsConfig, engine.Options{})
	ctx := context.Background()
	emb, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: "embed",
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"one", "two"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(emb.Data) != 2 || len(emb.Data[0].Embedding) != 8 || emb.Usage.PromptTokens == 0 {
		t.Errorf("embeddings: %d vectors of %d, usage %+v", len(emb.Data), len(emb.Data[0].Embedding), emb.Usage)
	}
	b64, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: "embed", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("one")},
		EncodingFormat: openai.EmbeddingNewParamsEncodingFormatBase64, Dimensions: openai.Int(4),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(b64.Data) != 1 {
		t.Errorf("base64 embeddings: %+v", b64.Data)
	}

	comp, err := client.Completions.New(ctx, openai.CompletionNewParams{
		Model: "auto", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("ping")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(comp.Choices) != 1 || !strings.Contains(comp.Choices[0].Text, "ping") {
		t.Errorf("completion: %+v", comp.Choices)
	}
	stream := client.Completions.NewStreaming(ctx, openai.CompletionNewParams{
		Model: "auto", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("ping")},
	})
	var text strings.Builder
	for stream.Next() {
		for _, c := range stream.Current().Choices {
			text.WriteString(c.Text)
		}
	}
	if err := stream.Err(); err != nil || !strings.Contains(text.String(), "ping") {
		t.Errorf("streamed completion %q, err %v", text.String(), err)
	}
}
