package engine

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/cpu"

	"gateway/adapters"
)

// latencyBounds are the histogram bucket upper bounds, Prometheus style.
var latencyBounds = [...]time.Duration{
	5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second,
	2500 * time.Millisecond, 5 * time.Second, 10 * time.Second, 30 * time.Second, 60 * time.Second,
}

// histogram counts durations into latencyBounds, lock-free.
type histogram struct {
	counts [len(latencyBounds) + 1]atomic.Int64
	sum    atomic.Int64 // ns
}

func (h *histogram) observe(d time.Duration) {
	i := 0
	for i < len(latencyBounds) && d > latencyBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(int64(d))
}

// snapshot returns the per-bucket counts, their total and the sum.
func (h *histogram) snapshot() (counts [len(latencyBounds) + 1]int64, total int64, sum time.Duration) {
	for i := range h.counts {
		counts[i] = h.counts[i].Load()
		total += counts[i]
	}
	return counts, total, time.Duration(h.sum.Load())
}

// quantileOf estimates a quantile of histogram counts summing to total,
// as the upper bound of its bucket.
func quantileOf(counts *[len(latencyBounds) + 1]int64, total int64, q float64) time.Duration {
	if total == 0 {
		return 0
	}
	rank := int64(q*float64(total)+0.5) - 1
	var seen int64
	for i, c := range counts {
		seen += c
		if seen > rank {
			if i == len(latencyBounds) {
				return latencyBounds[len(latencyBounds)-1]
			}
			return latencyBounds[i]
		}
	}
	return latencyBounds[len(latencyBounds)-1]
}

// numClasses is the number of adapters.Class values.
const numClasses = int(adapters.Unsupported) + 1

// usage is what a target, a gateway key or a bucket of a series counts.
// Every field is an atomic, so recording costs no lock. Its requests are
// not counted apart: each is a success or an error (an interrupted one
// moves from one to the other), or in a status class (see
// statusCounts.add), summed when read.
type usage struct {
	successes, fallbacks atomic.Int64
	// errors counts failed upstream attempts by class.
	errors             [numClasses]atomic.Int64
	prompt, completion atomic.Int64
	// latency is a target's time to first byte; in a bucket of a key,
	// route or provider, the answer's latency.
	latency histogram
}

// load reads the usage.
func (u *usage) load() tally {
	t := tally{successes: u.successes.Load(), fallbacks: u.fallbacks.Load(),
		prompt: u.prompt.Load(), completion: u.completion.Load()}
	t.requests = t.successes
	for i := range t.errors {
		t.errors[i] = u.errors[i].Load()
		t.requests += t.errors[i]
	}
	var sum time.Duration
	t.latency, _, sum = u.latency.snapshot()
	t.latencySum = int64(sum)
	return t
}

// counters is the usage of one target or gateway key since the start,
// and over time in its series.
type counters struct {
	usage
	// The request that counts reads series: off the line the counts
	// it writes are on, it is not fetched again after every request
	// another core counted.
	_ cpu.CacheLinePad
	// series is nil for a target the config does not declare. A build
	// may set it while requests of the snapshot before read it.
	series atomic.Pointer[series]
}

// won counts a successful attempt, its time to first byte, and whether
// attempts before it failed.
func (c *counters) won(ttfb time.Duration, fellBack bool) {
	c.successes.Add(1)
	c.latency.observe(ttfb)
	if fellBack {
		c.fallbacks.Add(1)
	}
	if b := c.series.Load().at(); b != nil {
		b.successes.Add(1)
		b.latency.observe(ttfb)
		if fellBack {
			b.fallbacks.Add(1)
		}
	}
}

// failed counts a failed attempt.
func (c *counters) failed(class adapters.Class) {
	c.errors[class].Add(1)
	if b := c.series.Load().at(); b != nil {
		b.errors[class].Add(1)
	}
}

// interrupted turns a success counted into a failure of class: a stream
// the upstream cut after it started.
func (c *counters) interrupted(class adapters.Class) {
	c.successes.Add(-1)
	c.errors[class].Add(1)
	if b := c.series.Load().at(); b != nil {
		b.successes.Add(-1)
		b.errors[class].Add(1)
	}
}

func (c *counters) tokens(u adapters.Usage) {
	if u.Known {
		c.prompt.Add(int64(u.Prompt))
		c.completion.Add(int64(u.Completion))
		c.series.Load().at().tokens(u)
	}
}

// tokens adds known usage to the bucket, if any.
func (b *bucket) tokens(u adapters.Usage) {
	if b != nil && u.Known {
		b.prompt.Add(int64(u.Prompt))
		b.completion.Add(int64(u.Completion))
	}
}

// answered counts an answer to a client into the bucket, if any: its
// status class, latency, and whether it took a fallback. Its requests
// and successes are told by its status classes when read (see
// statusCounts.add).
func (b *bucket) answered(status int, lat time.Duration, fellBack bool) {
	if b == nil {
		return
	}
	b.codes.add(status, &b.usage)
	if fellBack {
		b.fallbacks.Add(1)
	}
	b.latency.observe(lat)
}

// statusCounts counts answers by status class: index = status / 100,
// and 0 for a status of 600 or more, which no report lists.
type statusCounts [6]atomic.Int64

// add counts an answer of status. Every answer is in exactly one class
// and those of 1xx and 2xx are successes, so the answers counted and
// their successes are not counted apart (one atomic add where there were
// three): addAnswers adds them to a tally read. A status below 100, a
// success in no class, is counted in u's successes instead (which
// usage.load counts as a request too), u nil for answers whose successes
// and requests no one reads.
func (s *statusCounts) add(status int, u *usage) {
	i := status / 100
	switch {
	case i >= 1 && i < len(s):
	case status < 100:
		if u != nil {
			u.successes.Add(1)
		}
		return
	default:
		i = 0
	}
	s[i].Add(1)
}

// addAnswers adds to t the answers its status classes count, and their
// successes.
func (t *tally) addAnswers() {
	for _, n := range t.codes {
		t.requests += n
	}
	t.successes += t.codes[1] + t.codes[2]
}

// answers counts what one route or provider (passthrough) answered,
// since the start and over time.
type answers struct {
	codes   statusCounts
	latency histogram
	_       cpu.CacheLinePad // see counters
	series  atomic.Pointer[series]
}

// answered counts one answer.
func (a *answers) answered(status int, lat time.Duration, fellBack bool) {
	a.codes.add(status, nil)
	a.latency.observe(lat)
	a.series.Load().at().answered(status, lat, fellBack)
}

// load reads the answers since the start.
func (a *answers) load() tally {
	t := tally{codes: a.codes.load()}
	var sum time.Duration
	t.latency, _, sum = a.latency.snapshot()
	t.latencySum = int64(sum)
	return t
}

func (a *answers) timeline() *series { return a.series.Load() }

// routeState is what a route (or "default", no route) has served.
type routeState struct{ answers }

// providerStats counts a provider's passthrough traffic.
type providerStats struct{ answers }

// keyStats is a gateway key's limiter and usage.
type keyStats struct {
	lim   Limiter
	_     cpu.CacheLinePad // see counters
	codes statusCounts
	use   counters
}

// answered counts one answer to the key.
func (k *keyStats) answered(status int, lat time.Duration, fellBack bool) {
	k.codes.add(status, &k.use.usage)
	k.use.series.Load().at().answered(status, lat, fellBack)
}

// load reads the key's usage since the start.
func (k *keyStats) load() tally {
	t := k.use.load()
	t.codes = k.codes.load()
	t.addAnswers()
	return t
}

func (k *keyStats) timeline() *series { return k.use.series.Load() }
