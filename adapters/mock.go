package adapters

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/config"
)

// mock answers in-process, deterministically, with no network: the
// out-of-the-box target for `auto`, for trying a config, and for tests.
// Its reply quotes the last user message, so a client can see its request
// went through.
type mock struct{}

func init() {
	register("mock", func(*config.Provider, *fasthttp.Client) Provider { return &mock{} })
}

type mockMessage struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
}

type mockChoice struct {
	Index        int          `json:"index"`
	Message      *mockMessage `json:"message,omitempty"`
	Delta        *mockMessage `json:"delta,omitempty"`
	FinishReason *string      `json:"finish_reason"`
}

type mockUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type mockCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []mockChoice `json:"choices"`
	Usage   *mockUsage   `json:"usage,omitempty"`
}

func (m *mock) Chat(c *Call, r *Reply) error {
	said := lastUserText(c.Body)
	text := "Hello from the mock provider (" + c.Upstream + ")."
	if said != "" {
		text += " You said: " + said
	}
	h := fnv.New64a()
	h.Write(c.Body)
	id := fmt.Sprintf("chatcmpl-mock-%016x", h.Sum64())
	usage := &mockUsage{PromptTokens: (len(c.Body) + 3) / 4, CompletionTokens: len(strings.Fields(text))}
	usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	stop := "stop"
	base := mockCompletion{ID: id, Created: time.Now().Unix(), Model: c.Upstream}
	if !c.Stream {
		base.Object = "chat.completion"
		base.Choices = []mockChoice{{Message: &mockMessage{Role: "assistant", Content: text}, FinishReason: &stop}}
		base.Usage = usage
		b, _ := json.Marshal(base)
		r.Body = append(r.Body[:0], b...)
		r.Usage = Usage{Prompt: usage.PromptTokens, Completion: usage.CompletionTokens, Known: true}
		return nil
	}
	base.Object = "chat.completion.chunk"
	var frames [][]byte
	add := func(choices []mockChoice, u *mockUsage) {
		ch := base
		ch.Choices, ch.Usage = choices, u
		b, _ := json.Marshal(ch)
		frames = append(frames, []byte("data: "+string(b)+"\n\n"))
	}
	add([]mockChoice{{Delta: &mockMessage{Role: "assistant"}}}, nil)
	words := strings.SplitAfter(text, " ")
	for _, w := range words {
		add([]mockChoice{{Delta: &mockMessage{Content: w}}}, nil)
	}
	add([]mockChoice{{Delta: &mockMessage{}, FinishReason: &stop}}, nil)
	if gjson.GetBytes(c.Body, "stream_options.include_usage").Bool() {
		add([]mockChoice{}, usage)
	}
	frames = append(frames, doneFrame)
	r.Stream = &mockStream{frames: frames, usage: Usage{Prompt: usage.PromptTokens, Completion: usage.CompletionTokens, Known: true}}
	return nil
}

// lastUserText returns the text of the last user message, shortened.
func lastUserText(body []byte) string {
	var text string
	gjson.GetBytes(body, "messages").ForEach(func(_, m gjson.Result) bool {
		if m.Get("role").Str != "user" {
			return true
		}
		content := m.Get("content")
		if content.IsArray() {
			var parts []string
			content.ForEach(func(_, p gjson.Result) bool {
				if p.Get("type").Str == "text" {
					parts = append(parts, p.Get("text").Str)
				}
				return true
			})
			text = strings.Join(parts, " ")
		} else {
			text = content.Str
		}
		return true
	})
	return truncate(text, 200)
}

type mockStream struct {
	frames [][]byte
	i      int
	usage  Usage
}

func (s *mockStream) Usage() Usage { return s.usage }

func (s *mockStream) Next() ([]byte, error) {
	if s.i == len(s.frames) {
		return nil, io.EOF
	}
	s.i++
	return s.frames[s.i-1], nil
}

func (s *mockStream) Close() {}
