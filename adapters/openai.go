package adapters

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/config"
)

// openAI speaks to any OpenAI-compatible upstream. The request body goes
// out with only "model" rewritten; responses and SSE frames come back as
// they are, after a validity check.
type openAI struct {
	client  *fasthttp.Client
	url     string
	timeout time.Duration
	headers [][2]string
	// auth holds the ready "Bearer <key>" value for each key.
	auth [][]byte
	keys []string
}

func newOpenAI(p *config.Provider, client *fasthttp.Client) *openAI {
	o := &openAI{
		client:  client,
		url:     p.BaseURL + "/chat/completions",
		timeout: p.Timeout.D(),
	}
	for k, v := range p.Headers {
		o.headers = append(o.headers, [2]string{k, v})
	}
	for _, k := range p.Keys {
		o.auth = append(o.auth, []byte("Bearer "+k.Reveal()))
		o.keys = append(o.keys, k.Reveal())
	}
	return o
}

var (
	strPost = []byte(fasthttp.MethodPost)
	strJSON = []byte("application/json")
	strAuth = []byte("Authorization")
	strDone = []byte("[DONE]")
)

// Chat sends one attempt; key is chosen by c.Key's index in the
// provider's key list.
func (o *openAI) Chat(c *Call, r *Reply) error {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI(o.url)
	req.Header.SetMethodBytes(strPost)
	req.Header.SetContentTypeBytes(strJSON)
	if c.Key >= 0 && c.Key < len(o.auth) {
		req.Header.SetCanonical(strAuth, o.auth[c.Key])
	}
	for _, h := range o.headers {
		req.Header.Set(h[0], h[1])
	}
	req.AppendBody(c.Body[:c.ModelStart])
	req.AppendBody(c.UpstreamJSON)
	req.AppendBody(c.Body[c.ModelEnd:])
	req.SetTimeout(o.timeout)

	resp := fasthttp.AcquireResponse()
	resp.StreamBody = c.Stream
	if err := o.client.Do(req, resp); err != nil {
		fasthttp.ReleaseResponse(resp)
		return transportFailure(err)
	}
	if status := resp.StatusCode(); status < 200 || status > 299 {
		f := o.failure(c, resp)
		fasthttp.ReleaseResponse(resp)
		return f
	}
	if c.Stream {
		s := &openAIStream{resp: resp, sse: newSSEReader(resp.BodyStream())}
		if c.Key >= 0 && c.Key < len(o.keys) {
			s.key = o.keys[c.Key]
		}
		r.Stream = s
		return nil
	}
	defer fasthttp.ReleaseResponse(resp)
	body := resp.Body()
	if !gjson.ValidBytes(body) {
		return &Failure{Class: Retryable, Status: resp.StatusCode(), Msg: "upstream sent a body that is not JSON"}
	}
	r.Body = append(r.Body[:0], body...)
	return nil
}

// failure classifies a non-2xx answer. The upstream's own message is kept
// (it helps the client) except for auth failures, whose messages tend to
// quote part of the key.
func (o *openAI) failure(c *Call, resp *fasthttp.Response) *Failure {
	status := resp.StatusCode()
	f := &Failure{
		Class:      classifyStatus(status),
		Status:     status,
		RetryAfter: retryAfter(resp.Header.Peek(fasthttp.HeaderRetryAfter), time.Now()),
		Msg:        "upstream error",
	}
	body := resp.Body()
	if c.Key >= 0 && c.Key < len(o.keys) && o.keys[c.Key] != "" {
		body = bytes.ReplaceAll(body, []byte(o.keys[c.Key]), []byte("<secret>"))
	}
	if f.Class == Auth {
		f.Msg = "upstream rejected the provider key"
		return f
	}
	if msg := gjson.GetBytes(body, "error.message"); msg.Type == gjson.String {
		f.Msg = truncate(msg.Str, 300)
	} else if msg := gjson.GetBytes(body, "message"); msg.Type == gjson.String {
		f.Msg = truncate(msg.Str, 300)
	}
	if f.Class == BadRequest {
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
	resp    *fasthttp.Response
	sse     *sseReader
	scratch []byte
	// started is set once a data frame went out; keep-alive comments
	// before it are dropped so they do not commit the stream.
	started bool
	// done is set after the [DONE] frame.
	done bool
	// last is the previous data payload, to see at EOF whether the
	// upstream finished without sending [DONE].
	last []byte
	// key is this attempt's provider key, kept out of failure messages.
	key string
}

var doneFrame = []byte("data: [DONE]\n\n")

func (s *openAIStream) Next() ([]byte, error) {
	if s.done {
		return nil, io.EOF
	}
	for {
		frame, err := s.sse.next()
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
			if errors.Is(err, fasthttp.ErrTimeout) || isTimeout(err) {
				return nil, &Failure{Class: Retryable, Msg: "upstream stream timed out"}
			}
			if err == errFrameTooLarge {
				return nil, &Failure{Class: Retryable, Msg: err.Error()}
			}
			return nil, ErrStreamCut
		}
		data, ok := frameData(frame, s.scratch)
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
		if !gjson.ValidBytes(data) {
			return nil, &Failure{Class: Retryable, Msg: "upstream sent a stream event that is not JSON"}
		}
		if !s.started && bytes.Contains(data, []byte(`"error"`)) {
			if e := gjson.GetBytes(data, "error"); e.Exists() {
				msg := gjson.GetBytes(data, "error.message").Str
				if s.key != "" {
					msg = strings.ReplaceAll(msg, s.key, "<secret>")
				}
				return nil, &Failure{Class: Retryable, Msg: "upstream stream error: " + truncate(msg, 300)}
			}
		}
		s.started = true
		s.last = append(s.last[:0], data...)
		return frame, nil
	}
}

// finished reports whether a payload can be a stream's last: a choice's
// finish, the usage chunk that include_usage sends after it, or an error.
func finished(data []byte) bool {
	return gjson.GetBytes(data, "choices.0.finish_reason").Type == gjson.String ||
		gjson.GetBytes(data, "usage").IsObject() ||
		gjson.GetBytes(data, "error").Exists()
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

func (s *openAIStream) Close() {
	if s.resp == nil {
		return
	}
	if s.done {
		_ = s.resp.CloseBodyStream()
	} else {
		// Not read to the end: the connection cannot be reused.
		if bs, ok := s.resp.BodyStream().(fasthttp.ReadCloserWithError); ok {
			_ = bs.CloseWithError(ErrStreamCut)
		}
	}
	s.sse.release()
	fasthttp.ReleaseResponse(s.resp)
	s.resp = nil
}
