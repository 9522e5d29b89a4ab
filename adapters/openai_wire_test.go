package adapters

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// rawUpstream records the bytes of each request it reads, as they came,
// and answers each with reply.
func rawUpstream(t *testing.T, reply string) (*fasthttputil.InmemoryListener, chan []byte) {
	t.Helper()
	ln := fasthttputil.NewInmemoryListener()
	got := make(chan []byte, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveRaw(c, reply, got)
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return ln, got
}

func serveRaw(c net.Conn, reply string, got chan<- []byte) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		var raw bytes.Buffer
		tp := textproto.NewReader(bufio.NewReader(&teeReader{br, &raw}))
		if _, err := tp.ReadLine(); err != nil {
			return
		}
		h, err := tp.ReadMIMEHeader()
		if err != nil {
			return
		}
		n, _ := strconv.Atoi(h.Get("Content-Length"))
		body := make([]byte, n)
		for read := 0; read < n; {
			m, err := tp.R.Read(body[read:])
			if err != nil {
				return
			}
			read += m
		}
		got <- raw.Bytes()
		ans := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(reply)) + "\r\n\r\n" + reply
		if _, err := c.Write([]byte(ans)); err != nil {
			return
		}
	}
}

// teeReader hands on one byte at a time, so that what it copied to w is
// exactly what the reader above it consumed.
type teeReader struct {
	r *bufio.Reader
	w *bytes.Buffer
}

func (t *teeReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	b, err := t.r.ReadByte()
	if err != nil {
		return 0, err
	}
	p[0] = b
	t.w.WriteByte(b)
	return 1, nil
}

// TestOpenAIWireBytes pins the exact bytes an OpenAI-compatible upstream
// receives for each call, so that how the request is built may change
// while what is sent does not.
func TestOpenAIWireBytes(t *testing.T) {
	const reply = `{"object":"list","choices":[],"data":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}`
	ln, got := rawUpstream(t, reply)
	yaml := `
providers:
  up:
    type: openai
    base_url: http://UP.test:8080/api/v1/
    keys: ["${K1}", "${K2}"]
    timeout: 5s
    headers: {X-Extra: extra-value, x-lower: v}
    models:
      m: {upstream: "up-model"}
`
	p := testProvider(t, yaml, "up", "UP.test:8080", ln)
	call := func(body string, stream bool, key int) *Call {
		c := testCall(body, stream, key)
		c.Upstream, c.UpstreamJSON = "up-model", []byte(`"up-model"`)
		return c
	}
	head := func(path string, n, key int) string {
		return "POST /api/v1/" + path + " HTTP/1.1\r\nHost: up.test:8080\r\nContent-Type: application/json\r\nContent-Length: " +
			strconv.Itoa(n) + "\r\nAuthorization: Bearer " + []string{testKey1, testKey2}[key] + "\r\nX-Extra: extra-value\r\nX-Lower: v\r\n\r\n"
	}
	for _, c := range []struct {
		name string
		do   func() error
		want string
	}{
		{"chat", func() error { return p.Chat(call(`{"model":"m","messages":[]}`, false, 0), &Reply{}) },
			head("chat/completions", 34, 0) + `{"model":"up-model","messages":[]}`},
		{"chat, second key", func() error { return p.Chat(call(` {"model" : "m"}`, false, 1), &Reply{}) },
			head("chat/completions", 23, 1) + ` {"model" : "up-model"}`},
		{"chat stream", func() error { return p.Chat(call(`{"model":"m","stream":true}`, true, 0), &Reply{}) },
			head("chat/completions", 74, 0) + `{"stream_options":{"include_usage":true},"model":"up-model","stream":true}`},
		{"embeddings", func() error { return p.(Embedder).Embed(call(`{"model":"m","input":"x"}`, false, 0), &Reply{}) },
			head("embeddings", 32, 0) + `{"model":"up-model","input":"x"}`},
		{"completions", func() error { return p.(Completer).Complete(call(`{"model":"m","prompt":"x"}`, false, 1), &Reply{}) },
			head("completions", 33, 1) + `{"model":"up-model","prompt":"x"}`},
		{"responses", func() error {
			return p.(ResponsesProvider).Responses(call(`{"model":"m","input":"x"}`, false, 0), &Reply{})
		}, head("responses", 32, 0) + `{"model":"up-model","input":"x"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_ = c.do()
			var raw []byte
			select {
			case raw = <-got:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream read no request")
			}
			// Configured headers come from a map: their order is not
			// the adapter's to keep.
			if norm := sortedHeaders(string(raw)); norm != c.want {
				t.Errorf("upstream read\n%q\nwant\n%q", norm, c.want)
			}
		})
	}
}

// sortedHeaders returns a request with the X- headers of its head sorted.
func sortedHeaders(raw string) string {
	head, body, _ := strings.Cut(raw, "\r\n\r\n")
	var x, rest []string
	for _, l := range strings.Split(head, "\r\n") {
		if strings.HasPrefix(l, "X-") {
			x = append(x, l)
		} else {
			rest = append(rest, l)
		}
	}
	slices.Sort(x)
	return strings.Join(append(rest, x...), "\r\n") + "\r\n\r\n" + body
}

// BenchmarkOpenAIRequest builds a chat request and writes it as the
// provider's client does (which reads its URI first, for the scheme).
func BenchmarkOpenAIRequest(b *testing.B) {
	p := testProvider(b, "providers:\n  up: {type: openai, base_url: \"http://up.test/v1\", keys: [\"${K1}\"], headers: {X-Extra: v}, models: {m: {}}}\n", "up", "", nil)
	o := p.(redacting).p.(*openAI)
	c := testCall(`{"model":"m","messages":[{"role":"user","content":"Hello there"}]}`, false, 0)
	w := bufio.NewWriter(io.Discard)
	for b.Loop() {
		req := o.request(&o.url, c.Key)
		appendPatched(req, c)
		_ = req.URI()
		if err := req.Write(w); err != nil {
			b.Fatal(err)
		}
		fasthttp.ReleaseRequest(req)
	}
}

// BenchmarkOpenAIChat is one non-stream chat call through the adapter
// and its redaction, against an in-memory upstream answering
// benchAnswer; floor is the same request sent with a bare fasthttp
// client, as bench/'s floor proxy sends it. The difference is what the
// adapter adds to the exchange.
func BenchmarkOpenAIChat(b *testing.B) {
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBody(benchAnswer)
	}}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Shutdown() })
	const body = `{"model":"m","messages":[{"role":"user","content":"Hello there"}]}`
	b.Run("adapter", func(b *testing.B) {
		p := testProvider(b, "providers:\n  up: {type: openai, base_url: \"http://up.test/v1\", keys: [\"${K1}\"], models: {m: {}}}\n", "up", "up.test:80", ln)
		c := testCall(body, false, 0)
		var r Reply
		b.ReportAllocs()
		for b.Loop() {
			if err := p.Chat(c, &r); err != nil || r.Usage.Prompt != 1117 {
				b.Fatal(err, r.Usage)
			}
		}
	})
	b.Run("floor", func(b *testing.B) {
		hc := &fasthttp.HostClient{Addr: "up.test", Dial: func(string) (net.Conn, error) { return ln.Dial() },
			ReadBufferSize: 16 << 10, NoDefaultUserAgentHeader: true}
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://up.test/v1/chat/completions")
		req.Header.SetMethod(fasthttp.MethodPost)
		req.Header.SetContentType("application/json")
		req.Header.Set("Authorization", "Bearer "+testKey1)
		req.SetBodyString(body)
		b.ReportAllocs()
		for b.Loop() {
			if err := hc.Do(req, resp); err != nil || len(resp.Body()) != len(benchAnswer) {
				b.Fatal(err)
			}
		}
	})
}
