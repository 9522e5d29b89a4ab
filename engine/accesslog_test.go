package engine

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"gateway/adapters"
)

func TestAppendJSONStringRoundTrips(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote\back`, "tab\tnl\ncr\r\x00\x1f", "é😀", "bad\xffutf8", "\u2028"} {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("%q encodes to invalid JSON %s: %v", s, b, err)
			continue
		}
		if want := string(bytes.ToValidUTF8([]byte(s), []byte("\ufffd"))); got != want {
			t.Errorf("%q round-trips to %q", s, got)
		}
	}
}

func TestAccessLineIsOneJSONObject(t *testing.T) {
	l := &accessLine{id: "req\"1\n", method: "POST", path: "/v1/chat/completions", key: "team", route: "default",
		via: "p/m", status: 200, latency: 1500 * time.Microsecond, ttfb: 700 * time.Microsecond}
	b := appendAccess(nil, l, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	if bytes.Count(b, []byte("\n")) != 1 || b[len(b)-1] != '\n' {
		t.Fatalf("not one line: %q", b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	for k, v := range map[string]any{"request_id": "req\"1\n", "latency_ms": 1.5, "ttfb_ms": 0.7, "status": 200.0,
		"msg": "request", "level": "INFO", "time": "2026-12-01T00:00:00Z", "attempts": ""} {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
}

// TestAppendTimeIsRFC3339Nano: the hand-written timestamp is byte for byte
// what time.RFC3339Nano gives, whatever the fraction, zone or year.
func TestAppendTimeIsRFC3339Nano(t *testing.T) {
	east := time.FixedZone("east", 5*3600+1800)
	times := []time.Time{time.Now(), time.Unix(0, 0), time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 2, 28, 23, 59, 59, 100, east), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 1, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), {}}
	for ns := 1; ns < 1e9; ns *= 10 {
		times = append(times, time.Unix(1_800_000_000, int64(ns)), time.Unix(1_800_000_000, int64(ns)*7-1))
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		times = append(times, time.Unix(r.Int64N(1<<36)-1<<35, r.Int64N(1e9)))
	}
	for _, tm := range times {
		if got, want := appendTime(nil, tm), tm.UTC().AppendFormat(nil, time.RFC3339Nano); !bytes.Equal(got, want) {
			t.Fatalf("%v: got %s, want %s", tm, got, want)
		}
	}
}

// TestAppendMillisIsAppendFloat: latencies read as the float formatting
// wrote them.
func TestAppendMillisIsAppendFloat(t *testing.T) {
	ds := []time.Duration{0, time.Microsecond, 999 * time.Microsecond, time.Millisecond, 1500 * time.Microsecond,
		-time.Millisecond, time.Duration(1e15-1) * time.Microsecond, time.Duration(1e15) * time.Microsecond, 1<<63 - 1}
	r := rand.New(rand.NewPCG(3, 4))
	for range 100000 {
		ds = append(ds, time.Duration(r.Int64N(int64(time.Hour))), time.Duration(r.Int64())>>r.IntN(63))
	}
	for _, d := range ds {
		want := strconv.AppendFloat(nil, float64(d.Microseconds())/1000, 'f', -1, 64)
		if got := appendMillis(nil, d); !bytes.Equal(got, want) {
			t.Fatalf("%d: got %s, want %s", d, got, want)
		}
	}
}

// TestAppendCountIsAppendInt: counts read as strconv wrote them, at
// every number of digits and either side of where it takes over.
func TestAppendCountIsAppendInt(t *testing.T) {
	ns := []int64{0, 9, 10, 99, 100, 1e7 - 1, 1e7, 1e8 - 1, 1e8, -1, -1 << 63, 1<<63 - 1}
	r := rand.New(rand.NewPCG(7, 8))
	for range 100000 {
		ns = append(ns, r.Int64N(1e9), r.Int64()>>r.IntN(63))
	}
	for _, n := range ns {
		if got, want := appendCount([]byte("x"), n), strconv.AppendInt([]byte("x"), n, 10); !bytes.Equal(got, want) {
			t.Fatalf("%d: got %s, want %s", n, got, want)
		}
	}
}

func BenchmarkAppendAccess(b *testing.B) {
	l := &accessLine{id: "req_0123456789ab0000000000000001", method: "POST", path: "/v1/chat/completions", model: "auto",
		key: "bench", route: "tools", via: "up/m", status: 200, latency: 1500 * time.Microsecond, ttfb: 700 * time.Microsecond}
	var buf [512]byte
	b.ReportAllocs()
	for b.Loop() {
		appendAccess(buf[:0], l, time.Now())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

func TestAccessWriterFlushesOnTickAndClose(t *testing.T) {
	var out lockedBuffer
	a := newAccessWriter(&out)
	a.write(&accessLine{id: "1"}, time.Now())
	deadline := time.Now().Add(5 * time.Second)
	for out.Len() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if out.Len() == 0 {
		t.Fatal("the ticker never flushed")
	}
	a.write(&accessLine{id: "2"}, time.Now())
	a.close()
	if n := bytes.Count(out.b.Bytes(), []byte("\n")); n != 2 {
		t.Errorf("%d lines after close, want 2", n)
	}
}

// jsonStringBytewise is appendJSONString as it was before it looked at
// eight bytes at a time: the reference its output must match.
func jsonStringBytewise(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// TestAppendJSONStringWordAtATime: whatever byte sits wherever in a word,
// the encoding is the byte-at-a-time one.
func TestAppendJSONStringWordAtATime(t *testing.T) {
	pieces := []string{"a", "Z", "0", " ", "~", "\x7f", "\"", "\\", "\x00", "\x1f", "\n", "é", "😀", "\u2028", "\xff", "\xc3", "\x80", "\xe2\x82"}
	r := rand.New(rand.NewPCG(5, 6))
	for range 100000 {
		var s strings.Builder
		for range r.IntN(30) {
			if r.IntN(4) == 0 {
				s.WriteString(pieces[r.IntN(len(pieces))])
			} else {
				s.WriteByte(byte(0x20 + r.IntN(0x5f)))
			}
		}
		if got, want := appendJSONString(nil, s.String()), jsonStringBytewise(nil, s.String()); !bytes.Equal(got, want) {
			t.Fatalf("%q: got %s, want %s", s.String(), got, want)
		}
	}
	// Every length up to three words, as short strings are looked at in
	// overlapping pieces: whatever byte at whatever place.
	for c := range 256 {
		for n := 1; n <= 24; n++ {
			for pos := range n {
				s := []byte("abcdefghijklmnopqrstuvwx")[:n]
				s[pos] = byte(c)
				if got, want := appendJSONString(nil, string(s)), jsonStringBytewise(nil, string(s)); !bytes.Equal(got, want) {
					t.Fatalf("%q: got %s, want %s", s, got, want)
				}
			}
		}
	}
}

// TestAppendTimeEveryYear: the date worked out from the unix time is
// time's, for days spread over years 0 to 9999 and either side.
func TestAppendTimeEveryYear(t *testing.T) {
	first := time.Date(-1, 12, 25, 0, 0, 0, 0, time.UTC).Unix()
	last := time.Date(10000, 1, 5, 0, 0, 0, 0, time.UTC).Unix()
	r := rand.New(rand.NewPCG(8, 9))
	for sec := first; sec < last; sec += 86400*int64(1+r.IntN(60)) + r.Int64N(86400) - 43200 {
		tm := time.Unix(sec, r.Int64N(1e9)*int64(r.IntN(2)))
		if got, want := appendTime(nil, tm), tm.UTC().AppendFormat(nil, time.RFC3339Nano); !bytes.Equal(got, want) {
			t.Fatalf("%d: got %s, want %s", sec, got, want)
		}
	}
}

// TestAccessLineDetachOwnsItsBytes: a detached line keeps its values when
// the request it borrowed from is overwritten, a second line detached
// into the same store is its own, and a reset store holds no attempt.
func TestAccessLineDetachOwnsItsBytes(t *testing.T) {
	req := []byte("id-1/v1/chat/completionsgpt-x")
	fails := []failedAttempt{{c: candidate{key: 1, slot: 2}, f: &adapters.Failure{Msg: "first"}}}
	won := candidate{key: 3, slot: 4}
	l := accessLine{id: bytesString(req[:4]), path: bytesString(req[4:24]), model: bytesString(req[24:]), fails: fails, winner: &won}
	var o lineStore
	l.detach(&o)
	for i := range req {
		req[i] = 'z'
	}
	fails[0] = failedAttempt{}
	won = candidate{}
	if l.id != "id-1" || l.path != "/v1/chat/completions" || l.model != "gpt-x" {
		t.Errorf("detached line borrows the request: id %q path %q model %q", l.id, l.path, l.model)
	}
	if len(l.fails) != 1 || l.fails[0].c.key != 1 || l.fails[0].f.Msg != "first" || l.winner.key != 3 || l.winner.slot != 4 {
		t.Errorf("detached line borrows the attempts: fails %+v winner %+v", l.fails, l.winner)
	}

	o.reset()
	if o.fails[:cap(o.fails)][0].f != nil || o.winner != (candidate{}) {
		t.Errorf("reset store keeps an attempt: %+v %+v", o.fails[:cap(o.fails)], o.winner)
	}
	long := strings.Repeat("m", 100)
	next := accessLine{id: "id-2", path: "/v1/responses", model: long}
	next.detach(&o)
	if next.id != "id-2" || next.path != "/v1/responses" || next.model != long || len(next.fails) != 0 || next.winner != nil {
		t.Errorf("second line: %+v", next)
	}
}
