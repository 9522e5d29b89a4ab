package engine

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// usedByPass is what window.used returned before it kept a running sum:
// the buckets in the window at now added up, saturating.
func usedByPass(w *window, now int64) int64 {
	cur := now / w.width
	var n int64
	for i := range w.count {
		if w.stamp[i] >= cur-buckets && w.stamp[i] <= cur {
			n = satAdd(n, w.count[i])
		}
	}
	return n
}

// freeAtByPass is window.freeAt as it was before the running sum.
func freeAtByPass(w *window, now, n, limit int64) int64 {
	if n > limit {
		return -1
	}
	used := usedByPass(w, now)
	if satAdd(used, n) <= limit {
		return now
	}
	cur := now / w.width
	for e := cur - buckets; e <= cur; e++ {
		i := e % (buckets + 1)
		if w.stamp[i] == e {
			used -= w.count[i]
		}
		if satAdd(used, n) <= limit {
			return (e + buckets + 1) * w.width
		}
	}
	return (cur + buckets + 1) * w.width
}

// TestWindowRunningSum: the running sum reads as the pass over the
// buckets did, and freeAt answers as it did, whatever the order of times (a caller that read its clock
// before another's), the gaps between them and the sizes counted.
func TestWindowRunningSum(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 7))
		w := newWindow(time.Minute)
		now := int64(3600e9) + rng.Int64N(int64(time.Minute))
		for step := range 2000 {
			switch r := rng.IntN(100); {
			case r < 60:
				now += rng.Int64N(int64(2 * time.Second))
			case r < 70:
				now -= rng.Int64N(int64(5 * time.Second))
			case r < 73:
				now += rng.Int64N(int64(3 * time.Minute))
			}
			at := now - rng.Int64N(int64(90*time.Second))
			n := rng.Int64N(1000) - 200
			if seed%10 == 0 && rng.IntN(50) == 0 {
				n = math.MaxInt64 - rng.Int64N(3)
			}
			switch rng.IntN(3) {
			case 0:
				w.add(now, n)
			case 1:
				w.addAt(at, now, n)
			}
			for _, q := range []int64{now, at, now + rng.Int64N(int64(2*time.Minute))} {
				want := usedByPass(&w, q)
				if got := w.used(q); got != want {
					t.Fatalf("seed %d step %d: used at %d = %d, the buckets add up to %d", seed, step, q, got, want)
				}
				limit := rng.Int64N(max(1, 2*want+10))
				n := rng.Int64N(limit + 2)
				if got, want := w.freeAt(q, n, limit), freeAtByPass(&w, q, n, limit); got != want {
					t.Fatalf("seed %d step %d: freeAt %d of %d at %d = %d, want %d", seed, step, n, limit, q, got, want)
				}
			}
		}
	}
}
