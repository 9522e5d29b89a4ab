package engine

import (
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

// This file remembers the last requests, for GET /api/requests: the
// access log's fields, kept whether or not the access log is on, never a
// body or a secret.

// recentSize is how many requests are remembered.
const recentSize = 200

// recentDefault is how many /api/requests lists without ?limit.
const recentDefault = 50

// textMax bounds the bytes kept of a request id or model name: both
// come from the client.
const textMax = 128

// text is a short string copied into a fixed array, so remembering one
// allocates nothing.
type text struct {
	n uint8
	b [textMax]byte
}

// set copies s, cut to textMax bytes on a rune boundary.
func (t *text) set(s string) {
	if len(s) > textMax {
		i := textMax
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	t.n = uint8(copy(t.b[:], s))
}

func (t *text) String() string { return string(t.b[:t.n]) }

// recentEntry is one request as /api/requests tells it. The strings are
// config names or constants, shared; what the client sent is copied.
type recentEntry struct {
	at                   int64 // unix ns, when answered
	id, model            text
	key, route, via, err string
	status, fallbacks    int32
	stream               bool
	latency              time.Duration
	prompt, completion   int64
}

// fill fills e from an access log line answered at.
func (e *recentEntry) fill(l *accessLine, at time.Time) {
	e.at = at.UnixNano()
	e.id.set(l.id)
	e.model.set(l.model)
	e.key, e.route, e.via = l.key, l.route, l.via
	e.status, e.fallbacks, e.stream = int32(l.status), int32(len(l.fails)), l.stream
	e.latency, e.prompt, e.completion = l.latency, int64(l.usage.Prompt), int64(l.usage.Completion)
	e.err = ""
	switch {
	case l.interrupted:
		e.err = "stream_interrupted"
	case l.status >= 400 && len(l.fails) > 0:
		e.err = l.fails[len(l.fails)-1].f.Class.String()
	case l.status >= 400:
		e.err = fasthttp.StatusMessage(l.status)
	}
}

// recentRing holds the last recentSize requests. Adding one claims a
// slot with an atomic and copies the entry under that slot's own lock,
// which only a reader of /api/requests or a writer a full ring later
// contends for.
type recentRing struct {
	next  atomic.Uint64
	slots [recentSize]recentSlot
}

type recentSlot struct {
	mu  sync.Mutex
	seq uint64
	e   recentEntry
}

// add remembers e.
func (r *recentRing) add(e *recentEntry) {
	sl, n := r.claim()
	if n > sl.seq {
		sl.seq, sl.e = n, *e
	}
	sl.mu.Unlock()
}

// record remembers the request l tells, answered at, filling its slot in
// place.
func (r *recentRing) record(l *accessLine, at time.Time) {
	sl, n := r.claim()
	if n > sl.seq {
		sl.seq = n
		sl.e.fill(l, at)
	}
	sl.mu.Unlock()
}

// claim takes the next slot, locked, and its sequence number. A slot a
// later writer already took (the ring went round while this one waited)
// is left to it.
func (r *recentRing) claim() (*recentSlot, uint64) {
	n := r.next.Add(1)
	sl := &r.slots[n%recentSize]
	sl.mu.Lock()
	return sl, n
}

type recentJS struct {
	TS               time.Time `json:"ts"`
	ID               string    `json:"id"`
	Key              string    `json:"key"`
	Route            string    `json:"route"`
	Model            string    `json:"model"`
	Via              string    `json:"via"`
	Status           int32     `json:"status"`
	LatencyMS        float64   `json:"latencyMs"`
	Fallbacks        int32     `json:"fallbacks"`
	PromptTokens     int64     `json:"promptTokens"`
	CompletionTokens int64     `json:"completionTokens"`
	Stream           bool      `json:"stream"`
	Error            string    `json:"error,omitempty"`
}

// list returns up to limit requests, newest first: every one for an
// admin, else those of key only.
func (r *recentRing) list(key string, admin bool, limit int) []recentJS {
	out := []recentJS{}
	last := r.next.Load()
	for n := last; n > 0 && n+recentSize > last && len(out) < limit; n-- {
		sl := &r.slots[n%recentSize]
		sl.mu.Lock()
		e, ok := sl.e, sl.seq == n
		sl.mu.Unlock()
		if !ok || (!admin && e.key != key) {
			continue
		}
		out = append(out, recentJS{TS: time.Unix(0, e.at).UTC(), ID: e.id.String(), Key: e.key, Route: e.route,
			Model: e.model.String(), Via: e.via, Status: e.status, LatencyMS: float64(e.latency.Microseconds()) / 1000,
			Fallbacks: e.fallbacks, PromptTokens: e.prompt, CompletionTokens: e.completion, Stream: e.stream, Error: e.err})
	}
	return out
}

// requestsList answers GET /api/requests?limit=N.
func (e *Engine) requestsList(ctx *fasthttp.RequestCtx, key *gatewayKey) {
	limit := recentDefault
	if v := ctx.QueryArgs().Peek("limit"); v != nil {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 {
			badRequest("limit", "invalid_limit", "limit must be a whole number from 1 (at most "+strconv.Itoa(recentSize)+" are kept)").write(ctx)
			return
		}
		limit = min(n, recentSize)
	}
	var name string
	if key != nil {
		name = key.cfg.Name
	}
	b, _ := json.Marshal(struct {
		Requests []recentJS `json:"requests"`
	}{e.recent.list(name, key.admin(), limit)})
	ctx.SetContentTypeBytes(strJSON)
	ctx.SetBody(b)
}
