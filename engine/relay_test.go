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
