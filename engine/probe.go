package engine

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"gateway/adapters"
)

// This file probes provider keys in the background: each key every
// health.interval (spread out so that keys do not all fire at once), with
// a call that spends no tokens where the protocol allows. A key whose last
// probe found it invalid or failing is skipped by the request path
// without a call and probed again sooner, until it works. A key a request
// found refused (401/403) is held invalid by its auth cooldown and probed
// after failover.auth_recheck, probes on or off: the moment a probe finds
// it works, it returns. One goroutine per engine schedules the probes;
// each probe runs in its own goroutine, at most one per key.

// The results of a probe.
const (
	probeNone int32 = iota
	probeHealthy
	probeRateLimited
	probeInvalid
	probeError
	numProbeResults
)

// probeNames are the results as /api/stats and /metrics name them.
var probeNames = [numProbeResults]string{"", "healthy", "rate_limited", "invalid", "error"}

// probeState is what the engine remembers of one provider key's probes,
// across reloads, by the provider's name and a digest of the key.
type probeState struct {
	// result is the last probe's; the request path reads it, one atomic
	// load per candidate.
	result atomic.Int32
	// at is when the last probe ended (unix ns, 0: never).
	at atomic.Int64
	// next is when the key is due for a probe (unix ns, 0: not scheduled).
	next atomic.Int64
	// putOff is the next a probe set when it found the key's caps spent:
	// when they free. It is not brought forward as a next past the
	// interval is: probing sooner would only be refused again.
	putOff atomic.Int64
	// recheck is set when a request met the key refused: it is probed
	// after auth_recheck, probes on or off, while its auth cooldown runs.
	recheck atomic.Bool
	// busy is held while a probe of the key runs.
	busy atomic.Bool
	// counts are the probes made, by result.
	counts [numProbeResults]atomic.Int64
}

// probeKey is one provider key the prober checks, as one snapshot has it.
type probeKey struct {
	state *probeState
	p     *provider
	// key is the index in the provider's keys, -1 when it has none; slot
	// is where the key's state sits in a target's keys.
	key, slot int
	// every is health.interval (0: off); retry is how soon a key that
	// failed is probed again.
	every, retry time.Duration
	// chat probes with a 1-token request instead of the model list.
	chat bool
	// target is the provider's probe model: a chat probe asks it, and
	// every probe counts against its caps for this key.
	target *target
	// cools are the key's (provider, model, key) states: a probe that
	// finds the key working lifts their auth cooldowns.
	cools []*keyState
}

// appendProbes appends the probe of each key of p. ids are the keys'
// stable names, states the probe states by name, cools the keys' states
// by name.
func appendProbes(dst []*probeKey, p *provider, groups map[string]*group, ids []string, states map[string]*probeState,
	cools map[string][]*keyState, recheck time.Duration) []*probeKey {
	every := p.cfg.Health.Every()
	retry := every
	if recheck > 0 {
		retry = recheck
		if every > 0 {
			retry = min(every, recheck)
		}
	}
	tg := groups[p.name+"/"+p.cfg.ProbeModel.Name].targets[0]
	for slot, id := range ids {
		k := &probeKey{state: states[p.name+id], p: p, key: slot, slot: slot, every: every, retry: retry,
			chat: p.cfg.Probe == "chat", target: tg, cools: cools[p.name+id]}
		if len(p.cfg.Keys) == 0 {
			k.key = -1
		}
		// The caps may change with the config: a key put off until
		// they free is due again by the interval.
		k.state.putOff.Store(0)
		dst = append(dst, k)
	}
	return dst
}

// jitter spreads d by up to a tenth either way, so that keys probed on the
// same interval drift apart instead of firing together.
func jitter(d time.Duration) int64 {
	return int64(d - d/10 + rand.N(d/5+1))
}

// wakeProber has the prober look at its schedule again.
func (e *Engine) wakeProber() {
	select {
	case e.probeWake <- struct{}{}:
	default:
	}
}

// probeLoop schedules the probes of the current snapshot's keys until the
// engine closes. A reload wakes it, so the keys it probes follow the
// config.
func (e *Engine) probeLoop() {
	defer e.bg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var fire <-chan time.Time
		if next := e.startDue(); next > 0 {
			timer.Reset(time.Duration(next - nanotime()))
			fire = timer.C
		}
		select {
		case <-e.stop:
			return
		case <-e.probeWake:
		case <-fire:
		}
	}
}

// startDue starts the probes that are due and returns when the next one
// is (0: none is scheduled).
func (e *Engine) startDue() int64 {
	s := e.snap.Load()
	now := nanotime()
	var earliest int64
	for _, k := range s.probes {
		if k.state.busy.Load() {
			continue // it wakes the loop when it ends
		}
		at := k.due(now)
		switch {
		case at == 0:
		case at <= now:
			if k.state.busy.CompareAndSwap(false, true) {
				e.bg.Add(1)
				go e.probe(k)
			}
		case earliest == 0 || at < earliest:
			earliest = at
		}
	}
	return earliest
}

// due returns when k is due for a probe, 0 when it is not to be probed.
// It schedules a key seen for the first time one interval on (a restart
// does not probe every key at once), brings forward one whose interval
// shrank on reload (not one put off until its caps free), and lets go of
// one whose probes are off (a verdict that held it out included), unless
// a refusal is being rechecked.
func (k *probeKey) due(now int64) int64 {
	st := k.state
	next := st.next.Load()
	if k.every == 0 {
		if st.recheck.Load() {
			if k.refusedUntil(now) > 0 {
				return next
			}
			st.recheck.Store(false)
		}
		st.next.CompareAndSwap(next, 0)
		if r := st.result.Load(); r >= probeInvalid {
			st.result.CompareAndSwap(r, probeNone)
		}
		return 0
	}
	if next == 0 || next > now+int64(k.every+k.every/10) && next != st.putOff.Load() {
		if at := now + jitter(k.every); st.next.CompareAndSwap(next, at) {
			return at
		}
		return st.next.Load()
	}
	return next
}

// refusedUntil returns when the last auth cooldown of k's keys ends, 0
// when none runs.
func (k *probeKey) refusedUntil(now int64) int64 {
	var end int64
	for _, ks := range k.cools {
		if until, reason, on := ks.until.Active(now); on && reason == coolAuth {
			end = max(end, until)
		}
	}
	return end
}

// probe makes one probe of k, unless the key's caps are spent: a probe
// counts against them (1 request, and 1 token for a chat probe).
func (e *Engine) probe(k *probeKey) {
	defer e.bg.Done()
	defer e.wakeProber()
	defer k.state.busy.Store(false)
	now := nanotime()
	var res Reservation
	if lim := k.target.limiter(k.slot); lim != nil {
		var tokens int64
		if k.chat {
			tokens = 1
		}
		r, ok, at := lim.Reserve(now, k.target.caps, tokens)
		if !ok {
			if at <= now {
				at = now + int64(k.retry)
			}
			k.state.putOff.Store(at)
			k.state.next.Store(at)
			return
		}
		res = r
	}
	var f *adapters.Failure
	if k.chat {
		var u adapters.Usage
		u, f = adapters.ProbeChat(k.p.adapter, k.target.model.Upstream, k.key)
		if u.Known {
			u = u.Bounded()
			res.Settle(nanotime(), int64(u.Prompt+u.Completion))
		}
	} else {
		f = adapters.ProbeModels(k.p.cfg, k.p.client, k.key)
	}
	e.probed(k, f, nanotime())
}

// probed records what a probe of k found and when the key is next due.
func (e *Engine) probed(k *probeKey, f *adapters.Failure, now int64) {
	st := k.state
	result := probeHealthy
	switch {
	case f == nil:
	case f.Class == adapters.Unsupported:
		// The probe could not check the key (no model list there): it
		// is neither held out nor called healthy.
		result = probeNone
	case f.Class == adapters.RateLimited:
		result = probeRateLimited
	case f.Class == adapters.Auth:
		result = probeInvalid
	default:
		result = probeError
	}
	st.counts[result].Add(1)
	st.at.Store(now)
	switch result {
	case probeHealthy:
		for _, ks := range k.cools {
			if until, reason, on := ks.until.Active(now); on && reason == coolAuth {
				ks.until.Lift(until)
			}
		}
		st.recheck.Store(false)
	case probeRateLimited:
		// The key is spent upstream: requests would meet the same 429.
		if f.RetryAfter > 0 {
			for _, ks := range k.cools {
				ks.until.Start(now, f.RetryAfter, coolRate)
			}
		}
	}
	var next int64
	switch {
	case result >= probeInvalid && k.every > 0 || st.recheck.Load():
		next = now + int64(k.retry)
		// With probes off, a refusal is rechecked while its cooldown
		// runs, and let go when it ends (due).
		if end := k.refusedUntil(now); k.every == 0 && end > 0 {
			next = min(next, end)
		}
	case k.every > 0:
		next = now + jitter(k.every)
	}
	// The result is told last: /api/stats shows a key the probe found
	// broken with when it is probed again, never with the last probe's
	// time.
	st.next.Store(next)
	prev := st.result.Swap(result)
	log := e.log.Debug
	switch {
	case result == probeNone && st.counts[probeNone].Load() == 1:
		log = e.log.Warn // once: the operator may want probe: chat
	case result == prev:
	case result >= probeInvalid:
		log = e.log.Warn
	case prev >= probeInvalid || result == probeRateLimited:
		log = e.log.Info
	}
	name := probeNames[result]
	if result == probeNone {
		name = "unchecked"
	}
	args := []any{"provider", k.p.name, "key", k.slot + 1, "probe", name}
	if f != nil {
		args = append(args, "status", f.Status, "err", f.Msg)
	}
	log("provider key probed", args...)
}

// refused schedules a probe of c's key, which the upstream just refused
// (401/403), after auth_recheck: the key is held invalid by its auth
// cooldown meanwhile, and returns as soon as a probe finds it works.
func (e *Engine) refused(s *snapshot, c candidate) {
	if s.authRecheck <= 0 {
		return
	}
	st := c.ks.probe
	st.recheck.Store(true)
	at := nanotime() + s.authRecheck
	for {
		cur := st.next.Load()
		if cur != 0 && cur <= at || st.next.CompareAndSwap(cur, at) {
			break
		}
	}
	e.wakeProber()
}
