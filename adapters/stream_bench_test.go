package adapters

import (
	"bytes"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// BenchmarkOpenAIStreamFrames is the adapter's share of relaying a
// stream: 20 chunk frames and [DONE] cut, checked and passed on, with the
// reader's buffers returned at the end, as BenchmarkChatStream's upstream
// sends them.
func BenchmarkOpenAIStreamFrames(b *testing.B) { benchStreamFrames(b, 0) }

// BenchmarkWatchedStreamFrames is BenchmarkOpenAIStreamFrames with
// first_byte_timeout and idle_timeout set: what the watchdog adds to 21
// reads.
func BenchmarkWatchedStreamFrames(b *testing.B) { benchStreamFrames(b, 30*time.Second) }

// BenchmarkOpenAIStreamFramesApart is BenchmarkOpenAIStreamFrames with
// each frame in a read of its own, as frames 50 ms apart come, and after
// each frame the NextReady a relay asks for the frames that came with it
// (none until [DONE], which comes with the last chunk).
func BenchmarkOpenAIStreamFramesApart(b *testing.B) { benchFramesApart(b, nil) }

// BenchmarkRedactedStreamFramesApart is BenchmarkOpenAIStreamFramesApart
// with the redactor of a provider key on each frame, as every stream of a
// gateway with keys has it.
func BenchmarkRedactedStreamFramesApart(b *testing.B) {
	benchFramesApart(b, NewRedactor([]string{"sk-bench-upstream-key-0123456789"}))
}

// benchFramesApart relays BenchmarkOpenAIStreamFramesApart's stream,
// redacted by red.
func benchFramesApart(b *testing.B, red *Redactor) {
	var frames []string
	for i := range 20 {
		frames = append(frames, `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"tok`+strconv.Itoa(i)+` "},"finish_reason":null}]}`+"\n\n")
	}
	frames[19] += "data: [DONE]\n\n"
	var r readsReader
	parts := make([]string, len(frames))
	b.ReportAllocs()
	for b.Loop() {
		r.parts = parts[:copy(parts, frames)]
		s := &openAIStream{sse: newSSEReader(&r)}
		s.redactWith(red)
		n := 0
		for {
			if _, err := s.Next(); err != nil {
				if err != io.EOF || n != 21 {
					b.Fatalf("after %d frames: %v, want io.EOF after 21", n, err)
				}
				break
			}
			for n++; ; n++ {
				if _, err := s.NextReady(); err != nil {
					break
				}
			}
		}
		s.sse.release()
	}
}

// benchStreamFrames relays BenchmarkOpenAIStreamFrames's stream, watched
// with both timeouts at timeout (0: unwatched).
func benchStreamFrames(b *testing.B, timeout time.Duration) {
	var body []byte
	for i := range 20 {
		body = append(body, `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"tok`+strconv.Itoa(i)+` "},"finish_reason":null}]}`+"\n\n"...)
	}
	body = append(body, "data: [DONE]\n\n"...)
	var r bytes.Reader
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(body)
		s := &openAIStream{sse: newSSEReader(&r)}
		s.sse.watch(resp, timeout, timeout)
		for n := 0; ; n++ {
			if _, err := s.Next(); err != nil {
				if err != io.EOF || n != 21 {
					b.Fatalf("after %d frames: %v, want io.EOF after 21", n, err)
				}
				break
			}
		}
		s.sse.stop()
		s.sse.release()
	}
}
