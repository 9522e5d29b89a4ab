package engine

import "testing"

func TestZZScratch(t *testing.T) {
	n := newFakeNet(t)
	up := n.upstream("p1.test", pxEcho)
	g := newFakeGateway(t, pxOne(""), n)
	for _, p := range []string{"/proxy/p1/../../admin", "http://evil.test/proxy/p1/v1/models", "http://p1/proxy/p1/x", "/v1/../proxy/p1/x", "//proxy/p1/x", "/proxy/p1/x#frag", "/proxy/p1/v1/models?x=../../y", "/proxy/p1/v1/models?", "/proxy/p1/a%20b?q=%2F"} {
		r := g.raw(pxRawGet(p))
		t.Logf("%s -> %d %s", p, r.status, r.body)
	}
	for _, s := range up.requests() {
		t.Logf("upstream saw %s", s.uri)
	}
}
