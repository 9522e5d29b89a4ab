package adapters

import (
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/config"
)

func init() { register("anthropic", newAnthropic) }

// anthropic speaks Anthropic's Messages API. Unlike the openai adapter it
// must re-encode: the OpenAI request is decoded and rebuilt as a Messages
// request, and the reply, whole or streamed, is rebuilt in OpenAI shape.
type anthropic struct {
	client    *fasthttp.HostClient
	url       string
	timeout   time.Duration
	firstByte time.Duration
	idle      time.Duration
	// maxTokens is sent when the client sets no limit: Anthropic requires
	// max_tokens, OpenAI does not.
	maxTokens int
	headers   [][2]string
	keys      [][]byte
	// now stamps "created"; tests fix it.
	now func() time.Time
}

func newAnthropic(p *config.Provider, client *fasthttp.HostClient) Provider {
	a := &anthropic{
		client:    client,
		url:       p.BaseURL + "/v1/messages",
		timeout:   p.Timeout.D(),
		firstByte: p.FirstByteTimeout.D(),
		idle:      p.IdleTimeout.D(),
		maxTokens: p.DefaultMaxTokens,
		now:       time.Now,
	}
	if strings.HasSuffix(p.BaseURL, "/v1") {
		// A base_url written with the version, the way OpenAI-style
		// configs are.
		a.url = p.BaseURL + "/messages"
	}
	if a.maxTokens <= 0 {
		a.maxTokens = 1024
	}
	for k, v := range p.Headers {
		a.headers = append(a.headers, [2]string{k, v})
	}
	for _, k := range p.Keys {
		a.keys = append(a.keys, []byte(k.Reveal()))
	}
	return a
}

func (a *anthropic) key(i int) []byte {
	if i >= 0 && i < len(a.keys) {
		return a.keys[i]
	}
	return nil
}

// Chat translates the request, sends it with c.Key's key and translates
// the answer back.
func (a *anthropic) Chat(c *Call, r *Reply) error {
	body, f := anthropicRequestOf(c, a.maxTokens)
	if f != nil {
		return f
	}
	req := a.request(c.Key, nil)
	req.SetBodyRaw(body)
	resp, f := a.exchange(req, c.Stream, r)
	if f != nil {
		return f
	}
	if c.Stream {
		s := newAnthropicStream(resp.BodyStream(), c.ClientUsage, a.now().Unix())
		s.resp = resp
		s.sse.max = a.client.MaxResponseBodySize
		s.sse.watch(resp, a.firstByte, a.idle)
		r.Stream = s
		return nil
	}
	defer fasthttp.ReleaseResponse(resp)
	out, u, f := anthropicReply(r.Body[:0], resp.Body(), a.now().Unix())
	if f != nil {
		f.Status = resp.StatusCode()
		return f
	}
	r.Body, r.Usage = out, u
	return nil
}

// exchange sends req and classifies a failure; a success's response is
// the caller's to release, and r.Exhausted says whether its key is spent.
func (a *anthropic) exchange(req *fasthttp.Request, stream bool, r *Reply) (*fasthttp.Response, *Failure) {
	resp, f := send(a.client, req, stream, a.firstByte, a.timeout)
	if f != nil {
		return nil, f
	}
	now := time.Now()
	if status := resp.StatusCode(); status < 200 || status > 299 {
		f := anthropicFailure(status, &resp.Header, resp.Body(), now)
		fasthttp.ReleaseResponse(resp)
		return nil, f
	}
	r.Exhausted = anthropicExhausted(&resp.Header, now)
	return resp, nil
}

// request starts a Messages API request with key i's key, the client's
// anthropic-beta (native calls only) and the configured headers.
func (a *anthropic) request(i int, beta []byte) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.SetRequestURI(a.url)
	req.Header.SetMethodBytes(strPost)
	req.Header.SetContentTypeBytes(strJSON)
	if k := a.key(i); k != nil {
		req.Header.SetBytesV("X-Api-Key", k)
	}
	req.Header.Set("Anthropic-Version", AnthropicVersion)
	if len(beta) > 0 {
		req.Header.SetBytesV("Anthropic-Beta", beta)
	}
	// Configured headers come last, so anthropic-beta can be added and
	// anthropic-version pinned.
	for _, h := range a.headers {
		req.Header.Set(h[0], h[1])
	}
	return req
}

// Messages sends c.Body, a client's Messages request, with only its model
// replaced, and relays the answer as the upstream sent it: a reply body
// once it is known to be JSON, a stream event by event (pings included),
// reading the usage on the way. Failures are classified as Chat's are.
// TokenCounter is a Provider whose upstream counts a Messages request's
// input tokens itself (Anthropic's POST /v1/messages/count_tokens).
type TokenCounter interface {
	// CountTokens sends c.Body, a count_tokens request with "model" at
	// ModelStart:ModelEnd, patched to UpstreamJSON; r.Body is the
	// upstream's {"input_tokens": N}.
	CountTokens(c *Call, r *Reply) error
}

// CountTokens asks Anthropic's own count.
func (a *anthropic) CountTokens(c *Call, r *Reply) error {
	req := a.request(c.Key, c.Beta)
	req.SetRequestURI(a.url + "/count_tokens")
	appendPatched(req, c)
	resp, f := a.exchange(req, false, r)
	if f != nil {
		return f
	}
	defer fasthttp.ReleaseResponse(resp)
	body := resp.Body()
	if CheckJSON(body) != nil || gjson.GetBytes(body, "input_tokens").Type != gjson.Number {
		return &Failure{Class: Retryable, Status: resp.StatusCode(), Msg: "upstream answered count_tokens without input_tokens"}
	}
	r.Body = append(r.Body[:0], body...)
	return nil
}

func (a *anthropic) Messages(c *Call, r *Reply) error {
	req := a.request(c.Key, c.Beta)
	appendPatched(req, c)
	resp, f := a.exchange(req, c.Stream, r)
	if f != nil {
		return f
	}
	if c.Stream {
		s := &anthropicRelay{resp: resp, sse: newSSEReader(resp.BodyStream())}
		s.sse.max = a.client.MaxResponseBodySize
		s.sse.watch(resp, a.firstByte, a.idle)
		r.Stream = s
		return nil
	}
	defer fasthttp.ReleaseResponse(resp)
	body := resp.Body()
	if CheckJSON(body) != nil {
		return &Failure{Class: Retryable, Status: resp.StatusCode(), Msg: "upstream sent a body that is not JSON"}
	}
	if typ := gjson.GetBytes(body, "type").Str; typ != "message" {
		// An error object with a 200, or something else entirely.
		msg := "upstream answered 200 without a message"
		if e := gjson.GetBytes(body, "error.message"); e.Type == gjson.String {
			msg = "upstream error: " + truncate(e.Str, 300)
		}
		return &Failure{Class: Retryable, Status: resp.StatusCode(), Msg: msg}
	}
	var u anthropicUsage
	r.Usage = Usage{}
	if u.add(gjson.GetBytes(body, "usage")) {
		r.Usage = u.usage()
	}
	r.Body = append(r.Body[:0], body...)
	return nil
}

// anthropicTooLong tells a prompt over the model's context window from
// the other invalid_request_errors.
func anthropicTooLong(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "prompt is too long") || strings.Contains(m, "exceed context limit")
}

// anthropicFailure classifies a non-2xx answer. The upstream's message is
// kept except for auth failures, whose messages may quote the key.
func anthropicFailure(status int, h *fasthttp.ResponseHeader, body []byte, now time.Time) *Failure {
	f := &Failure{
		Class:      classifyStatus(status),
		Status:     status,
		RetryAfter: retryAfter(h.Peek(fasthttp.HeaderRetryAfter), now),
		Msg:        "upstream error",
	}
	if f.Class == RateLimited && f.RetryAfter == 0 {
		f.RetryAfter = anthropicResetIn(h, now)
	}
	if f.Class == Auth {
		f.Msg = "upstream rejected the provider key"
		return f
	}
	msg := gjson.GetBytes(body, "error.message")
	if msg.Type == gjson.String {
		f.Msg = truncate(msg.Str, 300)
	}
	switch {
	case f.Class != BadRequest:
	case anthropicTooLong(msg.Str):
		f.Class = ContextTooLong
	case aboutTarget(gjson.GetBytes(body, "error.type").Str, msg.Str):
		f.Class = Unsupported
	}
	if f.Class == BadRequest || f.Class == ContextTooLong || f.Class == Unsupported {
		typ := gjson.GetBytes(body, "error.type").Str
		if typ == "" {
			typ = "invalid_request_error"
		}
		full := msg.Str
		if full == "" {
			full = "upstream rejected the request"
		}
		f.Body = errorBody(full, typ, status)
	}
	return f
}

// anthropicLimits are the anthropic-ratelimit-<kind>-remaining/-reset
// pairs; resets are RFC 3339 times.
var anthropicLimits = [...][2]string{
	{"Anthropic-Ratelimit-Requests-Remaining", "Anthropic-Ratelimit-Requests-Reset"},
	{"Anthropic-Ratelimit-Tokens-Remaining", "Anthropic-Ratelimit-Tokens-Reset"},
	{"Anthropic-Ratelimit-Input-Tokens-Remaining", "Anthropic-Ratelimit-Input-Tokens-Reset"},
	{"Anthropic-Ratelimit-Output-Tokens-Remaining", "Anthropic-Ratelimit-Output-Tokens-Reset"},
}

// anthropicResetAt reads an RFC 3339 reset header as a wait from now.
func anthropicResetAt(v []byte, now time.Time) time.Duration {
	if len(v) == 0 {
		return 0
	}
	t, err := time.Parse(time.RFC3339, string(v))
	if err != nil || !t.After(now) {
		return 0
	}
	return t.Sub(now)
}

// anthropicExhausted says how long a key whose requests or tokens
// remaining reached 0 has nothing left for. An exhausted key whose reset
// is unreadable is held for a minute, Anthropic's window.
func anthropicExhausted(h *fasthttp.ResponseHeader, now time.Time) time.Duration {
	var d time.Duration
	for _, kind := range anthropicLimits {
		if rem := h.Peek(kind[0]); len(rem) == 1 && rem[0] == '0' {
			r := anthropicResetAt(h.Peek(kind[1]), now)
			if r <= 0 {
				r = time.Minute
			}
			d = max(d, r)
		}
	}
	return d
}

// anthropicResetIn is the wait a 429 without retry-after implies: until
// the exhausted limits reset, else until the first limit resets.
func anthropicResetIn(h *fasthttp.ResponseHeader, now time.Time) time.Duration {
	if d := anthropicExhausted(h, now); d > 0 {
		return d
	}
	var first time.Duration
	for _, kind := range anthropicLimits {
		if r := anthropicResetAt(h.Peek(kind[1]), now); r > 0 && (first == 0 || r < first) {
			first = r
		}
	}
	return first
}
