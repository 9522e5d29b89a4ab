package engine

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"gateway/config"
)

// from sends one request to the gateway from the client address ip.
func (g *fakeGateway) from(ip, method, path, body string) *fakeResponse {
	g.t.Helper()
	c := &fasthttp.HostClient{Addr: "gw.test", Dial: func(string) (net.Conn, error) {
		return g.ln.DialWithLocalAddr(&net.TCPAddr{IP: net.ParseIP(ip), Port: 40000})
	}}
	defer c.CloseIdleConnections()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://gw.test" + path)
	req.Header.SetMethod(method)
	if body != "" {
		req.Header.SetContentType("application/json")
		req.SetBodyString(body)
	}
	resp := &fasthttp.Response{}
	if err := c.DoTimeout(req, resp, fakeDeadline); err != nil {
		g.t.Fatalf("%s %s from %s: %v", method, path, ip, err)
	}
	return &fakeResponse{status: resp.StatusCode(), header: resp.Header.String(), body: bytes.Clone(resp.Body()), resp: resp}
}

// TestAnonymousRPM checks auth.anonymous_rpm: each client address (an
// IPv6 one by its /64) gets so many API requests a minute, public
// endpoints are not counted, and the counts survive a reload.
func TestAnonymousRPM(t *testing.T) {
	n := newFakeNet(t)
	up := n.upstream("p1.test", fakeOK("ok"))
	g := newFakeGateway(t, fakeThree("auth: {anonymous_rpm: 2}\n"), n)
	steps := []struct {
		ip, method, path string
		want             int
	}{
		{"10.0.0.1", "POST", "/v1/chat/completions", 200},
		{"10.0.0.1", "GET", "/v1/models", 200},
		{"10.0.0.1", "POST", "/v1/chat/completions", 429},
		{"10.0.0.1", "GET", "/v1/models", 429},
		{"10.0.0.1", "GET", "/health", 200},
		{"10.0.0.1", "GET", "/targets", 200},
		{"10.0.0.2", "POST", "/v1/chat/completions", 200},
		{"::ffff:10.0.0.2", "POST", "/v1/chat/completions", 200}, // the same IPv4 client
		{"10.0.0.2", "POST", "/v1/chat/completions", 429},
		{"2001:db8::1", "POST", "/v1/chat/completions", 200},
		{"2001:db8::ffff:2", "POST", "/v1/chat/completions", 200}, // the same /64
		{"2001:db8::3", "POST", "/v1/chat/completions", 429},
		{"2001:db8:0:1::1", "POST", "/v1/chat/completions", 200}, // the next /64
	}
	for i, s := range steps {
		body := ""
		if s.method == "POST" {
			body = fakeAsk
		}
		r := g.from(s.ip, s.method, s.path, body)
		if r.status != s.want {
			t.Fatalf("step %d: %s %s from %s: %d %s, want %d", i, s.method, s.path, s.ip, r.status, r.body, s.want)
		}
		if s.want != 429 {
			continue
		}
		e := gjson.GetBytes(r.body, "error")
		if e.Get("code").Str != "rate_limit_exceeded" || e.Get("type").Str != "rate_limit_error" || e.Get("message").Str == "" {
			t.Errorf("step %d: 429 body %s, want the OpenAI error shape with code rate_limit_exceeded", i, r.body)
		}
		if ra, err := strconv.Atoi(r.get("Retry-After")); err != nil || ra < 1 || ra > 61 {
			t.Errorf("step %d: Retry-After %q, want 1..61 seconds (the window frees whole buckets)", i, r.get("Retry-After"))
		}
	}
	if got := up.hits(); got != 6 {
		t.Errorf("the upstream saw %d requests, want the 6 chats let through", got)
	}

	// A reload keeps the counts: with room for one more, 10.0.0.1 gets
	// exactly one.
	reload := func(rest string) {
		t.Helper()
		cfg, err := config.Parse([]byte(fakeThree(rest)), config.Options{LookupEnv: func(k string) (string, bool) { return fakeEnv[k], true }})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.eng.Swap(cfg); err != nil {
			t.Fatal(err)
		}
	}
	reload("auth: {anonymous_rpm: 3}\n")
	for i, want := range []int{200, 429} {
		if r := g.from("10.0.0.1", "GET", "/v1/models", ""); r.status != want {
			t.Errorf("after the reload, request %d from 10.0.0.1: %d, want %d", i, r.status, want)
		}
	}
	// anonymous_rpm 0 is no limit.
	reload("")
	for i := range 5 {
		if r := g.from("10.0.0.1", "GET", "/v1/models", ""); r.status != 200 {
			t.Fatalf("with no anonymous_rpm, request %d from 10.0.0.1: %d", i, r.status)
		}
	}
}

// TestAnonymousForgetsLeastRecent checks that the per-address table stays
// bounded against a client cycling through addresses: past
// anonymousClients the least recently seen address is forgotten, and the
// recently seen ones keep their counts.
func TestAnonymousForgetsLeastRecent(t *testing.T) {
	a := newAnonymous()
	now := time.Now().UnixNano()
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	if ok, _ := a.reserve(addr(0), now, 1); !ok {
		t.Fatal("the first request was refused")
	}
	if ok, at := a.reserve(addr(0), now, 1); ok || at <= now {
		t.Fatalf("the second request within the minute: ok %v at %d, want refused until later", ok, at)
	}
	recent := addr(1)
	for i := 1; i <= 3*anonymousClients; i++ {
		a.reserve(addr(i), now, 1)
		if i%100 == 0 {
			// Seen again and again, so never the least recent.
			if ok, _ := a.reserve(recent, now, 1); ok {
				t.Fatalf("after %d addresses, the recently seen address got a fresh count", i)
			}
		}
	}
	if ok, _ := a.reserve(addr(0), now, 1); !ok {
		t.Error("the least recently seen address is still counted after the table filled many times over")
	}
	if ok, _ := a.reserve(addr(3*anonymousClients), now, 1); ok {
		t.Error("the last address seen lost its count")
	}
}
