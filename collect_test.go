package main

import (
	"runtime"
	"runtime/debug"
	"testing"
)

// TestCollectorForcesOnlyPastGarbage drives a collector over readings: it
// collects once collectAfter bytes were allocated with no collection in
// between, and never when the runtime collected or little was allocated.
func TestCollectorForcesOnlyPastGarbage(t *testing.T) {
	var now heapReading
	forced := 0
	c := &collector{
		read:    func() heapReading { return now },
		collect: func() { forced++; now.cycles++ },
	}
	for _, s := range []struct {
		name    string
		allocs  uint64 // allocated since the last step
		cycled  bool   // the runtime collected since the last step
		live    uint64 // the live heap
		off     bool   // GOGC turns collection off
		collect bool
	}{
		{"nothing allocated", 0, false, 0, false, false},
		{"less than collectAfter", collectAfter - 1, false, 0, false, false},
		{"collectAfter in all, over two ticks", 1, false, 0, false, true},
		{"right after the forced collection", collectAfter / 2, false, 0, false, false},
		{"the runtime collected on its own", collectAfter * 4, true, 0, false, false},
		{"garbage since the runtime's collection", collectAfter, false, 0, false, true},
		{"a big allocation the runtime collected", collectAfter * 100, true, 0, false, false},
		{"less than an eighth of a big live heap", collectAfter * 3, false, collectAfter * 32, false, false},
		{"an eighth of it", collectAfter, false, collectAfter * 32, false, true},
		{"GOGC=off", collectAfter * 8, false, 0, true, false},
	} {
		now.live, now.off = s.live, s.off
		now.allocs += s.allocs
		if s.cycled {
			now.cycles++
		}
		before := forced
		if got := c.tick(); got != s.collect || (forced > before) != s.collect {
			t.Errorf("%s: tick = %v (collected %d), want %v", s.name, got, forced-before, s.collect)
		}
	}
}

// TestCollectorCollects runs a collector on the real runtime, with the
// runtime's own collections as good as off (a huge GOGC) so that only the
// collector's happen, and then with collection off.
func TestCollectorCollects(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(1 << 30))
	read := runtimeHeap()
	c := &collector{read: read, collect: runtime.GC}
	c.last = read()
	if c.tick() {
		t.Fatal("collected with nothing allocated")
	}
	garbage := make([][]byte, 0, 64)
	for range 64 {
		garbage = append(garbage, make([]byte, 64<<10))
	}
	sink = garbage
	sink = nil
	before := read().cycles
	if !c.tick() {
		t.Fatalf("allocated %d bytes and did not collect", 64*64<<10)
	}
	if after := read().cycles; after <= before {
		t.Errorf("gc cycles %d → %d", before, after)
	}
	if c.tick() {
		t.Error("collected again with nothing allocated since")
	}
	debug.SetGCPercent(-1)
	garbage = garbage[:0]
	for range 64 {
		garbage = append(garbage, make([]byte, 64<<10))
	}
	sink = garbage
	sink = nil
	if c.tick() {
		t.Error("collected with GOGC off")
	}
}

var sink [][]byte
