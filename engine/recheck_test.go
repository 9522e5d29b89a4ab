package engine

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
)

// A key refused with a 401 is checked again, without spending tokens, and
// returns as soon as the upstream accepts it: not after the whole hour.
func TestRefusedKeyReturnsWhenItWorks(t *testing.T) {
	for _, tt := range []struct {
		name    string
		recheck string
		checks  bool
	}{
		{"rechecked", "20ms", true},
		{"rechecks off", "0s", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var works atomic.Bool
			var checks atomic.Int32
			n := newFakeNet(t)
			n.upstream("p1.test", func(ctx *fasthttp.RequestCtx, _ int) {
				if string(ctx.Path()) == "/v1/models" {
					checks.Add(1)
					if works.Load() {
						ctx.SetBodyString(`{"object":"list","data":[]}`)
						return
					}
				} else if works.Load() {
					fakeOK("p1 again")(ctx, 0)
					return
				}
				ctx.SetStatusCode(401)
				ctx.SetBodyString(`{"error":{"message":"invalid api key","type":"invalid_request_error","code":"invalid_api_key"}}`)
			})
			n.upstream("p2.test", fakeOK("p2"))
			g, _ := obGateway(t, fakeYAML([]fakeProv{{name: "p1"}, {name: "p2"}},
				"models:\n  auto: {targets: [p1/m, p2/m]}\nfailover: {auth_cooldown: 1h, auth_recheck: "+tt.recheck+"}\n"), n)
			if r := g.chat(fakeAsk); r.status != 200 || r.get("X-Routed-Via") != "p2/m" {
				t.Fatalf("status %d via %q", r.status, r.get("X-Routed-Via"))
			}
			state := func() string {
				return gjson.GetBytes(g.get("/api/stats").body, "providers.p1.models.m.keys.0.state").Str
			}
			if s := state(); s != "invalid" {
				t.Fatalf("state %q after a 401", s)
			}
			if !tt.checks {
				time.Sleep(100 * time.Millisecond)
				if checks.Load() != 0 || state() != "invalid" {
					t.Errorf("auth_recheck 0s: %d checks, state %q", checks.Load(), state())
				}
				return
			}
			// Refused checks go on, further apart each time.
			rtEventually(t, "two refused checks", func() bool { return checks.Load() >= 2 })
			if s := state(); s != "invalid" {
				t.Errorf("state %q while the checks are refused", s)
			}
			works.Store(true)
			rtEventually(t, "the key to return", func() bool { return state() == "healthy" })
			if r := g.chat(fakeAsk); r.status != 200 || r.get("X-Routed-Via") != "p1/m" {
				t.Errorf("after the key works: status %d via %q", r.status, r.get("X-Routed-Via"))
			}
		})
	}
}
