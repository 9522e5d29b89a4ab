// Package deadline makes a connection's deadlines a coarse watchdog.
// fasthttp moves a connection's deadlines several times per request (the
// server: the idle and read deadlines, then the write deadline; the
// client: the write and read deadlines of each exchange), and each move
// modifies a runtime timer (about 300 ns, plus churn in the timer heap).
// A Conn lets the deadline in force stand for a new one that falls
// within its slack before it, so that a busy connection moves its
// deadlines about once a second rather than on every request.
package deadline

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// MaxSlack bounds how late a deadline may fire. A deadline t is set to
// t+s, s the smaller of MaxSlack and an eighth of the time from its
// setting to t, and a later deadline in [t, t+s] is taken as served by
// it. An eighth keeps a short timeout (a test's 100 ms) within 12.5 % of
// its value; a second is invisible against the tens of seconds a
// request's timeouts are, and lets a connection that serves a request a
// second or more keep the deadlines it has.
const MaxSlack = time.Second

// Conn is a net.Conn whose deadlines are coalesced: a new deadline t is
// skipped when the deadline in force, set for some t0 to t0+s, has
// t0 <= t <= t0+s; otherwise it is set to t+s for its own slack s. The
// zero time clears. So a deadline fires between t and t plus an eighth of
// the timeout it was set with (at most MaxSlack), and never earlier. The
// skip reads no clock: a clock read costs a third of what it saves.
// Its zero value (with Conn set) is a connection without deadlines, as a
// new one is. Every deadline of the connection must be set through it.
type Conn struct {
	net.Conn
	read, write side
}

// side is one direction's deadline.
type side struct {
	// window is the range of deadlines the one in force serves, as
	// window packs it; 0 when none is set. It is written under mu,
	// after the connection's deadline, and read without it: a set that
	// reads the old window is ordered before the one writing it.
	window atomic.Uint64
	mu     sync.Mutex
}

// A window is [from, to) in units of 2^16 ns (65.5 µs) since clockStart,
// rounded inwards so that it holds no deadline it does not serve, packed
// as setBit | to<<spanBits | to-from. A span is at most MaxSlack, under
// 2^14 units; to, at most 2^63 ns (a Duration's range) in units, fits
// its 49 bits. 0 is no deadline;
// setBit alone a deadline whose window is empty.
const (
	unitBits = 16
	unit     = 1 << unitBits
	spanBits = 14
	spanMask = 1<<spanBits - 1
	setBit   = 1 << 63
)

// clockStart is the origin of the monotonic times a side keeps.
var clockStart = time.Now()

// SetReadDeadline coalesces the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.set(&c.read, t) }

// SetWriteDeadline coalesces the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.set(&c.write, t) }

// SetDeadline coalesces both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// set makes t the deadline of side s, unless the one in force serves it.
func (c *Conn) set(s *side, t time.Time) error {
	if serves(s.window.Load(), t) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Another set may have moved it meanwhile.
	w := s.window.Load()
	if serves(w, t) {
		return nil
	}
	if !t.IsZero() {
		slack := slackOf(t, time.Since(clockStart))
		t = t.Add(slack)
		w = windowOf(t, slack)
	} else {
		w = 0
	}
	var err error
	if s == &c.read {
		err = c.Conn.SetReadDeadline(t)
	} else {
		err = c.Conn.SetWriteDeadline(t)
	}
	if err != nil {
		return err
	}
	s.window.Store(w)
	return nil
}

// slackOf returns the slack of a deadline t set at now (monotonic time
// since clockStart): an eighth of the time to t, at most MaxSlack, none
// for a deadline already past.
func slackOf(t time.Time, now time.Duration) time.Duration {
	return min(max((t.Sub(clockStart)-now)/8, 0), MaxSlack)
}

// serves reports whether the deadline in force, of window w, serves a
// new deadline t: t is in the window, or both are none.
func serves(w uint64, t time.Time) bool {
	if t.IsZero() || w == 0 {
		return t.IsZero() && w == 0
	}
	ns := t.Sub(clockStart)
	if ns < 0 {
		return false
	}
	u := uint64(ns) >> unitBits
	to := (w &^ setBit) >> spanBits
	return u+(w&spanMask) >= to && u < to
}

// windowOf returns the window of a deadline set to end with slack: from
// end-slack rounded up to end rounded down, the end excluded, so that
// every t it holds has end-slack <= t < end.
func windowOf(end time.Time, slack time.Duration) uint64 {
	e := end.Sub(clockStart)
	from := (e - slack + unit - 1) >> unitBits
	to := e >> unitBits
	if e-slack < 0 || to <= from {
		// Before the origin, or empty.
		return setBit
	}
	return setBit | uint64(to)<<spanBits | uint64(to-from)
}
