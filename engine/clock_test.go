package engine

import (
	"testing"
	"time"
)

// TestClockAt: a time.Now reading stands for nanotime at that moment, so
// the request path can read the clock once and use it for both.
func TestClockAt(t *testing.T) {
	for range 1000 {
		before := nanotime()
		at := clockAt(time.Now())
		after := nanotime()
		if at < before || at > after {
			t.Fatalf("clockAt = %d, not within the nanotime readings %d..%d around it", at, before, after)
		}
	}
}
