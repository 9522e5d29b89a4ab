package engine

import (
	"strconv"
	"strings"
	"testing"
)

// A Groq-sized tpm must not refuse coding agents that ask for 32k-64k
// max_tokens: they reserve at most reserve_max_tokens of completion, and
// only a prompt that cannot fit the cap is too large.
func TestChatReservesAtMostReserveMaxTokens(t *testing.T) {
	user := func(content string) string {
		return `[{"role":"user","content":` + strconv.Quote(content) + `}]`
	}
	image := `[{"role":"user","content":[{"type":"text","text":"what is this?"},` +
		`{"type":"image_url","image_url":{"url":"data:image/png;base64,` + strings.Repeat("iVBORw0KGgo", 20000) + `"}}]}]`
	tools := `,"tools":[{"type":"function","function":{"name":"f","description":"` + strings.Repeat("x", 30000) + `","parameters":{"type":"object"}}}]`
	for _, tt := range []struct {
		name, body string
		status     int
	}{
		{"64k max_tokens, short prompt", `{"model":"auto","max_tokens":64000,"messages":` + user("hi") + `}`, 200},
		{"32k max_completion_tokens", `{"model":"auto","max_completion_tokens":32000,"messages":` + user("hi") + `}`, 200},
		{"prompt near the cap with 64k max_tokens", `{"model":"auto","max_tokens":64000,"messages":` + user(strings.Repeat("word ", 4400)) + `}`, 200},
		{"prompt alone over the cap", `{"model":"auto","max_tokens":10,"messages":` + user(strings.Repeat("word ", 5000)) + `}`, 400},
		{"a 220 KB image counts as one image", `{"model":"auto","max_tokens":100,"messages":` + image + `}`, 200},
		{"tool definitions count", `{"model":"auto","max_tokens":10,"messages":` + user(strings.Repeat("word ", 2000)) + tools + `}`, 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := newFakeNet(t)
			up := n.upstream("p1.test", fakeOK("ok"))
			g := newFakeGateway(t, rtYAML([]fakeProv{{name: "p1"}},
				map[string]string{"p1": "limits: {tpm: 6000}"}, "models:\n  auto: {targets: [p1/m]}\n"), n)
			r := g.chat(tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			if tt.status == 400 {
				fakeCheckError(t, r, 400, "invalid_request_error", "request_too_large", "")
				if up.hits() != 0 {
					t.Errorf("a request too large reached the upstream")
				}
			}
		})
	}
}

func TestReservation(t *testing.T) {
	for _, tt := range []struct {
		prompt, out, max int64
		c                caps
		want             int64
	}{
		{100, 64000, 2000, caps{}, 2100},
		{100, 500, 2000, caps{}, 600},
		{100, 64000, 2000, caps{tpm: 6000}, 2100},
		{5000, 64000, 2000, caps{tpm: 6000}, 6000},
		{5000, 64000, 2000, caps{tpm: 6000, tpd: 5500}, 5500},
		{7000, 10, 2000, caps{tpm: 6000}, 7010},
	} {
		if got := reservation(tt.prompt, tt.out, tt.max, tt.c); got != tt.want {
			t.Errorf("reservation(%d, %d, %d, %+v) = %d, want %d", tt.prompt, tt.out, tt.max, tt.c, got, tt.want)
		}
	}
}

// A gateway key's tpm reserves the same way.
func TestChatKeyReservesAtMostReserveMaxTokens(t *testing.T) {
	n := newFakeNet(t)
	n.upstream("p1.test", fakeOK("ok"))
	g := newFakeGateway(t, fakeThree(`auth:
  keys:
    - {name: agent, key: "${GW_ML}", tpm: 10000}
`), n)
	if r := g.chat(`{"model":"auto","max_tokens":64000,"messages":[{"role":"user","content":"hi"}]}`); r.status != 200 {
		t.Errorf("status %d: %s", r.status, r.body)
	}
}
