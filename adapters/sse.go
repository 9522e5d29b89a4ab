package adapters

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// maxFrame bounds one SSE frame until the adapter sets its provider's
// max_response_body, so a broken upstream cannot grow a buffer without end.
const maxFrame = 8 << 20

// ErrStreamCut is returned when an upstream stream ends before its end
// marker.
var ErrStreamCut = errors.New("upstream stream ended before it was complete")

// errFrameTooLarge is returned for an SSE frame over the reader's bound.
var errFrameTooLarge = errors.New("upstream sent an SSE frame over max_response_body")

// sseBufSize is a stream's first read buffer: a few events' worth. It
// grows, up to the frame bound, only for a frame that does not fit.
const sseBufSize = 1 << 10

// maxPooledSSEBuf bounds the buffers kept for the next stream, so one
// stream's large frame does not stay in memory for good.
const maxPooledSSEBuf = 16 << 10

// sseBuffers is what one stream borrows for its life and the next stream
// reuses: the frame buffer, a buffer for the payload an adapter keeps
// across frames, and the guard of the body's last drain.
type sseBuffers struct {
	buf, kept []byte
	guard     *drainGuard
}

var sseBufPool = sync.Pool{New: func() any { return new(sseBuffers) }}

// sseReader splits an event stream into frames: the lines of one event
// and the blank line that ends it, byte for byte as they came. It reads
// the body into a buffer of its own and hands frames out of it, so an open
// stream holds about one event's bytes and each frame is copied once, from
// the body into that buffer.
type sseReader struct {
	body io.Reader
	// buf[start:] is read but not handed out yet: the frame being cut,
	// whose current line begins at line; bytes before seen hold no LF
	// after line.
	buf               []byte
	start, line, seen int
	// lines counts the lines, not blank, of the frame being cut; last
	// those of the frame next returned last, 0 for a trailing frame.
	lines, last int
	pooled      *sseBuffers
	// err is the body's error, io.EOF at its end, kept for when the
	// buffered frames run out.
	err error
	// max bounds one frame.
	max int
	// inHand limits next to the frames already read: where it would
	// read the body, it returns ErrNotReady.
	inHand bool
	watchdog
}

func newSSEReader(r io.Reader) *sseReader { return new(sseReader).init(r) }

// init readies s, which must be new, to read r.
func (s *sseReader) init(r io.Reader) *sseReader {
	p := sseBufPool.Get().(*sseBuffers)
	if p.buf == nil {
		p.buf = make([]byte, 0, sseBufSize)
	}
	s.body, s.buf, s.pooled, s.max = r, p.buf[:0], p, maxFrame
	return s
}

// keep copies data into the reader's buffer for a payload kept across
// frames, valid until the next keep or the release, and returns it.
func (s *sseReader) keep(data []byte) []byte {
	s.pooled.kept = append(s.pooled.kept[:0], data...)
	return s.pooled.kept
}

// next returns the next frame, valid until the next call. At the end of
// input a trailing frame without its blank line is still returned; after
// that, io.EOF.
func (s *sseReader) next() ([]byte, error) {
	for {
		frame, err := s.cut()
		if frame != nil || err != nil {
			return frame, err
		}
		if s.err != nil {
			return s.tail()
		}
		if s.inHand {
			return nil, ErrNotReady
		}
		s.fill()
	}
}

// cut returns the next complete frame in the buffer, or nil when it needs
// more input.
func (s *sseReader) cut() ([]byte, error) {
	for {
		i := bytes.IndexByte(s.buf[s.seen:], '\n')
		if i < 0 {
			s.seen = len(s.buf)
			if len(s.buf)-s.start > s.max {
				return nil, errFrameTooLarge
			}
			return nil, nil
		}
		end := s.seen + i + 1
		blank := isBlank(s.buf[s.line:end])
		first := s.line == s.start
		s.line, s.seen = end, end
		switch {
		case !blank:
			s.lines++
			continue
		case first:
			// Stray blank lines between events.
			s.start = end
			continue
		}
		frame := s.buf[s.start:end]
		s.start = end
		s.last, s.lines = s.lines, 0
		if len(frame) > s.max {
			return nil, errFrameTooLarge
		}
		return frame, nil
	}
}

// tail ends the input: what is left of a last event without its blank
// line, completed with one, then the body's error.
func (s *sseReader) tail() ([]byte, error) {
	rest := s.buf[s.start:]
	s.start, s.line, s.seen = len(s.buf), len(s.buf), len(s.buf)
	s.last, s.lines = 0, 0
	if s.err != io.EOF {
		return nil, s.err
	}
	if len(bytes.TrimSpace(rest)) == 0 {
		return nil, io.EOF
	}
	rest = append(rest, '\n')
	if !bytes.HasSuffix(rest, []byte("\n\n")) {
		rest = append(rest, '\n')
	}
	return rest, nil
}

// pending reports whether next may return without reading the body:
// bytes not handed out yet, or the body's end.
func (s *sseReader) pending() bool { return s.start < len(s.buf) || s.err != nil }

// maxEmptyReads is how many reads in a row may return nothing before the
// body counts as broken, as bufio counts them.
const maxEmptyReads = 100

// fill reads more of the body: it moves the bytes not handed out to the
// front and doubles the buffer, up to the frame bound, when one frame
// fills it.
func (s *sseReader) fill() {
	if s.start > 0 {
		n := copy(s.buf, s.buf[s.start:])
		s.buf = s.buf[:n]
		s.line -= s.start
		s.seen -= s.start
		s.start = 0
	}
	if len(s.buf) == cap(s.buf) {
		s.buf = slices.Grow(s.buf, min(max(cap(s.buf), sseBufSize), s.max+1-len(s.buf)))
	}
	for range maxEmptyReads {
		n, err := s.body.Read(s.buf[len(s.buf):cap(s.buf)])
		s.buf = s.buf[:len(s.buf)+n]
		if err != nil {
			s.err = err
			return
		}
		if n > 0 {
			return
		}
	}
	s.err = io.ErrNoProgress
}

// drain reads the body to its end after the stream's last event, in at
// most a few reads, and reports whether the end came: only then can the
// connection serve another request.
func (s *sseReader) drain() bool {
	if s.err != nil {
		return s.err == io.EOF
	}
	buf := s.buf[:cap(s.buf)]
	for range 8 {
		_, err := s.body.Read(buf)
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

// drained drains sse, the reader of bs, under its guard: a drain that
// outlasts drainWait is cut.
func drained(bs fasthttp.ReadCloserWithError, sse *sseReader) bool {
	g := sse.pooled.guard
	if g == nil {
		g = new(drainGuard)
		g.timer = time.AfterFunc(time.Hour, g.fire)
		g.timer.Stop()
		sse.pooled.guard = g
	}
	g.set(bs)
	g.timer.Reset(drainWait)
	ok := sse.drain()
	if !g.timer.Stop() {
		// The guard fired, or is firing for bs: it is not reused, so a
		// firing still under way cannot cut another stream's body.
		sse.pooled.guard = nil
	}
	g.set(nil)
	return ok
}

// drainGuard cuts a body whose drain outlasts drainWait. It lives in a
// stream's pooled buffers, so one timer serves stream after stream.
type drainGuard struct {
	mu    sync.Mutex
	bs    fasthttp.ReadCloserWithError
	timer *time.Timer
}

func (g *drainGuard) set(bs fasthttp.ReadCloserWithError) {
	g.mu.Lock()
	g.bs = bs
	g.mu.Unlock()
}

func (g *drainGuard) fire() {
	g.mu.Lock()
	bs := g.bs
	g.mu.Unlock()
	if bs != nil {
		_ = bs.CloseWithError(ErrStreamCut)
	}
}

func (s *sseReader) release() {
	if s.pooled == nil {
		return
	}
	// A large frame's buffers are left behind, not kept for good.
	s.pooled.buf = s.buf[:0]
	if cap(s.buf) > maxPooledSSEBuf {
		s.pooled.buf = nil
	}
	if cap(s.pooled.kept) > maxPooledSSEBuf {
		s.pooled.kept = nil
	}
	sseBufPool.Put(s.pooled)
	s.pooled, s.buf, s.body = nil, nil, nil
}

func isBlank(line []byte) bool {
	return len(line) == 1 || (len(line) == 2 && line[0] == '\r')
}

// nextLine splits off a frame's first line, without its CR LF or LF.
func nextLine(frame []byte) (line, rest []byte) {
	line, rest, _ = bytes.Cut(frame, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r")), rest
}

// frameData returns the payload of a frame's data lines, joined by
// newlines as the SSE spec says, and whether it has any. A single data
// line is returned without copying.
func frameData(frame []byte, scratch []byte) ([]byte, bool) {
	var data []byte
	n := 0
	for len(frame) > 0 {
		var line []byte
		line, frame = nextLine(frame)
		v, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue
		}
		v = bytes.TrimPrefix(v, []byte(" "))
		switch n {
		case 0:
			data = v
		case 1:
			data = append(append(append(scratch[:0], data...), '\n'), v...)
		default:
			data = append(append(data, '\n'), v...)
		}
		n++
	}
	return data, n > 0
}

// data is frameData for the frame next returned last, without a second
// pass over a frame of one line: that line, its LF and the blank line.
func (s *sseReader) data(frame, scratch []byte) ([]byte, bool) {
	if s.last != 1 {
		return frameData(frame, scratch)
	}
	blank := 1
	if frame[len(frame)-2] == '\r' {
		blank = 2
	}
	line := bytes.TrimSuffix(frame[:len(frame)-blank-1], []byte("\r"))
	v, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok {
		return nil, false
	}
	return bytes.TrimPrefix(v, []byte(" ")), true
}

// frames queues the SSE frames one upstream event turned into, built back
// to back in out and handed out one per Next: ends[i] is where frame i
// ends, sent how many went out.
type frames struct {
	out  []byte
	ends []int
	sent int
}

func (q *frames) reset() { q.out, q.ends, q.sent = q.out[:0], q.ends[:0], 0 }

// mark ends the frame appended to out since the last mark.
func (q *frames) mark() { q.ends = append(q.ends, len(q.out)) }

// take returns the next built frame, if any.
func (q *frames) take() ([]byte, bool) {
	if q.sent >= len(q.ends) {
		return nil, false
	}
	start := 0
	if q.sent > 0 {
		start = q.ends[q.sent-1]
	}
	q.sent++
	return q.out[start:q.ends[q.sent-1]], true
}
