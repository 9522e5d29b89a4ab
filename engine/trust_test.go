package engine

import (
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"

	"gateway/adapters"
)

// bomb is a chat body whose last field opens n arrays and never closes
// them: the shape that overflowed the stack of a recursive validator.
func bomb(open string, n int) string {
	return `{"model":"auto","messages":[{"role":"user","content":"hi"}],"x":` + strings.Repeat(open, n)
}

func TestChatDepthBombIsRefusedCheaply(t *testing.T) {
	n := newFakeNet(t)
	up := n.upstream("p1.test", fakeOK("ok"))
	g := newFakeGateway(t, fakeThree(""), n)
	for name, body := range map[string]string{
		"6M arrays":         bomb("[", 6_000_000),
		"1M objects":        bomb(`{"a":`, 1_000_000),
		"deep but closed":   bomb("[", 200) + strings.Repeat("]", 200) + "}",
		"deep in a message": `{"model":"auto","messages":[{"role":"user","content":` + strings.Repeat("[", 500) + strings.Repeat("]", 500) + `}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			r := g.chat(body)
			msg := fakeCheckError(t, r, 400, "invalid_request_error", "invalid_json", "")
			if !strings.Contains(msg, "deeper than 128") {
				t.Errorf("message %q does not say the limit", msg)
			}
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			// A recursive check grew goroutine stacks by hundreds of MB.
			if grown := int64(after.StackSys) - int64(before.StackSys); grown > 8<<20 {
				t.Errorf("refusing the bomb grew stacks by %d MB", grown>>20)
			}
		})
	}
	// As deep as a real schema goes still passes.
	schema := strings.Repeat(`{"type":"object","properties":{"a":`, 20) + `{"type":"string"}` + strings.Repeat("}}", 20)
	ok := `{"model":"auto","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":` + schema + `}}]}`
	if r := g.chat(ok); r.status != 200 {
		t.Errorf("a 40-level tool schema: %d %s", r.status, r.body)
	}
	if up.hits() != 1 {
		t.Errorf("upstream hits = %d, want 1 (only the real schema)", up.hits())
	}
}

func TestChatUpstreamDepthBombFailsOver(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 2_000_000)
	for _, tt := range []struct {
		name string
		ask  string
		bad  func(*fasthttp.RequestCtx, int)
	}{
		{"body", fakeAsk, fakeBody(200, deep)},
		{"closed body", fakeAsk, fakeBody(200, strings.Repeat("[", 1000)+strings.Repeat("]", 1000))},
		{"stream event", fakeAskStream, fakeStream("data: " + deep + "\n\n")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := newFakeNet(t)
			n.upstream("p1.test", tt.bad)
			n.upstream("p2.test", fakeOK("fine"))
			g := newFakeGateway(t, fakeThree(""), n)
			r := g.chat(tt.ask)
			if r.status != 200 || r.get("X-Routed-Via") != "p2/m" {
				t.Fatalf("status %d via %q: %s", r.status, r.get("X-Routed-Via"), r.body)
			}
		})
	}
}

func TestChatAmbiguousBodies(t *testing.T) {
	user := `"messages":[{"role":"user","content":"hi"}]`
	for _, tt := range []struct {
		name, body, code, param string
	}{
		{"model upper", `{"model":"auto","MODEL":"p2/m",` + user + `}`, "ambiguous_field", "model"},
		{"model title", `{"Model":"p2/m","model":"auto",` + user + `}`, "ambiguous_field", "model"},
		{"model twice", `{"model":"auto","model":"p2/m",` + user + `}`, "duplicate_field", "model"},
		{"model twice escaped", `{"model":"auto","\u006dodel":"p2/m",` + user + `}`, "duplicate_field", "model"},
		{"stream title", `{"model":"auto","Stream":true,` + user + `}`, "ambiguous_field", "stream"},
		{"stream long s", `{"model":"auto","ſtream":true,` + user + `}`, "ambiguous_field", "stream"},
		{"stream twice", `{"model":"auto","stream":false,"stream":true,` + user + `}`, "duplicate_field", "stream"},
		{"max_tokens case", `{"model":"auto","max_tokens":5,"MAX_TOKENS":500000,` + user + `}`, "ambiguous_field", "max_tokens"},
		{"max_tokens twice", `{"model":"auto","max_tokens":5,"max_tokens":500000,` + user + `}`, "duplicate_field", "max_tokens"},
		{"max_completion_tokens case", `{"model":"auto","Max_Completion_Tokens":5,` + user + `}`, "ambiguous_field", "max_completion_tokens"},
		{"tools kelvin-free fold", `{"model":"auto","TOOLS":[],` + user + `}`, "ambiguous_field", "tools"},
		{"messages case", `{"model":"auto",` + user + `,"Messages":[]}`, "ambiguous_field", "messages"},
		{"messages twice", `{"model":"auto",` + user + `,` + user + `}`, "duplicate_field", "messages"},
		{"metadata case", `{"model":"auto","metadatA":{},` + user + `}`, "ambiguous_field", "metadata"},
		{"stream_options case", `{"model":"auto","Stream_Options":{},` + user + `}`, "ambiguous_field", "stream_options"},
		{"include_usage twice", `{"model":"auto","stream":true,"stream_options":{"include_usage":true,"include_usage":false},` + user + `}`, "duplicate_field", "stream_options.include_usage"},
		{"include_usage case", `{"model":"auto","stream":true,"stream_options":{"include_usage":true,"Include_Usage":false},` + user + `}`, "ambiguous_field", "stream_options.include_usage"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := newFakeNet(t)
			up := n.upstream("p1.test", fakeOK("ok"))
			g := newFakeGateway(t, fakeThree(""), n)
			fakeCheckError(t, g.chat(tt.body), 400, "invalid_request_error", tt.code, tt.param)
			if up.hits() != 0 {
				t.Errorf("an ambiguous body reached the upstream")
			}
		})
	}
	// Fields the gateway does not decide on pass as they are, whatever
	// their case: the upstream alone reads them.
	n := newFakeNet(t)
	n.upstream("p1.test", fakeOK("ok"))
	g := newFakeGateway(t, fakeThree(""), n)
	if r := g.chat(`{"model":"auto","Temperature":1,"temperature":0.5,` + user + `}`); r.status != 200 {
		t.Errorf("undecided fields: %d %s", r.status, r.body)
	}
}

func TestChatMaxTokensBounds(t *testing.T) {
	n := newFakeNet(t)
	up := n.upstream("p1.test", fakeOK("ok"))
	g := newFakeGateway(t, fakeThree(""), n)
	for _, field := range []string{"max_tokens", "max_completion_tokens"} {
		for _, v := range []string{"9223372036854774784", "0", "-1", "1.5", "1e400", "10000001", "-9223372036854775808"} {
			t.Run(field+"="+v, func(t *testing.T) {
				body := `{"model":"auto","` + field + `":` + v + `,"messages":[{"role":"user","content":"hi"}]}`
				fakeCheckError(t, g.chat(body), 400, "invalid_request_error", "invalid_value", field)
			})
		}
		for _, v := range []string{"1", "10000000", "1e3"} {
			body := `{"model":"auto","` + field + `":` + v + `,"messages":[{"role":"user","content":"hi"}]}`
			if r := g.chat(body); r.status != 200 {
				t.Errorf("%s=%s: %d %s", field, v, r.status, r.body)
			}
		}
	}
	if up.hits() != 6 {
		t.Errorf("upstream hits %d, want the 6 valid requests", up.hits())
	}
}

// An upstream reporting absurd usage must fill the windows it counts in,
// never wrap them back to empty.
func TestChatHugeUsageSaturates(t *testing.T) {
	for _, usage := range []int{math.MaxInt64, math.MaxInt64 / 2, -5} {
		var mu sync.Mutex
		u := usage
		n := newFakeNet(t)
		up := n.upstream("p1.test", rtUsageUpstream(&mu, &u))
		g := newFakeGateway(t, rtYAML([]fakeProv{{name: "p1"}},
			map[string]string{"p1": "limits: {tpm: 1000}"}, "models:\n  auto: {targets: [p1/m]}\n"), n)
		if r := g.chat(rtAskMax(10, false, "")); r.status != 200 {
			t.Fatalf("usage %d: first request %d %s", usage, r.status, r.body)
		}
		r := g.chat(rtAskMax(10, false, ""))
		if usage > 0 && r.status != 429 {
			t.Errorf("usage %d: after a spent window the next request got %d, want 429", usage, r.status)
		}
		if usage < 0 && r.status != 200 {
			t.Errorf("usage %d: a negative report must count as nothing, got %d", usage, r.status)
		}
		_ = up
	}
}

func TestWindowSaturates(t *testing.T) {
	w := newWindow(60e9)
	now := int64(3600e9)
	w.add(now, math.MaxInt64)
	w.add(now, math.MaxInt64)
	w.add(now+1e9, math.MaxInt64)
	if got := w.used(now + 1e9); got != math.MaxInt64 {
		t.Errorf("used = %d, want saturated", got)
	}
	if at := w.freeAt(now+1e9, 1, 1000); at <= now+1e9 {
		t.Errorf("a saturated window lets a request in at %d", at)
	}
	w.addAt(now, now+1e9, math.MinInt64)
	if got := w.used(now + 1e9); got != math.MaxInt64 {
		t.Errorf("after a huge refund of the older bucket, used = %d, want the newer bucket's", got)
	}
}

func TestHandlerContainsPanic(t *testing.T) {
	n := newFakeNet(t)
	g := newFakeGateway(t, fakeThree(""), n)
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/v1/chat/completions")
	ctx.Request.SetBodyString(`{"secret-body":"do-not-log-me"}`)
	func() {
		defer g.eng.contain(&ctx)
		panic("boom")
	}()
	if ctx.Response.StatusCode() != 500 {
		t.Errorf("status %d, want 500", ctx.Response.StatusCode())
	}
	fakeErrorShape(t, ctx.Response.Body(), "server_error", "internal_error", "")
	log := g.log.String()
	if !strings.Contains(log, "boom") || strings.Contains(log, "do-not-log-me") {
		t.Errorf("log must name the panic and not the body:\n%s", log)
	}
}

// FuzzScanChat: no body, however nested or mangled, panics or overflows
// the stack of the scan every request goes through.
func FuzzScanChat(f *testing.F) {
	for _, s := range []string{fakeAsk, fakeAskStream, bomb("[", 10000), bomb(`{"a":`, 10000),
		`{"model":"auto","MODEL":"x","messages":[]}`, `{"model":"a","max_tokens":1e999,"messages":[{"role":"user"}]}`,
		`{"model":"a","stream_options":{"include_usage":true},"metadata":{"a":[[[[]]]]},"messages":[{"role":"user","content":[{"type":"text"}]}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var r chatRequest
		if err := scan(b, &r, opChat); err == nil {
			if adapters.CheckJSON(b) != nil || r.model == "" || r.maxTokens > maxTokensBound {
				t.Fatalf("accepted %q", b)
			}
			_ = r.metadata.Value()
		}
	})
}
