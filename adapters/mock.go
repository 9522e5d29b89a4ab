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
	register("mock", func(*config.Provider, *fasthttp.HostClient) Provider { return &mock{} })
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
	usage := &UsageJS{PromptTokens: (len(c.Body) + 3) / 4, CompletionTokens: len(strings.Fields(text))}
	usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	stop := "stop"
	created := time.Now().Unix()
	if !c.Stream {
		b, _ := json.Marshal(Completion{ID: id, Object: "chat.completion", Created: created, Model: c.Upstream,
			Choices: []Choice{{Message: &ChatMessage{Role: "assistant", Content: &text}, FinishReason: &stop}}, Usage: usage})
		r.Body = append(r.Body[:0], b...)
		r.Usage = usage.Usage()
		return nil
	}
	var frames [][]byte
	add := func(choices []Choice, u *UsageJS) {
		frames = append(frames, appendFrame(nil, Chunk{ID: id, Object: "chat.completion.chunk", Created: created,
			Model: c.Upstream, Choices: choices, Usage: u}))
	}
	add([]Choice{{Delta: &ChatMessage{Role: "assistant"}}}, nil)
	for _, w := range strings.SplitAfter(text, " ") {
		add([]Choice{{Delta: &ChatMessage{Content: &w}}}, nil)
	}
	add([]Choice{{Delta: &ChatMessage{}, FinishReason: &stop}}, nil)
	if gjson.GetBytes(c.Body, "stream_options.include_usage").Bool() {
		add([]Choice{}, usage)
	}
	frames = append(frames, doneFrame)
	r.Stream = &mockStream{frames: frames, usage: usage.Usage()}
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
