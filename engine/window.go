package engine

import (
	"math"
	"time"
)

// satAdd adds two counts, stopping at the int64 bounds instead of
// wrapping: a hostile count must never turn a full window into an empty
// one.
func satAdd(a, b int64) int64 {
	c := a + b
	switch {
	case a > 0 && b > 0 && c < 0:
		return math.MaxInt64
	case a < 0 && b < 0 && c >= 0:
		return math.MinInt64
	}
	return c
}

// buckets is how finely a window is cut. The count is conservative: the
// oldest bucket counts whole while it overlaps the window, so a cap is
// never exceeded, at the price of up to 1/buckets of it going unused.
const buckets = 60

// window counts usage over a sliding period, in buckets. It is not safe
// for concurrent use; its owner locks.
type window struct {
	width int64 // bucket width, ns
	// slot i holds the count of bucket epoch stamp[i]; a bucket is
	// epoch = t / width.
	count [buckets + 1]int64
	stamp [buckets + 1]int64
}

func newWindow(period time.Duration) window {
	return window{width: int64(period) / buckets}
}

// used returns the usage counted at now.
func (w *window) used(now int64) int64 {
	cur := now / w.width
	var n int64
	for i := range w.count {
		if w.stamp[i] >= cur-buckets && w.stamp[i] <= cur {
			n = satAdd(n, w.count[i])
		}
	}
	return n
}

// add counts n (which may be negative, to settle a reservation) at now.
func (w *window) add(now, n int64) {
	e := now / w.width
	i := e % (buckets + 1)
	if w.stamp[i] != e {
		w.stamp[i], w.count[i] = e, 0
	}
	w.count[i] = max(0, satAdd(w.count[i], n))
}

// addAt settles n into the bucket of an earlier time at, or into the
// current one if that bucket has left the window.
func (w *window) addAt(at, now, n int64) {
	e := at / w.width
	i := e % (buckets + 1)
	if w.stamp[i] == e && e >= now/w.width-buckets {
		w.count[i] = max(0, satAdd(w.count[i], n))
		return
	}
	if n > 0 {
		w.add(now, n)
	}
}

// freeAt returns the earliest time at which usage will have fallen to
// at most limit-n, so that n more fit; now if they fit already. When n
// alone is over limit it can never fit, and freeAt returns -1.
func (w *window) freeAt(now, n, limit int64) int64 {
	if n > limit {
		return -1
	}
	used := w.used(now)
	if satAdd(used, n) <= limit {
		return now
	}
	cur := now / w.width
	// Buckets leave the window oldest first: bucket e stops counting at
	// the start of epoch e+buckets+1.
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
