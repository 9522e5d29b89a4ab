package engine

import (
	"bytes"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/adapters"
)

// This file applies a gateway key's policy to the passthrough: its proxy
// flag, its allow-list of models, and its rate and token caps.

// passReserve is what a passthrough request reserves of its key's token
// caps before it is sent: the answer's usage is charged once known, but
// one token up front refuses a key whose window is already spent, as a
// chat request would be.
const passReserve = 1

// passAdmit applies key's policy and limits to a passthrough request for
// p. It answers a refusal itself and returns false; otherwise it returns
// what the answer must settle, nil with auth off.
// sub is the path after the provider's name, as sent.
func passAdmit(ctx *fasthttp.RequestCtx, key *gatewayKey, p *provider, sub []byte) (*passUsage, bool) {
	if key == nil {
		return nil, true
	}
	if err := key.passModelRefusal(ctx, p, sub); err != nil {
		err.write(ctx)
		return nil, false
	}
	now := nanotime()
	res, ok, at := key.lim.Reserve(now, key.caps, passReserve)
	if !ok {
		keyLimited(ctx, key, now, at)
		return nil, false
	}
	return &passUsage{res: settlement{key: key, keyRes: res}}, true
}

// passRefusal says why the key may not use the passthrough at all, or nil.
func (gk *gatewayKey) passRefusal() *apiError {
	if *gk.cfg.Proxy {
		return nil
	}
	return &apiError{status: fasthttp.StatusForbidden, typ: "permission_error", code: "proxy_not_allowed",
		msg: "gateway key " + gk.cfg.Name + " may not use the passthrough (proxy: false); use /v1/chat/completions"}
}

// passModelRefusal says why a key restricted to some models may not send
// this request to p, or nil. A request that carries a body must name, in
// its top-level "model", the provider's own name for a model one of the
// key's names routes to there; so must a path that names a model (Gemini's
// models/{model}:generateContent, Azure's deployments/{name}), for any
// method but GET and HEAD. A body the gateway cannot judge is refused: it
// would let the key spend the provider on any model. sub is the path after
// the provider's name.
func (gk *gatewayKey) passModelRefusal(ctx *fasthttp.RequestCtx, p *provider, sub []byte) *apiError {
	if gk.cfg.Allowed == nil {
		return nil
	}
	allowed := gk.upstreams[p.name]
	if !ctx.IsGet() && !ctx.IsHead() {
		if m, ok := pathModel(sub); ok && !allowed[m] {
			return gk.notAllowed(p, m, allowed)
		}
	}
	body := ctx.PostBody()
	if len(body) == 0 && !ctx.IsPost() && !ctx.IsPut() && !ctx.IsPatch() {
		return nil
	}
	m, err := passModel(body)
	switch {
	case err != nil:
		return err
	case !m.Exists():
		return &apiError{status: fasthttp.StatusForbidden, typ: "permission_error", code: "model_not_allowed", param: "model",
			msg: "gateway key " + gk.cfg.Name + " may use only some models, so a passthrough " + string(ctx.Method()) +
				" must send a JSON object whose \"model\" names one; this body names no model"}
	case m.Type != gjson.String:
		return badRequest("model", "invalid_type", "model must be a string")
	case !allowed[m.Str]:
		return gk.notAllowed(p, m.Str, allowed)
	}
	return nil
}

// notAllowed refuses model on p, and says which names the key may use
// there: the provider's names of the models its allow-list reaches.
func (gk *gatewayKey) notAllowed(p *provider, model string, allowed map[string]bool) *apiError {
	msg := "gateway key " + gk.cfg.Name + " may not use model " + strconv.Quote(model) + " on provider " + p.name
	if len(allowed) == 0 {
		msg += "; its models reach no model there"
	} else {
		names := make([]string, 0, len(allowed))
		for n := range allowed {
			names = append(names, strconv.Quote(n))
		}
		slices.Sort(names)
		msg += "; there it may use " + strings.Join(names, ", ")
	}
	return &apiError{status: fasthttp.StatusForbidden, typ: "permission_error", code: "model_not_allowed", param: "model", msg: msg}
}

// passModel returns a passthrough body's top-level "model", which does not
// exist when the body is not a JSON object or names no model. A body that
// names it more than once, or in another case as a case-insensitive
// decoder would match it, is an error: upstreams' parsers differ on which
// one they take. Only top-level keys are read.
func passModel(body []byte) (gjson.Result, *apiError) {
	if adapters.CheckJSON(body) != nil {
		return gjson.Result{}, nil
	}
	root := gjson.Parse(bytesString(body))
	if !root.IsObject() {
		return gjson.Result{}, nil
	}
	var model gjson.Result
	var seen fieldSet
	var err *apiError
	root.ForEach(func(k, v gjson.Result) bool {
		// k.Str is the key unescaped, as every upstream reads it.
		if err = seen.see(k.Str, passFields[:]); err != nil {
			return false
		}
		if k.Str == "model" {
			model = v
		}
		return true
	})
	return model, err
}

// passFields are the fields of a passthrough body the gateway decides on.
var passFields = [...]string{"model"}

// pathModel returns the model a passthrough path names after a models/,
// tunedModels/ or deployments/ segment (up to a ':' action), as the
// upstream reads it once unescaped, and whether it names one.
func pathModel(path []byte) (string, bool) {
	prev := ""
	for seg := range bytes.SplitSeq(path, []byte("/")) {
		dec, err := url.PathUnescape(string(seg))
		if err != nil {
			dec = string(seg)
		}
		if dec != "" && (prev == "models" || prev == "tunedModels" || prev == "deployments") {
			name, _, _ := strings.Cut(dec, ":")
			return name, true
		}
		prev = dec
	}
	return "", false
}
