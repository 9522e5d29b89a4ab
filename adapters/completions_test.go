package adapters

import (
	"bytes"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// TestCompletionsGolden replays testdata/completions/*.txt against an
// OpenAI-compatible upstream: request.json must reach /v1/completions as
// upstream-request.json, byte for byte, and the upstream's answer
// (upstream-response.json, or the stream upstream-stream.sse) must reach
// the client as response.json or stream.sse, byte for byte too, but for
// the usage chunk the gateway asked for on its own. -update rewrites the
// expected sections.
func TestCompletionsGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/completions/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			g := readGolden(t, path)
			answer := strings.TrimSpace(g.sections["upstream-response.json"])
			events, streamed := g.sections["upstream-stream.sse"]
			u := newOpUpstream(t, func(ctx *fasthttp.RequestCtx) {
				if streamed {
					ctx.SetContentType("text/event-stream")
					ctx.SetBodyString(events)
					return
				}
				ctx.SetContentType("application/json")
				ctx.SetBodyString(answer)
			})
			p := newOpProvider(t, "openai", u)
			if !Serves[Completer](p) {
				t.Fatal("an openai provider does not serve completions")
			}
			call := opCall(strings.TrimSpace(g.sections["request.json"]), "gpt-3.5-turbo-instruct", 1)
			var r Reply
			err := p.(Completer).Complete(call, &r)
			var out strings.Builder
			if err == nil && streamed {
				defer r.Stream.Close()
				for range 1000 {
					var f []byte
					if f, err = r.Stream.Next(); err != nil {
						break
					}
					out.Write(f)
				}
				if err == io.EOF {
					err = nil
				}
			} else {
				out.Write(r.Body)
			}
			end := failureText(err)
			seen := u.requests()
			result := "response.json"
			if streamed {
				result = "stream.sse"
			}
			if *updateGolden {
				g.set("upstream-request.json", string(seen[0].body)+"\n")
				g.set(result, out.String()+"\n")
				if end != "" {
					g.set("error", end+"\n")
				}
				g.write(t)
				return
			}
			s := checkOpSent(t, "openai", "/v1/completions", seen)
			if want := strings.TrimSpace(g.sections["upstream-request.json"]); string(s.body) != want {
				t.Errorf("upstream got %s\nwant %s", s.body, want)
			}
			if want := strings.TrimSpace(g.sections["error"]); end != want {
				t.Errorf("ended with %q, want %q", end, want)
			}
			if want := strings.TrimSuffix(g.sections[result], "\n"); out.String() != want {
				t.Errorf("client got\n%s\nwant\n%s", out.String(), want)
			}
			usage, u2 := gjson.Get(answer, "usage"), r.Usage
			if streamed {
				usage, u2 = lastUsage(sseFrames(events)), r.Stream.Usage()
			}
			if want := (Usage{Prompt: int(usage.Get("prompt_tokens").Int()), Completion: int(usage.Get("completion_tokens").Int()), Known: true}); u2 != want {
				t.Errorf("Usage = %+v, want the upstream's %+v", u2, want)
			}
		})
	}
}

// A stream of text_completion chunks that ends without [DONE], after the
// chunk with the finish_reason, is complete: the gateway ends it the way
// SDKs expect.
func TestCompletionStreamEnds(t *testing.T) {
	text := `data: {"object":"text_completion","choices":[{"text":"hi","index":0,"logprobs":null,"finish_reason":null}]}` + "\n\n"
	finish := `data: {"object":"text_completion","choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"length"}]}` + "\n\n"
	for _, tt := range []struct {
		name, in string
		want     []string
		end      error
	}{
		{"finished without [DONE]", text + finish, []string{text, finish, "data: [DONE]\n\n"}, io.EOF},
		{"cut before the finish", text, []string{text}, ErrStreamCut},
	} {
		s := streamOf(tt.in)
		var got []string
		var err error
		for range 10 {
			var f []byte
			if f, err = s.Next(); err != nil {
				break
			}
			got = append(got, string(f))
		}
		if strings.Join(got, "") != strings.Join(tt.want, "") || err != tt.end {
			t.Errorf("%s: frames %q, end %v; want %q, %v", tt.name, got, err, tt.want, tt.end)
		}
	}
}

// textCompletionJS is a text_completion answer or chunk as a client reads
// it, decoded strictly enough to catch a wrong shape.
type textCompletionJS struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Text         string    `json:"text"`
		Index        int       `json:"index"`
		Logprobs     *struct{} `json:"logprobs"`
		FinishReason *string   `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

func decodeTextCompletion(t *testing.T, b []byte) textCompletionJS {
	t.Helper()
	var c textCompletionJS
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	if c.Object != "text_completion" || c.Model != "echo" || c.Created == 0 || !strings.HasPrefix(c.ID, "cmpl-mock-") {
		t.Errorf("header fields of %s", b)
	}
	return c
}

// The mock answers a legacy completion as it answers a chat: quoting the
// prompt, as one answer or as a stream of the same text, the usage chunk
// when asked for, then [DONE].
func TestMockComplete(t *testing.T) {
	p := newTestMock(t).(Completer)
	for _, tt := range []struct{ body, said string }{
		{`{"model":"echo","prompt":"Say hello"}`, "Say hello"},
		{`{"model":"echo","prompt":["first","Say hello"]}`, "Say hello"},
		{`{"model":"echo","prompt":[1,2]}`, "[1,2]"},
	} {
		var r Reply
		if err := p.Complete(mockCall(tt.body, false), &r); err != nil {
			t.Fatal(err)
		}
		c := decodeTextCompletion(t, r.Body)
		if len(c.Choices) != 1 || !strings.HasSuffix(c.Choices[0].Text, "You said: "+tt.said) || *c.Choices[0].FinishReason != "stop" {
			t.Errorf("%s: answer %s", tt.body, r.Body)
		}
		if c.Usage == nil || r.Usage != (Usage{Prompt: c.Usage.PromptTokens, Completion: c.Usage.CompletionTokens, Known: true}) {
			t.Errorf("%s: usage %+v, answer %s", tt.body, r.Usage, r.Body)
		}
		for _, usage := range []bool{false, true} {
			body := strings.Replace(tt.body, "{", `{"stream":true,`, 1)
			if usage {
				body = strings.Replace(body, "{", `{"stream_options":{"include_usage":true},`, 1)
			}
			var s Reply
			if err := p.Complete(mockCall(body, true), &s); err != nil {
				t.Fatal(err)
			}
			var text strings.Builder
			var frames []string
			for range 100 {
				f, err := s.Stream.Next()
				if err != nil {
					if err != io.EOF {
						t.Fatal(err)
					}
					break
				}
				frames = append(frames, string(f))
			}
			if n := len(frames); n < 3 || frames[n-1] != "data: [DONE]\n\n" {
				t.Fatalf("%s: frames %q", body, frames)
			}
			usages := 0
			for i, f := range frames[:len(frames)-1] {
				ch := decodeTextCompletion(t, []byte(strings.TrimPrefix(f, "data: ")))
				switch {
				case ch.Usage != nil:
					usages++
					if len(ch.Choices) != 0 || s.Stream.Usage() != (Usage{Prompt: ch.Usage.PromptTokens, Completion: ch.Usage.CompletionTokens, Known: true}) {
						t.Errorf("%s: usage chunk %s, stream usage %+v", body, f, s.Stream.Usage())
					}
				case len(ch.Choices) != 1:
					t.Errorf("%s: frame %s", body, f)
				case (ch.Choices[0].FinishReason != nil) != (i == len(frames)-2-usageChunks(usage)):
					t.Errorf("%s: finish_reason in frame %d of %q", body, i, frames)
				default:
					text.WriteString(ch.Choices[0].Text)
				}
			}
			if text.String() != c.Choices[0].Text || usages != usageChunks(usage) {
				t.Errorf("%s: streamed %q with %d usage chunks, answered %q", body, text.String(), usages, c.Choices[0].Text)
			}
			s.Stream.Close()
		}
	}
}

// usageChunks is how many usage chunks a stream has when the client
// asked for them or not.
func usageChunks(asked bool) int {
	if asked {
		return 1
	}
	return 0
}
