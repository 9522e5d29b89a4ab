package engine

import (
	"bufio"
	"bytes"
	"io"
	"slices"
	"strconv"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// BenchmarkChatStreamApart is BenchmarkChatStream with its frames apart,
// as in the load test: the upstream sends the next chunk only once the
// client has the one before, so the gateway reads, checks and writes each
// frame on its own (the last chunk and [DONE] come together, as the load
// test's upstream sends them).
func BenchmarkChatStreamApart(b *testing.B) {
	up, ack := apartUpstream(b)
	benchApart(b, benchGateway(b, benchConfig, up), ack)
}

// BenchmarkChatStreamApartFloor is BenchmarkChatStreamApart through the
// floor proxy: what relaying the same frames costs at the least.
func BenchmarkChatStreamApartFloor(b *testing.B) {
	up, ack := apartUpstream(b)
	benchApart(b, benchFloor(b, up), ack)
}

// apartChunks is how many chunk frames apartUpstream sends, [DONE] with
// the last.
const apartChunks = 20

// apartUpstream is a fake OpenAI server streaming apartChunks chunks, each
// but the last written and flushed only after the client took the one
// before (a receive on ack).
func apartUpstream(b *testing.B) (*fasthttputil.InmemoryListener, chan struct{}) {
	ln := fasthttputil.NewInmemoryListener()
	var writes [][]byte
	for i := range apartChunks {
		writes = append(writes, []byte(`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"tok`+strconv.Itoa(i)+` "},"finish_reason":null}]}`+"\n\n"))
	}
	writes[apartChunks-1] = append(writes[apartChunks-1], "data: [DONE]\n\n"...)
	ack := make(chan struct{})
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for i, f := range writes {
				if i > 0 {
					<-ack
				}
				_, _ = w.Write(f)
				if w.Flush() != nil {
					return
				}
			}
		})
	}}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Shutdown() })
	return ln, ack
}

// benchApart streams from c's chat endpoint, one stream after another,
// telling the upstream on ack each time a chunk has come.
func benchApart(b *testing.B, c *fasthttp.HostClient, ack chan struct{}) {
	// Registered after the servers' shutdowns, so run before them: a
	// stream a failure left open is let go rather than hung.
	b.Cleanup(func() { close(ack) })
	c.StreamResponseBody = true
	req := benchRequest(`{"model":"auto","stream":true,"messages":[{"role":"user","content":"Say hello."}]}`)
	resp := fasthttp.AcquireResponse()
	body := make([]byte, 0, 8<<10)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		benchDo(b, c, req, resp)
		body = body[:0]
		frames, acked := 0, 0
		r := resp.BodyStream()
		for {
			body = slices.Grow(body, 512)
			n, err := r.Read(body[len(body):cap(body)])
			from := max(len(body)-1, 0)
			body = body[:len(body)+n]
			frames += bytes.Count(body[from:], []byte("\n\n"))
			for ; acked < frames && acked < apartChunks-1; acked++ {
				ack <- struct{}{}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if frames != apartChunks+1 || !bytes.HasSuffix(body, []byte("data: [DONE]\n\n")) {
			b.Fatalf("%d frames: %q", frames, body)
		}
		_ = resp.CloseBodyStream()
	}
}
