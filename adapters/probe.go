package adapters

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"gateway/config"
)

// A probe asks an upstream, in the background, whether one provider key
// works, so that the engine skips a broken key before a request meets it.
// Its outcome is a *Failure classified as a chat attempt's would be (nil:
// the key works; RateLimited with RetryAfter; Auth: the key is refused;
// any other class: the upstream is unwell), with its message reduced to
// the status or the transport error: an upstream's own words may quote the
// key, and a probe's outcome goes to the log.

// ProbeModels asks the provider's model list, as short as the protocol
// lets it be, with its key at index key (-1: none): a call that spends no
// tokens. It waits at most the provider's timeout and reads at most its
// max_response_body; a 2xx answer must be JSON, and its body is dropped.
// A non-2xx answer is classified by the protocol's own rules (Gemini
// refuses a bad key with a 400, Cohere with a 402 too).
func ProbeModels(p *config.Provider, client *fasthttp.HostClient, key int) *Failure {
	list, ok := modelLists[p.Protocol]
	if !ok || client == nil {
		return &Failure{Class: Unsupported, Msg: "protocol " + p.Protocol + " has no model list to probe"}
	}
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if f := listModels(p, list.probe, key, client, p.Timeout.D(), resp); f != nil {
		return probeFailure(f)
	}
	switch status := resp.StatusCode(); {
	case status == fasthttp.StatusNotFound || status == fasthttp.StatusMethodNotAllowed || status == fasthttp.StatusNotImplemented:
		// The server lists no models there (a self-hosted server, a
		// proxy): the answer says nothing of the key, and holding the
		// key out for it would take a working provider out of service.
		return &Failure{Class: Unsupported, Status: status, Msg: "no model list is served there, so it cannot check the key (probe: chat can)"}
	case status < 200 || status > 299:
		return probeFailure(list.failure(resp))
	}
	if CheckJSON(resp.Body()) != nil {
		return &Failure{Class: Retryable, Status: resp.StatusCode(), Msg: "the model list is not JSON"}
	}
	return nil
}

// probePrompt is what a chat probe says: one short word.
const probePrompt = "ping"

// ProbeChat asks a through its ordinary chat call for one token of
// upstream, non-streamed, with the provider's key at index key (-1:
// none), for a provider whose model list does not check its keys. It
// returns the usage the answer reported, to count against the key's caps.
func ProbeChat(a Provider, upstream string, key int) (Usage, *Failure) {
	model, _ := json.Marshal(upstream)
	body := make([]byte, 0, 96+len(model))
	body = append(body, `{"model":`...)
	start := len(body)
	body = append(body, model...)
	end := len(body)
	body = append(body, `,"messages":[{"role":"user","content":"`+probePrompt+`"}],"max_tokens":1,"stream":false}`...)
	c := &Call{Body: body, ModelStart: start, ModelEnd: end, Upstream: upstream, UpstreamJSON: model, Key: key}
	var r Reply
	if err := a.Chat(c, &r); err != nil {
		f, ok := err.(*Failure)
		if !ok {
			f = &Failure{Class: Retryable, Msg: "the chat probe failed"}
		}
		return Usage{}, probeFailure(f)
	}
	return r.Usage, nil
}

// probeFailure is f without the upstream's words: its class, status and
// wait, and what went wrong in the adapter's own words, which come before
// any colon ("upstream connection failed: " and what the HTTP client said,
// which may quote a malformed answer; "upstream error: " and the
// upstream's message).
func probeFailure(f *Failure) *Failure {
	msg, _, _ := strings.Cut(f.Msg, ":")
	if f.Status != 0 {
		msg = "the upstream answered " + strconv.Itoa(f.Status)
	}
	return &Failure{Class: f.Class, Status: f.Status, RetryAfter: f.RetryAfter, Msg: msg}
}
