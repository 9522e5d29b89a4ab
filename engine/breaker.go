package engine

import "sync/atomic"

// Breaker states.
const (
	breakerClosed int32 = iota
	breakerOpen
	breakerHalfOpen
)

// breaker is the in-memory Breaker, the circuit breaker of one (provider, model). Closed, it lets
// every call through and counts consecutive failures; at the threshold it
// opens for a while, refusing calls; then it lets one probe through
// (half-open), which closes it on success or opens it again on failure.
// A closed breaker costs one atomic load per call.
type breaker struct {
	state     atomic.Int32
	fails     atomic.Int32
	openUntil atomic.Int64
}

// Allow reports whether a call may go now, and if not, until when the
// breaker refuses.
func (b *breaker) Allow(now int64) (bool, int64) {
	switch b.state.Load() {
	case breakerClosed:
		return true, 0
	case breakerOpen:
		until := b.openUntil.Load()
		if now < until {
			return false, until
		}
		// The first caller after open_for becomes the probe.
		if b.state.CompareAndSwap(breakerOpen, breakerHalfOpen) {
			return true, 0
		}
		return false, until
	}
	// Half-open: a probe is out; the others wait for its verdict.
	return false, b.openUntil.Load()
}

// Success records a call that reached a working upstream.
func (b *breaker) Success() {
	if b.fails.Load() != 0 {
		b.fails.Store(0)
	}
	if b.state.Load() != breakerClosed {
		b.state.Store(breakerClosed)
	}
}

// Failure records a call that failed in a way that says the upstream is
// unwell, opening the breaker at threshold consecutive failures.
func (b *breaker) Failure(now int64, threshold int32, openFor int64) {
	if b.state.Load() == breakerHalfOpen {
		b.openUntil.Store(now + openFor)
		b.state.Store(breakerOpen)
		return
	}
	if b.fails.Add(1) >= threshold && b.state.Load() == breakerClosed {
		// The deadline goes first, so no caller sees open with a stale one.
		b.openUntil.Store(now + openFor)
		if b.state.CompareAndSwap(breakerClosed, breakerOpen) {
			b.fails.Store(0)
		}
	}
}

// Refuses reports, without taking the probe, whether the breaker would
// refuse a call at now, and until when.
func (b *breaker) Refuses(now int64) (bool, int64) {
	switch b.state.Load() {
	case breakerClosed:
		return false, 0
	case breakerOpen:
		until := b.openUntil.Load()
		return now < until, until
	}
	return true, b.openUntil.Load()
}

// State implements Breaker.
func (b *breaker) State(now int64) string {
	switch b.state.Load() {
	case breakerOpen:
		if refuses, _ := b.Refuses(now); refuses {
			return "open"
		}
		return "half_open"
	case breakerHalfOpen:
		return "half_open"
	}
	return "closed"
}
