package engine

import (
	"bytes"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/valyala/fasthttp"
)

// responseCache holds passthrough GET answers. It belongs to the engine,
// so it survives reloads. Its store is made when the first answer is kept:
// ristretto sizes its admission counters for max_bytes up front (3 MB of
// heap for the default 64 MB) and runs goroutines of its own, which a
// gateway that never serves a cacheable GET would carry for nothing.
type responseCache struct {
	cfg ristretto.Config[string, *entry]
	// c is the store, nil until the first answer kept.
	c atomic.Pointer[ristretto.Cache[string, *entry]]
	// mu orders making the store with closing it: none is made after.
	mu           sync.Mutex
	closed       bool
	hits, misses atomic.Int64
}

// entry is one cached answer: status, headers and body.
type entry struct {
	status  int
	headers [][2][]byte
	body    []byte
}

func newResponseCache(maxBytes int64) (*responseCache, error) {
	// The one setting ristretto could refuse; checked here, at start, as
	// when the store was made here.
	if maxBytes <= 0 {
		return nil, fmt.Errorf("max_bytes must be positive, got %d", maxBytes)
	}
	return &responseCache{cfg: ristretto.Config[string, *entry]{
		// Ten counters per entry that fits, at a guess of 1 KiB each.
		NumCounters:        max(1000, maxBytes/1024*10),
		MaxCost:            maxBytes,
		BufferItems:        64,
		IgnoreInternalCost: true,
	}}, nil
}

// store returns the store, made on the first call; nil once closed.
func (rc *responseCache) store() *ristretto.Cache[string, *entry] {
	if c := rc.c.Load(); c != nil {
		return c
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if c := rc.c.Load(); c != nil || rc.closed {
		return c
	}
	// newResponseCache checked the one setting that could fail.
	c, _ := ristretto.NewCache(&rc.cfg)
	rc.c.Store(c)
	return c
}

func cacheKey(provider string, key int, path, query []byte) string {
	b := make([]byte, 0, len(provider)+len(path)+len(query)+8)
	b = append(append(b, provider...), 0)
	b = strconv.AppendInt(b, int64(key), 10)
	b = append(append(b, 0), path...)
	return string(append(append(b, '?'), query...))
}

func (rc *responseCache) get(key string) (*entry, bool) {
	var e *entry
	ok := false
	if c := rc.c.Load(); c != nil {
		e, ok = c.Get(key)
	}
	if ok {
		rc.hits.Add(1)
	} else {
		rc.misses.Add(1)
	}
	return e, ok
}

func (rc *responseCache) set(key string, e *entry, ttl time.Duration) {
	cost := int64(len(e.body))
	for _, h := range e.headers {
		cost += int64(len(h[0]) + len(h[1]))
	}
	c := rc.store()
	if c == nil {
		return
	}
	c.SetWithTTL(key, e, cost, ttl)
	// Sets are applied asynchronously; waiting makes the next identical
	// GET a hit, at a cost only misses pay.
	c.Wait()
}

// size returns the number of cached entries and their bytes.
func (rc *responseCache) size() (entries int, bytes int64) {
	c := rc.c.Load()
	if c == nil {
		return 0, 0
	}
	c.IterValues(func(*entry) bool {
		entries++
		return false
	})
	return entries, c.MaxCost() - c.RemainingCost()
}

func (rc *responseCache) close() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.closed = true
	if c := rc.c.Load(); c != nil {
		c.Close()
	}
}

func newEntry(resp *fasthttp.Response) *entry {
	e := &entry{status: resp.StatusCode(), body: append([]byte(nil), resp.Body()...)}
	resp.Header.VisitAll(func(k, v []byte) {
		if !skipResponseHeader(k) {
			e.headers = append(e.headers, [2][]byte{append([]byte(nil), k...), append([]byte(nil), v...)})
		}
	})
	return e
}

func (e *entry) write(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(e.status)
	for _, h := range e.headers {
		ctx.Response.Header.SetCanonical(h[0], h[1])
	}
	ctx.Response.Header.Set("X-Cache", "HIT")
	ctx.SetBody(e.body)
}

// clientBypasses reports whether the client asked for a fresh answer.
func clientBypasses(h *fasthttp.RequestHeader) bool {
	cc := bytes.ToLower(h.Peek(fasthttp.HeaderCacheControl))
	return bytes.Contains(cc, []byte("no-cache")) || bytes.Contains(cc, []byte("no-store"))
}

// storable honours no-store (and private) from either side.
func storable(req *fasthttp.RequestHeader, resp *fasthttp.ResponseHeader) bool {
	for _, cc := range [][]byte{req.Peek(fasthttp.HeaderCacheControl), resp.Peek(fasthttp.HeaderCacheControl)} {
		cc = bytes.ToLower(cc)
		if bytes.Contains(cc, []byte("no-store")) || bytes.Contains(cc, []byte("private")) {
			return false
		}
	}
	return true
}
