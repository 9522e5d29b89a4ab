package engine

import (
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestStickyStore(t *testing.T) {
	var s stickyStore
	now, ttl := t0, int64(time.Minute)
	if _, ok := s.Get(1, now); ok {
		t.Fatal("an empty store found a session")
	}
	s.Set(1, "p1/m", now, ttl)
	if via, ok := s.Get(1, now+ttl-1); !ok || via != "p1/m" {
		t.Fatalf("get = %q, %v before the ttl", via, ok)
	}
	if _, ok := s.Get(1, now+ttl); ok {
		t.Fatal("found after the ttl")
	}
	// Using a session refreshes it.
	s.Set(1, "p1/m", now+ttl/2, ttl)
	if _, ok := s.Get(1, now+ttl); !ok {
		t.Fatal("a refreshed session expired at its first deadline")
	}
	// A session that moved sticks to its new target.
	s.Set(1, "p2/m", now+ttl/2, ttl)
	if via, _ := s.Get(1, now+ttl/2); via != "p2/m" {
		t.Fatalf("moved session: %q", via)
	}
	if s.Len() != 1 {
		t.Fatalf("len %d", s.Len())
	}
}

func TestStickyStoreStaysBounded(t *testing.T) {
	now, ttl := t0, int64(time.Hour)
	// A full store of fresh sessions, filled directly: through set it
	// would take a sweep every 1024 inserts.
	s := stickyStore{m: make(map[uint64]stickyEntry, maxSessions)}
	for i := range maxSessions {
		s.m[uint64(i)+1] = stickyEntry{via: "p1/m", until: now + ttl}
	}
	for i := range 3 {
		s.Set(uint64(maxSessions+i)+1, "p2/m", now, ttl)
		if n := s.Len(); n > maxSessions {
			t.Fatalf("%d sessions held, bound %d", n, maxSessions)
		}
		// The newest is always kept.
		if via, ok := s.Get(uint64(maxSessions+i)+1, now); !ok || via != "p2/m" {
			t.Fatal("the last session set was dropped")
		}
	}
	// Expired entries are swept first.
	var e stickyStore
	for i := range 1023 {
		e.Set(uint64(i)+1, "p1/m", now, 1)
	}
	e.Set(5000, "p2/m", now+10, ttl)
	if n := e.Len(); n != 1 {
		t.Errorf("%d sessions held after a sweep, want only the fresh one", n)
	}
}

// rtStickyGateway serves auto by round robin over p1, p2, p3, each
// answering with its name, for the gateway keys team-ml and team-web.
func rtStickyGateway(t *testing.T, rest string) (*fakeGateway, map[string]*fakeUpstream) {
	n := newFakeNet(t)
	ups := map[string]*fakeUpstream{}
	for _, p := range []string{"p1", "p2", "p3"} {
		ups[p] = n.upstream(p+".test", fakeOK(p))
	}
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}, {name: "p3"}}, `models:
  auto: {strategy: round_robin, targets: [p1/m, p2/m, p3/m]}
  pair: {strategy: round_robin, targets: [p1/m, p3/m]}
auth:
  keys:
    - {name: team-ml, key: "${GW_ML}", rpm: 10000}
    - {name: team-web, key: "${GW_WEB}", rpm: 10000}
`+rest), n)
	return g, ups
}

// rtVia sends body with the round robin aimed at index aim of group and
// returns the target that answered.
func rtVia(t *testing.T, g *fakeGateway, group string, aim int, body string, hdrs ...string) string {
	t.Helper()
	rtAim(g, group, aim)
	r := g.chat(body, hdrs...)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	return r.get("X-Routed-Via")
}

// rtConversation is a chat body for model with the given messages, each
// a role and a content.
func rtConversation(model string, msgs ...string) string {
	var b strings.Builder
	b.WriteString(`{"model":"` + model + `","messages":[`)
	for i := 0; i+1 < len(msgs); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"role":"` + msgs[i] + `","content":"` + msgs[i+1] + `"}`)
	}
	b.WriteString("]}")
	return b.String()
}

func TestStickyByHeader(t *testing.T) {
	g, _ := rtStickyGateway(t, "")
	ask := rtConversation("auto", "user", "hi")
	sid := func(id string) []string { return []string{"X-Session-Id", id} }

	if via := rtVia(t, g, "auto", 1, ask, sid("abc")...); via != "p2/m" {
		t.Fatalf("new session: via %s, want the rotation's p2", via)
	}
	// A header pins even a first turn.
	for _, aim := range []int{2, 0, 2} {
		if via := rtVia(t, g, "auto", aim, ask, sid("abc")...); via != "p2/m" {
			t.Errorf("session abc aimed at p%d: via %s, want p2 (sticky)", aim+1, via)
		}
	}
	if via := rtVia(t, g, "auto", 0, ask, sid("xyz")...); via != "p1/m" {
		t.Errorf("another session: via %s, want the rotation's p1", via)
	}
	if via := rtVia(t, g, "auto", 2, ask); via != "p3/m" {
		t.Errorf("no session: via %s, want the rotation's p3", via)
	}
	// Sessions belong to a gateway key.
	g.key = fakeEnv["GW_WEB"]
	if via := rtVia(t, g, "auto", 0, ask, sid("abc")...); via != "p1/m" {
		t.Errorf("another key's session abc: via %s, want the rotation's p1", via)
	}
	g.key = fakeEnv["GW_ML"]
	// A pinned target outside the chain asked for is no preference.
	if via := rtVia(t, g, "pair", 1, rtConversation("pair", "user", "hi"), sid("abc")...); via != "p3/m" {
		t.Errorf("session pinned to p2 asking for pair: via %s, want the rotation's p3", via)
	}
}

func TestStickyByConversation(t *testing.T) {
	g, _ := rtStickyGateway(t, "")
	first := rtConversation("auto", "system", "be brief", "user", "tell me about otters")
	follow := rtConversation("auto", "system", "be brief", "user", "tell me about otters", "assistant", "they swim", "user", "more")

	if via := rtVia(t, g, "auto", 0, first); via != "p1/m" {
		t.Fatalf("first turn: via %s", via)
	}
	// A first turn is no conversation yet: one-shot prompts that happen
	// to match are not pinned together, and leave no session behind.
	if via := rtVia(t, g, "auto", 1, first); via != "p2/m" {
		t.Fatalf("first turn again: via %s, want the rotation's p2", via)
	}
	if n := g.eng.sticky.Len(); n != 0 {
		t.Fatalf("%d sessions recorded for one-shot requests, want 0", n)
	}
	// The first follow-up goes where the strategy says and is recorded;
	// from then on the conversation goes back to it.
	if via := rtVia(t, g, "auto", 1, follow); via != "p2/m" {
		t.Fatalf("first follow-up: via %s, want the rotation's p2", via)
	}
	for _, aim := range []int{2, 0} {
		if via := rtVia(t, g, "auto", aim, follow); via != "p2/m" {
			t.Errorf("follow-up aimed at p%d: via %s, want p2 (where the conversation was last)", aim+1, via)
		}
	}
	longer := rtConversation("auto", "system", "be brief", "user", "tell me about otters", "assistant", "they swim",
		"user", "more", "assistant", "they eat fish", "user", "and?")
	if via := rtVia(t, g, "auto", 0, longer); via != "p2/m" {
		t.Errorf("a later turn: via %s, want p2", via)
	}
	for name, body := range map[string]string{
		"other system prompt": rtConversation("auto", "system", "be long", "user", "tell me about otters", "assistant", "they swim", "user", "more"),
		"other first message": rtConversation("auto", "system", "be brief", "user", "tell me about seals", "assistant", "they swim", "user", "more"),
	} {
		if via := rtVia(t, g, "auto", 0, body); via != "p1/m" {
			t.Errorf("%s: via %s, want the rotation's p1", name, via)
		}
	}
	g.key = fakeEnv["GW_WEB"]
	if via := rtVia(t, g, "auto", 0, follow); via != "p1/m" {
		t.Errorf("the same conversation under another key: via %s, want the rotation's p1", via)
	}
}

func TestStickyFailsOverAndMoves(t *testing.T) {
	g, ups := rtStickyGateway(t, "")
	ask := rtConversation("auto", "user", "hi")
	sid := []string{"X-Session-Id", "s-1"}
	if via := rtVia(t, g, "auto", 1, ask, sid...); via != "p2/m" {
		t.Fatalf("via %s", via)
	}
	ups["p2"].set(fakeBody(500, `{"error":{"message":"down"}}`))
	rtAim(g, "auto", 0)
	r := g.chat(ask, sid...)
	if r.status != 200 || r.get("X-Routed-Via") != "p1/m" || r.get("X-Fallback-Attempts") != "1" {
		t.Fatalf("sticky target down: status %d via %q fallbacks %q, want p1 after p2 failed",
			r.status, r.get("X-Routed-Via"), r.get("X-Fallback-Attempts"))
	}
	// p2 is well again and no longer cooling, and the rotation points
	// at it: the session stays where it moved.
	ups["p2"].set(fakeOK("p2"))
	rtUncool(rtKey(t, g, "auto", "p2/m"))
	for range 3 {
		if via := rtVia(t, g, "auto", 1, ask, sid...); via != "p1/m" {
			t.Errorf("after the move: via %s, want p1", via)
		}
	}
	if h := ups["p2"].hits(); h != 2 {
		t.Errorf("p2 hits %d, want 2", h)
	}
}

func TestStickyTTL(t *testing.T) {
	t.Run("0s disables", func(t *testing.T) {
		g, _ := rtStickyGateway(t, "sticky: {ttl: 0s}\n")
		follow := rtConversation("auto", "user", "hi", "assistant", "hello", "user", "more")
		for i := range 6 {
			if via, want := rtVia(t, g, "auto", i%3, follow, "X-Session-Id", "abc"), []string{"p1/m", "p2/m", "p3/m"}[i%3]; via != want {
				t.Errorf("request %d: via %s, want the rotation's %s", i, via, want)
			}
		}
		if n := g.eng.sticky.Len(); n != 0 {
			t.Errorf("%d sessions recorded with sticky sessions off", n)
		}
	})
	t.Run("expiry", func(t *testing.T) {
		g, _ := rtStickyGateway(t, "sticky: {ttl: 1h}\n")
		sid := []string{"X-Session-Id", "abc"}
		ask := rtConversation("auto", "user", "hi")
		if via := rtVia(t, g, "auto", 2, ask, sid...); via != "p3/m" {
			t.Fatalf("via %s", via)
		}
		st := g.eng.sticky
		if n := st.Len(); n != 1 {
			t.Fatalf("%d sessions recorded, want 1", n)
		}
		// The session's id, as the engine derives it for this key.
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.Set(sid[0], sid[1])
		s := g.eng.snap.Load()
		id := s.session(&ctx, s.keys[sha256.Sum256([]byte(g.key))], &chatRequest{})
		now := nanotime()
		if via, ok := st.Get(id, now+int64(59*time.Minute)); !ok || via != "p3/m" {
			t.Errorf("session gone by 59m (%q, %v), want the 1h ttl", via, ok)
		}
		if _, ok := st.Get(id, now+int64(time.Hour)+1); ok {
			t.Error("session kept past 1h, want the 1h ttl")
		}
		// Expire it now, as the ttl passing would.
		st.Set(id, "p3/m", nanotime(), 0)
		if via := rtVia(t, g, "auto", 0, ask, sid...); via != "p1/m" {
			t.Errorf("expired session: via %s, want the rotation's p1", via)
		}
	})
}
