package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/valyala/fasthttp"
)

// pageConfig is the gateway the browser test looks at: an admin key and
// another, a provider with two keys whose upstream echoes the key it gets,
// one whose upstream refuses its key, a group that tries the refused
// one first, and an upstream that lists a model name made of markup and
// answers with markup in its error. The refused provider is probed every
// second.
func pageConfig() string {
	return `auth:
  keys:
    - {name: ops, key: "${GW_ML}", admin: true, rpm: 100000}
    - {name: web, key: "${GW_WEB}", rpm: 100000}
providers:
  good: {type: openai, base_url: http://good.test/v1, keys: ["${P1_KEY}", "${P1_KEY_B}"], stream_usage: false, models: {m: {upstream: up}}}
  bad: {type: openai, base_url: http://bad.test/v1, keys: ["${P2_KEY}"], models: {m: {upstream: up}}, health: {interval: 1s}}
  hostile: {type: openai, base_url: http://hostile.test/v1, keys: ["${P3_KEY}"], list_models: true, models: {h: {}}}
models:
  auto: {targets: [bad/m, good/m]}
`
}

// hostileName and hostileError are markup an upstream sends as a model id
// and as an error message; the page must show them as text.
const (
	hostileName     = `<img src=x onerror="window.pwned=1">`
	hostileError    = `<b>bold</b><img src=x onerror="window.pwned=2"><script>window.pwned=3</script>`
	hostileSelector = `<img src=x onerror=\"window.pwned=1\">`
)

// chromium finds the browser, or skips: CI's .ci/run installs it.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on this machine (apt-get install chromium): the status page's browser test needs one")
	return ""
}

// serveTCP serves eng on a loopback TCP port, as a browser reaches it.
func serveTCP(t *testing.T, eng *Engine) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := eng.Server()
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	t.Cleanup(func() { _ = srv.Shutdown(); <-done })
	return "http://" + ln.Addr().String()
}

// traffic is everything a tab sent and received, as the browser's
// network events show it: URLs, headers, request and response bodies.
type traffic struct {
	mu     sync.Mutex
	wg     sync.WaitGroup
	text   strings.Builder
	bodies map[string]int // bodies read, by path
	// thrown lists the page's uncaught exceptions and console errors.
	thrown []string
	// done stops reading bodies once the test looks at what was read.
	done bool
}

// close stops the recording and waits for the bodies being read.
func (tr *traffic) close() {
	tr.mu.Lock()
	tr.done = true
	tr.mu.Unlock()
	tr.wg.Wait()
}

// record listens to tab's network events, reading each response body once
// it has loaded.
func (tr *traffic) record(t *testing.T, tab context.Context) {
	add := func(parts ...string) {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for _, p := range parts {
			tr.text.WriteString(p)
			tr.text.WriteByte('\n')
		}
	}
	var urls sync.Map
	err := chromedp.Listen(tab, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			h, _ := json.Marshal(ev.ExceptionDetails)
			tr.mu.Lock()
			tr.thrown = append(tr.thrown, string(h))
			tr.mu.Unlock()
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				h, _ := json.Marshal(ev.Args)
				tr.mu.Lock()
				tr.thrown = append(tr.thrown, string(h))
				tr.mu.Unlock()
			}
		case *network.EventRequestWillBeSent:
			h, _ := json.Marshal(ev.Request.Headers)
			urls.Store(ev.RequestID, ev.Request.URL)
			add(ev.Request.URL, string(h))
			for _, e := range ev.Request.PostDataEntries {
				add(string(e.Bytes))
			}
		case *network.EventResponseReceived:
			h, _ := json.Marshal(ev.Response.Headers)
			add(ev.Response.URL, string(h))
		case *network.EventLoadingFinished:
			u, _ := urls.Load(ev.RequestID)
			path, _ := u.(string)
			path, _, _ = strings.Cut(strings.TrimPrefix(path, "http://"), "?")
			_, path, _ = strings.Cut(path, "/")
			// The listener may not run a command: the body is read aside.
			tr.mu.Lock()
			defer tr.mu.Unlock()
			if tr.done {
				return
			}
			tr.wg.Add(1)
			go func() {
				defer tr.wg.Done()
				res, err := chromedp.Call(tab, network.GetResponseBody, network.GetResponseBodyParams{RequestID: ev.RequestID})
				if err != nil {
					return
				}
				tr.mu.Lock()
				tr.text.Write(res.Body)
				tr.text.WriteByte('\n')
				tr.bodies["/"+path]++
				tr.mu.Unlock()
			}()
		}
	})
	if err == nil {
		_, err = chromedp.Call(tab, network.Enable, network.EnableParams{})
	}
	if err == nil {
		_, err = chromedp.Call(tab, runtime.Enable, cdp.Empty{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestStatusPageInBrowser drives the page in a real headless Chromium
// against a gateway on loopback TCP, with upstreams that echo or refuse
// the provider key they are sent.
func TestStatusPageInBrowser(t *testing.T) {
	exe := chromium(t)
	n := newFakeNet(t)
	n.upstream("good.test", echoUpstream("openai", fakeEnv["P2_KEY"]))
	bad := n.upstream("bad.test", func(ctx *fasthttp.RequestCtx, _ int) {
		k := strings.TrimPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer ")
		ctx.SetStatusCode(fasthttp.StatusUnauthorized)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(echoError("openai", fasthttp.StatusUnauthorized, echoText(k, fakeEnv["P1_KEY"])))
	})
	n.upstream("hostile.test", func(ctx *fasthttp.RequestCtx, _ int) {
		ctx.SetContentType("application/json")
		if ctx.IsGet() {
			ctx.SetBodyString(`{"object":"list","data":[{"id":` + strconv.Quote(hostileName) + `}]}`)
			return
		}
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
		ctx.SetBodyString(`{"error":{"message":` + strconv.Quote(hostileError) + `,"type":"invalid_request_error"}}`)
	})
	g := newFakeGateway(t, pageConfig(), n)
	base := serveTCP(t, g.eng)
	// The explain endpoint lands in another change too: the page says
	// "not available" until it does, and shows the pick once it is there.
	explain := g.do("GET", "/api/explain?model=auto", "", "Authorization", "Bearer "+fakeEnv["GW_ML"]).status == 200

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	t.Cleanup(cancel)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true))
	t.Cleanup(cancelAlloc)
	admin, cancelAdmin := chromedp.NewContext(alloc)
	t.Cleanup(cancelAdmin)
	seen := &traffic{bodies: map[string]int{}}
	seen.record(t, admin)

	login := func(tab context.Context, key string) error {
		return chromedp.Do(tab,
			chromedp.WaitVisible(chromedp.CSS("#login-key")),
			chromedp.SendKeys(chromedp.CSS("#login-key"), key),
			chromedp.Click(chromedp.CSS("#login button")))
	}
	// visible waits for sel; on failure the error carries what the page
	// shows, for the log.
	visible := func(tab context.Context, sel string) error {
		wait, cancel := context.WithTimeout(tab, 10*time.Second)
		defer cancel()
		err := chromedp.Do(wait, chromedp.WaitVisible(chromedp.CSS(sel)))
		if err != nil {
			text, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.body.innerText`))
			return fmt.Errorf("%w; the page shows:\n%s", err, text)
		}
		return nil
	}

	t.Run("admin sees every provider and key", func(t *testing.T) {
		if err := chromedp.Do(admin, chromedp.Navigate(base+"/")); err != nil {
			t.Fatal(err)
		}
		if err := login(admin, fakeEnv["GW_ML"]); err != nil {
			t.Fatal(err)
		}
		for _, sel := range []string{
			`tr[data-target="good/m"]`, `tr[data-target="bad/m"]`,
			`[data-key="good/m#1"][data-state="healthy"]`, `[data-key="good/m#2"][data-state="healthy"]`,
			`[data-key="bad/m#1"]`, `#keys tr[data-gwkey="ops"]`, `#keys tr[data-gwkey="web"]`, `[data-group="auto"]`,
		} {
			if err := visible(admin, sel); err != nil {
				t.Fatalf("waiting for %s: %v", sel, err)
			}
		}
		breaker, err := chromedp.Run(admin, chromedp.Text(chromedp.CSS(`tr[data-target="good/m"] .badge`)))
		if err != nil || breaker != "closed" {
			t.Errorf("good/m breaker shows %q (%v)", breaker, err)
		}
		if explain {
			if err := visible(admin, `[data-group="auto"] .pick`); err != nil {
				t.Errorf("the auto group shows no pick: %v", err)
			}
		}
	})

	t.Run("a probe marks the refused key invalid", func(t *testing.T) {
		if err := visible(admin, `[data-key="bad/m#1"][data-state="invalid"]`); err != nil {
			t.Fatalf("bad/m key #1 never shown invalid: %v", err)
		}
		for _, r := range bad.requests() {
			if strings.Contains(r.uri, "chat") {
				t.Errorf("bad.test got a chat request before the playground sent one: %s", r.uri)
			}
		}
	})

	t.Run("playground streams an answer", func(t *testing.T) {
		err := chromedp.Do(admin,
			chromedp.WaitReady(chromedp.CSS(`#play-model option[value="auto"]`)),
			chromedp.SetValue(chromedp.CSS("#play-model"), "auto"),
			chromedp.Click(chromedp.CSS("#play-send")))
		if err == nil {
			err = visible(admin, "#play-out.done")
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := chromedp.Run(admin, chromedp.Evaluate[map[string]string](`Object.fromEntries(
			['play-out', 'play-via', 'play-status', 'play-fallbacks', 'play-ttft', 'play-total'].map((id) => [id, document.getElementById(id).textContent]))`))
		if err != nil {
			t.Fatal(err)
		}
		// The echo upstream streams its key back; the gateway hides it and
		// the rest of the answer arrives.
		if got["play-status"] != "200" || got["play-via"] != "good/m" || !strings.Contains(got["play-out"], "plain ") ||
			!strings.HasSuffix(got["play-ttft"], "ms") || !strings.HasSuffix(got["play-total"], "ms") {
			t.Errorf("playground shows %q", got)
		}
		// The probe found the refused key before this request: it was
		// skipped, not tried.
		if got["play-fallbacks"] != "0" {
			t.Errorf("playground: x-fallback-attempts %q, want 0", got["play-fallbacks"])
		}
		if err := visible(admin, `[data-key="bad/m#1"][data-state="invalid"]`); err != nil {
			t.Errorf("bad/m key #1 not shown invalid after the 401: %v", err)
		}
	})

	t.Run("markup from upstreams stays text", func(t *testing.T) {
		err := chromedp.Do(admin,
			chromedp.WaitReady(chromedp.CSS(`#play-model option[value="`+hostileSelector+`"]`)),
			chromedp.SetValue(chromedp.CSS("#play-model"), hostileName),
			chromedp.Click(chromedp.CSS("#play-send")))
		if err == nil {
			err = visible(admin, `#play-out.done .failed`)
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := chromedp.Run(admin, chromedp.Evaluate[map[string]any](`({pwned: window.pwned || 0,
			markup: [...document.querySelectorAll('#main img, #main script, #main b')].filter((e) => e.tagName !== 'B' || e.textContent === 'bold').length,
			out: document.getElementById('play-out').textContent, status: document.getElementById('play-status').textContent})`))
		if err != nil {
			t.Fatal(err)
		}
		if got["pwned"] != 0.0 || got["markup"] != 0.0 || got["status"] != "400" || !strings.Contains(got["out"].(string), hostileError) {
			t.Errorf("hostile markup: %v", got)
		}
	})

	t.Run("another key sees only its own usage", func(t *testing.T) {
		web, cancelWeb := chromedp.NewContext(admin)
		defer cancelWeb()
		seen.record(t, web)
		if err := chromedp.Do(web, chromedp.Navigate(base+"/status")); err != nil {
			t.Fatal(err)
		}
		// A refused key is forgotten and asked for again.
		if err := login(web, "gw-wrong-key"); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Run(web, chromedp.Poll[bool](`document.getElementById('login-msg').textContent.includes('refused') &&
			!document.getElementById('login').hidden`)); err != nil {
			t.Fatalf("no second ask after a wrong key: %v", err)
		}
		if err := login(web, fakeEnv["GW_WEB"]); err != nil {
			t.Fatal(err)
		}
		if err := visible(web, `#keys tr[data-gwkey="web"]`); err != nil {
			t.Fatal(err)
		}
		if err := visible(web, `tr[data-target="good/m"]`); err != nil {
			t.Fatalf("provider figures hidden from a non-admin key: %v", err)
		}
		others, err := chromedp.Run(web, chromedp.Evaluate[int](`document.querySelectorAll('[data-gwkey]:not([data-gwkey="web"])').length`))
		if err != nil || others != 0 {
			t.Errorf("a non-admin key sees %d entries of other keys (%v)", others, err)
		}
		kept, err := chromedp.Run(web, chromedp.Evaluate[map[string]any](`({local: localStorage.length, cookie: document.cookie,
			url: location.href, session: Object.keys(sessionStorage).join(',')})`))
		if err != nil {
			t.Fatal(err)
		}
		if kept["local"] != 0.0 || kept["cookie"] != "" || kept["url"] != base+"/status" || kept["session"] != "gateway.key" {
			t.Errorf("the key is kept outside the tab's session: %v", kept)
		}
	})

	t.Run("no provider key reaches the page", func(t *testing.T) {
		dom, err := chromedp.Run(admin, chromedp.OuterHTML(chromedp.CSS("html")))
		if err != nil {
			t.Fatal(err)
		}
		seen.close()
		seen.mu.Lock()
		defer seen.mu.Unlock()
		if len(seen.thrown) > 0 {
			t.Errorf("the page threw or logged errors:\n%s", strings.Join(seen.thrown, "\n"))
		}
		if seen.bodies["/api/stats"] == 0 || seen.bodies["/v1/chat/completions"] == 0 {
			t.Fatalf("response bodies read: %v", seen.bodies)
		}
		for what, text := range map[string]string{"the DOM": dom, "the traffic": seen.text.String()} {
			if leak := leakIn(text, fakeProviderKeys()); leak != "" {
				t.Errorf("%s shows %s", what, leak)
			}
		}
	})
}
