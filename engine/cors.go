package engine

import (
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"gateway/config"
)

// This file lets browser apps on other origins call the gateway (the
// cors: block): it answers preflights and marks the answers to allowed
// origins. Without a cors: block the snapshot holds no policy and a
// request pays one nil check.

// corsPolicy is a cors: block compiled at load: the headers it sends are
// built once.
type corsPolicy struct {
	any     bool
	origins map[string]bool
	// allowHeaders, maxAge and exposeHeaders are header values, ready.
	allowHeaders  []byte
	maxAge        []byte
	exposeHeaders []byte
}

// corsAllowHeaders are the request headers a browser may send to the
// gateway: its auth, JSON, the Anthropic SDK's version, request and
// session ids, and the debug switch.
var corsAllowHeaders = []string{"authorization", "content-type", "x-api-key", "x-request-id", "anthropic-version",
	"x-gateway-debug", "x-session-id"}

// corsExposeHeaders are the response headers a browser app may read.
var corsExposeHeaders = "x-routed-via, x-fallback-attempts, x-request-id, x-gateway-route, x-ratelimit-limit, " +
	"x-ratelimit-remaining, x-ratelimit-reset, retry-after, x-cache, x-gateway-explain"

var (
	hdrOrigin      = []byte("Origin")
	hdrACRM        = []byte("Access-Control-Request-Method")
	hdrVary        = []byte("Vary")
	hdrACAO        = []byte("Access-Control-Allow-Origin")
	hdrACAM        = []byte("Access-Control-Allow-Methods")
	hdrACAH        = []byte("Access-Control-Allow-Headers")
	hdrACMA        = []byte("Access-Control-Max-Age")
	hdrACEH        = []byte("Access-Control-Expose-Headers")
	strOrigin      = []byte("Origin")
	corsPrefix     = []byte("Access-Control-")
	strCORSMethods = []byte("GET, POST, PUT, PATCH, DELETE, OPTIONS")
)

// newCORS compiles c; nil for no cors: block.
func newCORS(c *config.CORS) *corsPolicy {
	if c == nil {
		return nil
	}
	p := &corsPolicy{origins: map[string]bool{}, exposeHeaders: []byte(corsExposeHeaders),
		maxAge: []byte(strconv.FormatInt(int64(c.MaxAge.D().Seconds()), 10))}
	for _, o := range c.Origins {
		p.any = p.any || o == "*"
		p.origins[o] = true
	}
	allow := append([]string(nil), corsAllowHeaders...)
	for _, h := range c.Headers {
		allow = append(allow, strings.ToLower(h))
	}
	p.allowHeaders = []byte(strings.Join(allow, ", "))
	return p
}

// apply marks the answer to an allowed origin, and answers a preflight
// itself: true when it did, and the request is done. A preflight from an
// origin not allowed gets 403 and no CORS header, so the browser refuses
// the call and whoever reads the answer sees why. A request without
// Origin (not from a browser on another origin) goes on untouched.
func (p *corsPolicy) apply(ctx *fasthttp.RequestCtx) bool {
	origin := ctx.Request.Header.PeekBytes(hdrOrigin)
	if len(origin) == 0 {
		return false
	}
	h := &ctx.Response.Header
	// The answer depends on the origin whenever one is named: a cache
	// between must not hand one origin's answer to another.
	h.SetCanonical(hdrVary, strOrigin)
	allowed := p.any || p.origins[string(origin)]
	preflight := ctx.Request.Header.IsOptions() && len(ctx.Request.Header.PeekBytes(hdrACRM)) > 0
	if !allowed {
		if preflight {
			(&apiError{status: fasthttp.StatusForbidden, typ: "permission_error", code: "origin_not_allowed",
				msg: "origin " + strconv.Quote(string(origin)) + " is not in the gateway's cors.origins"}).write(ctx)
		}
		return preflight
	}
	h.SetCanonical(hdrACAO, origin)
	if !preflight {
		h.SetCanonical(hdrACEH, p.exposeHeaders)
		return false
	}
	h.SetCanonical(hdrACAM, strCORSMethods)
	h.SetCanonical(hdrACAH, p.allowHeaders)
	h.SetCanonical(hdrACMA, p.maxAge)
	ctx.SetStatusCode(fasthttp.StatusNoContent)
	return true
}
