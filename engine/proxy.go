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
// cached when cache.ttl is set. gk, the gateway key (nil with auth off),
// is charged the request and the tokens its answer reports.
// It returns the provider's name, "" when none was reached.
func (e *Engine) proxy(ctx *fasthttp.RequestCtx, s *snapshot, gk *gatewayKey) string {
	if gk != nil {
		// Every answer to a key says where its limit stands.
		defer func() { gk.rateHeaders(ctx, nanotime()) }()
		if err := gk.passRefusal(); err != nil {
			err.write(ctx)
			return ""
		}
	}
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
	use, ok := passAdmit(ctx, gk, p, sub)
	if !ok {
		return ""
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
				use.done()
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
	// client, and an echoed key can be found and redacted. (Without
	// Accept-Encoding any coding would be acceptable.)
	req.Header.Set(fasthttp.HeaderAcceptEncoding, "identity")
	target := make([]byte, 0, len(p.pass.base)+1+len(sub)+1+len(query))
	target = append(append(append(target, p.pass.base...), '/'), sub...)
	if len(query) > 0 {
		target = append(append(target, '?'), query...)
	}
	req.SetRequestURIBytes(target)
	req.Header.SetHost("")
	req.UseHostHeader = false
	req.SetBody(ctx.PostBody())
	if len(p.cfg.Keys) > 0 {
		adapters.SetKey(p.cfg.Protocol, &req.Header, p.cfg.Keys[keyIdx].Reveal())
	}
	for k, v := range p.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.SetTimeout(p.cfg.Timeout.D())

	resp := fasthttp.AcquireResponse()
	resp.StreamBody = !cacheable
	start := time.Now()
	if err := p.client.Do(req, resp); err != nil {
		use.done()
		fasthttp.ReleaseResponse(resp)
		// fasthttp's error may quote bytes the upstream sent.
		e.log.Warn("passthrough failed", "provider", p.name, "err", s.red.String(err.Error()))
		(&apiError{status: fasthttp.StatusBadGateway, typ: "server_error", code: "upstream_unreachable",
			msg: "provider " + p.name + " could not be reached"}).write(ctx)
		return p.name
	}
	p.stats.answered(resp.StatusCode(), time.Since(start), false)
	if enc := resp.Header.ContentEncoding(); s.red != nil && len(enc) > 0 && !bytes.EqualFold(enc, []byte("identity")) {
		// Asked for none, the upstream compressed anyway: the gateway
		// cannot see whether the body quotes a key.
		_ = resp.CloseBodyStream()
		fasthttp.ReleaseResponse(resp)
		(&apiError{status: fasthttp.StatusBadGateway, typ: "server_error", code: "upstream_encoded",
			msg: "provider " + p.name + " answered with a content-encoding the gateway did not ask for, so it cannot check the answer for provider keys"}).write(ctx)
		return p.name
	}
	ctx.SetStatusCode(resp.StatusCode())
	// Some upstreams quote the key they were sent, in a header or the
	// body: a header that holds one is dropped, a body redacted, and the
	// answer is not cached.
	keyed := false
	resp.Header.VisitAll(func(k, v []byte) {
		switch {
		case skipResponseHeader(k):
		case s.red.Holds(k) || s.red.Holds(v):
			keyed = true
		default:
			ctx.Response.Header.SetCanonical(k, v)
		}
	})
	if !cacheable {
		if use != nil {
			use.start(resp.Header.ContentType())
		}
		ctx.Response.SetBodyStream(&passBody{resp: resp, red: s.red, usage: use,
			writes: clientWrites{conn: ctx.Conn(), timeout: e.writeTimeout}}, -1)
		return p.name
	}
	// A cacheable GET's answer is served to other keys too: nobody is
	// charged for it.
	use.done()
	defer fasthttp.ReleaseResponse(resp)
	body, redacted := s.red.Redact(resp.Body())
	ctx.SetBody(body)
	ctx.Response.Header.Set("X-Cache", "MISS")
	if resp.StatusCode() == fasthttp.StatusOK && !keyed && !redacted && storable(&ctx.Request.Header, &resp.Header) {
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
	// CORS is the gateway's policy (cors:), not the upstream's.
	if len(k) > len(corsPrefix) && bytes.EqualFold(k[:len(corsPrefix)], corsPrefix) {
		return true
	}
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
// Provider keys are redacted wherever the upstream echoes them: an end of
// a read that could begin one (red.Hold) waits for the next read to
// tell, and a key never holds the newline that ends an event, so events
// still leave whole as they come.
type passBody struct {
	resp *fasthttp.Response
	red  *adapters.Redactor
	// usage reads what the client is sent for the usage to charge; nil
	// with auth off.
	usage *passUsage
	// buf holds what was read; out is the part of it ready for the
	// client, tail the part held back.
	buf, out, tail []byte
	err            error
	writes         clientWrites
}

// Read returns what the server writes next, counts the usage it shows
// and readies the client write deadline.
func (b *passBody) Read(p []byte) (int, error) {
	n, err := b.read(p)
	if n > 0 {
		b.writes.before()
	}
	if b.usage != nil {
		b.usage.feed(p[:n])
	}
	return n, err
}

func (b *passBody) read(p []byte) (int, error) {
	if b.red == nil {
		return b.resp.BodyStream().Read(p)
	}
	for len(b.out) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		if b.buf == nil {
			// Room for a read beside the most Hold keeps back.
			b.buf = make([]byte, 16<<10)
		}
		start := copy(b.buf, b.tail)
		n, err := b.resp.BodyStream().Read(b.buf[start:])
		b.err = err
		data := b.buf[:start+n]
		keep := 0
		if err == nil {
			keep = b.red.Hold(data)
		}
		// What is held back is scanned with the next read, so a key
		// whose start it is goes whole.
		b.out, _ = b.red.Redact(data[:len(data)-keep])
		b.tail = data[len(data)-keep:]
	}
	n := copy(p, b.out)
	b.out = b.out[n:]
	return n, nil
}

// Close releases the upstream response once the server is done with it,
// and charges the usage the answer reported.
func (b *passBody) Close() error {
	b.usage.done()
	if b.resp != nil {
		_ = b.resp.CloseBodyStream()
		fasthttp.ReleaseResponse(b.resp)
		b.resp = nil
	}
	return nil
}
