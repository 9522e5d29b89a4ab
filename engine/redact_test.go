package engine

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/valyala/fasthttp"
)

// leakIn says what in text gives a provider key away, or "" when nothing
// does: any 8 bytes of a key, in the text as it is or once its JSON escapes
// are decoded, or one of the masked forms an echo upstream writes.
func leakIn(text string, keys []string) string {
	for _, view := range []string{text, jsonUnescape(text)} {
		for _, k := range keys {
			for i := 0; i+8 <= len(k); i++ {
				if at := strings.Index(view, k[i:i+8]); at >= 0 {
					return fmt.Sprintf("%q of a key at %d", k[i:i+8], at)
				}
			}
			for _, m := range maskedForms(k) {
				if strings.Contains(view, m) {
					return fmt.Sprintf("the masked form %q", m)
				}
			}
		}
	}
	return ""
}

// jsonUnescape decodes the escapes JSON strings allow, anywhere in s.
func jsonUnescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch c := s[i]; c {
		case 'u':
			if i+5 <= len(s) {
				if v, err := strconv.ParseUint(s[i+1:i+5], 16, 16); err == nil {
					r := rune(v)
					i += 4
					if utf16.IsSurrogate(r) && i+7 <= len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
						if v2, err := strconv.ParseUint(s[i+3:i+7], 16, 16); err == nil {
							r = utf16.DecodeRune(r, rune(v2))
							i += 6
						}
					}
					b.WriteRune(r)
					continue
				}
			}
			b.WriteString(`\u`)
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// maskedForms are the ways an echo upstream masks key k.
func maskedForms(k string) []string {
	n := len(k)
	return []string{k[:5] + "***" + k[n-3:], k[:4] + "..." + k[n-4:], k[:6] + "…" + k[n-4:], k[:3] + "xxxxxxxx" + k[n-3:]}
}

// escapedForms are k as JSON string content writes it with \u escapes:
// its first character escaped, then every one.
func escapedForms(k string) []string {
	var all strings.Builder
	for _, c := range []byte(k) {
		fmt.Fprintf(&all, `\u%04x`, c)
	}
	return []string{fmt.Sprintf(`\u%04X`, k[0]) + k[1:], all.String()}
}

// echoText is what an echo upstream writes wherever it writes text, as
// JSON string content: its key plainly, escaped and masked, and other,
// another provider's key, since a shared upstream may know it too.
func echoText(k, other string) string {
	parts := append([]string{"plain " + k}, escapedForms(k)...)
	parts = append(parts, maskedForms(k)...)
	return strings.Join(append(parts, "other "+other), " | ")
}

var echoCaseRe = regexp.MustCompile(`case:([a-z0-9-]+)`)

// echoUpstream answers in protocol's wire format (openai, anthropic,
// gemini or cohere) with the key it received written everywhere it can:
// response headers, reply bodies, stream events, error messages. The case
// is the "case:..." of the request body, else the path's last segment.
func echoUpstream(protocol, other string) func(*fasthttp.RequestCtx, int) {
	return func(ctx *fasthttp.RequestCtx, _ int) {
		var k string
		switch protocol {
		case "anthropic":
			k = string(ctx.Request.Header.Peek("X-Api-Key"))
		case "gemini":
			k = string(ctx.Request.Header.Peek("X-Goog-Api-Key"))
		default:
			k = strings.TrimPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer ")
		}
		c := string(ctx.Path()[bytes.LastIndexByte(ctx.Path(), '/')+1:])
		if m := echoCaseRe.FindSubmatch(ctx.PostBody()); m != nil {
			c = string(m[1])
		}
		stream := bytes.Contains(ctx.PostBody(), []byte(`"stream":true`)) || bytes.Contains(ctx.Path(), []byte("streamGenerateContent"))
		if c == "clean" {
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"object":"list","data":[]}`)
			return
		}
		ctx.Response.Header.Set("X-Echo-Key", k)
		ctx.Response.Header.Set("X-Echo-Masked", maskedForms(k)[0])
		ctx.Response.Header.Set("X-Echo-Escaped", escapedForms(k)[1])
		ctx.SetContentType("application/json")
		txt := echoText(k, other)
		switch {
		case c == "header":
			ctx.SetBodyString(`{"object":"list","data":[]}`)
		case c == "models":
			ctx.SetBodyString(`{"object":"list","data":[{"id":"clean-model"},{"id":"` + k + `"},{"id":"` + escapedForms(k)[1] + `"},{"id":"` + maskedForms(k)[0] + `"}]}`)
		case c == "gzip":
			var z bytes.Buffer
			w := gzip.NewWriter(&z)
			_, _ = w.Write([]byte(`{"echo":"` + txt + `"}`))
			_ = w.Close()
			ctx.Response.Header.Set("Content-Encoding", "gzip")
			ctx.SetBody(z.Bytes())
		case c == "split":
			// Passthrough SSE with each form cut over two flushes.
			esc, m := escapedForms(k)[1], maskedForms(k)[1]
			fakeStream(`data: {"k":"`+k[:5], k[5:]+`"}`+"\n\n", `data: {"e":"`+esc[:15], esc[15:]+`"}`+"\n\n",
				`data: {"m":"`+m[:4], m[4:]+`"}`+"\n\n", "data: [DONE]\n\n")(ctx, 0)
		case c == "400" || c == "401" || c == "500":
			status, _ := strconv.Atoi(c)
			ctx.SetStatusCode(status)
			ctx.SetBodyString(echoError(protocol, status, txt))
		case stream:
			fakeStream(echoEvents(protocol, k, txt, c == "error")...)(ctx, 0)
		default:
			ctx.SetBodyString(echoReply(protocol, k, txt, c == "error"))
		}
	}
}

// echoReply is a non-stream answer quoting the key; failed makes it an
// error the upstream still sends with 200.
func echoReply(protocol, k, txt string, failed bool) string {
	switch protocol {
	case "anthropic":
		if failed {
			return `{"type":"error","error":{"type":"api_error","message":"` + txt + `"}}`
		}
		// The key cut over two text blocks, which the translation joins.
		return `{"id":"` + k + `","type":"message","role":"assistant","model":"` + k + `","content":[{"type":"text","text":"` + txt +
			`"},{"type":"text","text":"` + k[:7] + `"},{"type":"text","text":"` + k[7:] + `"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":5}}`
	case "gemini":
		if failed {
			return `{"error":{"code":500,"message":"` + txt + `","status":"INTERNAL"}}`
		}
		return `{"candidates":[{"content":{"role":"model","parts":[{"text":"` + txt + `"},{"text":"` + k[:7] + `"},{"text":"` + k[7:] +
			`"}]},"finishReason":"STOP"}],"modelVersion":"` + k + `","responseId":"` + k + `","usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":5,"totalTokenCount":8}}`
	case "cohere":
		if failed {
			return `{"id":"` + k + `","finish_reason":"ERROR","message":{"role":"assistant","content":[]}}`
		}
		return `{"id":"` + k + `","finish_reason":"COMPLETE","message":{"role":"assistant","content":[{"type":"text","text":"` + txt +
			`"}]},"usage":{"billed_units":{"input_tokens":3,"output_tokens":5},"tokens":{"input_tokens":3,"output_tokens":5}}}`
	}
	if failed {
		return `{"error":{"message":"` + txt + `","type":"server_error","code":"` + k + `"}}`
	}
	return `{"id":"` + k + `","object":"chat.completion","created":1,"model":"` + k + `","system_fingerprint":"` + txt +
		`","choices":[{"index":0,"message":{"role":"assistant","content":"` + txt + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}`
}

// echoEvents is a stream quoting the key in its events; failed ends it
// with an error event once the answer has begun.
func echoEvents(protocol, k, txt string, failed bool) []string {
	data := func(v string) string { return "data: " + v + "\n\n" }
	switch protocol {
	case "anthropic":
		ev := func(name, v string) string { return "event: " + name + "\n" + data(v) }
		out := []string{
			ev("message_start", `{"type":"message_start","message":{"id":"`+k+`","type":"message","role":"assistant","model":"`+k+`","content":[],"usage":{"input_tokens":3,"output_tokens":1}}}`),
			ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`),
			ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"`+txt+`"}}`),
		}
		if failed {
			return append(out, ev("error", `{"type":"error","error":{"type":"api_error","message":"`+txt+`"}}`))
		}
		return append(out, ev("content_block_stop", `{"type":"content_block_stop","index":0}`),
			ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}`),
			ev("message_stop", `{"type":"message_stop"}`))
	case "gemini":
		out := []string{data(`{"candidates":[{"content":{"role":"model","parts":[{"text":"` + txt + `"}]}}],"modelVersion":"` + k + `","responseId":"` + k + `"}`)}
		if failed {
			return append(out, data(`{"error":{"code":500,"message":"`+txt+`","status":"INTERNAL"}}`))
		}
		return append(out, data(`{"candidates":[{"content":{"role":"model","parts":[{"text":"`+k+`"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":5}}`))
	case "cohere":
		ev := func(name, v string) string { return "event: " + name + "\n" + data(v) }
		out := []string{
			ev("message-start", `{"type":"message-start","id":"`+k+`","delta":{"message":{"role":"assistant"}}}`),
			ev("content-delta", `{"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"`+txt+`"}}}}`),
		}
		if failed {
			return append(out, ev("message-end", `{"type":"message-end","delta":{"finish_reason":"ERROR","error":"`+txt+`"}}`))
		}
		return append(out, ev("message-end", `{"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":3,"output_tokens":5}}}}`))
	}
	out := []string{data(`{"id":"` + k + `","object":"chat.completion.chunk","created":1,"model":"` + k + `","choices":[{"index":0,"delta":{"content":"` + txt + `"},"finish_reason":null}]}`)}
	if failed {
		return append(out, data(`{"error":{"message":"`+txt+`"}}`))
	}
	return append(out, data(`{"id":"`+k+`","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`), "data: [DONE]\n\n")
}

// echoError is an error answer in protocol's shape quoting the key.
func echoError(protocol string, status int, txt string) string {
	switch protocol {
	case "anthropic":
		return `{"type":"error","error":{"type":"invalid_request_error","message":"` + txt + `"}}`
	case "gemini":
		return `{"error":{"code":` + strconv.Itoa(status) + `,"message":"` + txt + `","status":"INVALID_ARGUMENT"}}`
	case "cohere":
		return `{"message":"` + txt + `"}`
	}
	return `{"error":{"message":"` + txt + `","type":"invalid_request_error","code":null}}`
}

// echoCases are the chat answers each echo gives; each has its own
// model, so the cooldown one leaves does not hide the next.
var echoCases = []string{"ok", "error", "400", "401", "500"}

// echoConfig has one provider per protocol, p1 to p4, each with a model
// per case, stream or not; p1 also lists its upstream's models.
func echoConfig() string {
	var models strings.Builder
	models.WriteString("{")
	for _, c := range echoCases {
		fmt.Fprintf(&models, "m%s: {upstream: up-%s}, m%s-stream: {upstream: up-%s}, ", c, c, c, c)
	}
	models.WriteString("}")
	m := models.String()
	return `auth:
  keys:
    - {name: team-ml, key: "${GW_ML}", rpm: 100000}
    - {name: team-web, key: "${GW_WEB}", rpm: 100000}
providers:
  p1: {type: openai, base_url: http://p1.test/v1, keys: ["${P1_KEY}"], stream_usage: false, list_models: true, models: ` + m + `}
  p2: {type: anthropic, base_url: http://p2.test, keys: ["${P2_KEY}"], models: ` + m + `}
  p3: {type: gemini, base_url: http://p3.test/v1beta, keys: ["${P3_KEY}"], models: ` + m + `}
  p4: {type: cohere, base_url: http://p4.test, keys: ["${P4_KEY}"], models: ` + m + `}
`
}

// seen is every byte a response shows a client: status line, headers and
// body, unzipped if the gateway relayed a compressed one.
func (r *fakeResponse) seen() string {
	body := r.body
	if r.get("Content-Encoding") == "gzip" {
		if z, err := gzip.NewReader(bytes.NewReader(body)); err == nil {
			var out bytes.Buffer
			_, _ = out.ReadFrom(bufio.NewReader(z))
			body = out.Bytes()
		}
	}
	return r.header + "\n" + string(body)
}

func TestProviderKeysNeverLeave(t *testing.T) {
	n := newFakeNet(t)
	protocols := []string{"openai", "anthropic", "gemini", "cohere"}
	keys := []string{fakeEnv["P1_KEY"], fakeEnv["P2_KEY"], fakeEnv["P3_KEY"], fakeEnv["P4_KEY"]}
	for i, proto := range protocols {
		n.upstream(fmt.Sprintf("p%d.test", i+1), echoUpstream(proto, keys[(i+1)%len(keys)]))
	}
	g, access := obGateway(t, echoConfig(), n)
	web := []string{"Authorization", "Bearer " + fakeEnv["GW_WEB"]}
	check := func(what string, r *fakeResponse) {
		t.Helper()
		if leak := leakIn(r.seen(), keys); leak != "" {
			t.Errorf("%s: %d leaks %s:\n%s", what, r.status, leak, r.seen())
		}
	}

	for i := range protocols {
		p := fmt.Sprintf("p%d", i+1)
		for _, c := range echoCases {
			for _, stream := range []bool{false, true} {
				model := p + "/m" + c
				if stream {
					model += "-stream"
				}
				r := g.chat(`{"model":"` + model + `","stream":` + strconv.FormatBool(stream) + `,"messages":[{"role":"user","content":"case:` + c + `"}]}`)
				check(fmt.Sprintf("chat %s stream=%v", model, stream), r)
				if c == "ok" && (r.status != 200 || !bytes.Contains(r.body, []byte("<secret>"))) {
					t.Errorf("chat %s stream=%v: %d %s, want 200 with the key redacted", model, stream, r.status, r.body)
				}
			}
		}

		// Passthrough: a GET quoting the key is never cached, so the next
		// key's GET reaches the upstream again; nor is one whose headers
		// alone held it. A clean GET still is.
		for _, path := range []string{"/ok", "/header", "/400", "/401", "/500"} {
			for _, r := range []*fakeResponse{g.get("/proxy/" + p + "/echo" + path), g.do("GET", "/proxy/"+p+"/echo"+path, "", web...)} {
				check("GET /proxy/"+p+"/echo"+path, r)
				if r.get("X-Cache") == "HIT" {
					t.Errorf("GET /proxy/%s/echo%s: a response that held a key was cached", p, path)
				}
			}
		}
		first := g.get("/proxy/" + p + "/clean")
		again := g.do("GET", "/proxy/"+p+"/clean", "", web...)
		if first.get("X-Cache") != "MISS" || again.get("X-Cache") != "HIT" {
			t.Errorf("clean GET on %s: X-Cache %q then %q, want MISS then HIT\n%s\n%s", p, first.get("X-Cache"), again.get("X-Cache"), first.seen(), again.seen())
		}
		r := g.do("GET", "/proxy/"+p+"/echo/gzip", "", web...)
		check("GET /proxy/"+p+"/echo/gzip", r)
		if r.status != fasthttp.StatusBadGateway {
			t.Errorf("a compressed passthrough answer: %d, want 502", r.status)
		}
		for _, path := range []string{"/ok", "/split", "/400", "/500"} {
			r := g.do("POST", "/proxy/"+p+"/echo"+path, `{"stream":true}`, web...)
			check("POST /proxy/"+p+"/echo"+path, r)
		}
	}

	models := g.get("/v1/models")
	check("/v1/models", models)
	if !bytes.Contains(models.body, []byte("clean-model")) {
		t.Errorf("/v1/models lost the listed model without a key: %s", models.body)
	}
	for _, path := range []string{"/api/stats", "/api/stats?window=1h", "/api/stats?window=30d", "/api/stats/series?window=1h",
		"/api/stats/series?window=7d", "/api/requests?limit=200"} {
		check(path, g.get(path))
		check(path+" (another key)", g.do("GET", path, "", web...))
	}
	check("/metrics", g.do("GET", "/metrics", ""))
	g.eng.access.flush()
	if leak := leakIn(access.String(), keys); leak != "" {
		t.Errorf("the access log leaks %s:\n%s", leak, access)
	}
	if leak := leakIn(g.log.String(), keys); leak != "" {
		t.Errorf("the log leaks %s:\n%s", leak, g.log)
	}
}
