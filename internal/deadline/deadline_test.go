package deadline

import (
	"bufio"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// recordingConn records the deadlines set on it.
type recordingConn struct {
	net.Conn
	read, write time.Time
	sets        int
}

func (c *recordingConn) SetReadDeadline(t time.Time) error  { c.read = t; c.sets++; return nil }
func (c *recordingConn) SetWriteDeadline(t time.Time) error { c.write = t; c.sets++; return nil }

func TestCoalescing(t *testing.T) {
	rc := &recordingConn{}
	c := &Conn{Conn: rc}
	base := time.Now().Add(800 * time.Millisecond)
	for _, s := range []struct {
		name string
		t    time.Time
		set  bool
		// late bounds how late the deadline in force is, past t.
		late time.Duration
	}{
		{"a first deadline is set, an eighth late", base, true, 100 * time.Millisecond},
		{"a millisecond later is skipped", base.Add(time.Millisecond), false, 99 * time.Millisecond},
		{"one within the slack is skipped", base.Add(60 * time.Millisecond), false, 40 * time.Millisecond},
		{"one past the deadline in force is set", base.Add(150 * time.Millisecond), true, 125 * time.Millisecond},
		{"an earlier one is set", base.Add(-time.Millisecond), true, 100 * time.Millisecond},
		{"the zero time clears", time.Time{}, true, 0},
		{"and again costs nothing", time.Time{}, false, 0},
		{"a past one is set as it is", base.Add(-time.Hour), true, 0},
		{"and again too", base.Add(-time.Hour), true, 0},
		{"a far one gets at most MaxSlack", base.Add(time.Hour), true, MaxSlack},
		{"a deadline before the clock's origin", time.Unix(1, 0), true, 0},
		{"a deadline centuries ahead", time.Unix(1<<40, 0), true, MaxSlack},
	} {
		sets := rc.sets
		_ = c.SetReadDeadline(s.t)
		if set := rc.sets > sets; set != s.set {
			t.Errorf("%s: set = %v, want %v", s.name, set, s.set)
		}
		if late := rc.read.Sub(s.t); late < 0 || late > s.late || s.t.IsZero() != rc.read.IsZero() {
			t.Errorf("%s: deadline in force %v late, want within [0, %v]", s.name, late, s.late)
		}
	}
	if !rc.write.IsZero() {
		t.Errorf("the write deadline moved with the read one: %v", rc.write)
	}
}

// TestConnBounds sets random deadlines and checks that the one in force
// is never earlier than asked, never later than asked plus an eighth of
// the timeout it was set with (at most MaxSlack), and cleared by the zero
// time.
func TestConnBounds(t *testing.T) {
	rc := &recordingConn{}
	c := &Conn{Conn: rc}
	r := rand.New(rand.NewPCG(1, 2))
	skipped := 0
	// slack is the most each side's deadline in force may be late.
	var slack [2]time.Duration
	for i := range 20000 {
		before := time.Now()
		var d time.Time
		switch r.IntN(20) {
		case 0:
		case 1:
			d = before.Add(-time.Duration(r.IntN(1000)) * time.Millisecond)
		case 2:
			d = before.Add(time.Duration(r.IntN(3000)) * time.Millisecond)
		default:
			// Mostly the same timeout asked again and again, as a
			// server asks it of a busy connection.
			d = before.Add(20 * time.Second).Add(time.Duration(r.IntN(1000)) * time.Microsecond)
		}
		sets := rc.sets
		w := i % 2
		var got time.Time
		if w == 1 {
			_ = c.SetWriteDeadline(d)
			got = rc.write
		} else {
			_ = c.SetReadDeadline(d)
			got = rc.read
		}
		if rc.sets == sets {
			skipped++
		} else {
			slack[w] = min(max(d.Sub(before)/8, 0), MaxSlack)
		}
		if d.IsZero() {
			if !got.IsZero() {
				t.Fatalf("set %d: zero time left %v in force", i, got)
			}
			continue
		}
		if got.Before(d) || got.After(d.Add(slack[w])) {
			t.Fatalf("set %d: deadline %v in force for %v, want within [t, t+%v]", i, got.Sub(before), d.Sub(before), slack[w])
		}
	}
	if skipped < 8000 {
		t.Errorf("%d of 20000 sets skipped, want most of those that repeat a timeout", skipped)
	}
}

func TestConnAllocatesNothing(t *testing.T) {
	c := &Conn{Conn: &recordingConn{}}
	if n := testing.AllocsPerRun(100, func() {
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		_ = c.SetWriteDeadline(time.Now().Add(time.Minute))
		_ = c.SetDeadline(time.Time{})
	}); n != 0 {
		t.Errorf("%v allocations per run, want 0", n)
	}
}

// TestServerCutsStalledClients serves fasthttp over Conns and checks
// that a client that stops sending mid-headers or mid-body, on a new or a
// kept-alive connection, is cut between the read timeout and the timeout
// plus its slack.
func TestServerCutsStalledClients(t *testing.T) {
	const timeout = 400 * time.Millisecond
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{
		Handler:     func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") },
		ReadTimeout: timeout, IdleTimeout: timeout,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(listener{tcp}) }()
	t.Cleanup(func() { _ = srv.Shutdown(); <-done })

	const full = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
	for _, c := range []struct {
		name      string
		keepAlive bool
		partial   string
	}{
		{"mid-headers", false, "POST / HTTP/1.1\r\nHost: x\r\n"},
		{"mid-body", false, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nbod"},
		{"kept alive, mid-headers", true, "POST / HTTP/1.1\r\nHo"},
		{"kept alive, mid-body", true, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nb"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", tcp.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(conn)
			if c.keepAlive {
				// Some requests first, so that the stall meets the
				// deadlines they left in force.
				for range 3 {
					if _, err := conn.Write([]byte(full)); err != nil {
						t.Fatal(err)
					}
					var resp fasthttp.Response
					if err := resp.Read(br); err != nil || string(resp.Body()) != "ok" {
						t.Fatalf("answer: %v %q", err, resp.Body())
					}
				}
			}
			start := time.Now()
			if _, err := conn.Write([]byte(c.partial)); err != nil {
				t.Fatal(err)
			}
			rest, err := br.ReadString(0)
			took := time.Since(start)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection not cut within 10s (read %q)", rest)
			}
			// fasthttp answers a cut request 400 or 408, or not at all.
			if rest != "" && !strings.HasPrefix(rest, "HTTP/1.1 400 ") && !strings.HasPrefix(rest, "HTTP/1.1 408 ") {
				t.Errorf("got %q before the cut", rest)
			}
			// The margin is the scheduling of a loaded 2-core machine.
			if took < timeout-10*time.Millisecond || took > timeout+timeout/8+250*time.Millisecond {
				t.Errorf("cut after %v, want within [%v, %v + slack]", took, timeout, timeout)
			}
		})
	}
}

// BenchmarkDeadlines moves the deadlines of a TCP connection as fasthttp's
// server does per request (read twice, write once), on the connection
// itself and through a Conn. Each op is one request.
func BenchmarkDeadlines(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	tcp, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer tcp.Close()
	for _, c := range []struct {
		name string
		conn net.Conn
	}{{"raw", tcp}, {"coalesced", &Conn{Conn: tcp}}} {
		b.Run(c.name, func(b *testing.B) {
			// A request every 20 µs, without reading the clock.
			t := time.Now().Add(time.Minute)
			for b.Loop() {
				t = t.Add(20 * time.Microsecond)
				_ = c.conn.SetReadDeadline(t)
				_ = c.conn.SetReadDeadline(t)
				_ = c.conn.SetWriteDeadline(t)
			}
		})
	}
}

// listener wraps each connection it accepts in a Conn, as the upstream
// side does with the connections it dials.
type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c}, nil
}
