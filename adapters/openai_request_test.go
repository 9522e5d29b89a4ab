package adapters

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// TestOpenAIRequestHeads: each request starts from the header built at
// load for its key, with the key's Authorization (none for a key index
// out of range, none for Gemini, which sends its key otherwise), the
// configured headers, which may replace Authorization, and nothing a
// previous request added to its own copy.
func TestOpenAIRequestHeads(t *testing.T) {
	const yaml = "providers:\n" +
		"  up: {type: openai, base_url: \"http://up.test/v1\", keys: [\"${K1}\", \"${K2}\"], headers: {X-Extra: v}, models: {m: {}}}\n" +
		"  own: {type: openai, base_url: \"http://up.test/v1\", keys: [\"${K1}\"], headers: {authorization: Token t}, models: {m: {}}}\n" +
		"  gem: {type: gemini, base_url: \"http://up.test/v1\", keys: [\"${K1}\"], headers: {X-Extra: v}, models: {m: {}}}\n"
	adapter := func(name string) *openAI {
		switch p := testProvider(t, yaml, name, "", nil).(redacting).p.(type) {
		case *openAI:
			return p
		case *gemini:
			return p.transport
		default:
			t.Fatalf("provider %s is a %T", name, p)
			return nil
		}
	}
	up, own, gem := adapter("up"), adapter("own"), adapter("gem")
	for _, c := range []struct {
		name  string
		o     *openAI
		key   int
		auth  string
		extra string
	}{
		{"first key", up, 0, "Bearer " + testKey1, "v"},
		{"second key", up, 1, "Bearer " + testKey2, "v"},
		{"first key again", up, 0, "Bearer " + testKey1, "v"},
		{"no key", up, -1, "", "v"},
		{"key out of range", up, 2, "", "v"},
		{"configured Authorization", own, 0, "Token t", ""},
		{"gemini", gem, 0, "", "v"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := c.o.request(&c.o.url, c.key)
			defer fasthttp.ReleaseRequest(req)
			h := &req.Header
			if string(h.Method()) != "POST" || string(h.ContentType()) != "application/json" {
				t.Errorf("method %q, content type %q", h.Method(), h.ContentType())
			}
			if got := string(h.Peek("Authorization")); got != c.auth {
				t.Errorf("Authorization %q, want %q", got, c.auth)
			}
			if got := string(h.Peek("X-Extra")); got != c.extra {
				t.Errorf("X-Extra %q, want %q", got, c.extra)
			}
			if got := h.Peek("Accept"); got != nil {
				t.Errorf("Accept %q, left by an earlier request", got)
			}
			// What a request adds to its header (cohere's Accept for a
			// stream) stays its own.
			h.Set("Accept", "text/event-stream")
			h.Set("X-Extra", "changed")
		})
	}
}
