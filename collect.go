package main

import (
	"context"
	"runtime"
	"runtime/metrics"
	"time"
)

// A gateway allocates little per request (nothing for a plain chat
// answer, under 1 KiB for a stream), so at a steady load the Go collector
// runs only every minute or two: the heap fills with garbage up to twice
// its live size before the first collection, and RSS climbs for minutes
// before it levels off. Collecting every collectEvery once collectAfter
// bytes were allocated since the last collection keeps the garbage to
// what one interval allocates, so RSS is level from the first interval
// on. A collection of the gateway's heap costs a few milliseconds of CPU
// (7-10 ms for a 6 MB live heap here, 0.1% of a core every 10 s), and
// none is forced when the runtime collected on its own in the interval or
// nothing was allocated.
const (
	collectEvery = 10 * time.Second
	collectAfter = 1 << 20
)

// heapReading is what the collector reads of the runtime: bytes allocated
// since the process began, collections completed, the live heap at the
// last one, and whether GOGC turns the collector off (GOGC=off or
// negative, or debug.SetGCPercent(-1)).
type heapReading struct {
	allocs, cycles, live uint64
	off                  bool
}

// collector forces a collection when the runtime let garbage build up.
type collector struct {
	read    func() heapReading
	collect func()
	// last is the reading after the last collection seen.
	last heapReading
}

// tick collects if at least collectAfter bytes, and an eighth of the live
// heap, were allocated since the last collection, the runtime has not
// collected since the last tick and GOGC does not turn collection off;
// it reports whether it did.
func (c *collector) tick() bool {
	now := c.read()
	if now.off {
		return false
	}
	if now.cycles != c.last.cycles {
		// The runtime collected in the interval: its garbage counts
		// from here.
		c.last = now
		return false
	}
	if now.allocs-c.last.allocs < max(collectAfter, now.live/8) {
		return false
	}
	c.collect()
	c.last = c.read()
	return true
}

// runtimeHeap reads the collector's inputs from runtime/metrics.
func runtimeHeap() func() heapReading {
	samples := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/live:bytes"}, {Name: "/gc/gogc:percent"}}
	return func() heapReading {
		metrics.Read(samples)
		return heapReading{allocs: samples[0].Value.Uint64(), cycles: samples[1].Value.Uint64(),
			live: samples[2].Value.Uint64(), off: int64(samples[3].Value.Uint64()) < 0}
	}
}

// collectGarbage ticks a collector every collectEvery until ctx is done.
func collectGarbage(ctx context.Context) {
	c := &collector{read: runtimeHeap(), collect: runtime.GC}
	c.last = c.read()
	t := time.NewTicker(collectEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.tick()
		}
	}
}
