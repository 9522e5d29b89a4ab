package engine

import (
	"sync/atomic"
	"time"
)

// Why a key is cooling down.
const (
	// coolFailure follows a 5xx, timeout or connection error.
	coolFailure int32 = iota
	// coolRate follows a 429 or an upstream saying the key has nothing
	// left; it makes "everything is cooling" a 429 rather than a 503.
	coolRate
	// coolAuth follows a 401/403: the key is held invalid.
	coolAuth
)

// cooldown is the in-memory Cooldown: the time until which a key is
// skipped, and why.
type cooldown struct {
	until  atomic.Int64 // unix nanoseconds
	reason atomic.Int32
}

// Active implements Cooldown.
func (c *cooldown) Active(now int64) (int64, int32, bool) {
	u := c.until.Load()
	return u, c.reason.Load(), u > now
}

// Lift implements Cooldown.
func (c *cooldown) Lift(until int64) {
	c.until.CompareAndSwap(until, 0)
}

// Start implements Cooldown.
func (c *cooldown) Start(now int64, d time.Duration, reason int32) {
	end := now + int64(d)
	for {
		cur := c.until.Load()
		if cur >= end {
			return
		}
		if c.until.CompareAndSwap(cur, end) {
			c.reason.Store(reason)
			return
		}
	}
}
