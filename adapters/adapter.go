// Package adapters holds one file per upstream wire protocol. An adapter
// translates an OpenAI chat request into its protocol, the answer back into
// OpenAI shape, and classifies failures; it never decides what to try next.
package adapters

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/config"
)

// Call is one upstream attempt of a chat completion.
type Call struct {
	// Body is the client's OpenAI request body, untouched.
	Body []byte
	// ModelStart and ModelEnd bound the raw JSON value of "model" in Body,
	// so an adapter can patch it without re-encoding.
	ModelStart, ModelEnd int
	// Upstream is the model name the provider knows.
	Upstream string
	// UpstreamJSON is Upstream as a JSON string literal.
	UpstreamJSON []byte
	// Stream is the client's "stream" flag.
	Stream bool
	// ClientUsage is set when the client asked for a stream's usage chunk
	// (stream_options.include_usage); StreamOptions when it sent
	// stream_options at all.
	ClientUsage, StreamOptions bool
	// Key is the index of this attempt's key in the provider's keys; -1
	// when the provider has none.
	Key int
	// Wrap, when set, wraps a stream reply: an ingress codec translating
	// the chat stream into the client's protocol, so the first frame the
	// engine waits for is already the client's.
	Wrap func(Stream) Stream
	// Native is the client's own request when it came in a protocol a
	// target may speak itself (Anthropic Messages): its Body, ModelStart,
	// ModelEnd, Stream and Beta; nil on the OpenAI endpoints.
	Native *Call
	// Beta is the client's anthropic-beta header on the Messages
	// endpoint, forwarded by a native Messages call (the features it
	// names change what the body may hold); configured headers win.
	Beta []byte
}

// Reply is what a successful attempt produced.
type Reply struct {
	// Body is the OpenAI-shaped response of a non-stream call. The
	// adapter appends to it, or puts a buffer of its own in its place;
	// the caller reuses its capacity. The buffer must be the caller's
	// alone: an adapter may hand it to fasthttp's pools.
	Body []byte
	// Stream is set instead of Body for a stream call.
	Stream Stream
	// Usage is what a non-stream reply reports; a stream's comes from
	// Stream.Usage at its end.
	Usage Usage
	// Exhausted, when > 0, is how long the upstream said this key has
	// nothing left for (x-ratelimit-remaining-* of 0).
	Exhausted time.Duration
}

// Usage is the token count an upstream reported.
type Usage struct {
	Prompt, Completion int
	// Known is false when the upstream reported none.
	Known bool
	// Estimated is set, with Known, when the upstream reported no usage
	// (Gemini's embeddings never do) and the adapter counted instead, a
	// token for four bytes of input: good enough to settle caps with,
	// but to be shown as an estimate.
	Estimated bool
}

// maxReportedTokens bounds each count an upstream's usage may claim:
// far above any real request, and small enough that sums of them never
// overflow.
const maxReportedTokens = 1 << 32

// Bounded returns u with each count held within [0, 2^32], whatever the
// upstream claimed, so no reported usage can wrap a counter or a window.
func (u Usage) Bounded() Usage {
	u.Prompt = min(max(u.Prompt, 0), maxReportedTokens)
	u.Completion = min(max(u.Completion, 0), maxReportedTokens)
	return u
}

// Stream yields a reply's SSE frames in OpenAI shape.
type Stream interface {
	// Next returns the next complete SSE frame ("data: ...\n\n"), valid
	// until the next call. After the final frame it returns io.EOF; an
	// upstream that ends early or sends garbage gives another error.
	Next() ([]byte, error)
	// Close releases the upstream connection. It is safe to call twice.
	Close()
	// Usage returns the usage the stream reported, once it has ended.
	Usage() Usage
}

// Provider is one configured upstream, built for one config snapshot.
type Provider interface {
	// Chat makes one attempt. A failure is always a *Failure.
	Chat(c *Call, r *Reply) error
}

// Embedder is a Provider whose protocol serves embeddings. c.Body is the
// client's OpenAI embeddings request ("input": a string, strings, or
// token ids; "encoding_format": "float" or "base64"; "dimensions"), with
// ModelStart, ModelEnd, Upstream and UpstreamJSON as for Chat; Stream
// and the stream options are not read. r.Body receives OpenAI's answer
// ({"object":"list","data":[{"object":"embedding","index","embedding"}],
// "model","usage"}), r.Usage its prompt tokens. A failure is always a
// *Failure.
type Embedder interface {
	Embed(c *Call, r *Reply) error
}

// Completer is a Provider whose protocol serves OpenAI's legacy text
// completions (POST /completions). c is as for Chat, with the client's
// completions request as Body; the answer, or a stream of text_completion
// chunks ending with [DONE], is the upstream's as it is. A failure is
// always a *Failure.
type Completer interface {
	Complete(c *Call, r *Reply) error
}

// Serves reports whether p's protocol serves the upstream call T
// (Embedder, Completer, MessagesProvider; every Provider serves Chat), so that the engine
// skips a target that cannot without calling it. The wrapper New puts
// around an adapter has every call, each refusing as Unsupported what
// its adapter lacks; Serves looks through it.
func Serves[T any](p Provider) bool {
	if w, ok := p.(redacting); ok {
		p = w.p
	}
	_, ok := p.(T)
	return ok
}

// MessagesProvider is a Provider whose upstream serves Anthropic's
// Messages API itself. A Messages request goes to it as the client wrote
// it, only "model" patched, rather than through chat completions and
// back. Every Provider New returns has the method; Serves[MessagesProvider] tells
// which really serve it.
type MessagesProvider interface {
	// Messages makes one attempt with c.Body a Messages request body
	// (ModelStart/ModelEnd and UpstreamJSON as for Chat). r.Body and
	// r.Stream are in Messages shape: a Message, or its event stream
	// ending with message_stop. A failure is always a *Failure.
	Messages(c *Call, r *Reply) error
}

// Class says what a failure means for routing.
type Class int

// The failure classes the engine acts on.
const (
	// Retryable failures (5xx, timeouts, connection errors, garbage)
	// cool the key down and move on to the next candidate.
	Retryable Class = iota
	// RateLimited is a 429: the key cools down until RetryAfter.
	RateLimited
	// Auth is a 401/403 from the upstream: the key itself is bad.
	Auth
	// BadRequest is the client's fault; it is relayed, not retried.
	BadRequest
	// ContextTooLong means this model cannot take the prompt; another
	// candidate may, so it is tried without cooling this key down.
	ContextTooLong
	// Unsupported is a refusal that belongs to the target, not the
	// request: a model the provider no longer or never served, a
	// parameter this provider does not take, a request its protocol
	// cannot express. Another candidate may serve it, so it is tried
	// without cooling this key down; only when every candidate says so
	// does the client get the 400.
	Unsupported
)

func (c Class) String() string {
	return [...]string{"retryable", "rate_limited", "auth", "bad_request", "context_too_long", "unsupported"}[c]
}

// Failure is a failed attempt, classified.
type Failure struct {
	Class Class
	// Status is the upstream's HTTP status; 0 when none came.
	Status int
	// RetryAfter is how long the upstream asked us to wait; 0 if unsaid.
	RetryAfter time.Duration
	// Msg describes the failure without any secret.
	Msg string
	// Body is an OpenAI-shaped error body to relay for BadRequest.
	Body []byte
}

func (f *Failure) Error() string {
	if f.Status != 0 {
		return strconv.Itoa(f.Status) + " " + f.Msg
	}
	return f.Msg
}

// constructors holds each protocol's adapter; each protocol's file
// registers itself.
var constructors = map[string]func(*config.Provider, *fasthttp.HostClient) Provider{}

func register(protocol string, c func(*config.Provider, *fasthttp.HostClient) Provider) {
	constructors[protocol] = c
}

// New builds the adapter for a provider. The client is the provider's
// (NewClient); it outlives config snapshots, so its connections survive
// reloads. Everything the adapter returns passes red, which holds every
// provider key of the config: an upstream may know, and echo, another
// provider's key too.
func New(p *config.Provider, client *fasthttp.HostClient, red *Redactor) (Provider, error) {
	c := constructors[p.Protocol]
	if c == nil {
		return nil, fmt.Errorf("provider %s: no adapter for protocol %q", p.Name, p.Protocol)
	}
	if red == nil {
		return c(p, client), nil
	}
	return redacting{p: c(p, client), red: red}, nil
}

// SetKey puts a provider key in the header its protocol reads it from, for
// the raw passthrough. Anthropic also needs a version; the client's own is
// kept when it sent one.
func SetKey(protocol string, h *fasthttp.RequestHeader, key string) {
	if key == "" {
		return
	}
	switch protocol {
	case "anthropic":
		h.Set("X-Api-Key", key)
		if len(h.Peek("Anthropic-Version")) == 0 {
			h.Set("Anthropic-Version", AnthropicVersion)
		}
	case "gemini":
		h.Set("X-Goog-Api-Key", key)
	default:
		h.Set(fasthttp.HeaderAuthorization, "Bearer "+key)
	}
}

// AnthropicVersion is the Messages API version the gateway speaks.
const AnthropicVersion = "2023-06-01"

// classifyStatus maps an upstream HTTP status to a failure class.
func classifyStatus(status int) Class {
	switch {
	case status == fasthttp.StatusTooManyRequests:
		return RateLimited
	case status == fasthttp.StatusUnauthorized || status == fasthttp.StatusForbidden:
		return Auth
	case status >= 500, status == fasthttp.StatusNotFound, status == fasthttp.StatusRequestTimeout, status == fasthttp.StatusConflict:
		// 404: this provider does not serve the model after all; 408 and
		// 409 are the upstream's own transient conditions.
		return Retryable
	}
	return BadRequest
}

// transportFailure classifies an error from the HTTP client.
func transportFailure(err error) *Failure {
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout):
		return &Failure{Class: Retryable, Msg: "upstream timed out"}
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return &Failure{Class: Retryable, Msg: "upstream response too large"}
	}
	return &Failure{Class: Retryable, Msg: "upstream connection failed: " + err.Error()}
}

// appendPatched appends c.Body to req's body with only the value of
// "model" replaced by the provider's name for it: what a call that
// forwards the client's own request sends.
func appendPatched(req *fasthttp.Request, c *Call) {
	req.AppendBody(c.Body[:c.ModelStart])
	req.AppendBody(c.UpstreamJSON)
	req.AppendBody(c.Body[c.ModelEnd:])
}

// untranslatable is a request this protocol cannot express (a part type,
// a role, a tool it has no form for), found before anything is sent.
// Another protocol may take it as it is.
func untranslatable(format string, args ...any) *Failure {
	msg := fmt.Sprintf(format, args...)
	return &Failure{Class: Unsupported, Status: fasthttp.StatusBadRequest, Msg: msg,
		Body: errorBody(msg, "invalid_request_error", fasthttp.StatusBadRequest)}
}

// targetCodes are the error codes of a 4xx that is about the target,
// not the request, as OpenAI, Groq, OpenRouter and compatible servers
// send them.
var targetCodes = map[string]bool{
	"model_decommissioned": true, "model_not_found": true, "unsupported_parameter": true,
	"unsupported_value": true, "model_not_available": true,
}

// targetPhrases find the same in an error message without a code.
var targetPhrases = []string{"decommissioned", "does not exist", "not supported", "unsupported", "no longer available", "not a valid model"}

// aboutTarget reports whether a 400's code or message says the target,
// not the request, is at fault.
func aboutTarget(code, msg string) bool {
	if targetCodes[code] {
		return true
	}
	lower := strings.ToLower(msg)
	for _, p := range targetPhrases {
		if strings.Contains(lower, p) {
			return true
		}
	}
	return false
}

// maxRetryAfterSeconds is the largest wait a time.Duration holds.
const maxRetryAfterSeconds = float64(math.MaxInt64 / time.Second)

// exhaustedFor reads the x-ratelimit-remaining-* / x-ratelimit-reset-*
// headers of OpenAI, Groq and most compatible servers: when requests or
// tokens remaining is 0, how long until they reset. An exhausted key whose
// reset is unreadable is held for a minute, the usual window. The first
// of a repeated header counts, as Peek finds it; one walk over the
// headers finds them all (a Peek copies and normalizes its key, and
// walks them itself).
func exhaustedFor(h *fasthttp.ResponseHeader) time.Duration {
	// v holds the remaining and reset values of requests, then tokens.
	var v [4][]byte
	var seen [4]bool
	for k, val := range h.All() {
		if len(k) <= len(rateLimitPrefix) || string(k[:len(rateLimitPrefix)]) != rateLimitPrefix {
			continue
		}
		i := 0
		switch string(k[len(rateLimitPrefix):]) {
		case "Remaining-Requests":
		case "Reset-Requests":
			i = 1
		case "Remaining-Tokens":
			i = 2
		case "Reset-Tokens":
			i = 3
		default:
			continue
		}
		if !seen[i] {
			v[i], seen[i] = val, true
		}
	}
	var d time.Duration
	for i := 0; i < len(v); i += 2 {
		if rem := v[i]; len(rem) == 1 && rem[0] == '0' {
			r := resetIn(v[i+1])
			if r <= 0 {
				r = time.Minute
			}
			d = max(d, r)
		}
	}
	return d
}

const rateLimitPrefix = "X-Ratelimit-"

// resetIn parses a reset header: a Go-style duration ("1m30s", "7.66s",
// "20ms", as OpenAI and Groq send) or a number of seconds.
func resetIn(v []byte) time.Duration {
	if len(v) == 0 {
		return 0
	}
	if d, err := time.ParseDuration(string(v)); err == nil && d > 0 {
		return d
	}
	if n, err := strconv.ParseFloat(string(v), 64); err == nil && n > 0 && n < maxRetryAfterSeconds {
		return time.Duration(n * float64(time.Second))
	}
	return 0
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v []byte, now time.Time) time.Duration {
	if len(v) == 0 {
		return 0
	}
	// The upper bound keeps "Inf" or "1e300" from overflowing into a
	// negative (or, on some CPUs, endless) Duration.
	if n, err := strconv.ParseFloat(string(v), 64); err == nil && n > 0 && n < maxRetryAfterSeconds {
		return time.Duration(n * float64(time.Second))
	}
	if t, err := fasthttp.ParseHTTPDate(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
