package adapters

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gateway/config"
)

// scriptedServer is an HTTP/1.1 server over loopback TCP whose n-th
// accepted connection is handled by the n-th script; connections beyond
// the scripts are closed at once.
type scriptedServer struct {
	addr string
	mu   sync.Mutex
	// accepted counts the connections accepted.
	accepted int
}

// connScript handles one connection; the connection is closed after.
type connScript func(c net.Conn, br *bufio.Reader)

func newScriptedServer(t *testing.T, scripts ...connScript) *scriptedServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptedServer{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			i := s.accepted
			s.accepted++
			s.mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if i < len(scripts) {
					scripts[i](c, bufio.NewReader(c))
				}
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return s
}

func (s *scriptedServer) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// readRequest reads one request off the connection, false when none came.
func readRequest(br *bufio.Reader) bool {
	req, err := http.ReadRequest(br)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, req.Body)
	return true
}

// answering answers n requests, keeping the connection alive between
// them, then closes it as an idle keep-alive ends, and says so on closed.
func answering(n int, closed chan<- struct{}) connScript {
	const body = `{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}`
	return func(c net.Conn, br *bufio.Reader) {
		for range n {
			if !readRequest(br) {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
		}
		if closed != nil {
			_ = c.Close()
			closed <- struct{}{}
		}
	}
}

// hangingUp reads a request and closes the connection without a word.
func hangingUp(_ net.Conn, br *bufio.Reader) { readRequest(br) }

// tcpOpenAI builds the openai adapter, on its own client, for an upstream
// at addr.
func tcpOpenAI(t *testing.T, addr string) Provider { return tcpOpenAIWithin(t, addr, 5*time.Second) }

// tcpOpenAIWithin is tcpOpenAI with the provider's timeout.
func tcpOpenAIWithin(t *testing.T, addr string, timeout time.Duration) Provider {
	t.Helper()
	cfg, err := config.Parse([]byte("providers:\n  up: {type: openai, base_url: http://"+addr+"/v1, timeout: "+timeout.String()+", models: {m: {}}}\n"), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	client := NewClient(cfg.Providers["up"], nil)
	t.Cleanup(client.CloseIdleConnections)
	p, err := New(cfg.Providers["up"], client, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestStaleConnectionRetriedOnce: a request that meets a kept-alive
// connection the server has closed is sent again, once, on a fresh one,
// and only a failure there is the attempt's; a failure on a fresh
// connection is never sent again.
func TestStaleConnectionRetriedOnce(t *testing.T) {
	for _, tt := range []struct {
		name string
		// second handles the connection after the one the server closed.
		second connScript
		// fail is the start of the second call's failure; "" for none.
		fail string
	}{
		{"the retry is answered", answering(1, nil), ""},
		{"the retry fails too", hangingUp, "upstream connection failed: fasthttp: the server closed connection before returning the first response byte"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			closed := make(chan struct{}, 1)
			s := newScriptedServer(t, answering(1, closed), tt.second)
			p := tcpOpenAI(t, s.addr)
			if err := p.Chat(testCall(`{"model":"m"}`, false, -1), &Reply{}); err != nil {
				t.Fatalf("first call: %v", err)
			}
			<-closed
			err := p.Chat(testCall(`{"model":"m"}`, false, -1), &Reply{})
			switch {
			case tt.fail == "" && err != nil:
				t.Errorf("second call: %v, want it answered on a fresh connection", err)
			case tt.fail != "":
				if f := asTestFailure(t, err); f.Class != Retryable || !strings.HasPrefix(f.Msg, tt.fail) {
					t.Errorf("second call: %+v, want a retryable %q", f, tt.fail)
				}
			}
			if got := s.connections(); got != 2 {
				t.Errorf("the server saw %d connections, want 2: the first, and one retry", got)
			}
		})
	}
	t.Run("a fresh connection is not retried", func(t *testing.T) {
		s := newScriptedServer(t, hangingUp, answering(1, nil))
		p := tcpOpenAI(t, s.addr)
		if f := asTestFailure(t, p.Chat(testCall(`{"model":"m"}`, false, -1), &Reply{})); f.Class != Retryable {
			t.Errorf("failure = %+v, want retryable", f)
		}
		if got := s.connections(); got != 1 {
			t.Errorf("the server saw %d connections, want 1", got)
		}
	})
}

// streamingWithHeader answers one request with a two-frame SSE stream
// whose header block carries a pad header of n bytes.
func streamingWithHeader(n int) connScript {
	return func(c net.Conn, br *bufio.Reader) {
		if !readRequest(br) {
			return
		}
		frames := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Pad: "+strings.Repeat("p", n)+
			"\r\nTransfer-Encoding: chunked\r\n\r\n"+strconv.FormatInt(int64(len(frames)), 16)+"\r\n"+frames+"\r\n0\r\n\r\n")
	}
}

// TestUpstreamHeaderBlockBound: the upstream read buffer takes a header
// block well over fasthttp's 4 KiB default; one over the buffer is a
// retryable failure, not a hang.
func TestUpstreamHeaderBlockBound(t *testing.T) {
	t.Run("6 KiB of headers", func(t *testing.T) {
		p := tcpOpenAI(t, newScriptedServer(t, streamingWithHeader(6<<10)).addr)
		var r Reply
		if err := p.Chat(testCall(`{"model":"m","stream":true}`, true, -1), &r); err != nil {
			t.Fatalf("call: %v", err)
		}
		defer r.Stream.Close()
		if got, err := drain(t, r.Stream); err != io.EOF || len(got) != 2 || got[1] != "[DONE]" {
			t.Errorf("frames = %q, %v; want a chunk and [DONE]", got, err)
		}
	})
	t.Run("over the buffer", func(t *testing.T) {
		p := tcpOpenAI(t, newScriptedServer(t, streamingWithHeader(upstreamReadBuffer)).addr)
		if f := asTestFailure(t, p.Chat(testCall(`{"model":"m","stream":true}`, true, -1), &Reply{})); f.Class != Retryable {
			t.Errorf("failure = %+v, want retryable", f)
		}
	})
}

// TestUpstreamTimeoutOnBusyConnection: an upstream that stops answering
// on a connection that served requests back to back, whose deadlines are
// coalesced, is cut between the provider's timeout and the timeout plus
// its slack.
func TestUpstreamTimeoutOnBusyConnection(t *testing.T) {
	const timeout = 400 * time.Millisecond
	s := newScriptedServer(t, func(c net.Conn, br *bufio.Reader) {
		answering(3, nil)(c, br)
		if readRequest(br) {
			// Silent until the gateway gives up and closes.
			_, _ = br.ReadByte()
		}
	})
	p := tcpOpenAIWithin(t, s.addr, timeout)
	for i := range 3 {
		if err := p.Chat(testCall(`{"model":"m"}`, false, -1), &Reply{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	start := time.Now()
	f := asTestFailure(t, p.Chat(testCall(`{"model":"m"}`, false, -1), &Reply{}))
	took := time.Since(start)
	if f.Class != Retryable || f.Msg != "upstream timed out" {
		t.Errorf("failure = %+v, want a retryable timeout", f)
	}
	// The margin is the scheduling of a loaded 2-core machine.
	if took < timeout || took > timeout+timeout/8+250*time.Millisecond {
		t.Errorf("timed out after %v, want within [%v, %v + slack]", took, timeout, timeout)
	}
	if got := s.connections(); got != 1 {
		t.Errorf("the server saw %d connections, want the one kept alive", got)
	}
}

// streamFrames is one stream's body: a chunk and [DONE].
const streamFrames = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"

// streamingUnended answers one request with a stream that sends [DONE]
// but never ends its body, and holds the connection until the client
// closes it.
func streamingUnended(c net.Conn, br *bufio.Reader) {
	if !readRequest(br) {
		return
	}
	_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+
		strconv.FormatInt(int64(len(streamFrames)), 16)+"\r\n"+streamFrames+"\r\n")
	_, _ = br.ReadByte()
}

// streaming answers n requests with complete streams on one connection.
func streaming(n int) connScript {
	return func(c net.Conn, br *bufio.Reader) {
		for range n {
			if !readRequest(br) {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+
				strconv.FormatInt(int64(len(streamFrames)), 16)+"\r\n"+streamFrames+"\r\n0\r\n\r\n")
		}
		_, _ = br.ReadByte()
	}
}

// TestStreamDrainGuard: closing a stream whose body does not end after
// [DONE] waits about drainWait, then cuts the connection; the streams
// after it, whose guard may be the one that fired, drain cleanly and keep
// their connection.
func TestStreamDrainGuard(t *testing.T) {
	s := newScriptedServer(t, streamingUnended, streamingUnended, streaming(3))
	p := tcpOpenAI(t, s.addr)
	for i := range 5 {
		var r Reply
		if err := p.Chat(testCall(`{"model":"m","stream":true}`, true, -1), &r); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if got, err := drain(t, r.Stream); err != io.EOF || len(got) != 2 || got[1] != "[DONE]" {
			t.Fatalf("call %d: frames = %q, %v; want a chunk and [DONE]", i, got, err)
		}
		start := time.Now()
		r.Stream.Close()
		if took := time.Since(start); took > drainWait+time.Second {
			t.Errorf("call %d: Close took %v, want about %v at most", i, took, drainWait)
		}
	}
	if got := s.connections(); got != 3 {
		t.Errorf("the server saw %d connections, want 3: two cut, one kept for three streams", got)
	}
}
