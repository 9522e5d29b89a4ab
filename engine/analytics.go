package engine

import (
	"sync"
	"sync/atomic"
	"time"
)

// This file keeps usage over time, in memory only: per target, gateway
// key, route and provider (passthrough), and for the gateway as a whole,
// in time buckets covering 30 days at coarsening resolution.
//
// The request path adds to the current minute's bucket with atomics. It
// reads the minute from one atomic that the analytics' ticker publishes,
// so it reads no clock and never rotates a bucket: the ticker, off the
// request path, clears the next minute's bucket before it publishes that
// minute, then folds each completed minute into the coarser tiers. A
// request is counted in the minute published when it records, at most a
// tick (one second) behind the clock.

// span is a period /api/stats and /api/stats/series report on: points
// buckets of step each, the last one the current, still filling.
type span struct {
	name   string
	step   time.Duration
	points int
	// tier is where it is read: 0 the minute buckets, i > 0 the folded
	// tier i-1.
	tier int
}

// spans are the periods served; the first is read from the minute
// buckets, each other from its own tier of folded buckets.
var spans = [...]span{
	{"1h", time.Minute, 60, 0},
	{"24h", 10 * time.Minute, 144, 1},
	{"7d", time.Hour, 168, 2},
	{"30d", 6 * time.Hour, 120, 3},
}

// spanNamed returns the span called name, nil for none.
func spanNamed(name string) *span {
	for i := range spans {
		if spans[i].name == name {
			return &spans[i]
		}
	}
	return nil
}

// minuteSlots is the length of the minute ring: the 60 of the 1h window
// and room for the two minutes not yet folded, and a ticker running late.
const minuteSlots = 64

const minuteNs = int64(time.Minute)

// bucket is one minute of one series, added to by the request path.
// It is 32 words: 256 bytes.
type bucket struct {
	// minute is the unix minute the bucket holds; a bucket whose minute
	// is not the one asked for holds nothing of it.
	minute atomic.Int64
	usage
	codes statusCounts
}

// reset empties the bucket for minute m. Only the ticker calls it, on a
// bucket no request adds to.
func (b *bucket) reset(m int64) {
	for _, v := range []*atomic.Int64{&b.successes, &b.fallbacks, &b.prompt, &b.completion, &b.latency.sum} {
		v.Store(0)
	}
	for i := range b.errors {
		b.errors[i].Store(0)
	}
	for i := range b.codes {
		b.codes[i].Store(0)
	}
	for i := range b.latency.counts {
		b.latency.counts[i].Store(0)
	}
	b.minute.Store(m)
}

// tally is usage summed over some time: a bucket read, or folded ones.
type tally struct {
	requests, successes, fallbacks int64
	errors                         [numClasses]int64
	codes                          [len(statusCounts{})]int64
	prompt, completion             int64
	latency                        [len(latencyBounds) + 1]int64
	latencySum                     int64 // ns
}

func (t *tally) add(o *tally) {
	t.requests += o.requests
	t.successes += o.successes
	t.fallbacks += o.fallbacks
	for i := range t.errors {
		t.errors[i] += o.errors[i]
	}
	for i := range t.codes {
		t.codes[i] += o.codes[i]
	}
	t.prompt += o.prompt
	t.completion += o.completion
	for i := range t.latency {
		t.latency[i] += o.latency[i]
	}
	t.latencySum += o.latencySum
}

// load reads what the bucket holds. A bucket of answers (a route's, a
// key's, a provider's, the gateway's) counts them by status class; one of
// attempts (a target's) as successes and errors, its classes zero.
func (b *bucket) load() tally {
	t := b.usage.load()
	t.codes = b.codes.load()
	t.addAnswers()
	return t
}

func (s *statusCounts) load() (out [len(statusCounts{})]int64) {
	for i := range s {
		out[i] = s[i].Load()
	}
	return out
}

// slot is one bucket of a coarse tier, written by the ticker only.
type slot struct {
	// index is the bucket's start in units of the tier's step since the
	// unix epoch; a slot whose index is not the one asked for holds
	// nothing of it.
	index int64
	tally
}

// series is the usage over time of one target, gateway key, route,
// provider or the whole gateway. Its size is fixed: see README.
type series struct {
	a       *analytics
	minutes [minuteSlots]bucket
	// Guarded by a.mu: the last minute folded into the tiers, and the
	// tiers, one per window after the first.
	folded int64
	tiers  [len(spans) - 1][]slot
}

// at returns the bucket the request path adds to now; nil for no series
// (a target the config does not declare, whose model an upstream listed).
func (s *series) at() *bucket {
	if s == nil {
		return nil
	}
	return &s.minutes[s.a.minute.Load()%minuteSlots]
}

// analytics owns the series: it publishes the minute the request path
// adds to and folds minutes into the tiers, on its ticker.
type analytics struct {
	clock  func() int64
	minute atomic.Int64
	// all is the gateway's whole traffic.
	all *series
	// mu guards the series' tiers and the list of series to tick.
	mu   sync.Mutex
	live []*series
}

// tickEvery is how often the ticker looks at the clock: how late a
// request may be counted in the minute before its own.
const tickEvery = time.Second

func newAnalytics(clock func() int64) *analytics {
	a := &analytics{clock: clock}
	a.minute.Store(clock() / minuteNs)
	a.all = a.newSeries()
	return a
}

// newSeries makes a series the ticker keeps from now on, until keep
// leaves it out.
func (a *analytics) newSeries() *series {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := &series{a: a}
	// One array for every tier: 432 slots.
	var n int
	for _, w := range spans[1:] {
		n += w.points
	}
	all := make([]slot, n)
	for i, w := range spans[1:] {
		s.tiers[i], all = all[:w.points:w.points], all[w.points:]
	}
	m := a.minute.Load()
	s.minutes[m%minuteSlots].minute.Store(m)
	s.folded = m - 1
	a.live = append(a.live, s)
	return s
}

// keep makes list (and the gateway's own) the series the ticker keeps:
// a series the config dropped stops being folded, and is freed when the
// last snapshot using it is.
func (a *analytics) keep(list []*series) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.live = append(list[:len(list):len(list)], a.all)
}

// run ticks until stop is closed.
func (a *analytics) run(stop <-chan struct{}) {
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			a.tick()
		}
	}
}

// tick publishes the clock's minute when it has moved, its bucket
// cleared first in every series, and folds the minutes the request path
// has left: all but the current and the one before, which a request that
// read the minute just before it moved may still add to.
func (a *analytics) tick() {
	m := a.clock() / minuteNs
	a.mu.Lock()
	defer a.mu.Unlock()
	if m > a.minute.Load() {
		for _, s := range a.live {
			b := &s.minutes[m%minuteSlots]
			if held := b.minute.Load(); held > s.folded {
				// The clock jumped (a test, a VM resumed): keep what
				// the bucket held.
				s.fold(held)
			}
			b.reset(m)
		}
		a.minute.Store(m)
	}
	cur := a.minute.Load()
	for _, s := range a.live {
		s.fold(cur - 2)
	}
}

// perMinutes is the number of minutes in a bucket of tier i.
func perMinutes(i int) int64 { return int64(spans[i+1].step / time.Minute) }

// fold adds the minutes up to last not folded yet into the tiers, each
// once. Called with a.mu held.
func (s *series) fold(last int64) {
	for i := range s.minutes {
		b := &s.minutes[i]
		m := b.minute.Load()
		if m <= s.folded || m > last {
			continue
		}
		t := b.load()
		for i, tier := range s.tiers {
			j := m / perMinutes(i)
			sl := &tier[j%int64(len(tier))]
			if sl.index != j {
				*sl = slot{index: j}
			}
			sl.add(&t)
		}
	}
	s.folded = max(s.folded, last)
}

// points returns the tallies of w's buckets, oldest first, the last the
// current one, at the published minute. Called with a.mu held.
// A nil series (a target the config does not declare) has only zeros.
func (s *series) points(w *span) []tally {
	out := make([]tally, w.points)
	if s != nil {
		s.addPoints(w, out)
	}
	return out
}

// addPoints adds s's tallies of w's buckets into out (w.points long).
func (s *series) addPoints(w *span, out []tally) {
	cur := s.a.minute.Load()
	n := int64(w.points)
	if w.tier == 0 {
		for k := range n {
			m := cur - n + 1 + k
			if b := &s.minutes[m%minuteSlots]; b.minute.Load() == m {
				t := b.load()
				out[k].add(&t)
			}
		}
		return
	}
	i := w.tier - 1
	tier, per := s.tiers[i], perMinutes(i)
	first := cur/per - n + 1
	for k := range n {
		if sl := &tier[(first+k)%n]; sl.index == first+k {
			out[k].add(&sl.tally)
		}
	}
	// The minutes not folded yet belong to the last bucket or two.
	for m := max(s.folded+1, cur-minuteSlots+1); m <= cur; m++ {
		if b := &s.minutes[m%minuteSlots]; b.minute.Load() == m && m/per >= first {
			t := b.load()
			out[m/per-first].add(&t)
		}
	}
}

// sum is the usage over all of w.
func (s *series) sum(w *span) tally {
	var t tally
	for _, p := range s.points(w) {
		t.add(&p)
	}
	return t
}

// startOf is the unix second bucket k of w starts, at the published minute.
func (a *analytics) startOf(w *span, k int) int64 {
	per := int64(w.step / time.Minute)
	first := a.minute.Load()/per - int64(w.points) + 1
	return (first + int64(k)) * int64(w.step/time.Second)
}
