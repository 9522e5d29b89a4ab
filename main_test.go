package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

func TestValidateReportsEveryError(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("listen: 8080\nproviders:\n  p:\n    type: nope\n    models: {m: {}}\nfailover: {max_attempts: 0}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"validate", bad}, &out, &errOut); code != 1 {
		t.Fatalf("validate exited %d, want 1", code)
	}
	for _, want := range []string{`providers.p.type: unknown type "nope"`, "(line 4)", "failover.max_attempts: must be at least 1, got 0 (line 6)"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("validate output lacks %q:\n%s", want, errOut.String())
		}
	}
	if code := run([]string{"validate"}, &out, &errOut); code != 2 {
		t.Errorf("validate with no file exited %d, want 2", code)
	}
}

func TestExplainCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"explain", "-config", "examples/team.yaml", "-skip-secrets", "-model", "auto", "-key", "team-ml", "-tools"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("explain exited %d: %s", code, errOut.String())
	}
	for _, want := range []string{"route: ml-team-tools", "1. openai/gpt-4o", "2. groq/llama-70b", "eligible"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("explain output lacks %q:\n%s", want, out.String())
		}
	}
	if code := run([]string{"explain", "-config", "examples/team.yaml", "-skip-secrets"}, &out, &errOut); code != 2 {
		t.Errorf("explain without -model exited %d, want 2", code)
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
	go func() { served <- serve(ctx, cfg, nil, io.Discard, io.Discard) }()

	var conn net.Conn
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", gwAddr)
		if err == nil {
			conn = c
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway never listened: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
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
