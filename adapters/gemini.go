package adapters

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/config"
)

func init() { register("gemini", newGemini) }

// gemini speaks Google's Gemini API: an OpenAI chat request becomes a
// generateContent (or streamGenerateContent) call, and the answer comes
// back in OpenAI shape. The key travels in x-goog-api-key, never in the
// URL, so it cannot land in a logged URL.
type gemini struct {
	// transport holds what the openai adapter keeps too: the shared
	// client, the provider's deadlines, its extra headers and keys. Its
	// url is unused.
	transport *openAI
	base      string
	// urls holds each configured model's endpoints, joined at load.
	urls map[string]geminiURLs
	// now stamps replies; tests pin it.
	now func() time.Time
}

// geminiURLs are a model's endpoints, and its resource name (models/x),
// which a batch embedding request names again in each of its requests.
type geminiURLs struct{ generate, stream, embed, name string }

var strGoogAPIKey = []byte("X-Goog-Api-Key")

func newGemini(p *config.Provider, client *fasthttp.HostClient) Provider {
	t := &openAI{
		client:    client,
		timeout:   p.Timeout.D(),
		firstByte: p.FirstByteTimeout.D(),
		idle:      p.IdleTimeout.D(),
	}
	t.prepare(p, false)
	g := &gemini{transport: t, base: p.BaseURL, urls: map[string]geminiURLs{}, now: time.Now}
	for name, m := range p.Models {
		up := m.Upstream
		if up == "" {
			up = name
		}
		g.urls[up] = g.join(up)
	}
	return g
}

// join builds a model's endpoints. A bare name lives under models/; a
// name that says its collection ("models/x", "tunedModels/x") is kept.
func (g *gemini) join(upstream string) geminiURLs {
	name := upstream
	if !strings.Contains(name, "/") {
		name = "models/" + name
	}
	u := g.base + "/" + name
	return geminiURLs{generate: u + ":generateContent", stream: u + ":streamGenerateContent?alt=sse",
		embed: u + ":batchEmbedContents", name: name}
}

// urlsOf returns the endpoints of the model named upstream.
func (g *gemini) urlsOf(upstream string) geminiURLs {
	if urls, ok := g.urls[upstream]; ok {
		return urls
	}
	return g.join(upstream)
}

// request starts a POST to uri with the key at key.
func (g *gemini) request(uri string, key int) *fasthttp.Request {
	req := g.transport.request(&endpoint{url: uri}, key)
	if k := g.transport.key(key); len(k) > 0 {
		req.Header.SetCanonical(strGoogAPIKey, k)
	}
	return req
}

// Chat sends one attempt with the key at c.Key.
func (g *gemini) Chat(c *Call, r *Reply) error {
	body, f := geminiRequestBody(c.Body)
	if f != nil {
		return f
	}
	urls := g.urlsOf(c.Upstream)
	uri := urls.generate
	if c.Stream {
		uri = urls.stream
	}
	t := g.transport
	req := g.request(uri, c.Key)
	req.SetBodyRaw(body)
	resp, f := send(t.client, req, c.Stream, t.firstByte, t.timeout)
	if f != nil {
		return f
	}
	if status := resp.StatusCode(); status < 200 || status > 299 {
		f := geminiFailure(status, resp.Body(), resp.Header.Peek(fasthttp.HeaderRetryAfter))
		fasthttp.ReleaseResponse(resp)
		return f
	}
	if c.Stream {
		s := &geminiStream{
			up:          openAIStream{resp: resp, sse: newSSEReader(resp.BodyStream())},
			model:       c.Upstream,
			created:     g.now().Unix(),
			clientUsage: c.ClientUsage,
		}
		s.up.sse.max = t.client.MaxResponseBodySize
		s.up.sse.watch(resp, t.firstByte, t.idle)
		r.Stream = s
		return nil
	}
	defer fasthttp.ReleaseResponse(resp)
	out, usage, f := geminiCompletion(resp.Body(), c.Upstream, g.now().Unix())
	if f != nil {
		return f
	}
	r.Body = append(r.Body[:0], out...)
	r.Usage = usage
	return nil
}

// geminiFailure classifies a non-2xx answer, whose body is Google's error
// object ({"error":{"code","message","status","details"}}), or a list of
// one from the stream endpoint.
func geminiFailure(status int, body, retryAfterHeader []byte) *Failure {
	var e struct {
		Error *geminiError `json:"error"`
	}
	if b := bytes.TrimSpace(body); len(b) > 0 && b[0] == '[' {
		var list []json.RawMessage
		if decodeUpstream(b, &list) == nil && len(list) > 0 {
			body = list[0]
		}
	}
	if decodeUpstream(body, &e) != nil || e.Error == nil {
		e.Error = &geminiError{}
	}
	return geminiErrorFailure(e.Error, status, retryAfterHeader)
}

// status is the HTTP status an error inside a 200 answer stands for.
func (e *geminiError) status() int {
	if e.Code >= 400 && e.Code <= 599 {
		return e.Code
	}
	return fasthttp.StatusInternalServerError
}

// geminiErrorFailure classifies Google's error object under its HTTP
// status.
func geminiErrorFailure(e *geminiError, status int, retryAfterHeader []byte) *Failure {
	f := &Failure{Class: classifyStatus(status), Status: status, Msg: "upstream error"}
	reason := ""
	for _, d := range e.Details {
		switch {
		case strings.HasSuffix(d.Type, "google.rpc.ErrorInfo"):
			reason = d.Reason
		case strings.HasSuffix(d.Type, "google.rpc.RetryInfo"):
			if dd, err := time.ParseDuration(d.RetryDelay); err == nil && dd > 0 {
				f.RetryAfter = dd
			}
		}
	}
	if f.RetryAfter == 0 {
		f.RetryAfter = retryAfter(retryAfterHeader, time.Now())
	}
	msg := e.Message
	lower := strings.ToLower(msg)
	switch {
	case f.Class == BadRequest && (reason == "API_KEY_INVALID" || strings.Contains(lower, "api key not valid") ||
		strings.Contains(lower, "api key expired") || e.Status == "FAILED_PRECONDITION"):
		// Gemini says 400 for a bad key, and FAILED_PRECONDITION when the
		// key's project cannot use the API (region, billing): the key's
		// fault either way, not the request's.
		f.Class = Auth
	case f.Class == BadRequest && strings.Contains(lower, "exceeds the maximum number of tokens"):
		f.Class = ContextTooLong
	case f.Class == BadRequest && aboutTarget("", msg):
		f.Class = Unsupported
	}
	if f.Class == Auth {
		f.Msg = "upstream rejected the provider key"
		return f
	}
	if msg != "" {
		f.Msg = truncate(msg, 300)
	}
	switch f.Class {
	case BadRequest, Unsupported:
		f.Body = errorBody(f.Msg, "invalid_request_error", f.Status)
	case ContextTooLong:
		f.Body, _ = json.Marshal(map[string]any{"error": map[string]any{
			"message": f.Msg, "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
	}
	return f
}

// Compile-time checks that the adapter fits the interfaces.
var (
	_ Provider = (*gemini)(nil)
	_ Stream   = (*geminiStream)(nil)
)
