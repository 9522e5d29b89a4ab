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

// Explanation is how the engine would route one request now: what
// GET /api/explain answers, and what `gateway explain` prints as Text.
type Explanation struct {
	// Status is what the server would answer: 200 when a candidate would
	// be called (which may still fail), else the error's.
	Status int    `json:"status"`
	Model  string `json:"model"`
	// Route is the rule that matched, or "default"; empty when no chain
	// serves the model.
	Route    string `json:"route,omitempty"`
	Group    string `json:"group,omitempty"`
	Strategy string `json:"strategy,omitempty"`
	// Candidates are every (target, key) in the order they would be
	// tried.
	Candidates []ExplainedCandidate `json:"candidates"`
	// Pick is the first eligible candidate's target, the one the next
	// request would call first.
	Pick string `json:"pick,omitempty"`
	// Text is the explanation as the CLI prints it.
	Text string `json:"text"`

	// What only the text tells.
	lines   []string
	verdict string
}

// ExplainedCandidate is one (target, key) of an Explanation.
type ExplainedCandidate struct {
	Target string `json:"target"`
	// Key is the key's position in the provider's keys, from 1, of Keys.
	Key      int    `json:"key"`
	Keys     int    `json:"keys"`
	Upstream string `json:"upstream"`
	// State is "eligible", "eligible, but past max_attempts", or
	// "skipped: " and why.
	State string     `json:"state"`
	Until *time.Time `json:"until,omitempty"`
	Pick  bool       `json:"pick,omitempty"`

	caps string
}

// Explain says how the engine would route req now: the rule that
// matches, then every candidate in the order it would be tried, with why
// each is or is not eligible. It decides with the same code the request
// path uses, against the engine's live state (cooldowns, breakers, caps
// spent, the turn of round_robin and of the keys), and changes none of
// it. The error is for a request that cannot be explained: an unknown
// operation or key name.
func (e *Engine) Explain(req ExplainRequest) (*Explanation, error) {
	return e.snap.Load().explain(req, time.Now())
}

// explain is Explain against s, with its Text written.
func (s *snapshot) explain(req ExplainRequest, now time.Time) (*Explanation, error) {
	x, err := s.decide(req, now)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	x.writeText(&b)
	x.Text = b.String()
	return x, nil
}

// decide works out the explanation of req at now.
func (s *snapshot) decide(req ExplainRequest, now time.Time) (*Explanation, error) {
	x := &Explanation{Model: req.Model, Candidates: []ExplainedCandidate{}}
	p := func(format string, args ...any) { x.lines = append(x.lines, fmt.Sprintf(format, args...)) }
	op := opChat
	for _, o := range operations {
		if o.name == req.Operation {
			op = o
		}
	}
	if req.Operation != "" && op.name != req.Operation {
		return nil, fmt.Errorf("unknown operation %q", req.Operation)
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
			return nil, fmt.Errorf("no gateway key named %q", req.Key)
		}
		env.Key = config.KeyEnv{Name: key.cfg.Name, Metadata: key.cfg.Metadata}
		p("key: %s", key.cfg.Name)
		err := key.refusal(now)
		if err == nil {
			err = key.modelRefusal(req.Model)
		}
		if err != nil {
			p("refused: %d %s", err.status, err.msg)
			x.Status = err.status
			return x, nil
		}
	case len(s.keys) > 0:
		p("key: none given (the server would answer 401; explaining as if the key were valid)")
	default:
		p("key: auth is off")
	}
	p("request: %s, model %q, ~%d prompt tokens, %d messages, stream %v, tools %v", op.name, req.Model, req.Tokens, env.Messages, req.Stream, req.Tools)
	g, r := s.pick(env, s.matchesFor(key))
	switch {
	case g == nil:
		p("route: none matched and no model is named %q: 404 model_not_found", req.Model)
		x.Status = fasthttp.StatusNotFound
		return x, nil
	case r == nil:
		x.Route = "default"
		p("route: no rule matched; %q names a chain (x-gateway-route: default)", req.Model)
	default:
		x.Route = r.cfg.Name
		p("route: %s (match: %s) -> %s (x-gateway-route: %s)", r.cfg.Name, r.cfg.Match, g.name, r.cfg.Name)
	}
	x.Group, x.Strategy = g.name, g.strategy
	if len(g.targets) == 0 {
		p("candidates: none; every provider of the chain was left out at load: 503 no_provider")
		x.Status = fasthttp.StatusServiceUnavailable
		return x, nil
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
	usable := 0
	for _, t := range wk.order {
		whole, wholeUntil := eligible, int64(0)
		if !op.servedBy(t) {
			whole = skipOperation
		} else if refuses, until := t.state.breaker.Refuses(wk.now); refuses {
			whole, wholeUntil = skipBreaker, until
		}
		if whole != eligible {
			wk.note(whole, wholeUntil)
		}
		// The keys in the order the next request tries them: from the
		// key turn, which the request path advances and this only reads.
		n := len(t.keys)
		start := 0
		if n > 1 {
			start = int(t.state.keyTurn.Load()) % n
		}
		for i := range n {
			slot := (start + i) % n
			c := ExplainedCandidate{Target: t.name, Key: slot + 1, Keys: n, Upstream: t.model.Upstream, caps: capsNote(t)}
			r, until := whole, wholeUntil
			if r == eligible {
				if r, until = wk.inspect(t, slot); r != eligible {
					wk.note(r, until)
				}
			}
			switch {
			case r == eligible:
				usable++
				c.State = "eligible"
				if usable > s.cfg.Failover.MaxAttempts {
					c.State = "eligible, but past max_attempts"
				}
				if usable == 1 {
					c.Pick, x.Pick = true, t.name
				}
			case r == skipOperation:
				c.State = "skipped: " + r.String() + " (" + op.name + ")"
			default:
				c.State = "skipped: " + r.String()
				if until > 0 {
					u := time.Unix(0, until).UTC()
					c.Until = &u
					c.State += " until " + u.Format(time.RFC3339)
				}
			}
			x.Candidates = append(x.Candidates, c)
		}
	}
	if usable == 0 {
		v := wk.verdict(g.name, wk.now)
		x.Status = v.status
		x.verdict = fmt.Sprintf("no candidate is eligible now: the server would answer %d %s (%s)", v.status, v.code, v.msg)
		return x, nil
	}
	x.Status = fasthttp.StatusOK
	return x, nil
}

// writeText writes the explanation as `gateway explain` prints it.
func (x *Explanation) writeText(w io.Writer) {
	for _, l := range x.lines {
		fmt.Fprintln(w, l)
	}
	if x.Strategy != "" && len(x.Candidates) > 0 {
		fmt.Fprintln(w, "candidates, in the order they would be tried:")
	}
	for i, c := range x.Candidates {
		label := c.Target
		if c.Keys > 1 {
			label += fmt.Sprintf(" (key %d of %d)", c.Key, c.Keys)
		}
		fmt.Fprintf(w, "  %d. %-36s upstream %-28s %s%s\n", i+1, label, c.Upstream, c.State, c.caps)
	}
	if x.verdict != "" {
		fmt.Fprintln(w, x.verdict)
	}
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
