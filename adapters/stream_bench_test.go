package adapters

import (
	"bytes"
	"io"
	"strconv"
	"testing"
)

// BenchmarkOpenAIStreamFrames is the adapter's share of relaying a
// stream: 20 chunk frames and [DONE] cut, checked and passed on, with the
// reader's buffers returned at the end, as BenchmarkChatStream's upstream
// sends them.
func BenchmarkOpenAIStreamFrames(b *testing.B) {
	var body []byte
	for i := range 20 {
		body = append(body, `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"tok`+strconv.Itoa(i)+` "},"finish_reason":null}]}`+"\n\n"...)
	}
	body = append(body, "data: [DONE]\n\n"...)
	var r bytes.Reader
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(body)
		s := &openAIStream{sse: newSSEReader(&r)}
		for n := 0; ; n++ {
			if _, err := s.Next(); err != nil {
				if err != io.EOF || n != 21 {
					b.Fatalf("after %d frames: %v, want io.EOF after 21", n, err)
				}
				break
			}
		}
		s.sse.release()
	}
}
