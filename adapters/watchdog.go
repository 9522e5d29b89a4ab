package adapters

import (
	"bytes"
	"errors"
	"io"
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
// adapter drops is activity too.
type watchdog struct {
	timer     *time.Timer
	firstByte time.Duration
	idle      time.Duration
	begun     bool
	stalled   atomic.Bool
}

// watch arms the deadlines over resp's body; zero durations leave only
// the provider's timeout.
func (w *watchdog) watch(resp *fasthttp.Response, firstByte, idle time.Duration) {
	w.firstByte, w.idle = firstByte, idle
	if firstByte <= 0 && idle <= 0 {
		return
	}
	w.timer = time.AfterFunc(time.Hour, func() {
		w.stalled.Store(true)
		if bs, ok := resp.BodyStream().(fasthttp.ReadCloserWithError); ok {
			_ = bs.CloseWithError(ErrStreamCut)
		}
	})
	w.timer.Stop()
	if firstByte > 0 {
		w.timer.Reset(firstByte)
	}
}

// begin marks the first event with data: from now on the deadline is
// idle, renewed by every upstream event.
func (w *watchdog) begin() {
	if w.begun {
		return
	}
	w.begun = true
	w.stop()
}

// arm starts the idle deadline for the next upstream event; it reports
// whether the caller must stop it once the event is in.
func (w *watchdog) arm() bool {
	if w.timer == nil || !w.begun || w.idle <= 0 {
		return false
	}
	w.timer.Reset(w.idle)
	return true
}

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

func (w *watchdog) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}

// read returns the next upstream event under the watchdog, with every
// way a stream can fail classified once for all protocols: io.EOF at the
// body's end (the adapter knows whether that was complete), a *Failure
// for a stall, a timeout or a frame over max_response_body, and
// ErrStreamCut for a connection that broke.
func (s *sseReader) read() ([]byte, error) {
	armed := s.arm()
	frame, err := s.next()
	if armed {
		s.stop()
	}
	if f := s.stall(); f != nil {
		return nil, f
	}
	if err == nil && !s.begun && hasData(frame) {
		s.begin()
	}
	switch {
	case err == nil, err == io.EOF:
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
