package adapters

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
)

// Keys of the redactor tests: an OpenAI-style one, one with the slashes
// and pluses of AWS-style secrets, one shorter than a window, and one too
// short to be a secret at all.
const (
	rdKey   = "sk-test-FIRST-0123456789abcdef"
	rdSlash = "wJal/rXUtnFEMI+K7MDENG/bPxRfiCY"
	rdShort = "ab3c5Z"
	rdTiny  = "xy"
)

var rdRedactor = NewRedactor([]string{rdKey, rdSlash, rdShort, rdTiny, rdKey})

// escapeAll writes s as JSON string content with a \u escape per byte.
func escapeAll(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		fmt.Fprintf(&b, `\u%04x`, c)
	}
	return b.String()
}

// rdWindow returns an 8-byte window of key that s holds, or "".
func rdWindow(s, key string) string {
	for i := 0; i+8 <= len(key); i++ {
		if strings.Contains(s, key[i:i+8]) {
			return key[i : i+8]
		}
	}
	return ""
}

func TestRedact(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"exact key", "key: " + rdKey + ".", "key: <secret>."},
		{"the whole text", rdKey, "<secret>"},
		{"8-byte fragment", "got FIRST-01 here", "got <secret> here"},
		{"7-byte fragment is left", "got FIRST-0 here", "got FIRST-0 here"},
		{"fragment at both ends", rdKey[20:] + " and " + rdKey[:9], "<secret> and <secret>"},
		{"key twice in a row", rdKey + rdKey, "<secret><secret>"},
		{"two keys", rdKey + " " + rdSlash, "<secret> <secret>"},
		{"a key grown on both sides", "xx" + rdKey + "yy", "xx<secret>yy"},
		{"first letter escaped", `"\u0073k-test-FIRST-0123456789abcdef"`, `"<secret>"`},
		{"upper-case escape", `"s\u006B` + rdKey[2:] + `"`, `"<secret>"`},
		{"escapes that spell no key byte", `"\u003c` + rdKey + `\u003e"`, `"\u003c<secret>\u003e"`},
		{"every letter escaped", `{"m":"` + escapeAll(rdKey) + `"}`, `{"m":"<secret>"}`},
		{"escaped fragment", `{"m":"` + escapeAll("FIRST-01") + `"}`, `{"m":"<secret>"}`},
		{"escaped 7 bytes are left", `{"m":"` + escapeAll("FIRST-0") + `"}`, `{"m":"` + escapeAll("FIRST-0") + `"}`},
		{"escaped slashes", `{"k":"wJal\/rXUtnFEMI+K7MDENG\/bPxRfiCY"}`, `{"k":"<secret>"}`},
		{"an escaped backslash is no escape", `\\u0073k-test-F`, `\\u0073<secret>`},
		{"masked with stars", "Incorrect API key provided: sk-te***def.", "Incorrect API key provided: <secret>."},
		{"masked with dots", "key sk-t...cdef rejected", "key <secret> rejected"},
		{"masked with an ellipsis", "key sk-tes…bcdef rejected", "key <secret> rejected"},
		{"masked with x", "key sk-xxxxxxxxxxxdef", "key <secret>"},
		{"masked, long prefix", "sk-test-FIRST-01****cdef", "<secret>"},
		{"masked, escaped", `"sk-te\u002a\u002a\u002adef"`, `"<secret>"`},
		{"masked, too little before", "sk***def", "sk***def"},
		{"masked, too little after", "sk-te***ef", "sk-te***ef"},
		{"masked, not the key's end", "sk-te***abc", "sk-te***abc"},
		{"short key whole", "use ab3c5Z now", "use <secret> now"},
		{"short key in part is left", "use ab3c5 now", "use ab3c5 now"},
		{"tiny key is no secret", "xy xyz", "xy xyz"},
		{"a backslash at the end", `text\`, `text\`},
		{"broken escape", `\u00zz` + rdKey[:7], `\u00zz` + rdKey[:7]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, found := rdRedactor.Redact([]byte(tt.in))
			if string(out) != tt.want || found != (tt.in != tt.want) {
				t.Errorf("Redact(%q) = %q, %v; want %q", tt.in, out, found, tt.want)
			}
			if json.Valid([]byte(tt.in)) && !json.Valid(out) {
				t.Errorf("Redact(%q) = %q is no longer JSON", tt.in, out)
			}
		})
	}
}

func TestRedactLeavesOrdinaryText(t *testing.T) {
	// Ordinary text, markdown masks and key-looking words are returned
	// as they are, the same slice, with nothing allocated.
	for _, in := range []string{
		"",
		benchBody,
		"Use ***bold*** and ... or … between words; the task-runner and disk-based sk-style names.",
		`{"text":"line\nnext \"quoted\" \\ \u003cb\u003e \ud83d\ude00"}`,
		"sk-tes is a prefix keys of this kind share in part: sk-t and sk-te...",
		strings.Repeat("a", 7) + "\n" + strings.Repeat("x", 100),
	} {
		b := []byte(in)
		var out []byte
		var found bool
		if allocs := testing.AllocsPerRun(10, func() { out, found = rdRedactor.Redact(b) }); allocs != 0 {
			t.Errorf("Redact(%q) allocated %v times", in, allocs)
		}
		if found || string(out) != in || (len(in) > 0 && &out[0] != &b[0]) {
			t.Errorf("Redact(%q) = %q, %v; want the input itself", in, out, found)
		}
	}
}

func TestRedactNil(t *testing.T) {
	// Without keys there is no redactor, and a nil one changes nothing.
	var r *Redactor
	if NewRedactor(nil) != nil || NewRedactor([]string{"", "ab"}) != nil {
		t.Error("a redactor without keys worth redacting is not nil")
	}
	if out, found := r.Redact([]byte(rdKey)); found || string(out) != rdKey {
		t.Errorf("nil Redact = %q, %v", out, found)
	}
	if r.String(rdKey) != rdKey || r.Holds([]byte(rdKey)) || r.Hold([]byte(rdKey)) != 0 {
		t.Error("a nil redactor acted")
	}
}

func TestRedactHold(t *testing.T) {
	// A reader of a stream keeps back what the next read may complete
	// into a key, and nothing else: an event's end goes out at once.
	tests := []struct {
		name, in string
		min, max int
	}{
		{"an event's end", "data: {}\n\n", 0, 0},
		{"a JSON end", `{"a":"b"}`, 0, 0},
		{"a key's start", "data: " + rdKey[:7], 7, 7},
		{"an escaped start", `data: "` + escapeAll(rdKey[:7]), 42, 42},
		{"a masked start", "Incorrect key: sk-te***", 8, 8},
		{"a long word", "data: " + strings.Repeat("a", 10000), 8, rdRedactor.hold},
	}
	for _, tt := range tests {
		if n := rdRedactor.Hold([]byte(tt.in)); n < tt.min || n > tt.max {
			t.Errorf("%s: Hold = %d, want %d to %d", tt.name, n, tt.min, tt.max)
		}
	}
	// A key cut over two reads is found once the held bytes join the
	// next read.
	first, second := []byte("data: "+rdKey[:5]), []byte(rdKey[5:]+"\n\n")
	n := rdRedactor.Hold(first)
	out, _ := rdRedactor.Redact(first[:len(first)-n])
	next, _ := rdRedactor.Redact(append(append([]byte(nil), first[len(first)-n:]...), second...))
	if got := string(out) + string(next); got != "data: <secret>\n\n" {
		t.Errorf("a key over two reads: %q", got)
	}
}

func TestRedactStringAndHolds(t *testing.T) {
	msg := "boom for " + rdKey
	if got := rdRedactor.String(msg); got != "boom for <secret>" {
		t.Errorf("String = %q", got)
	}
	if !rdRedactor.Holds([]byte(msg)) || rdRedactor.Holds([]byte("boom")) {
		t.Error("Holds is wrong")
	}
	if got := rdRedactor.String(msg); got == msg || msg != "boom for "+rdKey {
		t.Error("String changed its argument")
	}
}

func TestRedactFailure(t *testing.T) {
	// A failure's message and body lose the key; a shared failure is
	// copied, never changed; other errors keep their identity.
	shared := &Failure{Class: BadRequest, Status: 400, Msg: "bad " + rdKey, Body: []byte(`{"error":{"message":"` + escapeAll(rdKey) + `"}}`)}
	got := rdRedactor.failure(shared)
	var f *Failure
	if !errors.As(got, &f) || f.Msg != "bad <secret>" || string(f.Body) != `{"error":{"message":"<secret>"}}` || f.Class != BadRequest || f.Status != 400 {
		t.Errorf("failure = %+v %s", f, f.Body)
	}
	if shared.Msg != "bad "+rdKey {
		t.Error("the shared failure was changed")
	}
	clean := &Failure{Msg: "upstream timed out"}
	for _, err := range []error{nil, io.EOF, ErrStreamCut, clean} {
		if rdRedactor.failure(err) != err {
			t.Errorf("%v was replaced", err)
		}
	}
	if err := rdRedactor.failure(errors.New("read " + rdKey)); err.Error() != "read <secret>" {
		t.Errorf("an error quoting the key: %v", err)
	}
}

func FuzzRedact(f *testing.F) {
	for _, s := range []string{rdKey, "a" + rdKey[3:12] + "b", escapeAll(rdKey), `\\u0073` + rdKey, "sk-te***def", benchBody, rdSlash, `wJal\/rXUtnFEMI`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, found := rdRedactor.Redact(in)
		if !found && !bytes.Equal(out, in) {
			t.Fatalf("nothing found, yet %q became %q", in, out)
		}
		for _, key := range []string{rdKey, rdSlash} {
			for _, view := range []string{string(out), rdUnescape(string(out))} {
				if w := rdWindow(view, key); w != "" {
					t.Fatalf("Redact(%q) = %q still holds %q", in, out, w)
				}
			}
		}
	})
}

// rdUnescape decodes \uXXXX escapes of ASCII and the one-letter escapes,
// independently of the code under test.
func rdUnescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		if s[i] == 'u' && i+5 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+5], 16, 16); err == nil {
				if v >= 0x80 {
					// Only ASCII can be a key's byte; the rest separates.
					v = 0
				}
				b.WriteByte(byte(v))
				i += 4
				continue
			}
		}
		if strings.IndexByte(`"\/`, s[i]) >= 0 {
			b.WriteByte(s[i])
			continue
		}
		// Other escapes decode to no key byte: keep a separator.
		b.WriteByte(0)
	}
	return b.String()
}

// benchBody is a typical non-stream completion of about 1 KB.
var benchBody = `{"id":"chatcmpl-9xYz1AbCdEfGhIjKlMnOpQrS","object":"chat.completion","created":1735689600,"model":"gpt-4o-mini-2024-07-18",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"Sure! Here is a short overview of how HTTP caching works.\n\n` +
	`1. **Freshness**: a response carries Cache-Control: max-age=N, and a cache may serve it for N seconds without asking the origin again.\n` +
	`2. **Validation**: once stale, the cache sends If-None-Match with the stored ETag; a 304 Not Modified answer lets it reuse the body.\n` +
	`3. **Privacy**: responses marked private are kept by the browser only, never by shared proxies, and no-store keeps them out of every cache.\n\n` +
	`In practice, set a long max-age on versioned static assets (app.3f9c2e.js) and a short one, or no-cache, on HTML, so users ` +
	`always see the latest page while scripts and images load from the cache. Let me know if you'd like examples for nginx or a CDN!",` +
	`"refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":187,"total_tokens":218,` +
	`"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0}},` +
	`"service_tier":"default","system_fingerprint":"fp_0ba0d124f1"}`

func BenchmarkRedact(b *testing.B) {
	// Realistic keys: a project key, a second provider's, an Anthropic
	// one; the body holds none of them.
	r := NewRedactor([]string{
		"sk-proj-Ab3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA7bC9dE1fG3hI5jK7lM9nO1pQ3rS5tU7vW9xY1zA3bC5dE7fG9hI1jK3l",
		"gsk_Zy9Xw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa9876543210zyxw",
		"sk-ant-api03-Qw3rTy6uI9oP2aS5dF8gH1jK4lZ7xC0vB3nM6qW9eR2tY5uI8oP1aS4dF7gH0jK3lZ6xC9vB2nM5qW8eR1tY4u-AbCdEfAA",
	})
	body := []byte(benchBody)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, found := r.Redact(body); found {
			b.Fatal("found a key in the bench body")
		}
	}
}

// BenchmarkRedactAnswer redacts a short non-stream answer (~300 bytes),
// clean and with a key in its content, with BenchmarkRedact's keys.
func BenchmarkRedactAnswer(b *testing.B) {
	keys := []string{
		"sk-proj-Ab3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA7bC9dE1fG3hI5jK7lM9nO1pQ3rS5tU7vW9xY1zA3bC5dE7fG9hI1jK3l",
		"gsk_Zy9Xw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa9876543210zyxw",
		"sk-ant-api03-Qw3rTy6uI9oP2aS5dF8gH1jK4lZ7xC0vB3nM6qW9eR2tY5uI8oP1aS4dF7gH0jK3lZ6xC9vB2nM5qW8eR1tY4u-AbCdEfAA",
	}
	r := NewRedactor(keys)
	const answer = `{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-mini",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how can I help you today?\n%s"},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16}}`
	for _, c := range []struct{ name, content string }{
		{"clean", "Ask me anything."},
		{"key", "Your key is " + keys[1] + "."},
	} {
		body := []byte(fmt.Sprintf(answer, c.content))
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, found := r.Redact(body); found != (c.name == "key") {
					b.Fatal("misread")
				}
			}
		})
	}
}
