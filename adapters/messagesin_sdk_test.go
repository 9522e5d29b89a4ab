package adapters

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	sdk "github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/tidwall/gjson"
)

// The official Go SDK against the Messages ingress: the SDK sends each
// golden request its own way, MessagesToChat must take it, and the SDK
// must parse what ChatToMessage and NewMessagesStream answer, its stream
// accumulator included.

// sdkIngress serves POST /v1/messages on loopback the way the engine
// will: translate, answer from a canned chat reply, translate back.
type sdkIngress struct {
	mu sync.Mutex
	// chat is the last chat request the ingress translated.
	chat []byte
	// reply and stream are the canned chat answer and stream; end ends
	// the stream instead of io.EOF.
	reply, stream string
	end           error
}

func (g *sdkIngress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	chat, req, f := MessagesToChat(body)
	if f != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.Status)
		_, _ = w.Write(f.Body)
		return
	}
	g.mu.Lock()
	g.chat = chat
	g.mu.Unlock()
	if !req.Stream {
		out, f := ChatToMessage([]byte(g.reply), req)
		if f != nil {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write(MessagesErrorBody(http.StatusInternalServerError, f.Msg))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	s := NewMessagesStream(&scriptStream{frames: chatFrames(g.stream), end: g.end}, req)
	defer s.Close()
	for {
		frame, err := s.Next()
		if err != nil {
			return
		}
		_, _ = w.Write(frame)
		w.(http.Flusher).Flush()
	}
}

func (g *sdkIngress) lastChat() []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.chat
}

func sdkClient(t *testing.T, h http.Handler) sdk.Client {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return sdk.NewClient(option.WithBaseURL(srv.URL), option.WithAPIKey("gateway-key"), option.WithMaxRetries(0))
}

// sdkView is what the SDK's typed Message says, as JSON: every field a
// client reads.
func sdkView(t *testing.T, m *sdk.Message) []byte {
	t.Helper()
	var content []any
	for _, b := range m.Content {
		switch b := b.AsAny().(type) {
		case sdk.TextBlock:
			content = append(content, map[string]any{"type": "text", "text": b.Text})
		case sdk.ToolUseBlock:
			content = append(content, map[string]any{"type": "tool_use", "id": b.ID, "name": b.Name, "input": b.Input})
		default:
			t.Errorf("the SDK read a %T block", b)
		}
	}
	v, err := json.Marshal(map[string]any{
		"id": m.ID, "role": m.Role, "model": m.Model, "content": content,
		"stop_reason": m.StopReason, "stop_sequence": m.StopSequence,
		"usage": map[string]any{"input_tokens": m.Usage.InputTokens, "output_tokens": m.Usage.OutputTokens,
			"cache_read_input_tokens": m.Usage.CacheReadInputTokens, "cache_creation_input_tokens": m.Usage.CacheCreationInputTokens},
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMessagesSDK(t *testing.T) {
	files, err := filepath.Glob("testdata/messagesin/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/messagesin/*.txt (err %v)", err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			g := anthReadGolden(t, path)
			var params sdk.MessageNewParams
			if err := json.Unmarshal([]byte(g.secs["messages request"]), &params); err != nil {
				t.Fatalf("the SDK does not read the request: %v", err)
			}
			in := &sdkIngress{reply: g.secs["chat response"], stream: g.secs["chat stream"]}
			client := sdkClient(t, in)
			var m *sdk.Message
			if gjson.Get(g.secs["messages request"], "stream").Bool() {
				s := client.Messages.NewStreaming(context.Background(), params)
				m = &sdk.Message{}
				var events []string
				for s.Next() {
					ev := s.Current()
					events = append(events, ev.Type)
					if err := m.Accumulate(ev); err != nil {
						t.Fatalf("accumulating %s: %v", ev.Type, err)
					}
				}
				if err := s.Err(); err != nil {
					t.Fatalf("stream: %v", err)
				}
				_ = s.Close()
				if len(events) < 3 || events[0] != "message_start" || events[len(events)-1] != "message_stop" {
					t.Errorf("the SDK saw events %q", events)
				}
			} else {
				if m, err = client.Messages.New(context.Background(), params); err != nil {
					t.Fatalf("the SDK does not take the reply: %v", err)
				}
			}
			// The SDK's own serialization of the request translates as
			// the golden one does.
			if !anthJSONEqual(t, in.lastChat(), []byte(g.secs["chat request"])) {
				t.Errorf("chat request from the SDK's body:\n got %s\nwant %s", in.lastChat(), g.secs["chat request"])
			}
			g.checkJSON(t, "sdk message", sdkView(t, m))
			if *anthUpdate && g.changed {
				g.write(t, path)
			}
		})
	}
}

func TestMessagesSDKErrors(t *testing.T) {
	in := &sdkIngress{stream: chatFrameText(`{"id":"c","choices":[{"index":0,"delta":{"content":"partial"}}]}`)}
	in.end = &Failure{Class: Retryable, Msg: "upstream stream timed out"}
	client := sdkClient(t, in)

	// The gateway's refusal reads as Anthropic's own.
	_, err := client.Messages.New(context.Background(), sdk.MessageNewParams{
		Model: "m", MaxTokens: 0, Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("x"))}})
	var apiErr *sdk.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Type() != "invalid_request_error" ||
		!strings.Contains(apiErr.RawJSON(), "max_tokens: must be a whole number from 1") {
		t.Errorf("err = %v", err)
	}

	// A stream the upstream cuts ends with an error the SDK reports.
	s := client.Messages.NewStreaming(context.Background(), sdk.MessageNewParams{
		Model: "m", MaxTokens: 10, Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("x"))}})
	var m sdk.Message
	for s.Next() {
		if err := m.Accumulate(s.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "upstream stream timed out") {
		t.Errorf("stream err = %v", err)
	}
	if len(m.Content) != 1 || m.Content[0].Text != "partial" {
		t.Errorf("accumulated %+v", m.Content)
	}
}

// chatFrameText is one chat chunk as an SSE frame.
func chatFrameText(data string) string { return "data: " + data + "\n\n" }
