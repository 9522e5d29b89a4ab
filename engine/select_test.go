package engine

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"gateway/config"
)

// rtChain builds a chain of targets p0/m, p1/m, ... under strategy, with
// the given weights (1 where none is given), each target with keys keys
// and caps c.
func rtChain(strategy string, n, keys int, c caps, weights ...int) *group {
	g := &group{name: "g", strategy: strategy, state: &groupState{}}
	for i := range n {
		w := 1
		if i < len(weights) {
			w = weights[i]
		}
		pc := &config.Provider{Name: "p" + strconv.Itoa(i)}
		for range keys {
			pc.Keys = append(pc.Keys, config.Secret{})
		}
		tg := &target{provider: &provider{name: pc.Name, cfg: pc}, name: pc.Name + "/m", weight: w, caps: c,
			reserveOut: 100, reserveMax: config.DefaultReserveMaxTokens, state: &targetState{breaker: memory{}.Breaker("")}}
		for range max(keys, 1) {
			ks := &keyState{until: memory{}.Cooldown(""), probe: new(probeState)}
			if !c.none() {
				lim := memory{}.Limiter("")
				ks.lim.Store(&lim)
			}
			tg.keys = append(tg.keys, ks)
		}
		g.targets = append(g.targets, tg)
		g.weights += w
	}
	return g
}

// rtNames lists the targets' names.
func rtNames(ts []*target) []string {
	var s []string
	for _, t := range ts {
		s = append(s, t.name)
	}
	return s
}

// rtIsPermutation reports whether order holds each of g's targets once.
func rtIsPermutation(g *group, order []*target) bool {
	if len(order) != len(g.targets) {
		return false
	}
	for _, t := range g.targets {
		if !slices.Contains(order, t) {
			return false
		}
	}
	return true
}

func TestOrderPriority(t *testing.T) {
	g := rtChain("priority", 3, 1, caps{})
	for range 3 {
		if got := rtNames(g.order(nil, nil)); !slices.Equal(got, []string{"p0/m", "p1/m", "p2/m"}) {
			t.Fatalf("priority order %v", got)
		}
	}
	if got := rtNames(g.order(nil, g.targets[2])); !slices.Equal(got, []string{"p2/m", "p0/m", "p1/m"}) {
		t.Errorf("sticky p2: order %v, want it first and the rest in order", got)
	}
	if got := rtNames(g.order(nil, g.targets[0])); !slices.Equal(got, []string{"p0/m", "p1/m", "p2/m"}) {
		t.Errorf("sticky p0: order %v", got)
	}
	other := rtChain("priority", 1, 1, caps{}).targets[0]
	other.name = "elsewhere/m"
	if got := rtNames(g.order(nil, other)); !slices.Equal(got, []string{"p0/m", "p1/m", "p2/m"}) {
		t.Errorf("a sticky target of another chain changed the order: %v", got)
	}
}

func TestOrderRoundRobin(t *testing.T) {
	g := rtChain("round_robin", 3, 1, caps{})
	for i := range 12 {
		got := g.order(nil, nil)
		for j := range got {
			if got[j] != g.targets[(i+j)%3] {
				t.Fatalf("pick %d: order %v, want a rotation starting at p%d", i, rtNames(got), i%3)
			}
		}
	}
	// A sticky target goes first; the others keep the rotation's order.
	g.state.turn.Store(1)
	if got := rtNames(g.order(nil, g.targets[0])); !slices.Equal(got, []string{"p0/m", "p1/m", "p2/m"}) {
		t.Errorf("sticky p0 at turn 1: %v", got)
	}
	if got := rtNames(g.order(nil, g.targets[0])); !slices.Equal(got, []string{"p0/m", "p2/m", "p1/m"}) {
		t.Errorf("sticky p0 at turn 2: %v", got)
	}
}

func TestOrderWeighted(t *testing.T) {
	tests := []struct {
		weights []int
	}{
		{[]int{1, 3}},
		{[]int{1, 1, 2}},
		{[]int{5, 1, 1, 3}},
	}
	const picks = 4000
	for _, tt := range tests {
		t.Run(strconv.Itoa(len(tt.weights)), func(t *testing.T) {
			g := rtChain("weighted", len(tt.weights), 1, caps{}, tt.weights...)
			first := map[*target]int{}
			for range picks {
				o := g.order(nil, nil)
				if !rtIsPermutation(g, o) {
					t.Fatalf("order %v is not every target once", rtNames(o))
				}
				// After the pick, the rest keep their declared order.
				rest := slices.DeleteFunc(slices.Clone(g.targets), func(x *target) bool { return x == o[0] })
				if !slices.Equal(o[1:], rest) {
					t.Fatalf("order %v: the rest are out of declared order", rtNames(o))
				}
				first[o[0]]++
			}
			for i, tg := range g.targets {
				want := float64(tt.weights[i]) / float64(g.weights)
				got := float64(first[tg]) / picks
				// ±5 points: more than 7 standard deviations at 4000 picks.
				if got < want-0.05 || got > want+0.05 {
					t.Errorf("%s picked first %.3f of the time, want %.3f", tg.name, got, want)
				}
			}
		})
	}
	g := rtChain("weighted", 3, 1, caps{}, 1, 1, 1)
	for range 50 {
		if o := g.order(nil, g.targets[1]); o[0] != g.targets[1] || !rtIsPermutation(g, o) {
			t.Fatalf("sticky p1: order %v", rtNames(o))
		}
	}
}

func TestOrderLeastLatency(t *testing.T) {
	const picks = 4000
	// explores counts the picks whose first target is not want[0], and
	// checks the others are want exactly.
	run := func(t *testing.T, g *group, want []string) int {
		t.Helper()
		explores := 0
		for range picks {
			o := g.order(nil, nil)
			if !rtIsPermutation(g, o) {
				t.Fatalf("order %v is not every target once", rtNames(o))
			}
			if o[0].name != want[0] {
				explores++
				continue
			}
			if got := rtNames(o); !slices.Equal(got, want) {
				t.Fatalf("order %v, want %v", got, want)
			}
		}
		return explores
	}
	set := func(g *group, ttfb ...time.Duration) {
		for i, d := range ttfb {
			g.targets[i].state.ttfb.Store(int64(d))
		}
	}
	t.Run("fastest first", func(t *testing.T) {
		g := rtChain("least_latency", 3, 1, caps{})
		set(g, 30*time.Millisecond, 10*time.Millisecond, 20*time.Millisecond)
		explores := run(t, g, []string{"p1/m", "p2/m", "p0/m"})
		// 1 in 20 is 200 of 4000, give or take 14.
		if explores < 120 || explores > 300 {
			t.Errorf("explored %d times in %d, want about 1 in %d", explores, picks, exploreOneIn)
		}
	})
	t.Run("unmeasured first", func(t *testing.T) {
		g := rtChain("least_latency", 3, 1, caps{})
		set(g, 30*time.Millisecond, 0, 10*time.Millisecond)
		if explores := run(t, g, []string{"p1/m", "p2/m", "p0/m"}); explores > picks/10 {
			t.Errorf("the unmeasured target came first only %d times in %d", picks-explores, picks)
		}
	})
	t.Run("all unmeasured keep their order", func(t *testing.T) {
		g := rtChain("least_latency", 3, 1, caps{})
		if explores := run(t, g, []string{"p0/m", "p1/m", "p2/m"}); explores > picks/10 {
			t.Errorf("explored %d times", explores)
		}
	})
	t.Run("one target", func(t *testing.T) {
		g := rtChain("least_latency", 1, 1, caps{})
		if explores := run(t, g, []string{"p0/m"}); explores != 0 {
			t.Errorf("a chain of one explored")
		}
	})
	t.Run("sticky", func(t *testing.T) {
		g := rtChain("least_latency", 3, 1, caps{})
		set(g, 30*time.Millisecond, 10*time.Millisecond, 20*time.Millisecond)
		for range 200 {
			if o := g.order(nil, g.targets[0]); o[0] != g.targets[0] || !rtIsPermutation(g, o) {
				t.Fatalf("sticky p0: order %v", rtNames(o))
			}
		}
	})
}

func TestObserveMovingAverage(t *testing.T) {
	g := rtChain("least_latency", 1, 1, caps{})
	tg := g.targets[0]
	tg.observe(100 * time.Millisecond)
	if got := time.Duration(tg.state.ttfb.Load()); got != 100*time.Millisecond {
		t.Fatalf("first measure %v, want it as it is", got)
	}
	tg.observe(200 * time.Millisecond)
	if got := time.Duration(tg.state.ttfb.Load()); got != 120*time.Millisecond {
		t.Errorf("after 100ms then 200ms: %v, want 120ms (a fifth of the way)", got)
	}
	for range 100 {
		tg.observe(10 * time.Millisecond)
	}
	if got := time.Duration(tg.state.ttfb.Load()); got < 10*time.Millisecond || got > 11*time.Millisecond {
		t.Errorf("the average did not follow a lasting change: %v", got)
	}
}

// rtWalk walks g's declared order at now, reserving when reserve is set,
// and returns the candidates in the order yielded.
func rtWalk(g *group, now int64, reserve bool) (*walker, []candidate) {
	w := &walker{s: &snapshot{}, order: g.order(nil, nil), clock: func() int64 { return now }, now: now, prompt: 10,
		reserve: reserve, allBreaker: true}
	var cs []candidate
	for {
		c, ok := w.next()
		if !ok {
			return w, cs
		}
		cs = append(cs, c)
	}
}

// rtReserved returns the tokens c's key counts in its minute window.
func rtReserved(c candidate, now int64) int64 {
	_, tokens := c.t.limiter(c.slot).Used(now)
	return tokens
}

func TestWalkerSkips(t *testing.T) {
	now := t0
	g := rtChain("priority", 5, 1, caps{rpm: 1, tpm: 1000})
	ts := g.targets
	// p0: breaker open; p1: cooling after a 429; p2: over its rpm;
	// p3: cooling after a 5xx; p4: usable.
	ts[0].state.breaker.Failure(now, 1, int64(50*time.Second))
	ts[1].keys[0].until.Start(now, 20*time.Second, coolRate)
	ts[2].keys[0].limiter().Reserve(now-int64(30*time.Second), ts[2].caps, 0)
	ts[3].keys[0].until.Start(now, 40*time.Second, coolFailure)

	w, cs := rtWalk(g, now, false)
	if len(cs) != 1 || cs[0].t != ts[4] || cs[0].key != 0 || w.tokensFor(cs[0].t) != 110 {
		t.Fatalf("candidates %+v, want p4 key 0 with 110 tokens (10 prompt + 100 default)", cs)
	}
	if w.skipped != 4 || !w.rateSkip || !w.capSkip || !w.otherSkip || w.allBreaker || w.tooLarge {
		t.Errorf("walker %+v", w)
	}
	// The earliest a skipped one frees: p1's 20s cooldown, before p2's
	// request leaves the window (31s) and the others.
	if w.earliest != now+int64(20*time.Second) {
		t.Errorf("earliest %v, want 20s", time.Duration(w.earliest-now))
	}

	t.Run("all behind breakers", func(t *testing.T) {
		g := rtChain("priority", 2, 1, caps{})
		for _, tg := range g.targets {
			tg.state.breaker.Failure(now, 1, int64(30*time.Second))
		}
		w, cs := rtWalk(g, now, true)
		if len(cs) != 0 || !w.allBreaker || w.skipped != 2 || w.earliest != now+int64(30*time.Second) {
			t.Errorf("candidates %d, walker %+v", len(cs), w)
		}
	})
	t.Run("too large for a cap", func(t *testing.T) {
		// Only a prompt the cap cannot hold is too large; a completion
		// that would overflow it is reserved up to the cap.
		g := rtChain("priority", 1, 1, caps{tpm: 50})
		w := &walker{s: &snapshot{}, order: g.order(nil, nil), clock: func() int64 { return now }, now: now, prompt: 60, reserve: true}
		if _, ok := w.next(); ok || !w.tooLarge || w.otherSkip || w.capSkip || w.earliest != 0 {
			t.Errorf("walker %+v", w)
		}
		if _, cs := rtWalk(g, now, true); len(cs) != 1 || rtReserved(cs[0], now) != 50 {
			t.Errorf("a 10-token prompt under tpm 50: %+v, want one candidate reserving 50", cs)
		}
	})
	t.Run("max_tokens replaces the default reservation", func(t *testing.T) {
		g := rtChain("priority", 1, 1, caps{tpm: 50})
		w := &walker{s: &snapshot{}, order: g.order(nil, nil), clock: func() int64 { return now }, now: now, prompt: 10,
			maxOut: 30, reserve: true}
		if c, ok := w.next(); !ok || rtReserved(c, now) != 40 {
			t.Errorf("candidate %+v ok %v, want 40 tokens", c, ok)
		}
	})
}

func TestWalkerKeys(t *testing.T) {
	now := t0
	g := rtChain("priority", 2, 2, caps{})
	starts := map[int]int{}
	for range 10 {
		_, cs := rtWalk(g, now, true)
		if len(cs) != 4 || cs[0].t != g.targets[0] || cs[1].t != g.targets[0] || cs[2].t != g.targets[1] {
			t.Fatalf("candidates %+v: want both keys of p0, then of p1", cs)
		}
		if cs[0].key == cs[1].key || cs[0].slot != cs[0].key {
			t.Fatalf("p0 yielded keys %d and %d", cs[0].key, cs[1].key)
		}
		starts[cs[0].key]++
	}
	if starts[0] != 5 || starts[1] != 5 {
		t.Errorf("first key tried: %v, want each half the time", starts)
	}
	// One key cooling: the other is still used.
	g.targets[0].keys[1].until.Start(now, time.Minute, coolRate)
	for range 4 {
		_, cs := rtWalk(g, now, true)
		if len(cs) != 3 || cs[0].t != g.targets[0] || cs[0].key != 0 {
			t.Fatalf("with key 1 cooling: %+v", cs)
		}
	}
	// A provider without keys yields one candidate with key -1.
	nokeys := rtChain("priority", 1, 0, caps{})
	if _, cs := rtWalk(nokeys, now, true); len(cs) != 1 || cs[0].key != -1 || cs[0].slot != 0 {
		t.Errorf("keyless provider: %+v", cs)
	}
}

func TestWalkerReservesAndRefunds(t *testing.T) {
	// refund settles at the engine's now, so the walk does too.
	now := nanotime()
	g := rtChain("priority", 1, 1, caps{rpm: 2, tpm: 250})
	lim := g.targets[0].keys[0].limiter()
	used := func() (int64, int64) { return lim.Used(now) }
	// Looking takes nothing.
	for range 5 {
		if _, cs := rtWalk(g, now, false); len(cs) != 1 {
			t.Fatal("a look found no candidate")
		}
	}
	if r, tk := used(); r != 0 || tk != 0 {
		t.Fatalf("looking reserved %d requests, %d tokens", r, tk)
	}
	w, cs := rtWalk(g, now, true)
	if len(cs) != 1 {
		t.Fatal("no candidate")
	}
	if r, tk := used(); r != 1 || tk != 110 {
		t.Fatalf("reserved %d requests, %d tokens; want 1, 110", r, tk)
	}
	// A failed attempt gives its tokens back but keeps the request.
	refund(cs[0])
	if r, tk := used(); r != 1 || tk != 0 {
		t.Fatalf("after refund: %d requests, %d tokens; want 1, 0", r, tk)
	}
	if _, cs := rtWalk(g, now, true); len(cs) != 1 {
		t.Fatal("second request refused")
	}
	w, cs = rtWalk(g, now, true)
	if len(cs) != 0 || !w.capSkip || w.earliest <= now {
		t.Errorf("third request: candidates %d, walker %+v", len(cs), w)
	}
}

func TestWalkerTakesOneProbe(t *testing.T) {
	now := t0
	g := rtChain("priority", 2, 1, caps{})
	br := g.targets[0].state.breaker
	br.Failure(now-int64(time.Minute), 1, int64(30*time.Second))
	// Looking does not take the probe.
	if _, cs := rtWalk(g, now, false); len(cs) != 2 || rtProbeOut(br, now) {
		t.Fatalf("look: %d candidates, state %s", len(cs), br.State(now))
	}
	_, cs := rtWalk(g, now, true)
	if len(cs) != 2 || cs[0].t != g.targets[0] || !rtProbeOut(br, now) {
		t.Fatalf("first walk: %d candidates, state %s; want p0 as the probe", len(cs), br.State(now))
	}
	w, cs := rtWalk(g, now, true)
	if len(cs) != 1 || cs[0].t != g.targets[1] || w.skipped != 1 {
		t.Errorf("while probing: candidates %v, want only p1", len(cs))
	}
}

// TestWalkerClocksEachCandidate: the attempt on the first candidate
// outlasts a bucket (here, a whole minute); the walk then checks and
// reserves the next candidate at its own time, not the request's start.
func TestWalkerClocksEachCandidate(t *testing.T) {
	sec := int64(time.Second)
	now := t0
	g := rtChain("priority", 2, 1, caps{rpm: 1})
	p1 := g.targets[1]
	// p1 cools down until 30 s: skipped at the start, usable by the time
	// the attempt on p0 gives up.
	p1.keys[0].until.Start(t0, 30*time.Second, coolFailure)
	w := &walker{s: &snapshot{}, order: g.order(nil, nil), clock: func() int64 { return now }, now: now, prompt: 10,
		reserve: true, allBreaker: true}
	// Reserved at 0 s, the request counts until 61 s.
	if c, ok := w.next(); !ok || c.t != g.targets[0] {
		t.Fatalf("first candidate %+v (ok %v), want p0", c, ok)
	}
	if _, at := g.targets[0].limiter(0).Check(t0, g.targets[0].caps, 1); at != t0+61*sec {
		t.Fatalf("p0 reserved until %v, want reserved at 0 s", time.Duration(at-t0))
	}
	now = t0 + 61*sec
	c, ok := w.next()
	if !ok || c.t != p1 {
		t.Fatalf("after a 61 s attempt: candidate %+v (ok %v), want p1, whose cooldown ended at 30 s", c, ok)
	}
	// p1's request went at 61 s and counts until 122 s: a request at 62 s
	// must not find it free, as it would had it counted at 0 s.
	if ok, at := p1.limiter(0).Check(t0+62*sec, p1.caps, 10); ok || at != t0+122*sec {
		t.Errorf("p1 at 62 s: free %v, frees at %v; want busy until 122 s", ok, time.Duration(at-t0))
	}
}
