package engine

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"gateway/adapters"
)

// relayPool keeps relays for the next stream: each stream would otherwise
// leave its relay (near 900 bytes) behind as garbage, and with many open
// streams garbage is what grows the heap between two collections.
var relayPool = sync.Pool{New: func() any { return new(relay) }}

// relay streams a reply to the client frame by frame. fasthttp calls its
// WriteTo, and each Write becomes one flushed chunk, so events go out as
// they arrive with no goroutine or copy in between.
type relay struct {
	// The fields each frame uses come first, so that relaying a frame
	// touches two cache lines of the relay, not five: with many open
	// streams, a frame 50 ms after the last finds little of its stream
	// in the cache.
	stream adapters.Stream
	first  []byte
	// held is what the stream returned that next hands out before asking
	// it again: a frame or an error gather took but did not send.
	held    []byte
	heldErr error
	holding bool
	ended   bool
	// wrote is set once fasthttp writes the stream, so after the handler
	// that made the relay returned: from then on fasthttp alone holds it.
	wrote bool
	// gathered is where gather joins frames, until they are written.
	gathered *[]byte
	writes   clientWrites
	pending  []byte
	log      *slog.Logger
	via      []byte
	res      settlement
	// errFrame is the operation's last frame for a stream that fails
	// after it started; nil: the stream's codec wrote its own.
	errFrame func(error) []byte
	// onEnd, when set, is told the stream once it has ended.
	onEnd func(adapters.Stream)
	// s is the snapshot the stream was answered under, whose cooldown and
	// breaker settings judge a stream the upstream cuts.
	s *snapshot
	// line is the request's access log line, owning its bytes in own,
	// written to accessLog when the stream ends; accessLog is nil when the
	// access log is off.
	accessLog *accessWriter
	line      accessLine
	own       lineStore
	start     time.Time
	// entry is the request as /api/requests tells it, added to recent
	// when the stream ends.
	entry  recentEntry
	recent *recentRing
}

// readyStream is a Stream that can hand over the frames its upstream
// already sent without waiting for more (adapters' NextReady).
type readyStream interface {
	NextReady() ([]byte, error)
}

// maxGathered bounds the frames gather joins into one write.
const maxGathered = 16 << 10

// gatheredPool keeps the buffers gather joins frames in; a relay holds one
// only from gather to its write.
var gatheredPool = sync.Pool{New: func() any { return new([]byte) }}

// gather returns b followed by the frames that came with it, so that
// frames an upstream sent together go to the client in one chunk, one
// write, instead of a write each. It never waits for the upstream. A
// frame that would make the chunk too long, or an error, is held for
// next.
func (r *relay) gather(b []byte, s readyStream) []byte {
	out := b
	for joined := false; ; joined = true {
		f, err := s.NextReady()
		if err == adapters.ErrNotReady {
			return out
		}
		if err != nil || len(out)+len(f) > maxGathered {
			r.held, r.heldErr, r.holding = f, err, true
			return out
		}
		if !joined {
			r.gathered = gatheredPool.Get().(*[]byte)
			out = append((*r.gathered)[:0], b...)
		}
		out = append(out, f...)
		*r.gathered = out
	}
}

// written gives back the buffer gather joined the frames just written in.
func (r *relay) written() {
	if r.gathered != nil {
		*r.gathered = (*r.gathered)[:0]
		gatheredPool.Put(r.gathered)
		r.gathered = nil
	}
}

// next returns the next bytes for the client, and false at the end. A
// failure mid-stream ends the stream with an OpenAI-shaped error event,
// never a silent hang.
func (r *relay) next() ([]byte, bool) {
	if r.ended {
		return nil, false
	}
	if r.first != nil {
		b := r.first
		r.first = nil
		return b, true
	}
	var frame []byte
	var err error
	if r.holding {
		frame, err = r.held, r.heldErr
		r.held, r.heldErr, r.holding = nil, nil, false
	} else {
		frame, err = r.stream.Next()
	}
	switch {
	case err == io.EOF:
		r.end()
		return nil, false
	case err != nil:
		r.interrupted(asFailure(err))
		r.end()
		r.log.Warn("upstream stream failed after the response started", "via", string(r.via), "err", err)
		if r.errFrame == nil {
			return nil, false
		}
		return r.errFrame(err), true
	}
	return frame, true
}

// interrupted records a stream the upstream cut or stalled after it
// started: the success counted at its first frame becomes a failure of
// its target, for the stats, the metrics, the key's cooldown and the
// breaker, and the access log line says so.
func (r *relay) interrupted(f *adapters.Failure) {
	c := r.res.c
	if c.t == nil {
		return
	}
	c.t.state.use.interrupted(f.Class)
	penalize(r.s, c, f, nanotime())
	if r.res.key != nil {
		r.res.key.stats.use.interrupted(f.Class)
	}
	if r.accessLog != nil {
		r.line.interrupted = true
	}
	r.entry.err = "stream_interrupted"
}

// WriteTo relays every frame as one flushed chunk. It runs after the
// handler has returned, outside its recover, so it contains its own
// panics: one broken stream must not end the process.
func (r *relay) WriteTo(w io.Writer) (n int64, err error) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("panic while relaying a stream", "via", string(r.via), "panic", panicText(p), "stack", string(debug.Stack()))
			r.end()
			err = errRelayPanic
		}
	}()
	r.wrote = true
	ready, _ := r.stream.(readyStream)
	for {
		b, ok := r.next()
		if !ok {
			return n, nil
		}
		if ready != nil && !r.ended {
			b = r.gather(b, ready)
		}
		r.writes.before()
		m, err := w.Write(b)
		r.written()
		n += int64(m)
		if err != nil {
			// The client went away or stopped reading; closing the
			// upstream stops its work.
			r.end()
			return n, err
		}
	}
}

// errRelayPanic ends a stream whose relay panicked.
var errRelayPanic = errors.New("stream relay failed")

// SupportsBodyWriteTo tells fasthttp to call WriteTo rather than Read.
func (r *relay) SupportsBodyWriteTo() bool { return true }

// Read serves fasthttp paths that do not use WriteTo.
func (r *relay) Read(p []byte) (int, error) {
	for len(r.pending) == 0 {
		b, ok := r.next()
		if !ok {
			return 0, io.EOF
		}
		r.pending = b
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	r.writes.before()
	return n, nil
}

// Close ends the stream; fasthttp calls it once, when the response is
// done, however it ended, and drops the relay. One it wrote goes back to
// the pool.
func (r *relay) Close() error {
	r.end()
	if r.wrote {
		r.own.reset()
		*r = relay{own: r.own}
		relayPool.Put(r)
	}
	return nil
}

// end releases the upstream stream and settles the tokens it used, once.
func (r *relay) end() {
	if !r.ended {
		r.ended = true
		r.stream.Close()
		// Bounded as settlement bounds it, for the access log and
		// /api/requests too.
		u := r.stream.Usage().Bounded()
		lat := time.Since(r.start)
		r.res.settle(u, clockAt(r.start)+int64(lat))
		if r.onEnd != nil {
			r.onEnd(r.stream)
		}
		if r.recent != nil {
			r.entry.at, r.entry.latency = r.start.Add(lat).UnixNano(), lat
			if u.Known {
				r.entry.prompt, r.entry.completion = int64(u.Prompt), int64(u.Completion)
			}
			r.recent.add(&r.entry)
		}
		if r.accessLog != nil {
			r.line.latency, r.line.usage = lat, u
			r.accessLog.write(&r.line, r.start.Add(lat))
		}
	}
}

func streamError(err error) []byte {
	msg := "upstream stream failed: " + asFailure(err).Msg
	if errors.Is(err, adapters.ErrStreamCut) {
		msg = "upstream stream ended before the answer was complete"
	}
	b, _ := json.Marshal(errorBody{errorFields{Message: msg, Type: "server_error", Code: "stream_interrupted"}})
	return append(append([]byte("data: "), b...), "\n\n"...)
}
