package engine

import (
	"sync/atomic"
	"time"
)

// cooldown is the time until which a key is skipped, and whether a 429
// caused it (which makes "everything is cooling" a 429 rather than a 503).
type cooldown struct {
	until atomic.Int64 // unix nanoseconds
	rate  atomic.Bool  // the last cooldown came from a 429
}

// active reports whether the cooldown runs at now, and until when.
func (c *cooldown) active(now int64) (int64, bool) {
	u := c.until.Load()
	return u, u > now
}

// start begins a cooldown of d from now. A longer running cooldown is kept.
func (c *cooldown) start(now int64, d time.Duration, rateLimited bool) {
	end := now + int64(d)
	for {
		cur := c.until.Load()
		if cur >= end {
			return
		}
		if c.until.CompareAndSwap(cur, end) {
			c.rate.Store(rateLimited)
			return
		}
	}
}
