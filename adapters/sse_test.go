package adapters

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

// readFrames drains an sseReader over r, copying each frame (a frame is
// valid only until the next call).
func readFrames(t testing.TB, r io.Reader) ([]string, error) {
	t.Helper()
	s := newSSEReader(r)
	defer s.release()
	var frames []string
	for i := 0; ; i++ {
		if i > 1<<16 {
			t.Fatal("sse reader does not stop")
		}
		f, err := s.next()
		if err != nil {
			return frames, err
		}
		frames = append(frames, string(f))
	}
}

func TestSSEReaderSplitsFrames(t *testing.T) {
	long := "data: " + strings.Repeat("x", 20000) + "\n\n" // longer than the first read buffer: it grows
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"LF", "data: a\n\ndata: b\n\n", []string{"data: a\n\n", "data: b\n\n"}},
		{"CRLF", "data: a\r\n\r\ndata: b\r\n\r\n", []string{"data: a\r\n\r\n", "data: b\r\n\r\n"}},
		{"mixed line ends", "data: a\r\n\ndata: b\n\r\n", []string{"data: a\r\n\n", "data: b\n\r\n"}},
		{"stray blank lines", "\n\r\n\ndata: a\n\n\n\n\r\ndata: b\n\n\n", []string{"data: a\n\n", "data: b\n\n"}},
		{"only blank lines", "\n\n\r\n\n", nil},
		{"multi-line event", "event: message\nid: 7\ndata: {\"a\":\ndata: 1}\n\n", []string{"event: message\nid: 7\ndata: {\"a\":\ndata: 1}\n\n"}},
		{"comment", ": keep-alive\n\ndata: a\n\n", []string{": keep-alive\n\n", "data: a\n\n"}},
		{"last frame without blank line", "data: a\n\ndata: b\n", []string{"data: a\n\n", "data: b\n\n"}},
		{"last frame without newline", "data: a\n\ndata: b", []string{"data: a\n\n", "data: b\n\n"}},
		{"last frame CRLF without blank line", "data: b\r\n", []string{"data: b\r\n\n"}},
		{"trailing whitespace only", "data: a\n\n  \t", []string{"data: a\n\n"}},
		{"line over the read buffer", long + "data: z\n\n", []string{long, "data: z\n\n"}},
		{"done", "data: {}\n\ndata: [DONE]\n\n", []string{"data: {}\n\n", "data: [DONE]\n\n"}},
	}
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"one byte per read", iotest.OneByteReader},
		{"half reads", iotest.HalfReader},
		{"data with EOF", iotest.DataErrReader},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				got, err := readFrames(t, rd.wrap(strings.NewReader(tt.in)))
				if err != io.EOF {
					t.Fatalf("err = %v, want io.EOF", err)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("got %d frames %q, want %d %q", len(got), got, len(tt.want), tt.want)
				}
				for i := range got {
					if got[i] != tt.want[i] {
						t.Errorf("frame %d = %q, want %q", i, got[i], tt.want[i])
					}
				}
			})
		}
	}
}

func TestSSEReaderEOFIsSticky(t *testing.T) {
	s := newSSEReader(strings.NewReader("data: a"))
	defer s.release()
	if f, err := s.next(); err != nil || string(f) != "data: a\n\n" {
		t.Fatalf("next = %q, %v", f, err)
	}
	for range 3 {
		if _, err := s.next(); err != io.EOF {
			t.Fatalf("after the end: err = %v, want io.EOF", err)
		}
	}
}

func TestSSEReaderFrameOverLimit(t *testing.T) {
	t.Run("one line", func(t *testing.T) {
		in := "data: " + strings.Repeat("x", maxFrame) + "\n\n"
		_, err := readFrames(t, strings.NewReader(in))
		if err != errFrameTooLarge {
			t.Fatalf("err = %v, want errFrameTooLarge", err)
		}
	})
	t.Run("many lines", func(t *testing.T) {
		line := "data: " + strings.Repeat("y", 1000) + "\n"
		in := strings.Repeat(line, maxFrame/len(line)+2) + "\n"
		_, err := readFrames(t, strings.NewReader(in))
		if err != errFrameTooLarge {
			t.Fatalf("err = %v, want errFrameTooLarge", err)
		}
	})
}

func TestSSEReaderPassesReadErrors(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("data: a\n\ndata: b"), iotest.ErrReader(boom))
	got, err := readFrames(t, r)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if len(got) != 1 || got[0] != "data: a\n\n" {
		t.Fatalf("frames = %q", got)
	}
}

func TestFrameData(t *testing.T) {
	tests := []struct {
		frame string
		want  string
		ok    bool
	}{
		{"data: {\"a\":1}\n\n", `{"a":1}`, true},
		{"data:{\"a\":1}\n\n", `{"a":1}`, true},
		{"data:  two spaces\n\n", " two spaces", true},
		{"data: a\r\n\r\n", "a", true},
		{"data: [DONE]\n\n", "[DONE]", true},
		{"data:\n\n", "", true},
		{"data: a\ndata: b\n\n", "a\nb", true},
		{"data: a\r\ndata: b\r\ndata: c\r\n\r\n", "a\nb\nc", true},
		{"event: delta\nid: 3\ndata: x\nretry: 10\n\n", "x", true},
		{": keep-alive\n\n", "", false},
		{"event: ping\nid: 1\n\n", "", false},
		{"", "", false},
		{"data: no newline", "no newline", true},
	}
	for _, tt := range tests {
		got, ok := frameData([]byte(tt.frame), nil)
		if ok != tt.ok || string(got) != tt.want {
			t.Errorf("frameData(%q) = %q, %v; want %q, %v", tt.frame, got, ok, tt.want, tt.ok)
		}
	}
}

func TestFrameDataSingleLineDoesNotCopy(t *testing.T) {
	frame := []byte("data: {\"choices\":[]}\n\n")
	allocs := testing.AllocsPerRun(100, func() {
		data, ok := frameData(frame, nil)
		if !ok || &data[0] != &frame[len("data: ")] {
			t.Fatal("single data line not returned in place")
		}
	})
	if allocs != 0 {
		t.Errorf("frameData allocates %v times for one data line", allocs)
	}
}

func TestFrameDataMultiLineUsesScratch(t *testing.T) {
	scratch := make([]byte, 0, 64)
	frame := []byte("data: a\ndata: b\ndata: c\n\n")
	allocs := testing.AllocsPerRun(100, func() {
		if data, _ := frameData(frame, scratch); string(data) != "a\nb\nc" {
			t.Fatalf("data = %q", data)
		}
	})
	if allocs != 0 {
		t.Errorf("frameData allocates %v times with room in scratch", allocs)
	}
	if string(frame) != "data: a\ndata: b\ndata: c\n\n" {
		t.Errorf("frame changed: %q", frame)
	}
}

// splitReader returns its input in pieces whose sizes cycle through sizes,
// to put read boundaries everywhere a fuzz input likes.
type splitReader struct {
	data  []byte
	sizes []byte
	i     int
}

func (r *splitReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(r.sizes) > 0 {
		n = int(r.sizes[r.i%len(r.sizes)])%17 + 1
		r.i++
	}
	n = min(n, len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func FuzzSSE(f *testing.F) {
	seeds := []string{
		"",
		"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
		": keep-alive\n\ndata: {\"choices\":[]}\n\n: ping\n\ndata: [DONE]\n\n",
		"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
		"data: {\"error\":{\"message\":\"overloaded\"}}\n\n",
		"data: {\"a\":\r\ndata: 1}\r\n\r\ndata: [DONE]\r\n\r\n",
		"data: not json\n\n",
		"\n\n\r\n\r\n",
		"event: x\nid: 1\nretry: 5\n\n",
		"data: {}\n\ndata: [DONE]",
		"data:{}\n\ndata:{\"choices\":[{\"finish_reason\":\"length\"}]}",
		"data: [DONE]\n\ndata: {}\n\n",
		"\r\r\r\n\n",
	}
	for i, s := range seeds {
		f.Add([]byte(s), []byte{byte(i), 3, 250})
	}
	f.Fuzz(func(t *testing.T, data, sizes []byte) {
		// The reader on its own: every frame ends with its blank line.
		frames, err := readFrames(t, &splitReader{data: data, sizes: sizes})
		if err != io.EOF {
			t.Fatalf("reader err = %v, want io.EOF", err)
		}
		if len(frames) > len(data) {
			t.Fatalf("%d frames from %d bytes", len(frames), len(data))
		}
		for _, fr := range frames {
			if !strings.HasSuffix(fr, "\n\n") && !strings.HasSuffix(fr, "\n\r\n") {
				t.Fatalf("frame %q does not end with a blank line", fr)
			}
			frameData([]byte(fr), nil)
		}

		// The stream on top: it ends cleanly only with [DONE], and stops.
		s := &openAIStream{sse: newSSEReader(&splitReader{data: data, sizes: sizes})}
		defer s.sse.release()
		var last []byte
		for i := 0; ; i++ {
			if i > len(data)+2 {
				t.Fatalf("stream gave %d frames from %d bytes", i, len(data))
			}
			frame, err := s.Next()
			if err == io.EOF {
				if d, ok := frameData(last, nil); !ok || string(d) != "[DONE]" {
					t.Fatalf("clean end after %q, not [DONE]", last)
				}
				if _, err := s.Next(); err != io.EOF {
					t.Fatalf("after the end: %v", err)
				}
				return
			}
			if err != nil {
				var f *Failure
				if !errors.Is(err, ErrStreamCut) && !errors.As(err, &f) {
					t.Fatalf("stream error %T %v is neither ErrStreamCut nor a *Failure", err, err)
				}
				return
			}
			if len(frame) == 0 {
				t.Fatal("empty frame")
			}
			last = append(last[:0], frame...)
		}
	})
}

func TestSplitReaderRoundTrips(t *testing.T) {
	in := []byte("data: abc\n\ndata: def\n\n")
	got, err := io.ReadAll(&splitReader{data: bytes.Clone(in), sizes: []byte{0, 5, 2}})
	if err != nil || !bytes.Equal(got, in) {
		t.Fatalf("got %q, %v", got, err)
	}
}

// TestSSEReaderDataIsFrameData: the reader's data, which skips the pass
// over a frame of one line, gives what frameData gives for every frame,
// whatever the line endings, the lines and how the body is split.
func TestSSEReaderDataIsFrameData(t *testing.T) {
	lines := []string{"data: {\"a\":1}", "data:x", "data:", "data", "data: ", ": keep-alive", "event: e", "id: 1", "x", "\r", "data: a\r", "data: [DONE]"}
	ends := []string{"\n", "\r\n"}
	r := rand.New(rand.NewPCG(1, 2))
	var in []byte
	for range 400 {
		for range r.IntN(3) + 1 {
			in = append(in, lines[r.IntN(len(lines))]...)
			in = append(in, ends[r.IntN(2)]...)
		}
		in = append(in, ends[r.IntN(2)]...)
	}
	in = append(in, "data: last"...)
	for _, sizes := range [][]byte{nil, {3, 200, 7}, {255}} {
		s := newSSEReader(&splitReader{data: in, sizes: sizes})
		n, single := 0, 0
		for frame, err := s.next(); err != io.EOF; frame, err = s.next() {
			if err != nil {
				t.Fatal(err)
			}
			n++
			if s.last == 1 {
				single++
			}
			got, gotOK := s.data(frame, nil)
			want, wantOK := frameData(frame, nil)
			if gotOK != wantOK || !bytes.Equal(got, want) {
				t.Errorf("frame %q: data %q %v, frameData %q %v", frame, got, gotOK, want, wantOK)
			}
		}
		// Some frames are all blank lines, which are not frames.
		if n < 300 || single < 100 {
			t.Errorf("sizes %v: %d frames, %d of one line: the input does not test", sizes, n, single)
		}
		s.release()
	}
}
