package adapters

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// watchdog ends a stream whose upstream stays silent too long, the same
// way for every protocol. Until the first event with data comes, one
// deadline runs from the response headers on: first_byte_timeout, which
// SSE comments (": keep-alive", ": PROCESSING") do not end, since they
// carry nothing. After that the stream is idle when no event at all comes
// from the upstream for idle_timeout: a ping, a comment or an event the
// adapter drops is activity too. Only the waits for the upstream count,
// not the time the gateway spends between reads (relaying to a slow
// client).
//
// A read does not move the timer, which would cost two timer
// modifications an event: it notes when it began, with one clock reading,
// and the timer, left running, finds on firing whether the read under way
// has waited idle_timeout, or sets itself again for what is left (a whole
// idle_timeout between reads).
type watchdog struct {
	// timer, begun and stalled are what each read looks at, first.
	timer   *time.Timer
	begun   bool
	stalled atomic.Bool
	// reading is when the read under way began, as time since origin
	// plus one, 0 between reads; origin is when the watch began.
	reading   atomic.Int64
	origin    time.Time
	idle      time.Duration
	firstByte time.Duration
	// idling is begun for the timer's goroutine, once idle_timeout
	// applies.
	idling atomic.Bool
	// mu orders the timer's own re-arming and cut against stop, so that a
	// stopped watchdog neither fires again nor cuts a released response.
	mu      sync.Mutex
	stopped bool
}

// watch arms the deadlines over resp's body; zero durations leave only
// the provider's timeout.
func (w *watchdog) watch(resp *fasthttp.Response, firstByte, idle time.Duration) {
	w.firstByte, w.idle = firstByte, idle
	if firstByte <= 0 && idle <= 0 {
		return
	}
	w.origin = time.Now()
	w.timer = time.AfterFunc(time.Hour, func() { w.expire(resp) })
	w.timer.Stop()
	if firstByte > 0 {
		w.timer.Reset(firstByte)
	}
}

// expire runs when the timer fires. Before the first event with data
// that is first_byte_timeout; after it, the stream is cut only when the
// read under way has waited idle_timeout.
func (w *watchdog) expire(resp *fasthttp.Response) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if w.idling.Load() {
		left := w.idle
		if at := w.reading.Load(); at != 0 {
			left = time.Duration(at-1) + w.idle - time.Since(w.origin)
		}
		if left > 0 {
			w.timer.Reset(left)
			return
		}
	}
	w.stalled.Store(true)
	if bs, ok := resp.BodyStream().(fasthttp.ReadCloserWithError); ok {
		_ = bs.CloseWithError(ErrStreamCut)
	}
}

// begin marks the first event with data: from now on the deadline is
// idle, counted from the start of each read.
func (w *watchdog) begin() {
	if w.begun {
		return
	}
	w.begun = true
	if w.timer == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.stopped:
	case w.idle > 0:
		w.idling.Store(true)
		w.timer.Reset(w.idle)
	default:
		w.timer.Stop()
	}
}

// arm notes the start of a read that idle_timeout bounds; it reports
// whether the caller must disarm once the event is in.
func (w *watchdog) arm() bool {
	if w.timer == nil || !w.begun || w.idle <= 0 {
		return false
	}
	w.reading.Store(int64(time.Since(w.origin)) + 1)
	return true
}

// disarm notes the end of a read arm noted.
func (w *watchdog) disarm() { w.reading.Store(0) }

// stall returns the failure of a stream the watchdog cut, else nil.
func (w *watchdog) stall() error {
	if !w.stalled.Load() {
		return nil
	}
	if !w.begun {
		return errFirstByte
	}
	return &Failure{Class: Retryable, Msg: "upstream stream went silent past idle_timeout"}
}

// stop ends the watch for good, before the stream's response is
// released: the timer cannot fire, nor cut, after it.
func (w *watchdog) stop() {
	if w.timer == nil {
		return
	}
	w.mu.Lock()
	w.stopped = true
	w.timer.Stop()
	w.mu.Unlock()
}

// read returns the next upstream event under the watchdog, with every
// way a stream can fail classified once for all protocols: io.EOF at the
// body's end (the adapter knows whether that was complete), a *Failure
// for a stall, a timeout or a frame over max_response_body, and
// ErrStreamCut for a connection that broke.
func (s *sseReader) read() ([]byte, error) {
	armed := !s.inHand && s.arm()
	frame, err := s.next()
	if armed {
		s.disarm()
	}
	if f := s.stall(); f != nil {
		return nil, f
	}
	if err == nil && !s.begun && hasData(frame) {
		s.begin()
	}
	switch {
	case err == nil, err == io.EOF, err == ErrNotReady:
		return frame, err
	case err == errFrameTooLarge:
		return nil, &Failure{Class: Retryable, Msg: err.Error()}
	case errors.Is(err, fasthttp.ErrTimeout) || isTimeout(err):
		return nil, &Failure{Class: Retryable, Msg: "upstream stream timed out"}
	}
	return nil, ErrStreamCut
}

// hasData reports whether an SSE frame has a data line, unlike a comment.
func hasData(frame []byte) bool {
	return bytes.HasPrefix(frame, strData) || bytes.Contains(frame, strNewlineData)
}

var strData, strNewlineData = []byte("data:"), []byte("\ndata:")

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
