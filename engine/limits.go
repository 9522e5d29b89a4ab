package engine

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

var (
	hdrLimit     = []byte("X-Ratelimit-Limit")
	hdrRemaining = []byte("X-Ratelimit-Remaining")
	hdrReset     = []byte("X-Ratelimit-Reset")
)

// rateHeaders sets X-RateLimit-Limit, -Remaining and -Reset (unix seconds
// when the next request frees) for the key's per-minute limit.
func (k *gatewayKey) rateHeaders(ctx *fasthttp.RequestCtx, now int64) {
	if k.caps.rpm == 0 {
		return
	}
	rem, reset := k.lim.Requests(now, k.caps.rpm)
	k.quotaHeaders(ctx, quota{remaining: rem, reset: reset})
}

// quotaHeaders sets rateHeaders' headers from q, the quota a decision
// returned.
func (k *gatewayKey) quotaHeaders(ctx *fasthttp.RequestCtx, q quota) {
	if k.caps.rpm == 0 {
		return
	}
	var buf [20]byte
	h := &ctx.Response.Header
	h.SetCanonical(hdrLimit, k.rpmText)
	h.SetCanonical(hdrRemaining, strconv.AppendInt(buf[:0], q.remaining, 10))
	h.SetCanonical(hdrReset, strconv.AppendInt(buf[:0], (q.reset+int64(time.Second)-1)/int64(time.Second), 10))
}

// keyLimited answers 429 for a gateway key over one of its limits.
func keyLimited(ctx *fasthttp.RequestCtx, k *gatewayKey, now, at int64) {
	err := &apiError{status: fasthttp.StatusTooManyRequests, typ: "rate_limit_error", code: "rate_limit_exceeded"}
	if at == never {
		err.status, err.typ, err.code = fasthttp.StatusBadRequest, "invalid_request_error", "request_too_large"
		err.msg = "the request needs more tokens than gateway key " + k.cfg.Name + " may use in its whole window"
		err.write(ctx)
		return
	}
	err.retryAfter = max(1, int((at-now+int64(time.Second)-1)/int64(time.Second)))
	err.msg = "gateway key " + k.cfg.Name + " is over its limit; retry in " + strconv.Itoa(err.retryAfter) + "s"
	err.write(ctx)
}
