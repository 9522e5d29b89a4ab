package engine

import (
	"bytes"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/adapters"
)

// proxyPrefix is the path of the raw passthrough.
const proxyPrefix = "/proxy/"

// hopHeaders are per connection and never forwarded, with the client's
// gateway credentials and the upstream's cookies.
var hopHeaders = [][]byte{
	[]byte("Connection"), []byte("Keep-Alive"), []byte("Proxy-Connection"), []byte("Proxy-Authorization"),
	[]byte("Proxy-Authenticate"), []byte("Te"), []byte("Trailer"), []byte("Transfer-Encoding"), []byte("Upgrade"),
}

var clientCredentials = [][]byte{
	[]byte("Authorization"), []byte("X-Api-Key"), []byte("X-Goog-Api-Key"), []byte("Cookie"),
}

// passTarget is a provider as the passthrough reaches it.
type passTarget struct {
	base string // base_url without a trailing slash
	// last is base_url's last path segment plus "/": a rest that starts
	// with it is not doubled (an OpenAI SDK at /proxy/openai/v1).
	last string
	turn atomic.Uint32
}

func newPassTarget(baseURL string) *passTarget {
	pt := &passTarget{base: baseURL}
	if u, err := url.Parse(baseURL); err == nil {
		p := u.Path
		if i := bytes.LastIndexByte([]byte(p), '/'); i >= 0 && i+1 < len(p) {
			pt.last = p[i+1:] + "/"
		}
	}
	return pt
}

// proxy forwards any request under /proxy/{provider}/ to that provider's
// base_url with its key, and relays the answer as it comes. GETs are
// cached when cache.ttl is set.
// It returns the provider's name, "" when none was reached.
func (e *Engine) proxy(ctx *fasthttp.RequestCtx, s *snapshot) string {
	// The path as sent, not as normalized for dispatch: one that reached
	// /proxy/ only by normalization ("/v1/../proxy/...") is refused.
	raw, query := ctx.URI().PathOriginal(), ctx.URI().QueryString()
	if !bytes.HasPrefix(raw, []byte(proxyPrefix)) {
		badRequest("", "invalid_path", "passthrough path must start with "+proxyPrefix+" as sent, without . or .. segments").write(ctx)
		return ""
	}
	rest := raw[len(proxyPrefix):]
	name, sub, _ := bytes.Cut(rest, []byte("/"))
	p := s.providers[string(name)]
	if p == nil {
		(&apiError{status: fasthttp.StatusNotFound, typ: "invalid_request_error", code: "provider_not_found",
			msg: "no provider named " + strconv.Quote(string(name)) + "; GET /targets lists them"}).write(ctx)
		return ""
	}
	if p.pass == nil {
		badRequest("", "no_passthrough", "provider "+p.name+" ("+p.cfg.Protocol+") has no HTTP API to pass through").write(ctx)
		return ""
	}
	if msg := unsafePath(sub); msg != "" {
		badRequest("", "invalid_path", "passthrough path "+msg).write(ctx)
		return ""
	}
	if p.pass.last != "" && (bytes.HasPrefix(sub, []byte(p.pass.last)) || string(sub)+"/" == p.pass.last) {
		sub = sub[min(len(sub), len(p.pass.last)):]
	}

	// Cacheable GETs use the first key, so one entry serves them all; the
	// cache key names it, so a body fetched with one upstream key is never
	// served where another would be used.
	keyIdx := 0
	get := ctx.IsGet()
	if n := len(p.cfg.Keys); n > 1 && !get {
		keyIdx = int(p.pass.turn.Add(1)-1) % n
	}
	cacheable := get && s.cacheTTL > 0 && e.cache != nil
	var ckey string
	if cacheable {
		ckey = cacheKey(p.name, keyIdx, sub, query)
		if !clientBypasses(&ctx.Request.Header) {
			if ent, ok := e.cache.get(ckey); ok {
				ent.write(ctx)
				return p.name
			}
		}
	}

	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	ctx.Request.Header.CopyTo(&req.Header)
	for _, h := range hopHeaders {
		req.Header.DelBytes(h)
	}
	for _, h := range clientCredentials {
		req.Header.DelBytes(h)
	}
	// The upstream answers uncompressed: a cached body then suits every
	// client, and an echoed key can be found and redacted.
	req.Header.Del(fasthttp.HeaderAcceptEncoding)
	target := make([]byte, 0, len(p.pass.base)+1+len(sub)+1+len(query))
	target = append(append(append(target, p.pass.base...), '/'), sub...)
	if len(query) > 0 {
		target = append(append(target, '?'), query...)
	}
	req.SetRequestURIBytes(target)
	req.Header.SetHost("")
	req.UseHostHeader = false
	req.SetBody(ctx.PostBody())
	var key []byte
	if len(p.cfg.Keys) > 0 {
		k := p.cfg.Keys[keyIdx].Reveal()
		adapters.SetKey(p.cfg.Protocol, &req.Header, k)
		key = []byte(k)
	}
	for k, v := range p.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.SetTimeout(p.cfg.Timeout.D())

	resp := fasthttp.AcquireResponse()
	resp.StreamBody = !cacheable
	start := time.Now()
	if err := p.client.Do(req, resp); err != nil {
		fasthttp.ReleaseResponse(resp)
		e.log.Warn("passthrough failed", "provider", p.name, "err", err)
		(&apiError{status: fasthttp.StatusBadGateway, typ: "server_error", code: "upstream_unreachable",
			msg: "provider " + p.name + " could not be reached"}).write(ctx)
		return p.name
	}
	p.stats.codes.add(resp.StatusCode())
	p.stats.latency.observe(time.Since(start))
	ctx.SetStatusCode(resp.StatusCode())
	resp.Header.VisitAll(func(k, v []byte) {
		if !skipResponseHeader(k) {
			ctx.Response.Header.SetCanonical(k, v)
		}
	})
	if !cacheable {
		ctx.Response.SetBodyStream(&passBody{resp: resp, key: key,
			writes: clientWrites{conn: ctx.Conn(), timeout: e.writeTimeout}}, -1)
		return p.name
	}
	defer fasthttp.ReleaseResponse(resp)
	if len(key) > 0 && bytes.Contains(resp.Body(), key) {
		// Some upstreams quote the key they were sent in an error.
		resp.SetBody(bytes.ReplaceAll(resp.Body(), key, strRedacted))
	}
	ctx.SetBody(resp.Body())
	ctx.Response.Header.Set("X-Cache", "MISS")
	if resp.StatusCode() == fasthttp.StatusOK && storable(&ctx.Request.Header, &resp.Header) {
		e.cache.set(ckey, newEntry(resp), s.cacheTTL)
	}
	return p.name
}

// unsafePath says why a passthrough path could leave the provider's
// base_url, or "" when it cannot.
func unsafePath(sub []byte) string {
	lower := bytes.ToLower(sub)
	switch {
	case bytes.Contains(lower, []byte("%2f")), bytes.Contains(lower, []byte("%5c")), bytes.ContainsRune(sub, '\\'):
		return "must not hold encoded slashes or backslashes"
	case bytes.HasPrefix(sub, []byte("/")), bytes.Contains(sub, []byte("://")):
		return "must be relative to the provider's base_url"
	}
	for _, seg := range bytes.Split(sub, []byte("/")) {
		dec, err := url.PathUnescape(string(seg))
		if err != nil {
			return "holds a bad escape"
		}
		if dec == ".." || dec == "." {
			return "must not hold . or .. segments"
		}
	}
	return ""
}

func skipResponseHeader(k []byte) bool {
	for _, h := range hopHeaders {
		if bytes.EqualFold(k, h) {
			return true
		}
	}
	for _, h := range gatewayHeaders {
		if bytes.EqualFold(k, h) {
			return true
		}
	}
	return false
}

// gatewayHeaders are set by the gateway itself (or per connection), so
// an upstream's, live or cached, must not replace them.
var gatewayHeaders = [][]byte{
	[]byte("Content-Length"), []byte("Set-Cookie"), []byte("Date"), []byte("Server"),
	hdrRequestID, hdrLimit, hdrRemaining, hdrReset, []byte("X-Cache"),
}

// passBody relays a streamed upstream body; each Read the server makes is
// flushed to the client as one chunk, so SSE goes through as it comes.
// The provider key is redacted wherever the upstream echoes it: an end of
// a read that could begin the key waits for the next read to tell, and a
// key never holds the newline that ends an event, so events still leave
// whole as they come.
type passBody struct {
	resp *fasthttp.Response
	key  []byte
	// buf holds what was read; out is the part of it ready for the
	// client, tail the part held back.
	buf, out, tail []byte
	err            error
	writes         clientWrites
}

var strRedacted = []byte("<secret>")

// Read returns what the server writes next, and readies its deadline.
func (b *passBody) Read(p []byte) (int, error) {
	n, err := b.read(p)
	if n > 0 {
		b.writes.before()
	}
	return n, err
}

func (b *passBody) read(p []byte) (int, error) {
	if len(b.key) == 0 {
		return b.resp.BodyStream().Read(p)
	}
	for len(b.out) == 0 {
		if b.err != nil {
			if len(b.tail) == 0 {
				return 0, b.err
			}
			// The body has ended: what was held back is no key.
			b.out, b.tail = b.tail, nil
			break
		}
		if b.buf == nil {
			b.buf = make([]byte, 16<<10)
		}
		start := copy(b.buf, b.tail)
		n, err := b.resp.BodyStream().Read(b.buf[start:])
		b.err = err
		data := b.buf[:start+n]
		if bytes.Contains(data, b.key) {
			data = bytes.ReplaceAll(data, b.key, strRedacted)
		}
		keep := 0
		if err == nil {
			keep = keyPrefixAtEnd(data, b.key)
		}
		b.out, b.tail = data[:len(data)-keep], data[len(data)-keep:]
	}
	n := copy(p, b.out)
	b.out = b.out[n:]
	return n, nil
}

// keyPrefixAtEnd returns the length of the longest end of data that is a
// beginning of key, shorter than key.
func keyPrefixAtEnd(data, key []byte) int {
	for i := max(0, len(data)-len(key)+1); i < len(data); i++ {
		if data[i] == key[0] && bytes.HasPrefix(key, data[i:]) {
			return len(data) - i
		}
	}
	return 0
}

// Close releases the upstream response once the server is done with it.
func (b *passBody) Close() error {
	if b.resp != nil {
		_ = b.resp.CloseBodyStream()
		fasthttp.ReleaseResponse(b.resp)
		b.resp = nil
	}
	return nil
}
