package engine

import (
	"sync/atomic"
	"time"

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

// quantile estimates a quantile as the upper bound of its bucket.
func (h *histogram) quantile(q float64) time.Duration {
	counts, total, _ := h.snapshot()
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

// counters is the usage of one target, gateway key or route. Every field
// is an atomic, so recording costs no lock.
type counters struct {
	requests, successes, fallbacks atomic.Int64
	// errors counts failed upstream attempts by class (targets) or failed
	// requests (keys, routes: by status class index 4 or 5 below).
	errors             [numClasses]atomic.Int64
	prompt, completion atomic.Int64
	latency, ttfb      histogram
}

func (c *counters) tokens(u adapters.Usage) {
	if u.Known {
		c.prompt.Add(int64(u.Prompt))
		c.completion.Add(int64(u.Completion))
	}
}

// statusCounts counts answers by status class: index = status / 100.
type statusCounts [6]atomic.Int64

func (s *statusCounts) add(status int) {
	if i := status / 100; i >= 1 && i < len(s) {
		s[i].Add(1)
	}
}

// routeState is what a route (or "default", no route) has served.
type routeState struct {
	codes   statusCounts
	latency histogram
}

// keyStats is a gateway key's limiter and usage.
type keyStats struct {
	lim   Limiter
	codes statusCounts
	use   counters
}

// providerStats counts a provider's passthrough traffic.
type providerStats struct {
	codes   statusCounts
	latency histogram
}
