package engine

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// TestMetricsEscapeNames scrapes a gateway whose route name holds a quote
// and a backslash: Prometheus's own parser reads it back whole.
func TestMetricsEscapeNames(t *testing.T) {
	n := newFakeNet(t)
	n.upstream("p1.test", fakeOK("one"))
	name := `say "hi" \ bye`
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}}, `
models:
  auto: {targets: [p1/m]}
routes:
  - {name: 'say "hi" \ bye', match: 'true', model: auto}
`), n)
	if r := g.chat(`{"model":"auto","messages":[{"role":"user","content":"hi"}]}`); r.status != 200 || r.get("X-Gateway-Route") != name {
		t.Fatalf("chat: %d route %q", r.status, r.get("X-Gateway-Route"))
	}
	fams := obParse(t, g.get("/metrics").body)
	if v, ok := obValue(fams, "gateway_requests_total", "route="+name, "code=2xx"); !ok || v != 1 {
		t.Errorf("gateway_requests_total for route %q = %v (found %v)", name, v, ok)
	}
	if v, ok := obValue(fams, "gateway_request_duration_seconds", "route="+name); !ok || v != 1 {
		t.Errorf("gateway_request_duration_seconds for route %q = %v (found %v)", name, v, ok)
	}
}

// TestExpositionEscaping: what config validation keeps out of names
// (tabs, newlines) is still escaped right, and non-ASCII goes as UTF-8.
func TestExpositionEscaping(t *testing.T) {
	weird := "tab\there\nnew \"q\" \\ é"
	var x exposition
	x.family("t_total", "counter", "help with \\ and\nnewline")
	x.sample("t_total", 7, "name", weird, "other", "plain")
	fams := obParse(t, []byte(x.b.String()))
	if v, ok := obValue(fams, "t_total", "name="+weird, "other=plain"); !ok || v != 7 {
		t.Errorf("sample not read back whole:\n%s", x.b.String())
	}
	if h := fams["t_total"].GetHelp(); h != "help with \\ and\nnewline" {
		t.Errorf("help read back as %q", h)
	}
	if strings.Contains(x.b.String(), `\t`) || strings.Contains(x.b.String(), `\u`) {
		t.Errorf("escapes Prometheus does not know:\n%s", x.b.String())
	}
}

// TestGrafanaDashboardMatchesMetrics keeps examples/grafana in step with
// /metrics: every family the dashboard queries exists, and every family
// /metrics exposes is charted.
func TestGrafanaDashboardMatchesMetrics(t *testing.T) {
	raw, err := os.ReadFile("../examples/grafana/gateway-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	if !gjson.ValidBytes(raw) {
		t.Fatal("the dashboard is not valid JSON")
	}
	used := map[string]bool{}
	for _, expr := range gjson.GetBytes(raw, "panels.#.targets.#.expr").Array() {
		for _, e := range expr.Array() {
			for _, m := range regexp.MustCompile(`gateway_[a-z_]+`).FindAllString(e.Str, -1) {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					m = strings.TrimSuffix(m, suffix)
				}
				used[m] = true
			}
		}
	}
	n := newFakeNet(t)
	n.upstream("p1.test", fakeOK("one"))
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}}, "models:\n  auto: {targets: [p1/m]}\n"), n)
	// Families by status class have samples once something was answered.
	g.chat(`{"model":"auto","messages":[{"role":"user","content":"hi"}]}`)
	g.get("/proxy/p1/models")
	exposed := obParse(t, g.get("/metrics").body)
	for name := range used {
		if exposed[name] == nil {
			t.Errorf("the dashboard queries %s, which /metrics does not expose", name)
		}
	}
	for name := range exposed {
		if !used[name] {
			t.Errorf("/metrics exposes %s, which the dashboard does not chart", name)
		}
	}
}
