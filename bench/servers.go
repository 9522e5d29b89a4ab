package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// The two servers below run as child processes of the load tool (`bench
// upstream`, `bench floor`), so each has a /proc/PID/stat of its own. Each
// serves the listener its parent passes as fd 3, or -addr.

// completion is the fake upstream's answer to every non-stream request.
const completion = `{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"upstream-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how can I help?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16}}`

// sseFrames is the stream the fake upstream sends: n chunk frames, then
// the [DONE] frame.
func sseFrames(n int) [][]byte {
	frames := make([][]byte, 0, n+1)
	for i := range n {
		frames = append(frames, []byte(`data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"upstream-model","choices":[{"index":0,"delta":{"content":"tok`+strconv.Itoa(i)+` "},"finish_reason":null}]}`+"\n\n"))
	}
	return append(frames, []byte("data: [DONE]\n\n"))
}

var strStreamTrue = []byte(`"stream":true`)

// upstreamHandler is a fake OpenAI server: POST /v1/chat/completions
// answers a fixed chat.completion, or, when the body asks to stream,
// `chunks` SSE chunks `delay` apart (the first at once) ending with
// data: [DONE]. GET /health answers ok.
func upstreamHandler(chunks int, delay time.Duration) fasthttp.RequestHandler {
	reply := []byte(completion)
	frames := sseFrames(chunks)
	return func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/v1/chat/completions":
			if !ctx.IsPost() {
				ctx.Error("POST only", fasthttp.StatusMethodNotAllowed)
				return
			}
			if !bytes.Contains(ctx.PostBody(), strStreamTrue) {
				ctx.SetContentType("application/json")
				ctx.SetBody(reply)
				return
			}
			ctx.SetContentType("text/event-stream")
			ctx.Response.Header.Set("Cache-Control", "no-cache")
			ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
				last := len(frames) - 1
				for i, f := range frames {
					if i > 0 && i < last {
						time.Sleep(delay)
					}
					_, _ = w.Write(f)
					if i == last-1 {
						continue // [DONE] goes out with the last chunk
					}
					if w.Flush() != nil {
						return
					}
				}
			})
		case "/health":
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"status":"ok"}`)
		default:
			ctx.Error("not found", fasthttp.StatusNotFound)
		}
	}
}

// floorHandler is the floor: a reverse proxy that forwards each request's
// bytes to the upstream and relays the response, chunk by chunk when the
// upstream streams, and does nothing else. It is the least any fasthttp
// proxy in front of the same upstream can cost.
func floorHandler(upstream string) fasthttp.RequestHandler {
	hc := &fasthttp.HostClient{
		Addr:                     upstream,
		MaxConns:                 1 << 16,
		MaxIdleConnDuration:      90 * time.Second,
		ReadBufferSize:           16 << 10,
		NoDefaultUserAgentHeader: true,
	}
	return func(ctx *fasthttp.RequestCtx) {
		// The response is read as a stream straight into the server's
		// response; the server writes it out as it arrives (one flush per
		// upstream chunk) and closes it, which hands the upstream
		// connection back to the pool.
		ctx.Response.StreamBody = true
		if err := hc.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Response.Reset()
			ctx.Error("floor: "+err.Error(), fasthttp.StatusBadGateway)
		}
	}
}

func runUpstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	addr := fs.String("addr", "", "listen address (default: the listener passed as fd 3)")
	chunks := fs.Int("chunks", 20, "SSE chunks per stream")
	delay := fs.Duration("chunk-delay", 50*time.Millisecond, "pause between two chunks")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return serveChild(*addr, upstreamHandler(*chunks, *delay))
}

func runFloor(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	addr := fs.String("addr", "", "listen address (default: the listener passed as fd 3)")
	upstream := fs.String("upstream", "", "host:port of the upstream")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *upstream == "" {
		return errors.New("floor: -upstream is required")
	}
	return serveChild(*addr, floorHandler(*upstream))
}

// serveChild serves h until SIGTERM/SIGINT or until the parent process
// goes away (its parent pid changes), so no child outlives a crashed run.
func serveChild(addr string, h fasthttp.RequestHandler) error {
	var ln net.Listener
	var err error
	if addr != "" {
		ln, err = net.Listen("tcp", addr)
	} else {
		f := os.NewFile(3, "listener")
		if f == nil {
			return errors.New("no -addr and no listener on fd 3")
		}
		ln, err = net.FileListener(f)
		_ = f.Close()
	}
	if err != nil {
		return err
	}
	srv := &fasthttp.Server{
		Handler:               h,
		ReadTimeout:           60 * time.Second,
		IdleTimeout:           120 * time.Second,
		NoDefaultServerHeader: true,
		CloseOnShutdown:       true,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	ppid := os.Getppid()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-sig:
			return shutdown(srv, done)
		case <-tick.C:
			if os.Getppid() != ppid {
				return shutdown(srv, done)
			}
		}
	}
}

func shutdown(srv *fasthttp.Server, done chan error) error {
	go func() { _ = srv.Shutdown() }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	return nil
}

// childMain runs a subcommand and reports whether args named one.
func childMain(args []string) (int, bool) {
	if len(args) == 0 {
		return 0, false
	}
	var err error
	switch args[0] {
	case "upstream":
		err = runUpstream(args[1:])
	case "floor":
		err = runFloor(args[1:])
	default:
		return 0, false
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench "+args[0]+":", err)
		return 1, true
	}
	return 0, true
}
