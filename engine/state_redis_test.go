package engine

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"gateway/config"
)

// These tests run three gateway engines in one process on one real
// redis-server, as three replicas behind a load balancer would be.

// replicaYAML is a config of two providers, p1 (with caps p1Limits) and
// p2, sharing state on r under prefix.
func replicaYAML(r *redisServer, prefix, onError, p1Limits, rest string) string {
	return redisStateYAML(r, prefix, onError) + fmt.Sprintf(`providers:
  p1:
    type: openai
    base_url: http://p1.test/v1
    keys: ["${P1_KEY}", "${P1_KEY_B}"]
    timeout: 5s
    limits: {%s}
    models: {m: {upstream: p1-up}}
  p2:
    type: openai
    base_url: http://p2.test/v1
    keys: ["${P2_KEY}"]
    timeout: 5s
    models: {m: {upstream: p2-up}}
`, p1Limits) + rest
}

// replicas starts three gateways on one config.
func replicas(t *testing.T, yaml string, n *fakeNet) []*fakeGateway {
	t.Helper()
	return []*fakeGateway{newFakeGateway(t, yaml, n), newFakeGateway(t, yaml, n), newFakeGateway(t, yaml, n)}
}

// burst sends total chat requests spread over the gateways, from 12
// clients at once, and counts the answers by status.
func burst(t *testing.T, gws []*fakeGateway, total int, body string) map[int]int {
	t.Helper()
	var mu sync.Mutex
	statuses := map[int]int{}
	next := make(chan int)
	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r := gws[i%len(gws)].chat(body)
				mu.Lock()
				statuses[r.status]++
				mu.Unlock()
			}
		}()
	}
	for i := range total {
		next <- i
	}
	close(next)
	wg.Wait()
	return statuses
}

// eventually polls cond until it holds, failing the test after
// fakeDeadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(fakeDeadline); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, fakeDeadline)
		}
	}
}

// gauge reads one sample of a gateway's /metrics.
func gauge(t *testing.T, g *fakeGateway, name string, labels ...string) float64 {
	t.Helper()
	v, _ := obValue(obParse(t, g.get("/metrics").body), name, labels...)
	return v
}

// noSecretsInKeys checks every key in r: none holds a provider or gateway
// key, and the test's prefix wrote some.
func noSecretsInKeys(t *testing.T, r *redisServer, prefix string) {
	t.Helper()
	keys, err := r.client(t).Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var mine int64
	for _, k := range keys {
		mine += boolInt(strings.HasPrefix(k, prefix))
		for name, v := range fakeEnv {
			if strings.Contains(k, v) || strings.Contains(k, "SECRET") {
				t.Errorf("Redis key %q holds %s", k, name)
			}
		}
	}
	if mine == 0 {
		t.Fatalf("no Redis key starts with %q among %q", prefix, keys)
	}
}

const replicaChat = `{"model":"m","messages":[{"role":"user","content":"hi"}]}`

// oneKey gives p1 of replicaYAML one key instead of two.
func oneKey(yaml string) string {
	return strings.Replace(yaml, `keys: ["${P1_KEY}", "${P1_KEY_B}"]`, `keys: ["${P1_KEY}"]`, 1)
}

// TestReplicasShareRateCaps: a burst of 200 requests over three replicas
// against rpm 10 reaches the upstream exactly 10 times, and a gateway
// key's rpm 5 lets exactly 5 through.
func TestReplicasShareRateCaps(t *testing.T) {
	r := testRedis(t)
	t.Run("upstream caps", func(t *testing.T) {
		n := newFakeNet(t)
		p1 := n.upstream("p1.test", fakeOK("hello"))
		prefix := uniquePrefix("caps")
		gws := replicas(t, oneKey(replicaYAML(r, prefix, "local", "rpm: 10", "")), n)
		got := burst(t, gws, 200, `{"model":"p1/m","messages":[{"role":"user","content":"hi"}]}`)
		if p1.hits() != 10 || got[200] != 10 || got[429] != 190 {
			t.Fatalf("upstream reached %d times, answers %v; want exactly 10 and 190 x 429", p1.hits(), got)
		}
		noSecretsInKeys(t, r, prefix)
	})
	t.Run("gateway key limit", func(t *testing.T) {
		n := newFakeNet(t)
		p1 := n.upstream("p1.test", fakeOK("hello"))
		prefix := uniquePrefix("keys")
		gws := replicas(t, replicaYAML(r, prefix, "local", "",
			"auth:\n  keys:\n    - {name: ml, key: \"${GW_ML}\", rpm: 5}\n"), n)
		got := burst(t, gws, 30, replicaChat)
		if p1.hits() != 5 || got[200] != 5 || got[429] != 25 {
			t.Fatalf("upstream reached %d times, answers %v; want exactly 5 and 25 x 429", p1.hits(), got)
		}
		noSecretsInKeys(t, r, prefix)
	})
}

// TestReplicasShareCooldownsAndBreakers: a key one replica cools down,
// and a breaker that failures on two replicas open, are skipped by all.
func TestReplicasShareCooldownsAndBreakers(t *testing.T) {
	r := testRedis(t)
	chain := "models:\n  auto: {targets: [p1/m, p2/m]}\n"
	auto := `{"model":"auto","messages":[{"role":"user","content":"hi"}]}`
	t.Run("cooldown", func(t *testing.T) {
		n := newFakeNet(t)
		p1 := n.upstream("p1.test", fakeBody(500, `{"error":{"message":"down"}}`))
		n.upstream("p2.test", fakeOK("from p2"))
		prefix := uniquePrefix("cool")
		gws := replicas(t, replicaYAML(r, prefix, "local", "", chain+"failover: {cooldown: 60s}\ncircuit_breaker: {failures: 50}\n"), n)
		// Both p1 keys fail on replica 0 and cool down.
		if got := gws[0].chat(auto); got.status != 200 || got.get("X-Routed-Via") != "p2/m" || p1.hits() != 2 {
			t.Fatalf("first request: %d via %q, p1 hits %d", got.status, got.get("X-Routed-Via"), p1.hits())
		}
		for i, g := range gws {
			eventually(t, fmt.Sprintf("replica %d sees p1's keys cooling", i), func() bool {
				return gauge(t, g, "gateway_keys_available", "provider=p1", "model=m") == 0
			})
			if got := g.chat(auto); got.status != 200 || got.get("X-Routed-Via") != "p2/m" {
				t.Fatalf("replica %d: %d via %q", i, got.status, got.get("X-Routed-Via"))
			}
		}
		if p1.hits() != 2 {
			t.Fatalf("p1 reached %d times; the replicas should have skipped its cooling keys", p1.hits())
		}
		noSecretsInKeys(t, r, prefix)
	})
	t.Run("breaker", func(t *testing.T) {
		n := newFakeNet(t)
		p1 := n.upstream("p1.test", fakeBody(500, `{"error":{"message":"down"}}`))
		n.upstream("p2.test", fakeOK("from p2"))
		prefix := uniquePrefix("brk")
		// One key, cooldowns that end at once: only the breaker keeps p1
		// out, after two failures counted on two replicas.
		yaml := oneKey(replicaYAML(r, prefix, "local", "", chain+"failover: {cooldown: 1ns}\ncircuit_breaker: {failures: 2, open_for: 60s}\n"))
		gws := replicas(t, yaml, n)
		for i := range 2 {
			if got := gws[i].chat(auto); got.status != 200 || p1.hits() != i+1 {
				t.Fatalf("request on replica %d: %d, p1 hits %d", i, got.status, p1.hits())
			}
		}
		for i, g := range gws {
			eventually(t, fmt.Sprintf("replica %d sees p1's breaker open", i), func() bool {
				return gauge(t, g, "gateway_circuit_breaker_state", "provider=p1", "model=m") == 1
			})
			if got := g.chat(auto); got.status != 200 || got.get("X-Routed-Via") != "p2/m" {
				t.Fatalf("replica %d: %d via %q", i, got.status, got.get("X-Routed-Via"))
			}
		}
		if p1.hits() != 2 {
			t.Fatalf("p1 reached %d times behind an open breaker", p1.hits())
		}
	})
}

// TestReplicasShareStickySessions: a conversation stays on its target
// whichever replica serves it, where round robin would alternate.
func TestReplicasShareStickySessions(t *testing.T) {
	r := testRedis(t)
	n := newFakeNet(t)
	n.upstream("p1.test", fakeOK("from p1"))
	n.upstream("p2.test", fakeOK("from p2"))
	prefix := uniquePrefix("sticky")
	gws := replicas(t, replicaYAML(r, prefix, "local", "", "models:\n  rr: {strategy: round_robin, targets: [p1/m, p2/m]}\n"), n)
	body := `{"model":"rr","messages":[{"role":"user","content":"hi"}]}`
	first := gws[0].chat(body, "X-Session-Id", "conv-42").get("X-Routed-Via")
	for i := range 9 {
		if via := gws[i%3].chat(body, "X-Session-Id", "conv-42").get("X-Routed-Via"); via != first {
			t.Fatalf("request %d on replica %d went to %q, the conversation is on %q", i, i%3, via, first)
		}
	}
	// Without the session, the replicas do alternate.
	seen := map[string]bool{}
	for i := range 6 {
		seen[gws[i%3].chat(body).get("X-Routed-Via")] = true
	}
	if len(seen) != 2 {
		t.Fatalf("round robin without a session reached %v", seen)
	}
	noSecretsInKeys(t, r, prefix)
}

// TestReplicasRideOutARedisOutage: with on_error local, replicas keep
// serving while Redis is down, counting alone (gauge 0); when Redis
// returns, empty, each folds its own counts in and shared counting
// resumes (gauge 1), so the cap over the whole minute still holds.
func TestReplicasRideOutARedisOutage(t *testing.T) {
	r := newRedisServer(t, t.TempDir())
	t.Cleanup(r.kill)
	n := newFakeNet(t)
	p1 := n.upstream("p1.test", fakeOK("hello"))
	prefix := uniquePrefix("outage")
	// One key at rpm 30: the whole test runs within its minute.
	yaml := oneKey(replicaYAML(r, prefix, "local", "rpm: 30", ""))
	gws := replicas(t, yaml, n)
	p1m := `{"model":"p1/m","messages":[{"role":"user","content":"hi"}]}`
	if got := burst(t, gws, 6, p1m); got[200] != 6 {
		t.Fatalf("before the outage: %v", got)
	}
	r.kill()
	for i, g := range gws {
		eventually(t, fmt.Sprintf("replica %d reports the backend down", i), func() bool {
			return gauge(t, g, "gateway_state_backend_up") == 0
		})
	}
	if got := burst(t, gws, 6, p1m); got[200] != 6 {
		t.Fatalf("during the outage: %v, want every request served", got)
	}
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	for i, g := range gws {
		eventually(t, fmt.Sprintf("replica %d reports the backend up again", i), func() bool {
			return gauge(t, g, "gateway_state_backend_up") == 1
		})
	}
	// 12 of the 30 were spent, each replica holding its own 4: Redis came
	// back empty, and has them all again.
	got := burst(t, gws, 60, p1m)
	if got[200] != 18 || p1.hits() != 30 {
		t.Fatalf("after Redis returned: %v, upstream hits %d; want exactly 18 more (30 in the minute)", got, p1.hits())
	}
	for i, g := range gws {
		if !strings.Contains(g.log.String(), "shared state backend failed; counting on this replica alone") ||
			!strings.Contains(g.log.String(), "shared state backend up") {
			t.Errorf("replica %d did not log the outage and the return:\n%s", i, g.log)
		}
	}
}

// TestReplicasRefuseWhileRedisIsDown: with on_error closed, a replica
// answers 503 state_unavailable while Redis is down, and serves again
// once it is back.
func TestReplicasRefuseWhileRedisIsDown(t *testing.T) {
	r := newRedisServer(t, t.TempDir())
	t.Cleanup(r.kill)
	n := newFakeNet(t)
	p1 := n.upstream("p1.test", fakeOK("hello"))
	gws := replicas(t, replicaYAML(r, uniquePrefix("closed"), "closed", "rpm: 1000", ""), n)
	if got := gws[0].chat(replicaChat); got.status != 200 {
		t.Fatalf("with Redis up: %d %s", got.status, got.body)
	}
	r.kill()
	for i, g := range gws {
		eventually(t, fmt.Sprintf("replica %d refuses", i), func() bool {
			got := g.chat(replicaChat)
			return got.status == 503 && gjson.GetBytes(got.body, "error.code").String() == "state_unavailable" &&
				got.get("Retry-After") != ""
		})
	}
	hits := p1.hits()
	for _, g := range gws {
		if got := g.chat(replicaChat); got.status != 503 {
			t.Fatalf("while Redis is down: %d", got.status)
		}
	}
	if p1.hits() != hits {
		t.Fatalf("a refused request reached the upstream")
	}
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	for i, g := range gws {
		eventually(t, fmt.Sprintf("replica %d serves again", i), func() bool { return g.chat(replicaChat).status == 200 })
	}
}

// TestStateChangeNeedsARestart: a reload that changes state keeps the
// backend serving and says a restart applies it, naming no URL.
func TestStateChangeNeedsARestart(t *testing.T) {
	n := newFakeNet(t)
	n.upstream("p1.test", fakeOK("hello"))
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}}, ""), n)
	cfg, err := config.Parse([]byte(fakeYAML([]fakeProv{{name: "p1"}}, "state:\n  backend: redis\n  redis: {url: redis://127.0.0.1:1/0}\n")), config.Options{
		LookupEnv: func(k string) (string, bool) { v, ok := fakeEnv[k]; return v, ok }})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.eng.Swap(cfg); err != nil {
		t.Fatal(err)
	}
	if log := g.log.String(); !strings.Contains(log, "state changed; restart the gateway to apply it") || strings.Contains(log, "127.0.0.1:1") {
		t.Fatalf("log after the reload:\n%s", log)
	}
	if g.eng.shared != nil || g.chat(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`).status != 200 {
		t.Fatal("the reload switched the backend")
	}
}
