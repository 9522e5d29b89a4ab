package adapters

import (
	"bufio"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// usageSeeds are usage values as upstreams send them, and as they should
// not but may.
var usageSeeds = []string{
	`{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16}`,
	`{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}`,
	`{ "completion_tokens" : 3 , "prompt_tokens" : 4 }`,
	`{"prompt_tokens":1,"prompt_tokens":2,"completion_tokens":3,"completion_tokens":4}`,
	`{"prompt\u005ftokens":5,"completion_tokens":-6}`,
	`{"prompt_tokens":"12","completion_tokens":true}`,
	`{"prompt_tokens":12.9,"completion_tokens":1e3}`,
	`{"prompt_tokens":123456789012345,"completion_tokens":1234567890123456789}`,
	`{"prompt_tokens":99999999999999999999999,"completion_tokens":-0}`,
	`{"prompt_tokens":null,"completion_tokens":{"a":1}}`,
	`{}`, `[]`, `null`, `12`, `"usage"`,
}

// TestAnswerUsageIsUsageOf: the usage answerOf reads in its pass is what
// gjson reads.
func TestAnswerUsageIsUsageOf(t *testing.T) {
	for _, s := range usageSeeds {
		got, ok := answerUsage(s)
		if want := usageOf(gjson.Parse(s)); !ok || got != want {
			t.Errorf("usage %s: answerOf read %+v (ok %v), want %+v", s, got, ok, want)
		}
	}
}

func FuzzAnswerUsage(f *testing.F) {
	for _, s := range usageSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckJSON([]byte(s)) != nil {
			return
		}
		found, got, hasUsage, err := answerOf([]byte(`{"usage":`+s+`,"choices":[]}`), "choices")
		if errors.Is(err, ErrJSONDepth) {
			return // one level too deep once wrapped
		}
		if err != nil || !found {
			t.Fatalf("usage %q: answerOf found %v, err %v", s, found, err)
		}
		if !hasUsage {
			got = Usage{}
		}
		if want := usageOf(gjson.Parse(s)); got != want {
			t.Errorf("usage %q: answerOf read %+v, want %+v", s, got, want)
		}
	})
}

// answerUsage is the usage answerOf reads from an answer whose usage is s,
// followed by another member; ok is false when answerOf found the answer
// invalid or the usage missing.
func answerUsage(s string) (Usage, bool) {
	found, u, hasUsage, err := answerOf([]byte(`{"usage":`+s+`,"choices":[]}`), "choices")
	return u, found && hasUsage && err == nil
}

func TestExhaustedFor(t *testing.T) {
	for _, c := range []struct {
		name    string
		headers string
		want    time.Duration
	}{
		{"none", "X-Other: 0\r\n", 0},
		{"requests", "X-Ratelimit-Remaining-Requests: 0\r\nX-Ratelimit-Reset-Requests: 2s\r\n", 2 * time.Second},
		{"lower case", "x-ratelimit-remaining-tokens: 0\r\nx-ratelimit-reset-tokens: 7.5s\r\n", 7500 * time.Millisecond},
		{"the longer of both", "X-Ratelimit-Reset-Tokens: 5s\r\nX-Ratelimit-Remaining-Requests: 0\r\nX-Ratelimit-Remaining-Tokens: 0\r\nX-Ratelimit-Reset-Requests: 2s\r\n", 5 * time.Second},
		{"some left", "X-Ratelimit-Remaining-Requests: 3\r\nX-Ratelimit-Reset-Requests: 2s\r\n", 0},
		{"not a plain 0", "X-Ratelimit-Remaining-Requests: 00\r\nX-Ratelimit-Reset-Requests: 2s\r\n", 0},
		{"the first of a repeated one", "X-Ratelimit-Remaining-Requests: 1\r\nX-Ratelimit-Remaining-Requests: 0\r\n", 0},
		{"the first reset", "X-Ratelimit-Remaining-Requests: 0\r\nX-Ratelimit-Reset-Requests: 3s\r\nX-Ratelimit-Reset-Requests: 9s\r\n", 3 * time.Second},
		{"unreadable reset", "X-Ratelimit-Remaining-Requests: 0\r\nX-Ratelimit-Reset-Requests: soon\r\n", time.Minute},
		{"no reset", "X-Ratelimit-Remaining-Tokens: 0\r\n", time.Minute},
		{"other limits", "X-Ratelimit-Limit-Requests: 0\r\nX-Ratelimit-Remaining: 0\r\nX-Ratelimit-Remaining-Requests-Day: 0\r\n", 0},
	} {
		var resp fasthttp.Response
		if err := resp.Header.Read(bufioOf("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + c.headers + "\r\n")); err != nil {
			t.Fatal(err)
		}
		if got := exhaustedFor(&resp.Header); got != c.want {
			t.Errorf("%s: exhaustedFor = %v, want %v", c.name, got, c.want)
		}
	}
}

func bufioOf(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

func BenchmarkExhaustedFor(b *testing.B) {
	var resp fasthttp.Response
	head := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 0\r\nDate: Thu, 03 Dec 2026 15:00:00 GMT\r\n" +
		"X-Request-Id: req_1\r\nOpenai-Processing-Ms: 120\r\nX-Ratelimit-Limit-Requests: 10000\r\nX-Ratelimit-Remaining-Requests: 9999\r\n" +
		"X-Ratelimit-Reset-Requests: 6ms\r\nX-Ratelimit-Limit-Tokens: 1000000\r\nX-Ratelimit-Remaining-Tokens: 999990\r\nX-Ratelimit-Reset-Tokens: 0s\r\n\r\n"
	if err := resp.Header.Read(bufioOf(head)); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if exhaustedFor(&resp.Header) != 0 {
			b.Fatal("exhausted")
		}
	}
}

// BenchmarkUsage reads the usage of an answer, as answerOf does in its
// pass, and by gjson.
func BenchmarkUsage(b *testing.B) {
	for _, s := range usageSeeds[:2] {
		raw := []byte(s)
		b.Run("walk", func(b *testing.B) {
			var r JSONReader
			for b.Loop() {
				if r.Reset(raw); r.Next() != JSONObject || usageRead(&r).Prompt == 0 {
					b.Fatal("misread")
				}
			}
		})
		b.Run("gjson", func(b *testing.B) {
			for b.Loop() {
				if usageOf(gjson.ParseBytes(raw)).Prompt == 0 {
					b.Fatal("misread")
				}
			}
		})
	}
}

// TestOpenAIReplyOwnsBody: a reply's body is handed over from the
// upstream's response, not copied, and still no buffer is shared: the
// exchanges that follow, reusing the pooled responses and the buffers the
// replies gave back, leave an earlier reply's body as it came, and a
// reused reply holds its own answer each time.
func TestOpenAIReplyOwnsBody(t *testing.T) {
	n := 0
	u := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
		n++
		ctx.SetContentType("application/json")
		ctx.SetBodyString(answerNumbered(n))
	})
	p := newTestOpenAI(t, u, "5s")
	var first, reused Reply
	if err := p.Chat(testCall(`{"model":"m"}`, false, 0), &first); err != nil {
		t.Fatal(err)
	}
	for i := 2; i < 40; i++ {
		if err := p.Chat(testCall(`{"model":"m"}`, false, 0), &reused); err != nil {
			t.Fatal(err)
		}
		if got, want := string(reused.Body), answerNumbered(i); got != want {
			t.Fatalf("reply %d = %s, want %s", i, got, want)
		}
	}
	if got, want := string(first.Body), answerNumbered(1); got != want {
		t.Errorf("the first reply became %s, want %s", got, want)
	}
}

// answerNumbered is the nth answer of TestOpenAIReplyOwnsBody, its
// length different for each n.
func answerNumbered(n int) string {
	return `{"choices":[{"message":{"content":"` + strings.Repeat("a", n) + `"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`
}
