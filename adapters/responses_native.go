package adapters

import (
	"io"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// ResponsesProvider is a Provider whose upstream serves OpenAI's
// Responses API itself (a provider with `responses: native`): the
// client's request goes to it as written, only "model" patched, and its
// answer comes back as it is, rather than through chat completions.
type ResponsesProvider interface {
	// Responses makes one attempt with c.Body a Responses request body
	// (ModelStart/ModelEnd and UpstreamJSON as for Chat). r.Body is a
	// Response object; r.Stream its events, as the upstream sent them,
	// ending with response.completed, response.incomplete or
	// response.failed. A failure is always a *Failure.
	Responses(c *Call, r *Reply) error
}

// Responses forwards a Responses request to {base_url}/responses.
func (o *openAI) Responses(c *Call, r *Reply) error {
	req := o.request(&o.responses, c.Key)
	appendPatched(req, c)
	resp, f := o.exchange(req, c.Stream, r)
	if f != nil {
		return f
	}
	if c.Stream {
		s := &nativeResponsesStream{resp: resp, sse: newSSEReader(resp.BodyStream())}
		s.sse.max = o.client.MaxResponseBodySize
		s.sse.watch(resp, o.firstByte, o.idle)
		r.Stream = s
		return nil
	}
	defer fasthttp.ReleaseResponse(resp)
	body := resp.Body()
	if CheckJSON(body) != nil || gjson.GetBytes(body, "object").Str != "response" {
		return &Failure{Class: Retryable, Status: resp.StatusCode(), Msg: "upstream answered 200 without a Response object"}
	}
	r.Usage = responsesUsage(gjson.GetBytes(body, "usage"))
	r.Body = append(r.Body[:0], body...)
	return nil
}

// responsesUsage reads a Response's usage.
func responsesUsage(u gjson.Result) Usage { return tokensOf(u, "input_tokens", "output_tokens") }

// nativeResponsesStream relays a Responses event stream frame by frame,
// reading the usage of its final event.
type nativeResponsesStream struct {
	resp    *fasthttp.Response
	sse     *sseReader
	scratch []byte
	usage   Usage
	done    bool
}

// Next returns the next event as the upstream sent it. An error event
// before any other fails the attempt, so the engine can still move on.
func (s *nativeResponsesStream) Next() ([]byte, error) {
	if s.done {
		return nil, io.EOF
	}
	for {
		frame, err := s.sse.read()
		if err == io.EOF {
			return nil, ErrStreamCut
		}
		if err != nil {
			return nil, err
		}
		data, ok := frameData(frame, s.scratch)
		if !ok {
			continue
		}
		if CheckJSON(data) != nil {
			return nil, &Failure{Class: Retryable, Msg: "upstream sent a stream event that is not JSON"}
		}
		switch typ := gjson.GetBytes(data, "type").Str; typ {
		case "error":
			return nil, &Failure{Class: Retryable, Msg: "upstream stream error: " + truncate(gjson.GetBytes(data, "message").Str, 300)}
		case "response.completed", "response.incomplete", "response.failed":
			s.usage = responsesUsage(gjson.GetBytes(data, "response.usage"))
			s.done = true
		}
		return frame, nil
	}
}

// Usage returns the final event's usage, once the stream has ended.
func (s *nativeResponsesStream) Usage() Usage { return s.usage }

// Close releases the upstream response.
func (s *nativeResponsesStream) Close() {
	if s.resp == nil {
		return
	}
	s.sse.stop()
	endBody(s.resp, s.sse, s.done)
	s.sse.release()
	s.resp = nil
}
