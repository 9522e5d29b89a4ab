package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/maphash"
	"strconv"
	"testing"

	"github.com/valyala/fasthttp"
)

// TestAuthenticate finds a key given by reference (looked up by the
// seeded hash) and one given as sha256:<hex> only (by its digest), and no
// key for a value that is not quite one of theirs.
func TestAuthenticate(t *testing.T) {
	digest := sha256.Sum256([]byte("key-hashed"))
	yaml := `
auth:
  keys:
    - {name: plain, key: "${GW}"}
    - {name: hashed, key: "sha256:` + hex.EncodeToString(digest[:]) + `"}
providers:
  up: {type: openai, base_url: "http://up.test/v1", keys: ["${UP}"], models: {m: {}}}
`
	s := testEngine(t, yaml, Options{}).snap.Load()
	if len(s.keyIndex.keys) != 1 || !s.keyIndex.rest {
		t.Fatalf("index holds %d keys, rest %v; want the plain key, and the hashed one left to its digest", len(s.keyIndex.keys), s.keyIndex.rest)
	}
	for _, tt := range []struct {
		header, value, want string
	}{
		{"Authorization", "Bearer key-GW", "plain"},
		{"Authorization", "bearer key-GW", "plain"},
		{"X-Api-Key", "key-GW", "plain"},
		{"Authorization", "Bearer key-hashed", "hashed"},
		{"X-Api-Key", "key-hashed", "hashed"},
		{"Authorization", "Bearer key-GX", ""},
		{"Authorization", "Bearer key-GW2", ""},
		{"Authorization", "Bearer key-G", ""},
		{"Authorization", "Bearer key-hasheD", ""},
	} {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.Set(tt.header, tt.value)
		key, aerr := s.authenticate(&ctx)
		switch {
		case tt.want == "" && (key != nil || aerr == nil || aerr.code != "invalid_api_key"):
			t.Errorf("%s: %s: key %v, error %v; want invalid_api_key", tt.header, tt.value, key, aerr)
		case tt.want != "" && (aerr != nil || key == nil || key.cfg.Name != tt.want):
			t.Errorf("%s: %s: key %v, error %v; want %s", tt.header, tt.value, key, aerr, tt.want)
		}
	}
}

// TestKeyIndexCollision: a value whose hash lands on another key's entry
// is compared with that key's value, refused, and then found by its
// digest, as a key that lost its hash to another one is.
func TestKeyIndexCollision(t *testing.T) {
	a, b := &gatewayKey{}, &gatewayKey{}
	ix := newKeyIndex()
	ix.add("value-a", a)
	ix.add("value-a", b)
	if !ix.rest {
		t.Fatal("a second key on a taken hash is not left to its digest")
	}
	// "value-b" lands where "value-a" is, as if their hashes collided.
	ix.keys[maphash.String(ix.seed, "value-b")] = ix.keys[maphash.String(ix.seed, "value-a")]
	digests := map[[32]byte]*gatewayKey{sha256.Sum256([]byte("value-a")): a, sha256.Sum256([]byte("value-b")): b}
	if got := ix.find([]byte("value-b"), digests); got != b {
		t.Errorf("value-b found %p, want b %p", got, b)
	}
	if got := ix.find([]byte("value-a"), digests); got != a {
		t.Errorf("value-a found %p, want a %p", got, a)
	}
	ix.rest = false
	if got := ix.find([]byte("value-b"), digests); got != nil {
		t.Errorf("value-b found %p with no key left to its digest, want none", got)
	}
}

// TestHeaderNamesInAnyCase: the gateway looks headers up by their
// canonical names, which fasthttp gives every name it reads, so a client
// spelling them in lower case (as HTTP/2 proxies do) is still known by
// its key, keeps its request id and gets the route and rate headers.
func TestHeaderNamesInAnyCase(t *testing.T) {
	n := newFakeNet(t)
	n.upstream("p1.test", fakeOK("ok"))
	g := newFakeGateway(t, fakeThree(fakeAuthConfig), n)
	for _, name := range []string{"authorization: Bearer ", "x-api-key: ", "X-API-KEY: "} {
		t.Run(name, func(t *testing.T) {
			r := g.raw("POST /v1/chat/completions HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/json\r\n" +
				name + g.key + "\r\nx-request-id: client-id-7\r\nContent-Length: " + strconv.Itoa(len(fakeAsk)) + "\r\n\r\n" + fakeAsk)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if id := r.get("X-Request-Id"); id != "client-id-7" {
				t.Errorf("X-Request-Id %q, want the client's", id)
			}
			if r.get("X-Routed-Via") == "" || r.get("X-Gateway-Route") == "" {
				t.Errorf("no X-Routed-Via or X-Gateway-Route in %s", r.header)
			}
		})
	}
}
