package adapters

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
)

// maxFrame bounds one SSE frame until the adapter sets its provider's
// max_response_body, so a broken upstream cannot grow a buffer without end.
const maxFrame = 8 << 20

// ErrStreamCut is returned when an upstream stream ends before its end
// marker.
var ErrStreamCut = errors.New("upstream stream ended before it was complete")

// errFrameTooLarge is returned for an SSE frame over the reader's bound.
var errFrameTooLarge = errors.New("upstream sent an SSE frame over max_response_body")

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 8<<10) }}

// sseReader splits an event stream into frames: the lines of one event
// and the blank line that ends it, byte for byte as they came.
type sseReader struct {
	br    *bufio.Reader
	frame []byte
	// max bounds one frame.
	max int
	watchdog
}

func newSSEReader(r io.Reader) *sseReader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return &sseReader{br: br, max: maxFrame}
}

// next returns the next frame. At the end of input a trailing frame
// without its blank line is still returned; after that, io.EOF.
func (s *sseReader) next() ([]byte, error) {
	s.frame = s.frame[:0]
	for {
		line, err := s.br.ReadSlice('\n')
		if len(s.frame)+len(line) > s.max {
			return nil, errFrameTooLarge
		}
		s.frame = append(s.frame, line...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF:
			if len(bytes.TrimSpace(s.frame)) > 0 {
				// A last event without its blank line.
				s.frame = append(s.frame, '\n')
				if !bytes.HasSuffix(s.frame, []byte("\n\n")) {
					s.frame = append(s.frame, '\n')
				}
				return s.frame, nil
			}
			return nil, io.EOF
		case err != nil:
			return nil, err
		}
		if isBlank(line) {
			if len(s.frame) == len(line) {
				// Stray blank lines between events.
				s.frame = s.frame[:0]
				continue
			}
			return s.frame, nil
		}
	}
}

func (s *sseReader) release() {
	if s.br != nil {
		s.br.Reset(nil)
		readerPool.Put(s.br)
		s.br = nil
	}
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
