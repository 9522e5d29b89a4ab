package engine

import (
	"crypto/sha256"
	"crypto/subtle"
	"hash/maphash"
	"time"

	"github.com/valyala/fasthttp"
)

// The request's header names, as fasthttp spells every name it reads
// (Server keeps its normalizing on), so they are looked up without
// normalizing them again per request.
var (
	hdrAuthorization = []byte(fasthttp.HeaderAuthorization)
	hdrAPIKey        = []byte("X-Api-Key")
)

// keyIndex finds a gateway key from what a client presents without a
// SHA-256 per request: by a hash under a seed drawn per snapshot, then a
// constant-time compare with the key itself. The seed is secret and
// random, so where a presented value lands in the map says nothing an
// attacker can steer; only the compare looks at the key's bytes.
type keyIndex struct {
	seed maphash.Seed
	keys map[uint64]indexedKey
	// rest is set when a key is not in keys: one configured as
	// sha256:<hex> only, or, rarer than rare, one whose hash another key
	// took. A value not found in keys is then looked up by its digest.
	rest bool
}

// indexedKey is a gateway key and its value, the one the client sends.
type indexedKey struct {
	value []byte
	key   *gatewayKey
}

func newKeyIndex() keyIndex {
	return keyIndex{seed: maphash.MakeSeed(), keys: map[uint64]indexedKey{}}
}

// add indexes gk, whose configured value is v ("" for a key the config
// holds only as a digest).
func (ix *keyIndex) add(v string, gk *gatewayKey) {
	h := maphash.String(ix.seed, v)
	if _, taken := ix.keys[h]; v == "" || taken {
		ix.rest = true
		return
	}
	ix.keys[h] = indexedKey{value: []byte(v), key: gk}
}

// find returns the key whose value is tok, nil for none; digests holds
// every key by the SHA-256 of its value.
func (ix *keyIndex) find(tok []byte, digests map[[32]byte]*gatewayKey) *gatewayKey {
	if k, ok := ix.keys[maphash.Bytes(ix.seed, tok)]; ok && subtle.ConstantTimeCompare(tok, k.value) == 1 {
		return k.key
	}
	if ix.rest {
		return digests[sha256.Sum256(tok)]
	}
	return nil
}

// authenticate finds the calling gateway key. With no keys configured,
// every caller is let in as nil, within auth.anonymous_rpm per address.
func (s *snapshot) authenticate(ctx *fasthttp.RequestCtx) (*gatewayKey, *apiError) {
	if len(s.keys) == 0 {
		if s.anon != nil {
			return nil, s.anon.admit(ctx, int64(s.cfg.Auth.AnonymousRPM))
		}
		return nil, nil
	}
	tok := ctx.Request.Header.PeekCanonical(hdrAuthorization)
	if len(tok) > 7 && (string(tok[:7]) == "Bearer " || string(tok[:7]) == "bearer ") {
		tok = tok[7:]
	} else if k := ctx.Request.Header.PeekCanonical(hdrAPIKey); len(k) > 0 {
		tok = k
	} else {
		tok = nil
	}
	if len(tok) == 0 {
		return nil, &apiError{status: fasthttp.StatusUnauthorized, typ: "authentication_error", code: "missing_api_key",
			msg: "missing gateway key: send Authorization: Bearer <key>"}
	}
	gk := s.keyIndex.find(tok, s.keys)
	if gk == nil {
		return nil, &apiError{status: fasthttp.StatusUnauthorized, typ: "authentication_error", code: "invalid_api_key",
			msg: "invalid gateway key"}
	}
	// Only a key that expires needs the time.
	var now time.Time
	if !gk.cfg.Expires.IsZero() {
		now = time.Now()
	}
	if err := gk.refusal(now); err != nil {
		return nil, err
	}
	return gk, nil
}
