package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/valyala/fasthttp"
)

// The extra phases measure what the targets do not judge yet: the new
// APIs, translated onto chat by the gateway, and chat through a second
// gateway keeping its state in Redis. The floor cannot translate, so each
// is compared with the floor's chat phase at the same concurrency.

// responsesBody is an OpenAI Responses API request, which the gateway
// translates onto chat completions for the openai provider.
const responsesBody = `{"model":"auto","input":"Say hello.","instructions":"You are terse."}`

// messagesBody is an Anthropic Messages API request, translated onto
// chat completions for the same OpenAI-compatible upstream.
const messagesBody = `{"model":"auto","max_tokens":64,"messages":[{"role":"user","content":"Say hello."}]}`

var (
	chatCall      = &call{path: "/v1/chat/completions", body: []byte(chatBody)}
	streamCall    = &call{path: "/v1/chat/completions", body: []byte(streamBody)}
	responsesCall = &call{path: "/v1/responses", body: []byte(responsesBody)}
	// messagesCall authenticates as Anthropic's SDKs and Claude Code do.
	messagesCall = &call{path: "/v1/messages", body: []byte(messagesBody), apiKey: true,
		header: [][2]string{{"anthropic-version", "2023-06-01"}}}
)

// extraPhase is one extra phase: a call to a gateway, reported under name.
type extraPhase struct {
	name string // responses, messages, redis
	srv  *server
	call *call
}

// extraOrder and extraLabel name the extra phases in the report.
var extraOrder = []string{"responses", "messages", "redis"}

var extraLabel = map[string]string{
	"responses": "Responses → chat",
	"messages":  "Messages → chat",
	"redis":     "chat, state in Redis",
}

// startExtras starts the gateways the extra phases drive, waits until
// they are ready and checks their first answers. The new APIs get a
// gateway of their own, with the first one's config: the Responses
// answers it keeps for previous_response_id (up to
// responses.store_max_bytes) would otherwise grow the first gateway's
// memory before its streaming phase and soak. The Redis phase gets a
// Redis and a gateway on it, or a reason in the report why not. Every
// process is a child, stopped with the others.
func startExtras(ctx context.Context, o *options, bin, dir, upAddr string, devnull *os.File, onExit func(error), conns int, rep *report) ([]extraPhase, error) {
	if !o.load || !o.apis && !o.redis {
		return nil, nil
	}
	if !slices.ContainsFunc(o.extraConc, func(c int) bool { return slices.Contains(o.concurrency, c) }) {
		rep.notes = append(rep.notes, "no extra phases: -extra-concurrency shares no value with -concurrency")
		return nil, nil
	}
	var extras []extraPhase
	ready := func(name string, p *child, addr string, state *redisServer) (*server, error) {
		if err := waitReady(ctx, p, addr, 20*time.Second); err != nil {
			return nil, err
		}
		watched = append(watched, p.pid())
		logf("up: %s %s (pid %d)", name, addr, p.pid())
		if state != nil {
			watched = append(watched, state.proc.pid())
			logf("up: redis %s (pid %d)", state.addr, state.proc.pid())
		}
		return &server{name: name, addr: addr, proc: p, client: newClient(addr, conns), state: state}, nil
	}
	if o.apis {
		addr, err := freePort()
		if err != nil {
			return nil, err
		}
		p, err := startGateway("gateway-apis", bin, dir, gatewayConfig(addr, upAddr, o.accessLog, ""), nil, devnull, onExit)
		if err != nil {
			return nil, err
		}
		s, err := ready("gateway-apis", p, addr, nil)
		if err != nil {
			return nil, err
		}
		extras = append(extras, extraPhase{"responses", s, responsesCall}, extraPhase{"messages", s, messagesCall})
	}
	if o.redis {
		addr, err := freePort()
		if err != nil {
			return nil, err
		}
		p, rs, why, err := startRedisGateway(ctx, bin, dir, addr, upAddr, o.accessLog, devnull, onExit)
		switch {
		case err != nil:
			return nil, err
		case why != "":
			rep.redisSkipped = why
			logf("Redis phase skipped: %s", why)
		default:
			s, err := ready("gateway-redis", p, addr, rs)
			if err != nil {
				return nil, err
			}
			extras = append(extras, extraPhase{"redis", s, chatCall})
		}
	}
	return extras, sanityExtras(extras)
}

// upstreamText is the assistant's text in the fake upstream's completion,
// which every translated answer must carry.
const upstreamText = "Hello there, how can I help?"

// sanityExtras sends each extra phase's request once and checks the answer
// is 200 in its API's shape with the upstream's text, and that the Redis
// gateway's request ran commands in Redis.
func sanityExtras(extras []extraPhase) error {
	for _, x := range extras {
		var before redisCounts
		if x.srv.state != nil {
			var err error
			if before, err = x.srv.state.counts(); err != nil {
				return fmt.Errorf("asking Redis for its command count: %w", err)
			}
		}
		req := x.call.request(x.srv.addr)
		resp := fasthttp.AcquireResponse()
		err := x.srv.client.DoTimeout(req, resp, 10*time.Second)
		fasthttp.ReleaseRequest(req)
		if err == nil && resp.StatusCode() != 200 {
			err = fmt.Errorf("HTTP %d: %s\n%s", resp.StatusCode(), truncate(resp.Body(), 500), x.srv.proc.logTail(10))
		}
		if err == nil {
			err = checkAnswer(x.call, resp.Body())
		}
		fasthttp.ReleaseResponse(resp)
		if err != nil {
			return fmt.Errorf("first %s request to %s: %w", x.call.path, x.srv.name, err)
		}
		if x.srv.state != nil {
			after, err := x.srv.state.counts()
			if err != nil {
				return fmt.Errorf("asking Redis for its command count: %w", err)
			}
			if after.since(before).commands == 0 {
				return fmt.Errorf("%s answered without a command to Redis: is its state in memory?\n%s", x.srv.name, x.srv.proc.logTail(10))
			}
		}
	}
	return nil
}

// checkAnswer checks a non-stream answer to c has its API's shape and
// carries the upstream's text.
func checkAnswer(c *call, body []byte) error {
	var a struct {
		Object     string `json:"object"`
		Type       string `json:"type"`
		Role       string `json:"role"`
		Status     string `json:"status"`
		StopReason string `json:"stop_reason"`
		Choices    []struct {
			Message struct{ Role, Content string }
		}
		Output []struct {
			Type, Role string
			Content    []struct{ Type, Text string }
		}
		Content []struct{ Type, Text string }
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return fmt.Errorf("answer is not JSON: %w: %s", err, truncate(body, 300))
	}
	var text string
	var ok bool
	switch c {
	case responsesCall:
		ok = a.Object == "response" && a.Status == "completed" && len(a.Output) == 1 &&
			a.Output[0].Type == "message" && a.Output[0].Role == "assistant" &&
			len(a.Output[0].Content) == 1 && a.Output[0].Content[0].Type == "output_text"
		if ok {
			text = a.Output[0].Content[0].Text
		}
	case messagesCall:
		ok = a.Type == "message" && a.Role == "assistant" && a.StopReason == "end_turn" &&
			len(a.Content) == 1 && a.Content[0].Type == "text"
		if ok {
			text = a.Content[0].Text
		}
	default:
		ok = a.Object == "chat.completion" && len(a.Choices) == 1 && a.Choices[0].Message.Role == "assistant"
		if ok {
			text = a.Choices[0].Message.Content
		}
	}
	if !ok {
		return errors.New("answer is not in the API's shape: " + string(truncate(body, 500)))
	}
	if text != upstreamText {
		return fmt.Errorf("answer's text is %q, want the upstream's %q", text, upstreamText)
	}
	return nil
}
