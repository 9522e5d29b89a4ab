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
	// sum is the count of the buckets of epochs top-buckets to top, kept
	// as buckets change and leave, so that reading the usage is no pass
	// over the buckets; -1 while it would pass math.MaxInt64, when used
	// adds the buckets up, saturating. No stamp is past top.
	top, sum int64
	// No slot holds a stamp from gapFrom to gapTo, excluded: epochs a
	// walk of freeAt found empty, which the next one skips. Under a
	// steady load younger than the window, that is every walk's start,
	// up to a whole window of empty buckets per request otherwise.
	gapFrom, gapTo int64
}

func newWindow(period time.Duration) window {
	return window{width: int64(period) / buckets}
}

// used returns the usage counted at now.
func (w *window) used(now int64) int64 {
	cur := now / w.width
	if cur >= w.top {
		w.advance(cur)
		if w.sum >= 0 {
			return w.sum
		}
	}
	var n int64
	for i := range w.count {
		if w.stamp[i] >= cur-buckets && w.stamp[i] <= cur {
			n = satAdd(n, w.count[i])
		}
	}
	return n
}

// advance moves top on to epoch cur, taking the buckets that left out of
// the sum: one a bucket width under steady use.
func (w *window) advance(cur int64) {
	if cur <= w.top {
		return
	}
	if w.sum < 0 {
		w.top = cur
		w.resum()
		return
	}
	e := max(w.top-buckets, 0)
	for i := e % (buckets + 1); e <= min(w.top, cur-buckets-1); e++ {
		if w.stamp[i] == e {
			w.sum -= w.count[i]
		}
		if i++; i > buckets {
			i = 0
		}
	}
	w.top = cur
}

// resum adds up the sum again, -1 while it would overflow.
func (w *window) resum() {
	w.sum = 0
	for i := range w.count {
		if w.counted(w.stamp[i]) {
			w.grow(w.count[i])
		}
	}
}

// counted reports whether bucket epoch e counts in the sum.
func (w *window) counted(e int64) bool { return e >= w.top-buckets && e <= w.top }

// grow adds n, not negative, to the sum, unless it is -1 or would
// overflow, which makes it -1.
func (w *window) grow(n int64) {
	if w.sum >= 0 {
		if n > math.MaxInt64-w.sum {
			w.sum = -1
			return
		}
		w.sum += n
	}
}

// set makes slot i hold n for bucket epoch e, keeping the sum.
func (w *window) set(i, e, n int64) {
	if w.sum >= 0 && w.counted(w.stamp[i]) {
		w.sum -= w.count[i]
	}
	w.stamp[i], w.count[i] = e, n
	if e >= w.gapFrom && e < w.gapTo {
		w.gapTo = e
	}
	if w.counted(e) {
		w.grow(n)
	}
}

// add counts n (which may be negative, to settle a reservation) at now.
func (w *window) add(now, n int64) {
	e := now / w.width
	w.advance(e)
	i := e % (buckets + 1)
	c := w.count[i]
	if w.stamp[i] != e {
		c = 0
	}
	w.set(i, e, max(0, satAdd(c, n)))
}

// addAt settles n into the bucket of an earlier time at, or into the
// current one if that bucket has left the window.
func (w *window) addAt(at, now, n int64) {
	e := at / w.width
	i := e % (buckets + 1)
	if w.stamp[i] == e && e >= now/w.width-buckets {
		w.set(i, e, max(0, satAdd(w.count[i], n)))
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
	// The slots are walked in order, without a division per bucket,
	// from past the empty epochs the last walk found.
	from := cur - buckets
	e := from
	if e >= w.gapFrom && e < w.gapTo {
		e = w.gapTo
	}
	w.gapFrom, w.gapTo = from, cur+1
	for i := e % (buckets + 1); e <= cur; e++ {
		if w.stamp[i] == e {
			if w.gapTo > e {
				w.gapTo = e
			}
			used -= w.count[i]
			if satAdd(used, n) <= limit {
				return (e + buckets + 1) * w.width
			}
		}
		if i++; i > buckets {
			i = 0
		}
	}
	return (cur + buckets + 1) * w.width
}
