package engine

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// This file serves GET /api/explain: Explain over HTTP, from the running
// server's state, with the CLI's flags as query parameters. Query and
// parseExplainQuery are the two ends of one encoding, so the CLI and the
// server cannot disagree on it.

// maxExplainHeaders bounds the header parameters of one explain query.
const maxExplainHeaders = 64

// Query encodes r as /api/explain's query string.
func (r ExplainRequest) Query() string {
	q := url.Values{}
	q.Set("model", r.Model)
	set := func(name, v string) {
		if v != "" {
			q.Set(name, v)
		}
	}
	set("operation", r.Operation)
	set("key", r.Key)
	q.Set("tokens", strconv.Itoa(r.Tokens))
	q.Set("max_tokens", strconv.Itoa(r.MaxTokens))
	q.Set("messages", strconv.Itoa(max(r.Messages, 1)))
	if r.Stream {
		q.Set("stream", "1")
	}
	if r.Tools {
		q.Set("tools", "1")
	}
	for k, v := range r.Headers {
		q.Add("header", k+":"+v)
	}
	return q.Encode()
}

// parseExplainQuery reads an ExplainRequest from /api/explain's query.
// Absent numbers take the CLI's defaults: 100 prompt tokens, 1 message.
func parseExplainQuery(args *fasthttp.Args) (ExplainRequest, *apiError) {
	r := ExplainRequest{Model: string(args.Peek("model")), Operation: string(args.Peek("operation")),
		Key: string(args.Peek("key")), Tokens: 100, Messages: 1}
	if r.Model == "" {
		return r, badRequest("model", "missing_model", "model is required: /api/explain?model=NAME")
	}
	for _, n := range []struct {
		name string
		v    *int
	}{{"tokens", &r.Tokens}, {"max_tokens", &r.MaxTokens}, {"messages", &r.Messages}} {
		if !args.Has(n.name) {
			continue
		}
		v, err := strconv.ParseInt(string(args.Peek(n.name)), 10, 32)
		if err != nil || v < 0 {
			return r, badRequest(n.name, "invalid_value", n.name+" must be a whole number from 0 to 2147483647")
		}
		*n.v = int(v)
	}
	for _, b := range []struct {
		name string
		v    *bool
	}{{"stream", &r.Stream}, {"tools", &r.Tools}} {
		if !args.Has(b.name) {
			continue
		}
		switch string(args.Peek(b.name)) {
		case "", "1", "true":
			*b.v = true
		case "0", "false":
		default:
			return r, badRequest(b.name, "invalid_value", b.name+" must be 1, true, 0 or false")
		}
	}
	hs := args.PeekMulti("header")
	if len(hs) > maxExplainHeaders {
		return r, badRequest("header", "invalid_value", "at most "+strconv.Itoa(maxExplainHeaders)+" header parameters")
	}
	for _, h := range hs {
		i := strings.IndexAny(string(h), ":=")
		if i < 1 {
			return r, badRequest("header", "invalid_value", "header must be name:value or name=value")
		}
		if r.Headers == nil {
			r.Headers = map[string]string{}
		}
		r.Headers[string(h[:i])] = strings.TrimSpace(string(h[i+1:]))
	}
	return r, nil
}

// explainAPI answers GET /api/explain for an admin key (auth off counts
// as admin): the explanation of what the running server would do now.
// An explanation whose verdict is an error (an unknown model, say) is
// still a 200: the explaining itself succeeded, and status says the rest.
func (e *Engine) explainAPI(ctx *fasthttp.RequestCtx, s *snapshot) {
	key, ok := admit(ctx, s, fasthttp.MethodGet)
	if !ok {
		return
	}
	if !key.admin() {
		(&apiError{status: fasthttp.StatusForbidden, typ: "permission_error", code: "admin_only",
			msg: "explain shows every provider key's state: it needs a gateway key with admin: true"}).write(ctx)
		return
	}
	req, aerr := parseExplainQuery(ctx.QueryArgs())
	if aerr != nil {
		aerr.write(ctx)
		return
	}
	x, err := s.explain(req, time.Now())
	if err != nil {
		badRequest("", "invalid_request", err.Error()).write(ctx)
		return
	}
	b, _ := json.Marshal(x)
	ctx.SetContentTypeBytes(strJSON)
	ctx.SetBody(b)
}
