package adapters

import (
	"bytes"
	"encoding/json"
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"gateway/config"
)

// completion is the part of an OpenAI chat.completion (or chunk) a client
// reads, decoded strictly enough to catch a wrong shape.
type completion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message *struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		Delta *struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

func decodeCompletion(t *testing.T, b []byte) completion {
	t.Helper()
	var c completion
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return c
}

func newTestMock(t *testing.T) Provider {
	t.Helper()
	p, err := New(&config.Provider{Name: "mock", Type: "mock", Protocol: "mock"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mockCall(body string, stream bool) *Call {
	return &Call{Body: []byte(body), Upstream: "echo", UpstreamJSON: []byte(`"echo"`), Stream: stream, Key: -1}
}

const mockBody = `{"model":"auto","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"first"},{"role":"assistant","content":"ok"},{"role":"user","content":"Say hello"}]}`

func TestMockNonStream(t *testing.T) {
	var r Reply
	if err := newTestMock(t).Chat(mockCall(mockBody, false), &r); err != nil {
		t.Fatal(err)
	}
	c := decodeCompletion(t, r.Body)
	if !strings.HasPrefix(c.ID, "chatcmpl-") || c.Object != "chat.completion" || c.Created == 0 || c.Model != "echo" {
		t.Errorf("header fields wrong: %s", r.Body)
	}
	if len(c.Choices) != 1 || c.Choices[0].Message == nil || c.Choices[0].Message.Role != "assistant" {
		t.Fatalf("choices wrong: %s", r.Body)
	}
	if !strings.Contains(c.Choices[0].Message.Content, "You said: Say hello") {
		t.Errorf("content %q does not quote the last user message", c.Choices[0].Message.Content)
	}
	if fr := c.Choices[0].FinishReason; fr == nil || *fr != "stop" {
		t.Errorf("finish_reason = %v, want stop", fr)
	}
	u := c.Usage
	if u == nil || u.PromptTokens <= 0 || u.CompletionTokens <= 0 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Errorf("usage wrong: %s", r.Body)
	}
	if r.Stream != nil {
		t.Error("non-stream call set a stream")
	}
}

// mockFrames drains a mock stream.
func mockFrames(t *testing.T, body string) []string {
	t.Helper()
	var r Reply
	if err := newTestMock(t).Chat(mockCall(body, true), &r); err != nil {
		t.Fatal(err)
	}
	if r.Stream == nil {
		t.Fatal("stream call set no stream")
	}
	defer r.Stream.Close()
	var frames []string
	for range 1000 {
		f, err := r.Stream.Next()
		if err == io.EOF {
			if _, err := r.Stream.Next(); err != io.EOF {
				t.Fatalf("after the end: %v", err)
			}
			return frames
		}
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, string(f))
	}
	t.Fatal("mock stream does not end")
	return nil
}

func TestMockStream(t *testing.T) {
	for _, usage := range []bool{false, true} {
		body := `{"model":"auto","stream":true,"messages":[{"role":"user","content":"Say hello"}]}`
		if usage {
			body = `{"model":"auto","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello"}]}`
		}
		frames := mockFrames(t, body)
		if frames[len(frames)-1] != "data: [DONE]\n\n" {
			t.Fatalf("usage=%v: last frame %q, want [DONE]", usage, frames[len(frames)-1])
		}
		var text strings.Builder
		var ids = map[string]bool{}
		finished, usages := 0, 0
		for i, f := range frames[:len(frames)-1] {
			data, ok := strings.CutPrefix(f, "data: ")
			if !ok || !strings.HasSuffix(data, "\n\n") {
				t.Fatalf("usage=%v: frame %d is not one SSE data event: %q", usage, i, f)
			}
			c := decodeCompletion(t, []byte(data))
			ids[c.ID] = true
			if c.Object != "chat.completion.chunk" || c.Model != "echo" || c.Created == 0 {
				t.Errorf("usage=%v: frame %d header fields wrong: %s", usage, i, data)
			}
			if c.Usage != nil {
				usages++
				if len(c.Choices) != 0 || i != len(frames)-2 {
					t.Errorf("usage=%v: usage chunk %d has choices or is not last: %s", usage, i, data)
				}
				if c.Usage.TotalTokens != c.Usage.PromptTokens+c.Usage.CompletionTokens || c.Usage.TotalTokens == 0 {
					t.Errorf("usage=%v: usage wrong: %s", usage, data)
				}
				continue
			}
			if len(c.Choices) != 1 || c.Choices[0].Delta == nil || c.Choices[0].Message != nil {
				t.Fatalf("usage=%v: frame %d is not a delta chunk: %s", usage, i, data)
			}
			if i == 0 && c.Choices[0].Delta.Role != "assistant" {
				t.Errorf("usage=%v: first chunk has role %q, want assistant", usage, c.Choices[0].Delta.Role)
			}
			if c.Choices[0].FinishReason != nil {
				finished++
				if *c.Choices[0].FinishReason != "stop" {
					t.Errorf("usage=%v: finish_reason %q", usage, *c.Choices[0].FinishReason)
				}
			}
			text.WriteString(c.Choices[0].Delta.Content)
		}
		if len(ids) != 1 {
			t.Errorf("usage=%v: chunks carry %d ids, want one", usage, len(ids))
		}
		if finished != 1 {
			t.Errorf("usage=%v: %d chunks with finish_reason, want 1", usage, finished)
		}
		if want := map[bool]int{false: 0, true: 1}[usage]; usages != want {
			t.Errorf("usage=%v: %d usage chunks, want %d", usage, usages, want)
		}
		var r Reply
		if err := newTestMock(t).Chat(mockCall(body, false), &r); err != nil {
			t.Fatal(err)
		}
		if want := gjson.GetBytes(r.Body, "choices.0.message.content").Str; text.String() != want {
			t.Errorf("usage=%v: streamed text %q, non-stream text %q", usage, text.String(), want)
		}
	}
}

var createdField = regexp.MustCompile(`"created":\d+`)

func TestMockIsDeterministic(t *testing.T) {
	p := newTestMock(t)
	run := func(body string, stream bool) string {
		var r Reply
		if err := p.Chat(mockCall(body, stream), &r); err != nil {
			t.Fatal(err)
		}
		out := string(r.Body)
		if stream {
			out = strings.Join(mockFrames(t, body), "")
		}
		return createdField.ReplaceAllString(out, `"created":0`)
	}
	for _, stream := range []bool{false, true} {
		a, b := run(mockBody, stream), run(mockBody, stream)
		if a != b {
			t.Errorf("stream=%v: two runs differ:\n%s\n%s", stream, a, b)
		}
		other := run(strings.Replace(mockBody, "Say hello", "Say goodbye", 1), stream)
		if other == a {
			t.Errorf("stream=%v: different input, same output", stream)
		}
		if gjson.Get(strings.TrimPrefix(strings.SplitN(other, "\n", 2)[0], "data: "), "id").Str ==
			gjson.Get(strings.TrimPrefix(strings.SplitN(a, "\n", 2)[0], "data: "), "id").Str {
			t.Errorf("stream=%v: different input, same id", stream)
		}
	}
}

func TestMockReusesReplyBody(t *testing.T) {
	r := Reply{Body: make([]byte, 0, 4096)}
	r.Body = append(r.Body, "stale stale stale"...)
	if err := newTestMock(t).Chat(mockCall(mockBody, false), &r); err != nil {
		t.Fatal(err)
	}
	if !gjson.ValidBytes(r.Body) || bytes.Contains(r.Body, []byte("stale")) {
		t.Errorf("reply body not replaced: %s", r.Body)
	}
}

func TestLastUserText(t *testing.T) {
	tests := []struct {
		body, want string
	}{
		{`{"messages":[]}`, ""},
		{`{}`, ""},
		{`{"messages":[{"role":"system","content":"s"}]}`, ""},
		{`{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}`, "a"},
		{`{"messages":[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"here"}]}]}`, "look here"},
		{`{"messages":[{"role":"user","content":"` + strings.Repeat("é", 150) + `"}]}`, strings.Repeat("é", 100) + "..."},
		{`{"messages":[{"role":"user","content":"h\u00e9llo \"q\""}]}`, `héllo "q"`},
	}
	for _, tt := range tests {
		if got := lastUserText([]byte(tt.body)); got != tt.want {
			t.Errorf("lastUserText(%s) = %q, want %q", tt.body, got, tt.want)
		}
	}
}

func TestMockWithoutUserMessage(t *testing.T) {
	var r Reply
	if err := newTestMock(t).Chat(mockCall(`{"model":"m","messages":[{"role":"system","content":"x"}]}`, false), &r); err != nil {
		t.Fatal(err)
	}
	if got := gjson.GetBytes(r.Body, "choices.0.message.content").Str; got != "Hello from the mock provider (echo)." {
		t.Errorf("content = %q", got)
	}
}
