package adapters

import (
	"bufio"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// pinger answers with head, then sends tick every 40ms for 400ms, then
// tail: an upstream alive but slow, as Anthropic's pings and
// OpenRouter's ": PROCESSING" comments are.
func pinger(head, tick, tail string) func(*fasthttp.RequestCtx) {
	return func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			_, _ = w.WriteString(head)
			_ = w.Flush()
			for range 10 {
				time.Sleep(40 * time.Millisecond)
				_, _ = w.WriteString(tick)
				if w.Flush() != nil {
					return
				}
			}
			_, _ = w.WriteString(tail)
			_ = w.Flush()
		})
	}
}

// One watchdog for every protocol: after the first event with data, any
// upstream event (a ping, a comment) keeps the stream alive under
// idle_timeout; before it, comments do not stop first_byte_timeout.
func TestWatchdogPingsKeepStreamsAlive(t *testing.T) {
	const idle = "    idle_timeout: 150ms\n    first_byte_timeout: 5s\n"
	t.Run("anthropic pings", func(t *testing.T) {
		head := anthEvents("message_start", anthStart, "content_block_delta", anthText)
		tail := anthEvents("content_block_delta", anthText, "message_delta", anthDelta, "message_stop", anthStop)
		u := newAnthUpstream(t, pinger(head, "event: ping\ndata: {\"type\": \"ping\"}\n\n", tail))
		p := newTestAnthropic(t, u, "http://up.test", idle)
		var r Reply
		if err := p.Chat(anthCall(`{"model":"m","stream":true,"messages":[]}`, 0), &r); err != nil {
			t.Fatal(err)
		}
		defer r.Stream.Close()
		if frames, end := anthDrain(t, r.Stream); end != "EOF" || !strings.Contains(strings.Join(frames, ""), "[DONE]") {
			t.Errorf("frames %q, end %q: a pinging stream was cut", frames, end)
		}
	})
	t.Run("openai comments after the first chunk", func(t *testing.T) {
		chunk := `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}` + "\n\n"
		finish := `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\ndata: [DONE]\n\n"
		p := openAIWatchdogProvider(t, pinger(chunk, ": keep-alive\n\n", finish), idle)
		var r Reply
		if err := p.Chat(&Call{Body: []byte(`{"model":"m","stream":true}`), ModelStart: 9, ModelEnd: 12, UpstreamJSON: []byte(`"m"`), Stream: true}, &r); err != nil {
			t.Fatal(err)
		}
		defer r.Stream.Close()
		var err error
		for err == nil {
			_, err = r.Stream.Next()
		}
		if err.Error() != "EOF" {
			t.Errorf("end %v: a stream with keep-alive comments was cut", err)
		}
	})
	t.Run("comments do not count as a first byte", func(t *testing.T) {
		p := openAIWatchdogProvider(t, pinger(": PROCESSING\n\n", ": PROCESSING\n\n", "data: [DONE]\n\n"),
			"    first_byte_timeout: 150ms\n")
		var r Reply
		err := p.Chat(&Call{Body: []byte(`{"model":"m","stream":true}`), ModelStart: 9, ModelEnd: 12, UpstreamJSON: []byte(`"m"`), Stream: true}, &r)
		if err == nil {
			defer r.Stream.Close()
			_, err = r.Stream.Next()
		}
		if err != error(errFirstByte) {
			t.Errorf("err %v, want the first byte timeout", err)
		}
	})
}

func openAIWatchdogProvider(t *testing.T, h func(*fasthttp.RequestCtx), extra string) Provider {
	t.Helper()
	u := newUpstream(t, h)
	yaml := "providers:\n  o:\n    type: openai\n    base_url: http://up.test/v1\n    keys: [\"${K1}\"]\n" + extra + "    models:\n      m: {upstream: m}\n"
	return testProvider(t, yaml, "o", "up.test:80", u.ln)
}

// TestWatchdogCountsUpstreamWaits: idle_timeout bounds each wait for the
// upstream, from the start of the read, and not the time the gateway
// spends between reads (relaying to a slow client), however long.
func TestWatchdogCountsUpstreamWaits(t *testing.T) {
	const idle = 100 * time.Millisecond
	chunk := `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}` + "\n\n"
	quiet := make(chan struct{})
	p := openAIWatchdogProvider(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			_, _ = w.WriteString(chunk + chunk)
			_ = w.Flush()
			<-quiet
		})
	}, "    idle_timeout: "+idle.String()+"\n")
	t.Cleanup(func() { close(quiet) })
	var r Reply
	if err := p.Chat(&Call{Body: []byte(`{"model":"m","stream":true}`), ModelStart: 9, ModelEnd: 12, UpstreamJSON: []byte(`"m"`), Stream: true}, &r); err != nil {
		t.Fatal(err)
	}
	defer r.Stream.Close()
	if _, err := r.Stream.Next(); err != nil {
		t.Fatal(err)
	}
	// The gateway is busy elsewhere for three idle_timeouts.
	time.Sleep(3 * idle)
	if _, err := r.Stream.Next(); err != nil {
		t.Fatalf("the second chunk, sent at once: %v", err)
	}
	start := time.Now()
	_, err := r.Stream.Next()
	took := time.Since(start)
	if f, ok := err.(*Failure); !ok || f.Msg != "upstream stream went silent past idle_timeout" {
		t.Fatalf("err %v, want the idle timeout", err)
	}
	if took < idle || took > idle+300*time.Millisecond {
		t.Errorf("the silent upstream was cut after %v, want within [%v, %v + slack]", took, idle, idle)
	}
}
