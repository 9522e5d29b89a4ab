package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"gateway/config"

	"github.com/valyala/fasthttp"
)

// TestValidateShippedConfigs runs `gateway validate` on every config the
// repo ships, as a GitOps CI would: with no secrets set.
func TestValidateShippedConfigs(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	files = append(files, "gateway.yaml")
	var out, errOut bytes.Buffer
	if code := run(append([]string{"validate"}, files...), &out, &errOut); code != 0 {
		t.Fatalf("validate exited %d:\n%s", code, errOut.String())
	}
	for _, f := range files {
		if !strings.Contains(out.String(), f+": ok") {
			t.Errorf("no ok line for %s:\n%s", f, out.String())
		}
	}
}

// runs runs the command line and fails the test if it does not return: a
// typo that starts a server blocks here instead of exiting.
func runs(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(args, &out, &errOut) }()
	select {
	case code = <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("gateway %q did not return: it is serving", args)
	}
	return code, out.String(), errOut.String()
}

// writeConfig writes a config file for one test and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestCommandLine checks that only a well-formed command line does
// anything, and that the version is the build's.
func TestCommandLine(t *testing.T) {
	ver := buildVersion() + "\n"
	for _, c := range []struct {
		name       string
		args       []string
		code       int
		out, err   string // wanted in stdout and stderr
		exactOut   bool
		noUsageOut bool
	}{
		{"version", []string{"version"}, 0, ver, "", true, true},
		{"-version", []string{"-version"}, 0, ver, "", true, true},
		{"--version", []string{"--version"}, 0, ver, "", true, true},
		{"version with an argument", []string{"version", "now"}, 2, "", `gateway: version takes no argument, got "now"`, false, true},
		{"a typo", []string{"valdiate", "f.yaml"}, 2, "", `gateway: unknown command "valdiate"`, false, true},
		{"a stray argument", []string{"-config", "gateway.yaml", "extra"}, 2, "", `gateway: unexpected argument "extra"`, false, true},
		{"serve with a stray argument", []string{"serve", "gateway.yaml"}, 2, "", `gateway: unexpected argument "gateway.yaml"`, false, true},
		{"explain with a stray argument", []string{"explain", "-model", "auto", "auto"}, 2, "", `gateway: unexpected argument "auto"`, false, true},
		{"an unknown flag", []string{"-confg", "gateway.yaml"}, 2, "", "flag provided but not defined: -confg", false, true},
		{"help", []string{"help"}, 0, "usage:", "", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := runs(t, c.args...)
			if code != c.code {
				t.Errorf("exit %d, want %d\nstderr: %s", code, c.code, errOut)
			}
			if c.exactOut && out != c.out || !strings.Contains(out, c.out) {
				t.Errorf("stdout %q, want %q", out, c.out)
			}
			if !strings.Contains(errOut, c.err) {
				t.Errorf("stderr %q, want %q", errOut, c.err)
			}
			if c.code == 2 && !strings.Contains(errOut, "usage:") {
				t.Errorf("a usage error without the usage:\n%s", errOut)
			}
			if c.noUsageOut && strings.Contains(out, "usage:") {
				t.Errorf("usage on stdout: %q", out)
			}
		})
	}
}

func TestVersionOf(t *testing.T) {
	vcs := func(rev, modified string) *debug.BuildInfo {
		return &debug.BuildInfo{Main: debug.Module{Path: "gateway", Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}}
	}
	for _, c := range []struct {
		name   string
		linked string
		bi     *debug.BuildInfo
		want   string
	}{
		{"set at link time", "v1.2.3", vcs("abc123", "false"), "v1.2.3"},
		{"module version", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}}, "v0.4.0"},
		{"clean checkout", "", vcs("abc123", "false"), "abc123"},
		{"modified checkout", "", vcs("abc123", "true"), "abc123+dirty"},
		{"go run", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "devel"},
		{"no build info", "", nil, "devel"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := versionOf(c.linked, c.bi); got != c.want {
				t.Errorf("versionOf = %q, want %q", got, c.want)
			}
		})
	}
}

// TestValidateReportsEveryError checks that validate lists every problem
// of a file with its line, an unknown field included.
func TestValidateReportsEveryError(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		want       []string
	}{
		{"types and values", "listen: 127.0.0.1:8080\nproviders:\n  p:\n    type: nope\n    models: {m: {}}\nfailover: {max_attempts: 0}\n",
			[]string{`providers.p.type: unknown type "nope"`, "(line 4)", "failover.max_attempts: must be at least 1, got 0 (line 6)"}},
		{"an unknown field hides nothing", `providers:
  mock:
    type: mock
    timout: 30s
    models: {echo: {}}
routes:
  - {name: r, match: 'tokns > 1', model: auto}
models:
  auto: {targets: [mock/echo, mock/nope]}
`, []string{`providers.mock: unknown field "timout" (line 4)`,
			"routes[0].match: invalid match expression: unknown name tokns (at column 1) (line 7)",
			`models.auto.targets[1]: target "mock/nope": provider "mock" has no model "nope" (line 9)`}},
		{"auth off on every interface", "listen: \":8080\"\nproviders:\n  mock: {type: mock, models: {echo: {}}}\n",
			[]string{`listen: ":8080" is reachable from other machines and auth is off (no auth.keys): anyone who can reach the port can spend the provider keys`, "(line 1)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := writeConfig(t, c.yaml)
			code, _, errOut := runs(t, "validate", f)
			if code != 1 {
				t.Fatalf("validate exited %d, want 1", code)
			}
			for _, want := range c.want {
				if !strings.Contains(errOut, want) {
					t.Errorf("validate output lacks %q:\n%s", want, errOut)
				}
			}
		})
	}
	if code, _, _ := runs(t, "validate"); code != 2 {
		t.Errorf("validate with no file exited %d, want 2", code)
	}
}

// TestExplainCommand checks explain's story and that its exit status says
// whether the request would be served.
func TestExplainCommand(t *testing.T) {
	caps := writeConfig(t, `providers:
  capped: {type: mock, limits: {tpm: 2000}, models: {m: {}}}
  gone: {type: openai, base_url: "http://127.0.0.1:1/v1", keys: ["file:/nonexistent/key"], optional: true, models: {g: {}}}
models:
  small: {targets: [capped/m]}
  lost: {targets: [gone/g]}
`)
	team := []string{"explain", "-config", "examples/team.yaml", "-skip-secrets"}
	for _, c := range []struct {
		name string
		args []string
		code int
		out  []string
	}{
		{"served", append(team, "-model", "auto", "-key", "team-ml", "-tools"), 0,
			[]string{"route: ml-team-tools", "1. openai/gpt-4o", "2. groq/llama-70b", "eligible"}},
		{"404 unknown model", append(team, "-model", "gpt-9", "-key", "team-ml"), 1, []string{"404 model_not_found"}},
		{"403 not on the allow-list", append(team, "-model", "smart", "-key", "web-frontend"), 1, []string{"refused: 403"}},
		{"403 disabled key", append(team, "-model", "fast", "-key", "intern-2026"), 1, []string{"refused: 403"}},
		{"no such key", append(team, "-model", "auto", "-key", "nobody"), 1, nil},
		{"within the caps", []string{"explain", "-config", caps, "-model", "small", "-tokens", "50"}, 0, []string{"eligible"}},
		{"400 over every cap", []string{"explain", "-config", caps, "-model", "small", "-tokens", "5000"}, 1, []string{"400 request_too_large"}},
		{"503 no provider", []string{"explain", "-config", caps, "-model", "lost"}, 1, []string{"503 no_provider"}},
		{"no -model", team, 2, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := runs(t, c.args...)
			if code != c.code {
				t.Errorf("explain exited %d, want %d\nstdout: %s\nstderr: %s", code, c.code, out, errOut)
			}
			for _, want := range c.out {
				if !strings.Contains(out, want) {
					t.Errorf("explain output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// dialServing connects to the gateway serving at addr once it listens.
func dialServing(t *testing.T, addr string) net.Conn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway never listened: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestExplainLive runs `gateway explain -url` against a gateway serving
// over loopback TCP: the same story as from the file, from the live
// state, with the admin key from $GATEWAY_KEY.
func TestExplainLive(t *testing.T) {
	gwAddr := freeAddr(t)
	t.Setenv("GW_TEST_ADMIN", "gw-test-admin-0001")
	t.Setenv("GW_TEST_APP", "gw-test-app-0002")
	cfg := writeConfig(t, `listen: "`+gwAddr+`"
log: {access: false}
auth:
  keys:
    - {name: ops, key: "${GW_TEST_ADMIN}", admin: true}
    - {name: app, key: "${GW_TEST_APP}", metadata: {team: app}}
providers:
  mk: {type: mock, models: {m: {}, n: {}}}
models:
  auto: {targets: [mk/m]}
routes:
  - {name: app-beta, match: 'key.metadata.team == "app" && headers["x-tier"] == "beta"', targets: [mk/n]}
`)
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, config.Options{}, nil, io.Discard, io.Discard) }()
	t.Cleanup(func() {
		stop()
		<-served
	})
	dialServing(t, gwAddr).Close()
	url := "http://" + gwAddr
	t.Setenv("GATEWAY_KEY", "gw-test-admin-0001")
	code, out, errOut := runs(t, "explain", "-url", url, "-model", "auto", "-key", "app", "-header", "X-Tier=beta", "-tools")
	if code != 0 || !strings.Contains(out, "key: app") || !strings.Contains(out, "route: app-beta") ||
		!strings.Contains(out, "1. mk/n") || !strings.Contains(out, "tools true") {
		t.Errorf("live explain exited %d:\n%s%s", code, out, errOut)
	}
	if code, out, _ := runs(t, "explain", "-url", url, "-model", "gpt-9"); code != 1 || !strings.Contains(out, "404 model_not_found") {
		t.Errorf("unknown model: exit %d:\n%s", code, out)
	}
	t.Setenv("GATEWAY_KEY", "gw-test-app-0002")
	if code, _, errOut := runs(t, "explain", "-url", url, "-model", "auto"); code != 1 || !strings.Contains(errOut, "answered 403") {
		t.Errorf("a key without admin: exit %d: %s", code, errOut)
	}
}

// TestShutdownLetsOpenStreamsFinish starts the real serve loop, opens a
// slow stream, then stops the gateway as SIGTERM does: the stream must end
// complete, and serve must return.
func TestShutdownLetsOpenStreamsFinish(t *testing.T) {
	release := make(chan struct{})
	upAddr := freeAddr(t)
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			chunk := `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}` + "\n\n"
			_, _ = w.WriteString(chunk)
			_ = w.Flush()
			<-release
			_, _ = w.WriteString(chunk + `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\ndata: [DONE]\n\n")
		})
	}}
	go func() { _ = up.ListenAndServe(upAddr) }()
	t.Cleanup(func() { _ = up.Shutdown() })

	gwAddr := freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(cfg, []byte(`listen: "`+gwAddr+`"
log: {access: false}
providers:
  up: {type: openai, base_url: "http://`+upAddr+`/v1", stream_usage: false, models: {m: {}}}
models:
  auto: {targets: [up/m]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, config.Options{}, nil, io.Discard, io.Discard) }()

	conn := dialServing(t, gwAddr)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	body := `{"model":"auto","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	br := bufio.NewReader(conn)
	var got strings.Builder
	for !strings.Contains(got.String(), `"content":"x"`) {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the first event: %v (so far %q)", err, got.String())
		}
		got.WriteString(line)
	}

	stop() // what SIGTERM does
	// The open stream goes on; release the upstream and read to the end.
	time.AfterFunc(200*time.Millisecond, func() { close(release) })
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("the stream broke during shutdown: %v", err)
	}
	if !strings.Contains(string(rest), "data: [DONE]") {
		t.Errorf("the stream did not finish: %q", rest)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not return after the stream finished")
	}
	if c, err := net.Dial("tcp", gwAddr); err == nil {
		c.Close()
		t.Error("the gateway still accepts connections after shutdown")
	}
}

// TestServeListenFamilies serves on an IPv6 loopback address (fasthttp's
// own ListenAndServe listens on IPv4 only) and fails at once, with the
// address, when the port is taken.
func TestServeListenFamilies(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(cfg, []byte("listen: \""+addr+"\"\nlog: {access: false}\nproviders:\n  mock: {type: mock, models: {echo: {}}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() { served <- serve(ctx, cfg, config.Options{}, nil, io.Discard, io.Discard) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("/health on %s: %d", addr, resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway never answered on %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A second gateway on the same address fails at once, naming it.
	err = serve(context.Background(), cfg, config.Options{}, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("a second serve on a taken address: %v", err)
	}
	stop()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
}
