package engine

import (
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
)

// This file writes the x-gateway-explain response header: one line that
// says why this request went where it went. Only an admin key that sends
// x-gateway-debug: 1 gets it; every other request pays one nil check.
// The line holds config names, key positions and failure classes only,
// never a key, an upstream's message or anything from the body.

var (
	hdrDebug   = []byte("X-Gateway-Debug")
	hdrExplain = []byte("X-Gateway-Explain")
)

// debugAsked reports whether key may see, and the client asked for, the
// x-gateway-explain header.
func debugAsked(ctx *fasthttp.RequestCtx, key *gatewayKey) bool {
	if !key.admin() {
		return false
	}
	v := ctx.Request.Header.PeekCanonical(hdrDebug)
	return len(v) == 1 && v[0] == '1'
}

// routeTrace records what one request's walk did, in order: each
// candidate skipped, each attempt failed.
type routeTrace struct {
	group  *group
	events []string
}

// add records that the key in slot of t (every key: slot -1) was passed
// over (what: skipped, failed) for why.
func (r *routeTrace) add(t *target, slot int, what, why string) {
	r.events = append(r.events, what+" "+candidateLabel(t, slot)+": "+why)
}

// candidateLabel names a (target, key) as explain does: the key's
// position only when the provider has more than one.
func candidateLabel(t *target, slot int) string {
	if slot < 0 || len(t.keys) < 2 {
		return t.name
	}
	return t.name + " key " + strconv.Itoa(slot+1) + " of " + strconv.Itoa(len(t.keys))
}

// header sets x-gateway-explain on the answer to x.
func (r *routeTrace) header(ctx *fasthttp.RequestCtx, x *exchange) {
	var b strings.Builder
	b.WriteString("route " + x.routeName + " -> group " + r.group.name + " (" + r.group.strategy + "); ")
	if x.winner.t != nil {
		b.WriteString("picked " + candidateLabel(x.winner.t, x.winner.slot))
	} else {
		b.WriteString("no candidate answered")
	}
	for _, ev := range r.events {
		b.WriteString("; " + ev)
	}
	ctx.Response.Header.SetCanonical(hdrExplain, []byte(b.String()))
}
