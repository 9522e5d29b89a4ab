package engine

import (
	"bytes"
	"io"
	"log/slog"
	"testing"

	"gateway/adapters"
)

// scriptStream is an adapters.Stream that returns its frames, then io.EOF.
type scriptStream struct {
	frames [][]byte
	closed int
}

func (s *scriptStream) Next() ([]byte, error) {
	if len(s.frames) == 0 {
		return nil, io.EOF
	}
	f := s.frames[0]
	s.frames = s.frames[1:]
	return f, nil
}

func (s *scriptStream) Close()                { s.closed++ }
func (s *scriptStream) Usage() adapters.Usage { return adapters.Usage{} }

// A relay goes back to the pool, emptied, only once fasthttp wrote it and
// closed it: a relay closed before it was written (a response reset
// while the handler still holds it) is left alone.
func TestRelayPooledOnlyAfterWritten(t *testing.T) {
	st := &scriptStream{frames: [][]byte{[]byte("data: 1\n\n"), []byte("data: 2\n\n")}}
	r := &relay{first: []byte("data: 0\n\n"), stream: st, log: slog.New(slog.DiscardHandler), via: []byte("up/m")}
	var out bytes.Buffer
	if _, err := r.WriteTo(&out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "data: 0\n\ndata: 1\n\ndata: 2\n\n" {
		t.Fatalf("relayed %q", got)
	}
	if st.closed != 1 || !r.ended {
		t.Fatalf("after the last frame: upstream closed %d times, ended %v", st.closed, r.ended)
	}
	_ = r.Close()
	if st.closed != 1 {
		t.Errorf("upstream closed %d times, want once", st.closed)
	}
	if r.stream != nil || r.via != nil || r.ended || r.wrote {
		t.Errorf("written and closed relay not emptied for the pool: %+v", r)
	}

	st = &scriptStream{}
	held := &relay{stream: st, log: slog.New(slog.DiscardHandler), via: []byte("up/m")}
	_ = held.Close()
	if held.stream != st || !held.ended || st.closed != 1 {
		t.Errorf("relay closed before it was written: stream kept %v, ended %v, upstream closed %d times",
			held.stream == st, held.ended, st.closed)
	}
}

// readyScript is a stream whose frames come in groups, as reads of the
// upstream would bring them: NextReady hands out the rest of the group
// Next last started, Next starts the next group.
type readyScript struct {
	scriptStream
	groups [][][]byte
}

func (s *readyScript) Next() ([]byte, error) {
	if len(s.frames) == 0 && len(s.groups) > 0 {
		s.frames, s.groups = s.groups[0], s.groups[1:]
	}
	return s.NextReady()
}

func (s *readyScript) NextReady() ([]byte, error) {
	if len(s.frames) == 0 {
		if len(s.groups) > 0 {
			return nil, adapters.ErrNotReady
		}
		return nil, io.EOF
	}
	f := s.frames[0]
	s.frames = s.frames[1:]
	if f == nil {
		return nil, adapters.ErrStreamCut
	}
	return f, nil
}

// writes records each Write as one chunk.
type writes []string

func (w *writes) Write(p []byte) (int, error) { *w = append(*w, string(p)); return len(p), nil }

// Frames that came together go to the client in one write; a frame that
// has not come yet is not waited for; an error after frames in hand ends
// the stream only after they went out.
func TestRelayGathersFramesInHand(t *testing.T) {
	big := append(append([]byte("data: "), bytes.Repeat([]byte("x"), maxGathered)...), "\n\n"...)
	st := &readyScript{groups: [][][]byte{
		{[]byte("data: 1\n\n"), []byte("data: 2\n\n")},
		{[]byte("data: 3\n\n")},
		{[]byte("data: 4\n\n"), big, []byte("data: 5\n\n"), nil},
	}}
	r := &relay{first: []byte("data: 0\n\n"), stream: st, log: slog.New(slog.DiscardHandler), via: []byte("up/m"), errFrame: streamError}
	var w writes
	if _, err := r.WriteTo(&w); err != nil {
		t.Fatal(err)
	}
	want := []string{"data: 0\n\n", "data: 1\n\ndata: 2\n\n", "data: 3\n\n", "data: 4\n\n", string(big), "data: 5\n\n", string(streamError(adapters.ErrStreamCut))}
	if len(w) != len(want) {
		t.Fatalf("%d writes %.60q, want %d", len(w), w, len(want))
	}
	for i := range want {
		if w[i] != want[i] {
			t.Errorf("write %d: %.60q, want %.60q", i, w[i], want[i])
		}
	}
	if st.closed != 1 {
		t.Errorf("upstream closed %d times, want once", st.closed)
	}
}
