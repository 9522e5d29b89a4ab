package adapters

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/config"
)

// openAI speaks to any OpenAI-compatible upstream. The request body goes
// out with only "model" rewritten (and, for a stream, the usage chunk asked
// for); responses and SSE frames come back as they are, after a validity
// check.
type openAI struct {
	client      *fasthttp.HostClient
	url         endpoint
	timeout     time.Duration
	firstByte   time.Duration
	idle        time.Duration
	streamUsage bool
	// heads holds, for each key, the header every request with it
	// starts from, built at load: the method, the content type, the
	// key's Authorization (when the protocol sends Bearer keys) and the
	// configured headers. Copying one costs less than setting each value,
	// which fasthttp copies and scans for line breaks every time. bare,
	// the same without a key, serves a key index out of range.
	heads []fasthttp.RequestHeader
	bare  fasthttp.RequestHeader
	keys  [][]byte
	// embeddings, completions and responses are the endpoints of the
	// calls besides chat (url).
	embeddings, completions, responses endpoint
}

func init() { register("openai", newOpenAI) }

func newOpenAI(p *config.Provider, client *fasthttp.HostClient) Provider {
	o := &openAI{
		client:      client,
		url:         newEndpoint(p.BaseURL + "/chat/completions"),
		embeddings:  newEndpoint(p.BaseURL + "/embeddings"),
		completions: newEndpoint(p.BaseURL + "/completions"),
		responses:   newEndpoint(p.BaseURL + "/responses"),
		timeout:     p.Timeout.D(),
		firstByte:   p.FirstByteTimeout.D(),
		idle:        p.IdleTimeout.D(),
		streamUsage: p.StreamUsage == nil || *p.StreamUsage,
	}
	o.prepare(p, true)
	return o
}

// prepare keeps p's keys and builds the headers requests start from;
// bearer says whether each key goes in Authorization.
func (o *openAI) prepare(p *config.Provider, bearer bool) {
	o.heads = make([]fasthttp.RequestHeader, len(p.Keys))
	for i, k := range p.Keys {
		o.keys = append(o.keys, []byte(k.Reveal()))
		var auth []byte
		if bearer {
			auth = []byte("Bearer " + k.Reveal())
		}
		headOf(&o.heads[i], p, auth)
	}
	headOf(&o.bare, p, nil)
}

// headOf sets h to the header of a POST of JSON with auth, when set, as
// Authorization, and then p's configured headers, which may replace any
// of them.
func headOf(h *fasthttp.RequestHeader, p *config.Provider, auth []byte) {
	h.SetMethodBytes(strPost)
	h.SetContentTypeBytes(strJSON)
	if auth != nil {
		h.SetBytesV(fasthttp.HeaderAuthorization, auth)
	}
	for k, v := range p.Headers {
		h.Set(k, v)
	}
}

var (
	strPost     = []byte(fasthttp.MethodPost)
	strJSON     = []byte("application/json")
	strDone     = []byte("[DONE]")
	strAskUsage = []byte(`"stream_options":{"include_usage":true},`)
	strErrorKey = []byte(`"error"`)
	// strUsageKey spots a payload that may carry usage before gjson looks
	// for it: any payload with the key "usage" holds these bytes, and
	// without its leading quote, whose byte is everywhere in JSON, the
	// search costs half as much.
	strUsageKey  = []byte(`usage"`)
	errFirstByte = &Failure{Class: Retryable, Msg: "upstream sent nothing within first_byte_timeout"}
)

func (o *openAI) key(i int) []byte {
	if i >= 0 && i < len(o.keys) {
		return o.keys[i]
	}
	return nil
}

// Chat sends one attempt; key is chosen by c.Key's index in the
// provider's key list.
func (o *openAI) Chat(c *Call, r *Reply) error { return o.post(&o.url, c, r, c.Stream, "choices") }

// request starts a POST of JSON to e with the provider's extra headers
// and, when the provider has Bearer keys, the one at key.
func (o *openAI) request(e *endpoint, key int) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	head := &o.bare
	if key >= 0 && key < len(o.heads) {
		head = &o.heads[key]
	}
	head.CopyTo(&req.Header)
	e.set(req)
	return req
}

// post relays c's body, with only "model" rewritten, to e: the answer
// streams when stream is set, and must otherwise hold the array named
// list ("choices", "data").
func (o *openAI) post(e *endpoint, c *Call, r *Reply, stream bool, list string) error {
	req := o.request(e, c.Key)
	// Ask for the usage chunk, so a stream settles against real token
	// counts; it is stripped again if the client did not ask for it.
	strip := stream && o.streamUsage && !c.ClientUsage && !c.StreamOptions
	if strip {
		// Just inside the object's brace, which JSON lets whitespace
		// precede.
		open := bytes.IndexByte(c.Body, '{') + 1
		req.AppendBody(c.Body[:open])
		req.AppendBody(strAskUsage)
		req.AppendBody(c.Body[open:c.ModelStart])
	} else {
		req.AppendBody(c.Body[:c.ModelStart])
	}
	req.AppendBody(c.UpstreamJSON)
	req.AppendBody(c.Body[c.ModelEnd:])
	resp, f := o.exchange(req, stream, r)
	if f != nil {
		return f
	}
	if stream {
		s := &openAIStream{resp: resp, strip: strip}
		s.sse = s.reader.init(resp.BodyStream())
		s.sse.max = o.client.MaxResponseBodySize
		s.sse.watch(resp, o.firstByte, o.idle)
		r.Stream = s
		return nil
	}
	defer fasthttp.ReleaseResponse(resp)
	body := resp.Body()
	found, usage, hasUsage, err := answerOf(body, list)
	if err != nil {
		return &Failure{Class: Retryable, Status: resp.StatusCode(), Msg: "upstream sent a body that is not JSON"}
	}
	if !found {
		// Valid JSON, but no answer: an error object with a 200, or
		// something else entirely. Another candidate may answer.
		r.Usage = Usage{}
		return &Failure{Class: Retryable, Status: resp.StatusCode(), Msg: "upstream answered 200 without " + list}
	}
	if hasUsage {
		r.Usage = usage
	}
	// The answer's buffer becomes the reply's, uncopied, and the reply's
	// old buffer goes back with the response. Neither is shared after:
	// the response is released, and each pool drops a buffer over its
	// limit (fasthttp's SetBodySizePoolLimit, the engine's maxPooledBody).
	// The old buffer goes at its full capacity: fasthttp's pool sizes
	// what it keeps by the length buffers come back with, and would drop
	// a buffer that came back empty as too large for it.
	r.Body = resp.SwapBody(r.Body[:cap(r.Body)])
	return nil
}

// exchange sends req and classifies a failure; a success's response is
// the caller's to release, and r learns whether the key is spent.
func (o *openAI) exchange(req *fasthttp.Request, stream bool, r *Reply) (*fasthttp.Response, *Failure) {
	resp, f := send(o.client, req, stream, o.firstByte, o.timeout)
	if f != nil {
		return nil, f
	}
	if status := resp.StatusCode(); status < 200 || status > 299 {
		f := o.failure(resp)
		fasthttp.ReleaseResponse(resp)
		return nil, f
	}
	r.Exhausted = exhaustedFor(&resp.Header)
	return resp, nil
}

// answerOf reads an upstream's answer in the pass that bounds it: whether
// its last top-level list (as a client's decoder keeps the last of a
// repeated field) is an array, and its last usage, if any, whose counts
// are read as the pass goes through it. Only numbers are kept of the body.
func answerOf(body []byte, list string) (found bool, u Usage, hasUsage bool, err error) {
	var r JSONReader
	r.Reset(body)
	if r.Next() == JSONObject {
		for r.Member() {
			switch k := r.Key(); {
			case k == list:
				found = r.Token() == JSONArray
			case k == "usage":
				u, hasUsage = usageRead(&r), true
				continue
			}
			if !r.Skip() {
				break
			}
		}
	}
	return found, u, hasUsage, r.Finish()
}

// usageRead reads the usage value whose first token r just read, as
// usageOf does (the first of a repeated count), leaving r past it.
func usageRead(r *JSONReader) Usage {
	if r.Token() != JSONObject {
		r.Skip()
		return Usage{}
	}
	u := Usage{Known: true}
	var haveP, haveC bool
	for r.Member() {
		start := r.Start
		k := r.Key()
		if !r.Skip() {
			break
		}
		switch {
		case k == "prompt_tokens" && !haveP:
			u.Prompt, haveP = intOf(r.Since(start)), true
		case k == "completion_tokens" && !haveC:
			u.Completion, haveC = intOf(r.Since(start)), true
		}
	}
	return u
}

// intOf reads a JSON value as gjson's Int does: a plain integer of up to
// 15 digits (every real count) directly, anything else through gjson.
func intOf(raw []byte) int {
	digits := raw
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 15 {
		return int(gjson.ParseBytes(raw).Int())
	}
	n := 0
	for _, c := range digits {
		if c < '0' || c > '9' {
			return int(gjson.ParseBytes(raw).Int())
		}
		n = n*10 + int(c-'0')
	}
	if len(digits) < len(raw) {
		return -n
	}
	return n
}

// usageOf reads an OpenAI usage object.
func usageOf(u gjson.Result) Usage { return tokensOf(u, "prompt_tokens", "completion_tokens") }

// tokensOf reads a usage object whose counts are named prompt and
// completion.
// The first of a repeated count is taken, as gjson's Get finds it; one
// walk over the object finds both, stopping once it has them.
func tokensOf(u gjson.Result, prompt, completion string) Usage {
	if !u.IsObject() {
		return Usage{}
	}
	var p, c gjson.Result
	var haveP, haveC bool
	u.ForEach(func(k, v gjson.Result) bool {
		switch {
		case k.Str == prompt && !haveP:
			p, haveP = v, true
		case k.Str == completion && !haveC:
			c, haveC = v, true
		}
		return !haveP || !haveC
	})
	return Usage{Prompt: int(p.Int()), Completion: int(c.Int()), Known: true}
}

// Handshake states of doWithin.
const (
	callRunning int32 = iota
	callReturned
	callAbandoned
)

// send makes one adapter's HTTP exchange, bounded by timeout, and releases
// req; the response body streams when stream is set, except a failure's,
// which is read whole up to the client's body limit. A stream waits at
// most firstByte for the response headers, when that is shorter than
// timeout. On failure the response is released too, or left to the
// abandoned call that still owns it.
func send(client *fasthttp.HostClient, req *fasthttp.Request, stream bool, firstByte, timeout time.Duration) (*fasthttp.Response, *Failure) {
	// The whole attempt, a stream included, ends by timeout.
	req.SetTimeout(timeout)
	resp := fasthttp.AcquireResponse()
	resp.StreamBody = stream
	var err error
	if stream && firstByte > 0 && firstByte < timeout {
		err = doWithin(client, req, resp, firstByte)
		if err == errFirstByte {
			// The abandoned call owns req and resp now.
			return nil, errFirstByte
		}
	} else {
		err = client.Do(req, resp)
	}
	fasthttp.ReleaseRequest(req)
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		return nil, transportFailure(err)
	}
	if status := resp.StatusCode(); stream && (status < 200 || status > 299) {
		// The failure is classified from its body, which fasthttp reads
		// without a bound from a streamed response. The rest of a longer
		// one is no error message anyone needs.
		b, _ := io.ReadAll(io.LimitReader(resp.BodyStream(), int64(client.MaxResponseBodySize)))
		// Closing the stream keeps the connection only if it was read to
		// its end.
		resp.SetBodyRaw(b)
	}
	return resp, nil
}

// doWithin waits at most d for the upstream's response headers. fasthttp
// cannot cancel a call, so one that runs late is abandoned to its
// goroutine, which frees it when its own deadline (the provider's timeout)
// ends it.
func doWithin(client *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, d time.Duration) error {
	var state atomic.Int32
	done := make(chan error, 1)
	go func() {
		err := client.Do(req, resp)
		if state.CompareAndSwap(callRunning, callReturned) {
			done <- err
			return
		}
		if err == nil {
			if bs, ok := resp.BodyStream().(fasthttp.ReadCloserWithError); ok {
				_ = bs.CloseWithError(errFirstByte)
			}
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		if state.CompareAndSwap(callRunning, callAbandoned) {
			return errFirstByte
		}
		return <-done
	}
}

// failure classifies a non-2xx answer. The upstream's own message is kept
// (it helps the client) except for auth failures, whose messages tend to
// quote part of the key.
func (o *openAI) failure(resp *fasthttp.Response) *Failure {
	status := resp.StatusCode()
	f := &Failure{
		Class:      classifyStatus(status),
		Status:     status,
		RetryAfter: retryAfter(resp.Header.Peek(fasthttp.HeaderRetryAfter), time.Now()),
		Msg:        "upstream error",
	}
	if f.Class == RateLimited && f.RetryAfter == 0 {
		f.RetryAfter = exhaustedFor(&resp.Header)
	}
	body := resp.Body()
	if f.Class == Auth {
		f.Msg = "upstream rejected the provider key"
		return f
	}
	if msg := gjson.GetBytes(body, "error.message"); msg.Type == gjson.String {
		f.Msg = truncate(msg.Str, 300)
	} else if msg := gjson.GetBytes(body, "message"); msg.Type == gjson.String {
		f.Msg = truncate(msg.Str, 300)
	}
	switch code := gjson.GetBytes(body, "error.code").Str; {
	case f.Class != BadRequest:
	case code == "context_length_exceeded":
		f.Class = ContextTooLong
	case aboutTarget(code, f.Msg):
		f.Class = Unsupported
	}
	if f.Class == BadRequest || f.Class == ContextTooLong || f.Class == Unsupported {
		if gjson.GetBytes(body, "error").IsObject() {
			f.Body = append([]byte(nil), body...)
		}
	}
	return f
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// openAIStream relays an OpenAI SSE stream frame by frame.
type openAIStream struct {
	// The fields each frame uses come first, with the reader's, so that
	// a frame touches few cache lines of its stream.
	//
	// sse reads the body; it points at reader, allocated with the
	// stream, unless the stream was made around a reader of its own.
	sse *sseReader
	// started is set once a data frame went out; keep-alive comments
	// before it are dropped so they do not commit the stream.
	started bool
	// done is set after the [DONE] frame.
	done bool
	// strip drops the usage chunk the gateway asked for on its own.
	strip bool
	// last is the previous data payload, to see at EOF whether the
	// upstream finished without sending [DONE]; it lives in the reader's
	// pooled buffers.
	last    []byte
	scratch []byte
	streamRedactor
	reader sseReader
	resp   *fasthttp.Response
	usage  Usage
}

var doneFrame = []byte("data: [DONE]\n\n")

// Next returns the next frame, as the upstream sent it.
func (s *openAIStream) Next() ([]byte, error) { return s.pass(s.next()) }

// ErrNotReady is what NextReady returns when the next frame is not in
// hand yet.
var ErrNotReady = errors.New("no frame in hand")

// NextReady is Next for a frame the upstream already sent: where Next
// would wait for the upstream, it returns ErrNotReady instead, having
// taken in only frames Next drops too. It reads nothing, so a frame Next
// or NextReady returned before stays valid. A relay asks it for the
// frames that came with the one it holds, to send them to its client
// together.
func (s *openAIStream) NextReady() ([]byte, error) {
	if s.done || !s.sse.pending() {
		return nil, ErrNotReady
	}
	s.sse.inHand = true
	frame, err := s.next()
	s.sse.inHand = false
	if err == ErrNotReady {
		return nil, err
	}
	return s.pass(frame, err)
}

func (s *openAIStream) next() ([]byte, error) {
	if s.done {
		return nil, io.EOF
	}
	for {
		frame, err := s.sse.read()
		if err == io.EOF {
			if s.started && finished(s.last) {
				// Some compatible servers end without [DONE]; the answer
				// is complete, so end it the way SDKs expect.
				s.done = true
				return doneFrame, nil
			}
			return nil, ErrStreamCut
		}
		if err != nil {
			return nil, err
		}
		data, ok := s.sse.data(frame, s.scratch)
		if !ok {
			if s.started {
				return frame, nil
			}
			continue
		}
		if bytes.Equal(data, strDone) {
			s.done = true
			return frame, nil
		}
		if CheckJSON(data) != nil {
			return nil, &Failure{Class: Retryable, Msg: "upstream sent a stream event that is not JSON"}
		}
		if !s.started && bytes.Contains(data, strErrorKey) {
			if e := gjson.GetBytes(data, "error"); e.Exists() {
				msg := gjson.GetBytes(data, "error.message").Str
				return nil, &Failure{Class: Retryable, Msg: "upstream stream error: " + truncate(msg, 300)}
			}
		}
		if bytes.Contains(data, strUsageKey) {
			if u := usageOf(gjson.GetBytes(data, "usage")); u.Known {
				s.usage = u
				if s.strip && gjson.GetBytes(data, "choices.#").Int() == 0 {
					// The chunk exists only because the gateway asked.
					s.last = s.sse.keep(data)
					continue
				}
			}
		}
		s.started = true
		s.last = s.sse.keep(data)
		return frame, nil
	}
}

// Usage returns the usage chunk's counts, once the stream has ended.
func (s *openAIStream) Usage() Usage { return s.usage }

// finished reports whether a payload can be a stream's last: a choice's
// finish, the usage chunk that include_usage sends after it, or an error.
func finished(data []byte) bool {
	return gjson.GetBytes(data, "choices.0.finish_reason").Type == gjson.String ||
		gjson.GetBytes(data, "usage").IsObject() ||
		gjson.GetBytes(data, "error").Exists()
}

// drainWait bounds how long Close waits for the end of a finished body.
const drainWait = 50 * time.Millisecond

// endBody ends a stream's upstream response. One read to its end marker
// ([DONE], message_stop, ...) is drained of what follows, normally just
// the chunked body's end, so its connection serves the next request; any
// other is cut, as its connection cannot be reused. The drain gives up
// after drainWait or a few reads.
func endBody(resp *fasthttp.Response, sse *sseReader, done bool) {
	bs, ok := resp.BodyStream().(fasthttp.ReadCloserWithError)
	switch {
	case !ok:
	case done && drained(bs, sse):
		_ = resp.CloseBodyStream()
	default:
		_ = bs.CloseWithError(ErrStreamCut)
	}
	fasthttp.ReleaseResponse(resp)
}

func (s *openAIStream) Close() {
	if s.resp == nil {
		return
	}
	s.sse.stop()
	endBody(s.resp, s.sse, s.done)
	s.sse.release()
	s.resp = nil
}
