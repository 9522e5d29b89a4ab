package engine

import (
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"gateway/adapters"
)

// accessLine is one request as the access log tells it: names, outcomes
// and numbers, never a body or a secret.
type accessLine struct {
	id, key, route, via, cache, method, path string
	// model is the name the client asked for.
	model  string
	status int
	stream bool
	// interrupted is set when the upstream cut or stalled a stream after
	// it started: the status was already sent, the answer is incomplete.
	interrupted   bool
	latency, ttfb time.Duration
	usage         adapters.Usage
	// fails and winner are the attempts, written as
	// "p1/m#1:429 rate_limited p2/m#1:ok".
	fails  []failedAttempt
	winner *candidate
}

// lineStore holds what a line written after the handler returned (a
// stream's, at its end) borrowed from the request. A pooled relay keeps
// it, so its buffers serve line after line without allocating.
type lineStore struct {
	text   []byte
	fails  []failedAttempt
	winner candidate
}

// maxLineStore bounds the text a store keeps for the next line.
const maxLineStore = 4 << 10

// detach copies what the line borrows from the request into o, which
// the line then borrows instead until o's next detach or reset.
func (l *accessLine) detach(o *lineStore) {
	id, path := len(l.id), len(l.id)+len(l.path)
	o.text = append(append(append(o.text[:0], l.id...), l.path...), l.model...)
	l.id, l.path, l.model = bytesString(o.text[:id]), bytesString(o.text[id:path]), bytesString(o.text[path:])
	o.fails = append(o.fails[:0], l.fails...)
	l.fails = o.fails
	if l.winner != nil {
		o.winner = *l.winner
		l.winner = &o.winner
	}
}

// reset drops what o holds, keeping its buffers unless they grew large.
func (o *lineStore) reset() {
	clear(o.fails)
	o.text, o.fails, o.winner = o.text[:0], o.fails[:0], candidate{}
	if cap(o.text) > maxLineStore {
		o.text = nil
	}
}

// accessFlush is how long a line may wait in the buffer.
const accessFlush = 100 * time.Millisecond

// accessBuffer is how much is buffered before a flush is forced.
const accessBuffer = 64 << 10

// accessCap is a buffer's capacity: a full one and a long line more, so
// that appending never grows it (and copies what it holds) but for a
// line longer than that.
const accessCap = accessBuffer + 4<<10

// accessWriter buffers access log lines and writes them out every
// accessFlush (or when the buffer fills), so a request costs no write
// system call. Its lines have log/slog's JSON shape (time, level, msg),
// but are encoded by hand: slog's attribute handling cost more than the
// rest of a proxied request. Its goroutine ends with close.
type accessWriter struct {
	mu        sync.Mutex
	buf, back []byte
	out       io.Writer
	stop      chan struct{}
	done      chan struct{}
}

func newAccessWriter(out io.Writer) *accessWriter {
	a := &accessWriter{out: out, stop: make(chan struct{}), done: make(chan struct{}),
		buf: make([]byte, 0, accessCap), back: make([]byte, 0, accessCap)}
	go a.loop()
	return a
}

func (a *accessWriter) loop() {
	defer close(a.done)
	t := time.NewTicker(accessFlush)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			a.flush()
			return
		case <-t.C:
			a.flush()
		}
	}
}

// write encodes and buffers one line, for a request answered at.
func (a *accessWriter) write(l *accessLine, at time.Time) {
	var scratch [512]byte
	line := appendAccess(scratch[:0], l, at)
	a.mu.Lock()
	a.buf = append(a.buf, line...)
	full := len(a.buf) >= accessBuffer
	a.mu.Unlock()
	if full {
		a.flush()
	}
}

// flush writes out what is buffered. The buffers are swapped under the
// lock and written outside it, so requests never wait on the output.
func (a *accessWriter) flush() {
	a.mu.Lock()
	out := a.buf
	a.buf, a.back = a.back[:0], nil
	if a.buf == nil {
		// Another flush is writing the other buffer out.
		a.buf = make([]byte, 0, accessCap)
	}
	a.mu.Unlock()
	if len(out) > 0 {
		_, _ = a.out.Write(out)
	}
	a.mu.Lock()
	if a.back == nil {
		a.back = out[:0]
	}
	a.mu.Unlock()
}

func (a *accessWriter) close() {
	close(a.stop)
	<-a.done
}

// accessNames lead the string fields of a line, in their order.
var accessNames = [...]string{`","level":"INFO","msg":"request","request_id":"`, `","method":"`, `","path":"`,
	`","model":"`, `","key":"`, `","route":"`, `","routed_via":"`}

// appendAccess encodes l as one JSON line. Each constant run of it,
// quotes around the strings included, is appended at once.
func appendAccess(b []byte, l *accessLine, now time.Time) []byte {
	b = append(b, `{"time":"`...)
	b = appendTime(b, now)
	for i, v := range [...]string{l.id, l.method, l.path, l.model, l.key, l.route, l.via} {
		b = append(b, accessNames[i]...)
		b = appendJSONChars(b, v)
	}
	b = append(b, `","attempts":"`...)
	b = appendAttempts(b, l.fails, l.winner, l.interrupted)
	b = append(b, `","status":`...)
	b = appendCount(b, int64(l.status))
	if l.stream {
		b = append(b, `,"stream":true`...)
	} else {
		b = append(b, `,"stream":false`...)
	}
	if l.interrupted {
		b = append(b, `,"error":"stream_interrupted"`...)
	}
	b = append(b, `,"latency_ms":`...)
	b = appendMillis(b, l.latency)
	b = append(b, `,"ttfb_ms":`...)
	b = appendMillis(b, l.ttfb)
	b = append(b, `,"prompt_tokens":`...)
	b = appendCount(b, int64(l.usage.Prompt))
	b = append(b, `,"completion_tokens":`...)
	b = appendCount(b, int64(l.usage.Completion))
	if l.usage.Estimated {
		// The provider reported none (Gemini embeddings): the gateway
		// counted bytes / 4.
		b = append(b, `,"usage_estimated":true`...)
	}
	b = append(b, `,"cache":"`...)
	b = appendJSONChars(b, l.cache)
	return append(b, "\"}\n"...)
}

// appendTime appends t in UTC as time.RFC3339Nano does (the fraction
// without its trailing zeros, none at all when zero), by hand from the
// unix time: the layout-driven AppendFormat cost a fifth of the line, and
// time's Date and Clock each work out the absolute time again. The text
// up to the second is kept for the second the last line was in.
func appendTime(b []byte, t time.Time) []byte {
	sec := t.Unix()
	st := lastStamp.Load()
	if st == nil || st.sec != sec {
		st = stampOf(sec)
		if st == nil {
			return t.UTC().AppendFormat(b, time.RFC3339Nano)
		}
		lastStamp.Store(st)
	}
	b = append(b, st.text[:]...)
	if ns := t.Nanosecond(); ns != 0 {
		f := [...]byte{'.', '0', '0', '0', '0', '0', '0', '0', '0', '0'}
		putDigits(f[1:], ns)
		n := len(f)
		for f[n-1] == '0' {
			n--
		}
		b = append(b, f[:n]...)
	}
	return append(b, 'Z')
}

// stamp is the text of a unix second, as RFC 3339 writes it in UTC
// without the zone.
type stamp struct {
	sec  int64
	text [19]byte
}

// lastStamp is the second the last line was in: a request path that finds
// its second there only copies it.
var lastStamp atomic.Pointer[stamp]

// stampOf writes out the second sec; nil outside the years 0 to 9999,
// which RFC 3339 does not write in four digits.
func stampOf(sec int64) *stamp {
	days, sod := sec/86400, sec%86400
	if sod < 0 {
		days, sod = days-1, sod+86400
	}
	year, month, day := civil(days)
	if year < 0 || year > 9999 {
		return nil
	}
	st := &stamp{sec: sec, text: [...]byte{'0', '0', '0', '0', '-', '0', '0', '-', '0', '0', 'T', '0', '0', ':', '0', '0', ':', '0', '0'}}
	d := st.text[:]
	putDigits(d[0:4], int(year))
	putDigits(d[5:7], int(month))
	putDigits(d[8:10], int(day))
	putDigits(d[11:13], int(sod/3600))
	putDigits(d[14:16], int(sod/60%60))
	putDigits(d[17:19], int(sod%60))
	return st
}

// civil returns the proleptic Gregorian date of a day counted from
// 1970-01-01 (Howard Hinnant's days_from_civil, inverted).
func civil(days int64) (year, month, day int64) {
	z := days + 719468
	era := z
	if era < 0 {
		era -= 146096
	}
	era /= 146097
	doe := z - era*146097                                  // [0, 146096]
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365 // [0, 399]
	doy := doe - (365*yoe + yoe/4 - yoe/100)               // [0, 365]
	mp := (5*doy + 2) / 153                                // [0, 11], from March
	day = doy - (153*mp+2)/5 + 1
	month = mp + 3
	if mp >= 10 {
		month = mp - 9
	}
	year = yoe + era*400
	if month <= 2 {
		year++
	}
	return year, month, day
}

// appendMillis appends d in milliseconds to the microsecond, as
// strconv.AppendFloat(float64(d.Microseconds())/1000, 'f', -1, 64) does,
// without its float formatting: below 10^15 µs the decimal itself is the
// shortest form that reads back as that float.
func appendMillis(b []byte, d time.Duration) []byte {
	us := d.Microseconds()
	if us < 0 || us >= 1e15 {
		return strconv.AppendFloat(b, float64(us)/1000, 'f', -1, 64)
	}
	b = appendCount(b, us/1000)
	if frac := int(us % 1000); frac != 0 {
		f := [...]byte{'.', '0', '0', '0'}
		putDigits(f[1:], frac)
		n := len(f)
		for f[n-1] == '0' {
			n--
		}
		b = append(b, f[:n]...)
	}
	return b
}

// appendCount appends n in decimal, as strconv.AppendInt(b, n, 10)
// does, in one call and without its 65-byte buffer for the small numbers
// a line holds.
func appendCount(b []byte, n int64) []byte {
	if n < 0 || n >= 1e8 {
		return strconv.AppendInt(b, n, 10)
	}
	d := 1
	for x := n; x >= 10; x /= 10 {
		d++
	}
	var f [8]byte
	putDigits(f[:d], int(n))
	return append(b, f[:d]...)
}

// digitPairs is "00" to "99", for writing two digits at a time.
const digitPairs = "0001020304050607080910111213141516171819" +
	"2021222324252627282930313233343536373839" +
	"4041424344454647484950515253545556575859" +
	"6061626364656667686970717273747576777879" +
	"8081828384858687888990919293949596979899"

// putDigits writes n, not negative, into d as len(d) digits, zero-padded.
func putDigits(d []byte, n int) {
	i := len(d)
	for ; i >= 2; i -= 2 {
		q := n / 100
		r := (n - q*100) * 2
		d[i-2], d[i-1] = digitPairs[r], digitPairs[r+1]
		n = q
	}
	if i == 1 {
		d[0] = byte('0' + n%10)
	}
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	return append(appendJSONChars(append(b, '"'), s), '"')
}

// appendJSONChars appends s as the inside of a JSON string: quotes,
// backslashes and control characters escaped, invalid UTF-8 replaced.
// Runs of bytes that need neither are copied whole, found eight bytes at
// a time.
func appendJSONChars(b []byte, s string) []byte {
	if plainString(s) {
		// What a line holds nearly always: names and ids.
		return append(b, s...)
	}
	const hex = "0123456789abcdef"
	plain := 0
	for i := 0; i < len(s); {
		if i+8 <= len(s) {
			if plainWord(word(s[i:])) {
				i += 8
				continue
			}
		}
		c := s[i]
		if jsonPlain[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[plain:i]...)
			if c < 0x20 {
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
			} else {
				b = append(b, '\\', c)
			}
			i++
			plain = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[plain:i]...)
			b = append(b, `\ufffd`...)
			plain = i + 1
		}
		i += size
	}
	return append(b, s[plain:]...)
}

// jsonPlain tells the bytes a JSON string holds as they are: ASCII but
// for control characters, quotes and backslashes.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainWord reports whether none of the eight bytes of x needs a look of
// its own in a JSON string: none is a control character, a quote, a
// backslash or outside ASCII. The tests are the exact "has a byte less
// than" and "has a zero byte" ones of Bit Twiddling Hacks.
func plainWord(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q, bs := x^(ones*'"'), x^(ones*'\\')
	return (x|(x-ones*0x20)|(q-ones)&^q|(bs-ones)&^bs)&highs == 0
}

// plainString reports whether no byte of s needs a look of its own in a
// JSON string, eight at a time: the last eight bytes (a short string's
// first and last four, or its first, middle and last byte) are looked at
// as one word, overlapping those before, so no byte is looked at alone.
func plainString(s string) bool {
	n := len(s)
	switch {
	case n >= 8:
		for i := 0; i < n-8; i += 8 {
			if !plainWord(word(s[i:])) {
				return false
			}
		}
		return plainWord(word(s[n-8:]))
	case n >= 4:
		return plainWord(uint64(half(s)) | uint64(half(s[n-4:]))<<32)
	case n > 0:
		// The other five bytes are a plain 'a'.
		const pad = 0x6161616161 << 24
		return plainWord(uint64(s[0]) | uint64(s[n/2])<<8 | uint64(s[n-1])<<16 | pad)
	}
	return true
}

// word is the first eight bytes of s, little-endian.
func word(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// half is the first four bytes of s, little-endian.
func half(s string) uint32 {
	_ = s[3]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

// appendAttempts sums up the attempts of a request: each failed one with
// its status and class, then the winner, ":cut" when its stream was
// interrupted. Target names are config names, which need no JSON
// escaping.
func appendAttempts(b []byte, fails []failedAttempt, winner *candidate, cut bool) []byte {
	for i, a := range fails {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, a.c.t.name...)
		b = append(b, '#')
		b = appendCount(b, int64(a.c.slot+1))
		b = append(b, ':')
		if a.f.Status > 0 {
			b = appendCount(b, int64(a.f.Status))
			b = append(b, ' ')
		}
		b = append(b, a.f.Class.String()...)
	}
	if winner != nil {
		if len(fails) > 0 {
			b = append(b, ' ')
		}
		b = append(b, winner.t.name...)
		b = append(b, '#')
		b = appendCount(b, int64(winner.slot+1))
		if cut {
			b = append(b, ":cut"...)
		} else {
			b = append(b, ":ok"...)
		}
	}
	return b
}
