package adapters

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"io"
	"slices"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// An upstream may echo the key it was sent: quoted in an error, in a
// header, in a reply a model wrote, plainly, with JSON escapes or masked.
// A Redactor finds all of these for every provider key of a config; New
// wraps each adapter in it and the engine's passthrough uses the same one,
// so that no key leaves the gateway.

const (
	// windowLen is the shortest run of a key taken for the key: 8
	// characters of a random key cannot be guessed, and fewer occur by
	// chance in ordinary text.
	windowLen = 8
	// minKeyLen is the shortest key redacted at all. A shorter one (the
	// "x" or "none" a local server takes) is no secret, and matching it
	// would garble every answer. Keys shorter than windowLen are matched
	// whole.
	minKeyLen = 4
	// maskSide is the fewest characters a masked key must show of its
	// start and of its end ("sk-***xyz") to be taken for the key: with
	// fewer, ordinary text would match by chance ("a...b"), and two
	// characters of a key tell next to nothing.
	maskSide = 3
	// maxHold bounds what a stream reader keeps back at the end of a read.
	maxHold = 4 << 10
)

var strRedacted = []byte("<secret>")

// Redactor finds provider keys in text an upstream sent: any windowLen
// bytes of a key, such a run written with JSON escapes (\u0073k-...,
// \/), and masked forms (the key's start, mask characters, its end:
// sk-fa***xyz). It is built once per config snapshot, never changes, and
// is safe for concurrent use; a nil *Redactor finds nothing.
//
// Text without a key costs one pass of cheap probes and no allocation: the
// 4-byte blocks at every fifth byte of the text are looked up in a bitmap
// of the keys' 4-byte windows (any 8-byte run holds such a block), and
// only a hit is checked against the keys' 8-byte windows. Escapes are
// decoded, into a copy, only when the text holds one that spells a key's
// character or a mask character; masks are looked for only where a key's
// first characters occur.
type Redactor struct {
	// grams is the bitmap of the keys' 4-byte windows, by gramHash.
	grams []uint64
	shift uint32
	// windows holds every 8-byte window of the keys of windowLen or more.
	windows map[uint64]struct{}
	// whole holds the keys shorter than windowLen.
	whole [][]byte
	heads []maskHead
	// spelled marks the ASCII characters an escape matters for: the keys'
	// bytes and the mask characters; nonASCII is set when a key has
	// other bytes.
	spelled  [utf8.RuneSelf]bool
	nonASCII bool
	// part marks the bytes a key, escaped or masked, can be written with;
	// a stream reader holds back a trailing run of them, up to hold.
	part [256]bool
	hold int
}

// maskHead groups the keys that begin with head, for masked forms. They
// are looked for where head's rarest byte, head[rare], occurs.
type maskHead struct {
	head []byte
	rare int
	keys [][]byte
}

// commonBytes orders bytes from common to rare in what upstreams send:
// English in JSON. Bytes it does not list are the rarest.
const commonBytes = " etaoinsrhldcu\"mfpgwyb,.:vk0123456789{}[]TSACIEMNOPRLD\n-_xjqzBFGHKUVWYJQX"

// maskRunes are the characters a masked key hides its middle with.
var maskRunes = [...]rune{'*', '.', 'x', 'X', '•', '●', '…'}

// NewRedactor builds the redactor of keys. It returns nil when no key is
// minKeyLen long, so that a config without keys costs nothing.
func NewRedactor(keys []string) *Redactor {
	r := &Redactor{windows: map[uint64]struct{}{}}
	seen := map[string]bool{}
	var grams []uint32
	longest := 0
	for _, k := range keys {
		if len(k) < minKeyLen || seen[k] {
			continue
		}
		seen[k] = true
		b := []byte(k)
		longest = max(longest, len(b))
		for _, c := range b {
			r.part[c] = true
			if c < utf8.RuneSelf {
				r.spelled[c] = true
			} else {
				r.nonASCII = true
			}
		}
		if len(b) < windowLen {
			r.whole = append(r.whole, b)
		} else {
			for i := 0; i+windowLen <= len(b); i++ {
				r.windows[binary.LittleEndian.Uint64(b[i:])] = struct{}{}
			}
			for i := 0; i+4 <= len(b); i++ {
				grams = append(grams, binary.LittleEndian.Uint32(b[i:]))
			}
		}
		if len(b) >= 2*maskSide {
			r.addHead(b)
		}
	}
	if len(seen) == 0 {
		return nil
	}
	// At least 256 bits per window: a block of ordinary text passes the
	// bitmap by chance well under 1% of the time. 8 to 128 KiB.
	bits := uint32(16)
	for 1<<bits < 256*len(grams) && bits < 20 {
		bits++
	}
	r.shift = 32 - bits
	r.grams = make([]uint64, 1<<bits/64)
	for _, g := range grams {
		h := gramHash(g, r.shift)
		r.grams[h/64] |= 1 << (h % 64)
	}
	for _, m := range maskRunes {
		for _, c := range utf8.AppendRune(nil, m) {
			r.part[c] = true
		}
		if m < utf8.RuneSelf {
			r.spelled[m] = true
		}
	}
	for _, c := range []byte(`\u0123456789abcdefABCDEF`) {
		r.part[c] = true
	}
	// A fragment shorter than a window, fully escaped (6 bytes a
	// character), or a key's start and a mask run, fit in 8 bytes a
	// character of the longest key.
	r.hold = min(maxHold, 8*longest)
	return r
}

func (r *Redactor) addHead(k []byte) {
	for i := range r.heads {
		if bytes.Equal(r.heads[i].head, k[:maskSide]) {
			r.heads[i].keys = append(r.heads[i].keys, k)
			return
		}
	}
	h := maskHead{head: k[:maskSide], keys: [][]byte{k}}
	rank := func(c byte) int {
		if i := strings.IndexByte(commonBytes, c); i >= 0 {
			return i
		}
		return len(commonBytes)
	}
	for i, c := range h.head {
		if rank(c) > rank(h.head[h.rare]) {
			h.rare = i
		}
	}
	r.heads = append(r.heads, h)
}

// gramHash maps a 4-byte block to its bit of the bitmap (multiply-shift).
func gramHash(g, shift uint32) uint32 { return g * 0x9E3779B1 >> (shift & 31) }

// Redact returns t with every key, key fragment and masked key replaced
// by <secret>, and whether there was any. When there was none it returns
// t itself, having allocated nothing; t is never written to.
func (r *Redactor) Redact(t []byte) ([]byte, bool) {
	if r == nil {
		return t, false
	}
	spans := r.find(t, nil)
	if r.escapes(t) {
		dec, src := unescape(t)
		for _, s := range r.find(dec, nil) {
			// A span ends after the whole escape of its last byte.
			to := s.to
			for to < len(dec) && src[to] == src[s.to-1] {
				to++
			}
			spans = append(spans, span{src[s.from], src[to]})
		}
	}
	if len(spans) == 0 {
		return t, false
	}
	return replace(t, spans), true
}

// String is Redact for a string.
func (r *Redactor) String(s string) string {
	if out, found := r.Redact(unsafe.Slice(unsafe.StringData(s), len(s))); found {
		return string(out)
	}
	return s
}

// Holds reports whether t holds anything Redact would replace.
func (r *Redactor) Holds(t []byte) bool {
	_, found := r.Redact(t)
	return found
}

// Hold returns how many bytes at the end of t a stream reader keeps back,
// to scan again with its next read: those that may begin a key, escaped
// or masked, which the next read completes. An event's or a line's end is
// never held, so events still go out as they come.
func (r *Redactor) Hold(t []byte) int {
	if r == nil {
		return 0
	}
	n := 0
	for n < len(t) && n < r.hold && r.part[t[len(t)-1-n]] {
		n++
	}
	return n
}

// span is a range of text to replace.
type span struct{ from, to int }

// find appends the spans of key material in t, read as it is.
func (r *Redactor) find(t []byte, out []span) []span {
	out = r.windowsIn(t, out)
	for _, k := range r.whole {
		for i := 0; ; {
			j := bytes.Index(t[i:], k)
			if j < 0 {
				break
			}
			out = append(out, span{i + j, i + j + len(k)})
			i += j + len(k)
		}
	}
	for _, h := range r.heads {
		for i := h.rare; i < len(t); i++ {
			j := bytes.IndexByte(t[i:], h.head[h.rare])
			if j < 0 {
				break
			}
			i += j
			q := i - h.rare
			if q+maskSide > len(t) || t[q] != h.head[0] || t[q+1] != h.head[1] || t[q+2] != h.head[2] {
				continue
			}
			for _, k := range h.keys {
				if end := masked(t, q, k); end > 0 {
					out = append(out, span{q, end})
					break
				}
			}
		}
	}
	return out
}

// windowsIn appends the maximal runs of t whose every 8-byte window is
// one of a key's.
func (r *Redactor) windowsIn(t []byte, out []span) []span {
	if len(r.windows) == 0 {
		return out
	}
	// next is the first window start not yet judged.
	next := 0
	for p := r.probe(t, 0); p >= 0; p = r.probe(t, p+blockStride) {
		// The windows holding block p start at most 4 bytes before it.
		for s := max(p-4, next); s <= p && s+windowLen <= len(t); s++ {
			if !r.window(t, s) {
				continue
			}
			from, last := s, s
			for from > next && r.window(t, from-1) {
				from--
			}
			for last+1+windowLen <= len(t) && r.window(t, last+1) {
				last++
			}
			out = append(out, span{from, last + windowLen})
			next = last + 1
			// Go on with the first block a later window holds.
			p = (next+blockStride-1)/blockStride*blockStride - blockStride
			break
		}
	}
	return out
}

// blockStride is how far apart the probed 4-byte blocks are: any 8-byte
// window holds a whole block starting at one of its first 5 bytes, so
// every fifth is enough.
const blockStride = windowLen - 4 + 1

// probe returns the first block from p on, every blockStride bytes, whose
// bit is set; -1 when there is none. It is the loop all text goes
// through, kept small so that it runs in registers; two blocks a turn
// overlap their loads (a 300-byte clean answer: ~20 % less time).
func (r *Redactor) probe(t []byte, p int) int {
	grams, shift := r.grams, r.shift
	for ; p+4+blockStride <= len(t); p += 2 * blockStride {
		h1 := gramHash(binary.LittleEndian.Uint32(t[p:p+4]), shift)
		h2 := gramHash(binary.LittleEndian.Uint32(t[p+blockStride:p+blockStride+4]), shift)
		b1, b2 := grams[h1/64]&(1<<(h1%64)), grams[h2/64]&(1<<(h2%64))
		if b1|b2 != 0 {
			if b1 != 0 {
				return p
			}
			return p + blockStride
		}
	}
	for ; p+4 <= len(t); p += blockStride {
		if h := gramHash(binary.LittleEndian.Uint32(t[p:p+4]), shift); grams[h/64]&(1<<(h%64)) != 0 {
			return p
		}
	}
	return -1
}

func (r *Redactor) window(t []byte, s int) bool {
	_, ok := r.windows[binary.LittleEndian.Uint64(t[s:])]
	return ok
}

// masked returns where a masked form of k that starts at t[q] ends: at
// least maskSide characters of k's start, mask characters, at least
// maskSide of k's end. It returns 0 when there is none.
func masked(t []byte, q int, k []byte) int {
	n := 0
	for n < len(k) && q+n < len(t) && t[q+n] == k[n] {
		n++
	}
	// The mask begins after the whole common start, unless k itself
	// holds mask characters (an x) there.
	for pre := n; pre >= maskSide; pre-- {
		at := q + pre
		end := at
		for m := maskAt(t[end:]); m > 0; m = maskAt(t[end:]) {
			end += m
		}
		// Likewise, k's end may begin inside the run.
		for s := end; s > at && end-s < len(k); s-- {
			if l := suffixAt(t[s:], k); l >= maskSide {
				return s + l
			}
			if bytes.IndexByte(k, t[s-1]) < 0 {
				break
			}
		}
	}
	return 0
}

// maskAt returns the length of the mask character t begins with, 0 if
// none.
func maskAt(t []byte) int {
	if len(t) == 0 {
		return 0
	}
	switch t[0] {
	case '*', '.', 'x', 'X':
		return 1
	case 0xe2:
		c, n := utf8.DecodeRune(t)
		if c == '•' || c == '●' || c == '…' {
			return n
		}
	}
	return 0
}

// suffixAt returns the length of the longest end of k that u begins with.
func suffixAt(u, k []byte) int {
	for m := min(len(u), len(k)); m > 0; m-- {
		if bytes.Equal(u[:m], k[len(k)-m:]) {
			return m
		}
	}
	return 0
}

// escapes reports whether t holds a JSON escape that spells a key's
// character or a mask character: only then is its decoded text worth a
// look. Common escapes (\n, \", \u003c) are not.
func (r *Redactor) escapes(t []byte) bool {
	for i := 0; i < len(t); {
		j := bytes.IndexByte(t[i:], '\\')
		if j < 0 {
			return false
		}
		i += j
		c, n := escapeAt(t, i)
		if n == 0 {
			i++
			continue
		}
		if c < utf8.RuneSelf && r.spelled[c] || c >= utf8.RuneSelf && (r.nonASCII || c == '•' || c == '●' || c == '…') {
			return true
		}
		i += n
	}
	return false
}

// escapeAt decodes the JSON escape at t[i], a backslash: the character it
// spells and its length, 0 when it is none.
func escapeAt(t []byte, i int) (rune, int) {
	if i+1 >= len(t) {
		return 0, 0
	}
	switch c := t[i+1]; c {
	case '"', '\\', '/':
		return rune(c), 2
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		v, ok := hex4(t[i+2:])
		if !ok {
			return 0, 0
		}
		if utf16.IsSurrogate(v) {
			if i+12 <= len(t) && t[i+6] == '\\' && t[i+7] == 'u' {
				if lo, ok := hex4(t[i+8:]); ok {
					if c := utf16.DecodeRune(v, lo); c != utf8.RuneError {
						return c, 12
					}
				}
			}
			return utf8.RuneError, 6
		}
		return v, 6
	}
	return 0, 0
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var v rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			v = v<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// unescape decodes t's JSON escapes, wherever they are. src[i] is where in
// t decoded byte i came from; src[len(dec)] is len(t).
func unescape(t []byte) (dec []byte, src []int) {
	dec = make([]byte, 0, len(t))
	src = make([]int, 0, len(t)+1)
	for i := 0; i < len(t); {
		if t[i] == '\\' {
			if c, n := escapeAt(t, i); n > 0 {
				l := len(dec)
				dec = utf8.AppendRune(dec, c)
				for range len(dec) - l {
					src = append(src, i)
				}
				i += n
				continue
			}
		}
		dec = append(dec, t[i])
		src = append(src, i)
		i++
	}
	return dec, append(src, len(t))
}

// replace returns a copy of t with each span, overlapping ones merged,
// replaced by <secret>.
func replace(t []byte, spans []span) []byte {
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.from, b.from) })
	out := make([]byte, 0, len(t))
	at := 0
	for i := 0; i < len(spans); {
		s := spans[i]
		for i++; i < len(spans) && spans[i].from < s.to; i++ {
			s.to = max(s.to, spans[i].to)
		}
		out = append(append(out, t[at:s.from]...), strRedacted...)
		at = s.to
	}
	return append(out, t[at:]...)
}

// failure returns err without key material in what it says. A Failure is
// copied, never changed, as some are shared.
func (r *Redactor) failure(err error) error {
	if r == nil || err == nil || err == io.EOF {
		return err
	}
	f, ok := err.(*Failure)
	if !ok {
		if msg := err.Error(); r.Holds([]byte(msg)) {
			return &Failure{Class: Retryable, Msg: r.String(msg)}
		}
		return err
	}
	msg := r.String(f.Msg)
	body, found := r.Redact(f.Body)
	if !found && msg == f.Msg {
		return f
	}
	c := *f
	c.Msg, c.Body = msg, body
	return &c
}

// redacting wraps an adapter so that nothing it returns holds a key: a
// reply's body, every stream frame, a failure's message and body. It sees
// what the adapter built, after translation, so a key a translation
// joined from parts is found too.
type redacting struct {
	p   Provider
	red *Redactor
}

func (w redacting) Chat(c *Call, r *Reply) error { return w.reply(w.p.Chat(c, r), r) }

// The optional calls, redacted like Chat. A protocol that lacks one
// refuses as Unsupported without sending anything; Serves tells the
// engine so beforehand.
func (w redacting) Embed(c *Call, r *Reply) error {
	return forward(w, r, errNoEmbeddings, func(e Embedder) error { return e.Embed(c, r) })
}

// Complete is the adapter's Complete, redacted, or a refusal.
func (w redacting) Complete(c *Call, r *Reply) error {
	return forward(w, r, errNoCompletions, func(e Completer) error { return e.Complete(c, r) })
}

// Responses is the adapter's Responses, redacted, or a refusal.
func (w redacting) Responses(c *Call, r *Reply) error {
	return forward(w, r, errNoResponses, func(e ResponsesProvider) error { return e.Responses(c, r) })
}

// Messages is the adapter's Messages, redacted, or a refusal.
func (w redacting) Messages(c *Call, r *Reply) error {
	return forward(w, r, errNoMessages, func(e MessagesProvider) error { return e.Messages(c, r) })
}

// CountTokens is the adapter's CountTokens, redacted, or a refusal.
func (w redacting) CountTokens(c *Call, r *Reply) error {
	return forward(w, r, errNoCount, func(e TokenCounter) error { return e.CountTokens(c, r) })
}

// forward makes the optional call T of w's adapter, redacted, or refuses
// with no when the adapter lacks it.
func forward[T any](w redacting, r *Reply, no *Failure, call func(T) error) error {
	p, ok := w.p.(T)
	if !ok {
		return no
	}
	return w.reply(call(p), r)
}

// The refusals of a protocol that lacks a call: another target may have it.
var (
	errNoEmbeddings  = untranslatable("this provider's protocol does not serve embeddings")
	errNoCompletions = untranslatable("this provider's protocol does not serve legacy completions")
	errNoResponses   = untranslatable("this provider's protocol does not serve the Responses API natively")
	errNoMessages    = untranslatable("this provider's protocol does not serve the Messages API natively")
	errNoCount       = untranslatable("this provider's protocol does not count tokens")
)

// reply redacts what an attempt that ended with err returned.
func (w redacting) reply(err error, r *Reply) error {
	if err != nil {
		return w.red.failure(err)
	}
	if r.Stream == nil {
		r.Body, _ = w.red.Redact(r.Body)
		return nil
	}
	if s, ok := r.Stream.(interface{ redactWith(*Redactor) }); ok {
		s.redactWith(w.red)
	} else {
		r.Stream = &redactedStream{Stream: r.Stream, streamRedactor: streamRedactor{w.red}}
	}
	return nil
}

// streamRedactor is embedded in an adapter's Stream, so that redacting
// hands it the redactor without another allocation per stream.
type streamRedactor struct{ red *Redactor }

func (s *streamRedactor) redactWith(r *Redactor) { s.red = r }

// pass redacts what a stream's Next returns.
func (s *streamRedactor) pass(frame []byte, err error) ([]byte, error) {
	if err != nil {
		return nil, s.red.failure(err)
	}
	frame, _ = s.red.Redact(frame)
	return frame, nil
}

// redactedStream redacts a Stream that embeds no streamRedactor.
type redactedStream struct {
	Stream
	streamRedactor
}

func (s *redactedStream) Next() ([]byte, error) { return s.pass(s.Stream.Next()) }
