package engine

import (
	"math/rand/v2"
	"time"
)

// exploreOneIn is how often least_latency tries a target other than the
// fastest, so that one which recovered is noticed.
const exploreOneIn = 20

// order appends the group's targets to dst in the order to try them: the
// strategy's, with the sticky target (when there is one) first.
func (g *group) order(dst []*target, sticky *target) []*target {
	n := len(g.targets)
	switch g.strategy {
	case "round_robin":
		start := int(g.state.turn.Add(1)-1) % n
		for i := range n {
			dst = append(dst, g.targets[(start+i)%n])
		}
	case "weighted":
		// The first by weight; the rest keep their declared order.
		r := rand.IntN(max(g.weights, 1))
		first := 0
		for i, t := range g.targets {
			if r < t.weight {
				first = i
				break
			}
			r -= t.weight
		}
		dst = append(dst, g.targets[first])
		for i, t := range g.targets {
			if i != first {
				dst = append(dst, t)
			}
		}
	case "least_latency":
		base := len(dst)
		dst = append(dst, g.targets...)
		part := dst[base:]
		// Insertion sort: chains are short, and it allocates nothing.
		// Unmeasured targets (0) come first, so each gets measured.
		for i := 1; i < len(part); i++ {
			for j := i; j > 0 && part[j].state.ttfb.Load() < part[j-1].state.ttfb.Load(); j-- {
				part[j], part[j-1] = part[j-1], part[j]
			}
		}
		if len(part) > 1 && rand.IntN(exploreOneIn) == 0 {
			j := 1 + rand.IntN(len(part)-1)
			part[0], part[j] = part[j], part[0]
		}
	default: // priority
		dst = append(dst, g.targets...)
	}
	if sticky != nil {
		for i := len(dst) - 1; i > 0; i-- {
			if dst[i] == sticky {
				copy(dst[1:i+1], dst[:i])
				dst[0] = sticky
				break
			}
		}
	}
	return dst
}

// observe folds one time to first byte into the target's moving average.
func (t *target) observe(d time.Duration) {
	old := t.state.ttfb.Load()
	if old == 0 {
		t.state.ttfb.Store(int64(d))
		return
	}
	t.state.ttfb.Store(old + (int64(d)-old)/5)
}

// Why a candidate is passed over.
type skipReason int

const (
	eligible skipReason = iota
	skipBreaker
	skipCooling
	skipRateCooling
	skipInvalid
	skipProbeInvalid
	skipProbeError
	skipCapped
	skipTooLarge
	skipOperation
)

// skipNames says each skipReason in words (String, for explain) and as
// one word (token, for the x-gateway-explain header), side by side so a
// new reason cannot miss one of them.
var skipNames = [...]struct{ text, token string }{
	eligible:         {"eligible", "eligible"},
	skipBreaker:      {"circuit breaker open", "breaker_open"},
	skipCooling:      {"cooling down after a failure", "cooling_down"},
	skipRateCooling:  {"cooling down after a 429", "rate_limited"},
	skipInvalid:      {"key refused by the upstream (401/403)", "invalid"},
	skipProbeInvalid: {"held out by its last probe: invalid (401/403)", "probe_invalid"},
	skipProbeError:   {"held out by its last probe: error", "probe_error"},
	skipCapped:       {"over its rate caps", "over_caps"},
	skipTooLarge:     {"request larger than a token cap", "too_large"},
	skipOperation:    {"does not serve this operation", "unsupported_operation"},
}

func (r skipReason) String() string { return skipNames[r].text }

// token is the reason as one word, for the x-gateway-explain header.
func (r skipReason) token() string { return skipNames[r].token }

// candidate is one (target, key) the walk may call.
type candidate struct {
	t *target
	// key is the index in the provider's keys, -1 when it has none; slot
	// indexes t.keys.
	key, slot int
	ks        *keyState
	// res is what the walk reserved against the target's caps.
	res Reservation
}

// walker yields the candidates of one request in order, skipping (and
// remembering why) those that cannot be used now. The request path
// reserves as it goes; explain only looks.
type walker struct {
	s *snapshot
	// op is the operation asked for: a target that cannot serve it is
	// skipped without a call.
	op    *operation
	order []*target
	// clock is read each time the walk is asked for a candidate, so a
	// candidate is checked and reserved at the time it is tried: the
	// first after the request's scan, limits and route (a Redis round
	// trip, a large body), one after a slow attempt at its own time.
	clock   func() int64
	now     int64 // the time of the candidate in hand
	prompt  int64 // estimated prompt tokens
	maxOut  int64 // the request's max_tokens, 0 if unset
	reserve bool

	ti, ki, start int
	// What was skipped, for the answer when nothing is left.
	earliest                     int64
	rateSkip, capSkip, otherSkip bool
	tooLarge, allBreaker         bool
	probeSkip                    bool
	skipped                      int
	// opSkips counts the targets skipped for not serving the operation.
	opSkips int
	// trace, when the client asked for x-gateway-explain, records each
	// skip; nil otherwise.
	trace *routeTrace
}

func (w *walker) tokensFor(t *target) int64 {
	if w.op != nil && !w.op.output {
		return w.prompt
	}
	out := t.reserveOut
	if w.maxOut > 0 {
		out = w.maxOut
	}
	return reservation(w.prompt, out, t.reserveMax, t.caps)
}

// reservation is what a request reserves against token caps before it is
// sent: its prompt and the completion it allows itself, of which at most
// reserveMax, and never more than a cap that the prompt alone fits, so
// that only a prompt too long for a cap is refused as too large.
// Settlement corrects the count to the real usage afterwards.
func reservation(prompt, out, reserveMax int64, c caps) int64 {
	n := prompt + min(out, reserveMax)
	for _, limit := range [...]int64{c.tpm, c.tpd} {
		if limit > 0 && prompt <= limit {
			n = min(n, limit)
		}
	}
	return n
}

// inspect says whether the key in slot of t can be used now, and if not,
// until when it cannot (0 if unknown or never).
func (w *walker) inspect(t *target, slot int) (skipReason, int64) {
	ks := t.keys[slot]
	if until, reason, on := ks.until.Active(w.now); on {
		switch reason {
		case coolRate:
			return skipRateCooling, until
		case coolAuth:
			return skipInvalid, until
		}
		return skipCooling, until
	}
	switch ks.probe.result.Load() {
	case probeInvalid:
		return skipProbeInvalid, ks.probe.next.Load()
	case probeError:
		return skipProbeError, ks.probe.next.Load()
	}
	// The request path skips the check: Reserve makes the same one and
	// takes in one step, one round trip on a shared backend.
	if lim := t.limiter(slot); lim != nil && !w.reserve {
		if ok, at := lim.Check(w.now, t.caps, w.tokensFor(t)); !ok {
			return capped(at)
		}
	}
	return eligible, 0
}

// skip notes that the key in slot of t (every key: slot -1) is passed
// over for r.
func (w *walker) skip(t *target, slot int, r skipReason, until int64) {
	w.note(r, until)
	if w.trace != nil {
		w.trace.add(t, slot, "skipped", r.token())
	}
}

// capped is why a candidate over its caps is skipped, and until when.
func capped(at int64) (skipReason, int64) {
	if at == never {
		return skipTooLarge, 0
	}
	return skipCapped, at
}

func (w *walker) note(r skipReason, until int64) {
	w.skipped++
	switch r {
	case skipRateCooling:
		w.rateSkip = true
	case skipCapped:
		w.capSkip = true
	case skipTooLarge:
		w.tooLarge = true
	case skipOperation:
		w.opSkips++
	case skipBreaker:
	case skipProbeInvalid, skipProbeError:
		w.probeSkip, w.otherSkip = true, true
	default:
		w.otherSkip = true
	}
	if r != skipBreaker {
		w.allBreaker = false
	}
	if until > w.now && (w.earliest == 0 || until < w.earliest) {
		w.earliest = until
	}
}

// next returns the next usable candidate, reserving its tokens and taking
// the breaker's probe when w.reserve is set.
func (w *walker) next() (candidate, bool) {
	w.now = w.clock()
	for w.ti < len(w.order) {
		t := w.order[w.ti]
		n := len(t.keys)
		if w.ki == 0 {
			if !w.op.servedBy(t) {
				w.skip(t, -1, skipOperation, 0)
				w.ti++
				continue
			}
			if refuses, until := t.state.breaker.Refuses(w.now); refuses {
				w.skip(t, -1, skipBreaker, until)
				w.ti++
				continue
			}
			w.start = 0
			if n > 1 {
				w.start = int(t.state.keyTurn.Add(1)-1) % n
			}
		}
		if w.ki == n {
			w.ti, w.ki = w.ti+1, 0
			continue
		}
		slot := (w.start + w.ki) % n
		w.ki++
		if r, until := w.inspect(t, slot); r != eligible {
			w.skip(t, slot, r, until)
			continue
		}
		c := candidate{t: t, key: slot, slot: slot, ks: t.keys[slot]}
		if len(t.provider.cfg.Keys) == 0 {
			c.key = -1
		}
		if !w.reserve {
			return c, true
		}
		if lim := t.limiter(slot); lim != nil {
			res, ok, at := lim.Reserve(w.now, t.caps, w.tokensFor(t))
			if !ok {
				r, until := capped(at) // taken by a concurrent request since inspect
				w.skip(t, slot, r, until)
				continue
			}
			c.res = res
		}
		if ok, until := t.state.breaker.Allow(w.now); !ok {
			// Another request holds the half-open probe; nothing was
			// sent, so the reservation goes back whole.
			c.res.Cancel()
			w.skip(t, -1, skipBreaker, until)
			w.ti, w.ki = w.ti+1, 0
			continue
		}
		return c, true
	}
	return candidate{}, false
}

// refund gives back the tokens of a candidate that produced none; the
// request itself still counts, as the upstream may have counted it.
func refund(c candidate) {
	c.res.Settle(nanotime(), 0)
}

// limiter returns the limiter of the key in slot, nil when t has no caps.
func (t *target) limiter(slot int) Limiter {
	if t.caps.none() {
		return nil
	}
	return t.keys[slot].limiter()
}
