package adapters

import (
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
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
	text, usage := mockAnswer(c, lastUserText(c.Body))
	id := fmt.Sprintf("chatcmpl-mock-%016x", mockHash(c.Body))
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

// mockAnswer is the mock's answer to a request whose user said said,
// and its usage: a token a word, and a quarter of the body's bytes for
// the prompt.
func mockAnswer(c *Call, said string) (string, *UsageJS) {
	text := "Hello from the mock provider (" + c.Upstream + ")."
	if said != "" {
		text += " You said: " + said
	}
	usage := &UsageJS{PromptTokens: (len(c.Body) + 3) / 4, CompletionTokens: len(strings.Fields(text))}
	usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	return text, usage
}

func mockHash(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
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

// Complete answers a legacy completion as Chat answers a chat: quoting
// the prompt (the last, when there are several), in one choice.
func (m *mock) Complete(c *Call, r *Reply) error {
	text, usage := mockAnswer(c, promptText(c.Body))
	id := fmt.Sprintf("cmpl-mock-%016x", mockHash(c.Body))
	stop := "stop"
	created := time.Now().Unix()
	if !c.Stream {
		b, _ := json.Marshal(textCompletion{ID: id, Object: "text_completion", Created: created, Model: c.Upstream,
			Choices: []textChoice{{Text: text, FinishReason: &stop}}, Usage: usage})
		r.Body = append(r.Body[:0], b...)
		r.Usage = usage.Usage()
		return nil
	}
	var frames [][]byte
	add := func(choices []textChoice, u *UsageJS) {
		frames = append(frames, appendFrame(nil, textCompletion{ID: id, Object: "text_completion", Created: created,
			Model: c.Upstream, Choices: choices, Usage: u}))
	}
	for _, w := range strings.SplitAfter(text, " ") {
		add([]textChoice{{Text: w}}, nil)
	}
	add([]textChoice{{FinishReason: &stop}}, nil)
	if gjson.GetBytes(c.Body, "stream_options.include_usage").Bool() {
		add([]textChoice{}, usage)
	}
	frames = append(frames, doneFrame)
	r.Stream = &mockStream{frames: frames, usage: usage.Usage()}
	return nil
}

// promptText returns a completion request's prompt, or the last of its
// prompts, shortened; token ids are quoted as they are.
func promptText(body []byte) string {
	p := gjson.GetBytes(body, "prompt")
	if p.IsArray() {
		all := p.Array()
		if len(all) == 0 {
			return ""
		}
		if last := all[len(all)-1]; last.Type == gjson.String {
			p = last
		}
	}
	if p.Type == gjson.String {
		return truncate(p.Str, 200)
	}
	return truncate(p.Raw, 200)
}

const (
	// mockDimensions is the size of the mock's vectors when the client
	// asks for none.
	mockDimensions = 8
	// mockMaxValues bounds the numbers of one mock answer.
	mockMaxValues = 1 << 20
)

// Embed answers with a unit vector per input, the same for the same
// input: a hash of it seeds the numbers. The usage counts a quarter of
// the inputs' bytes.
func (m *mock) Embed(c *Call, r *Reply) error {
	in, f := readEmbedInput(c.Body)
	if f != nil {
		return f
	}
	dims := cmp.Or(in.dimensions, mockDimensions)
	if len(in.texts)*dims > mockMaxValues {
		return untranslatable("the mock provider makes at most %d numbers an answer", mockMaxValues)
	}
	l := newEmbeddingList(r.Body, in.base64)
	vec := make([]float64, dims)
	for _, t := range in.texts {
		mockVector(vec, t)
		l.add(vec)
	}
	r.Usage = Usage{Prompt: in.estimated().Prompt, Known: true}
	r.Body = l.end(c.Upstream, r.Usage)
	return nil
}

// mockVector fills v with a unit vector drawn from text's hash by
// splitmix64. Each number is a float32, as real embeddings are, so that
// both encodings carry the same vector.
func mockVector(v []float64, text string) {
	seed := mockHash([]byte(text))
	var norm float64
	for i := range v {
		seed += 0x9E3779B97F4A7C15
		z := (seed ^ seed>>30) * 0xBF58476D1CE4E5B9
		z = (z ^ z>>27) * 0x94D049BB133111EB
		z ^= z >> 31
		v[i] = float64(z>>11)/(1<<52) - 1
		norm += v[i] * v[i]
	}
	norm = math.Sqrt(norm)
	for i := range v {
		if norm > 0 {
			v[i] /= norm
		}
		v[i] = float64(float32(v[i]))
	}
}
