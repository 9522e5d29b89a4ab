package engine

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/config"
)

// ExplainRequest describes a request for Explain.
type ExplainRequest struct {
	Model string
	// Operation is the client API (chat, responses, embeddings,
	// completions); empty is chat.
	Operation string
	// Key is a gateway key's name; empty when auth is off or for none.
	Key       string
	Headers   map[string]string
	Tokens    int
	Messages  int
	MaxTokens int
	Stream    bool
	Tools     bool
	Metadata  map[string]any
}

// Explain writes how the engine would route req now: the rule that
// matches, then every candidate in the order it would be tried, with why
// each is or is not eligible. It decides with the same code the request
// path uses, against the engine's live state, and changes none of it.
//
// It returns the status the server would answer: 200 when a candidate
// would be called (which may still fail), else the error's.
func (e *Engine) Explain(w io.Writer, req ExplainRequest) (int, error) {
	s := e.snap.Load()
	now := time.Now()
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	op := opChat
	for _, o := range operations {
		if o.name == req.Operation {
			op = o
		}
	}
	if req.Operation != "" && op.name != req.Operation {
		return 0, fmt.Errorf("unknown operation %q", req.Operation)
	}
	env := &config.RequestEnv{Model: req.Model, Operation: op.name, Stream: req.Stream, Tokens: req.Tokens, Messages: max(req.Messages, 1),
		Tools: req.Tools, Path: "/v1/chat/completions", Method: "POST", Metadata: req.Metadata, Headers: map[string]string{}}
	for k, v := range req.Headers {
		env.Headers[strings.ToLower(k)] = v
	}
	var key *gatewayKey
	switch {
	case req.Key != "":
		key = s.byName[req.Key]
		if key == nil {
			return 0, fmt.Errorf("no gateway key named %q", req.Key)
		}
		env.Key = config.KeyEnv{Name: key.cfg.Name, Metadata: key.cfg.Metadata}
		p("key: %s", key.cfg.Name)
		if err := key.refusal(now); err != nil {
			p("refused: %d %s", err.status, err.msg)
			return err.status, nil
		}
		if err := key.modelRefusal(req.Model); err != nil {
			p("refused: %d %s", err.status, err.msg)
			return err.status, nil
		}
	case len(s.keys) > 0:
		p("key: none given (the server would answer 401; explaining as if the key were valid)")
	default:
		p("key: auth is off")
	}
	p("request: %s, model %q, ~%d prompt tokens, %d messages, stream %v, tools %v", op.name, req.Model, req.Tokens, env.Messages, req.Stream, req.Tools)
	g, r := s.pick(env)
	switch {
	case g == nil:
		p("route: none matched and no model is named %q: 404 model_not_found", req.Model)
		return fasthttp.StatusNotFound, nil
	case r == nil:
		p("route: no rule matched; %q names a chain (x-gateway-route: default)", req.Model)
	default:
		p("route: %s (match: %s) -> %s (x-gateway-route: %s)", r.cfg.Name, r.cfg.Match, g.name, r.cfg.Name)
	}
	if len(g.targets) == 0 {
		p("candidates: none; every provider of the chain was left out at load: 503 no_provider")
		return fasthttp.StatusServiceUnavailable, nil
	}
	hedge := ""
	if g.hedge > 0 {
		hedge = fmt.Sprintf(", hedge_after %v", g.hedge)
	}
	p("strategy: %s, max_attempts %d%s", g.strategy, s.cfg.Failover.MaxAttempts, hedge)
	// Order a copy, so explaining does not move round_robin's turn.
	peek := *g
	peek.state = &groupState{}
	peek.state.turn.Store(g.state.turn.Load())
	wk := &walker{s: s, op: op, order: peek.order(nil, nil), clock: nanotime, now: nanotime(), prompt: int64(req.Tokens), maxOut: int64(req.MaxTokens), allBreaker: true}
	p("candidates, in the order they would be tried:")
	n, usable := 0, 0
	for _, t := range wk.order {
		breakerNote := ""
		if !op.servedBy(t) {
			breakerNote = "skipped: " + skipOperation.String() + " (" + op.name + ")"
			wk.note(skipOperation, 0)
		} else if refuses, until := t.state.breaker.Refuses(wk.now); refuses {
			breakerNote = fmt.Sprintf("skipped: %s until %s", skipBreaker, time.Unix(0, until).UTC().Format(time.RFC3339))
			wk.note(skipBreaker, until)
		}
		for slot := range t.keys {
			n++
			label := t.name
			if len(t.keys) > 1 {
				label += fmt.Sprintf(" (key %d of %d)", slot+1, len(t.keys))
			}
			why := breakerNote
			if why == "" {
				r, until := wk.inspect(t, slot)
				if r != eligible {
					wk.note(r, until)
				}
				switch {
				case r == eligible:
					usable++
					why = "eligible"
					if usable > s.cfg.Failover.MaxAttempts {
						why = "eligible, but past max_attempts"
					}
				case until > 0:
					why = fmt.Sprintf("skipped: %s until %s", r, time.Unix(0, until).UTC().Format(time.RFC3339))
				default:
					why = "skipped: " + r.String()
				}
			}
			p("  %d. %-36s upstream %-28s %s%s", n, label, t.model.Upstream, why, capsNote(t))
		}
	}
	if usable == 0 {
		v := wk.verdict(g.name, wk.now)
		p("no candidate is eligible now: the server would answer %d %s (%s)", v.status, v.code, v.msg)
		return v.status, nil
	}
	return fasthttp.StatusOK, nil
}

func capsNote(t *target) string {
	var parts []string
	for _, c := range []struct {
		name string
		v    int64
	}{{"rpm", t.caps.rpm}, {"rpd", t.caps.rpd}, {"tpm", t.caps.tpm}, {"tpd", t.caps.tpd}} {
		if c.v > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", c.name, c.v))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "  [caps: " + strings.Join(parts, ", ") + "]"
}
