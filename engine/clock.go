package engine

import "time"

// clockBase anchors the engine's clock at the process start.
var clockBase = time.Now()

// nanotime is the engine's time, in unix nanoseconds: the wall clock at
// the process start, advanced by the monotonic clock since. Windows,
// cooldowns, breakers and sticky sessions all count in it, so a step of
// the wall clock (NTP, a VM resumed) neither stretches nor cuts them, and
// a value still reads as a date for /api/stats and explain.
func nanotime() int64 { return clockBase.UnixNano() + int64(time.Since(clockBase)) }

// clockAt is the engine's time at t, a reading of time.Now, without
// reading the clock again.
func clockAt(t time.Time) int64 { return clockBase.UnixNano() + int64(t.Sub(clockBase)) }
