package adapters

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/config"
	"gateway/internal/deadline"
)

// NewClient builds the HTTP client of one provider, nil for one without an
// upstream (mock). Each provider has its own, because fasthttp holds one
// idle timeout and one body limit per client and providers need their own:
// idle_conn_timeout, to drop a kept-alive connection before the server
// does, and max_response_body. dial replaces the TCP dialer (tests use
// in-memory listeners).
//
// A request that fails on a connection that served before, without a byte
// of answer, met a connection the server closed while it sat idle: it is
// sent again, once, on a fresh connection, so the failure never reaches
// the engine's cooldowns and breakers. fasthttp retries only idempotent
// requests on its own and cannot tell a reused connection from a new one;
// its transport and retry hooks are wrapped to do both.
func NewClient(p *config.Provider, dial fasthttp.DialFunc) *fasthttp.HostClient {
	u, err := url.Parse(p.BaseURL)
	if err != nil || u.Host == "" {
		return nil
	}
	tls := u.Scheme == "https"
	return &fasthttp.HostClient{
		Addr:                     fasthttp.AddMissingPort(u.Host, tls),
		IsTLS:                    tls,
		DialTimeout:              trackedDial(dial),
		Transport:                reuseTransport{},
		RetryIfErr:               retryStale,
		NoDefaultUserAgentHeader: true,
		// Open streams each hold a connection; the default 512 would
		// refuse the 513th at once.
		MaxConns:            16384,
		MaxIdleConnDuration: p.IdleConnTimeout.D(),
		ReadBufferSize:      upstreamReadBuffer,
		// A body over the limit is refused as its size is announced, or
		// as soon as it grows past it, never read whole.
		MaxResponseBodySize: int(p.MaxResponseBody),
	}
}

// upstreamReadBuffer is the per-connection read buffer of a provider's
// client, which bounds an answer's header block. An open stream holds it
// for its life, but only the pages a read reaches count in the process's
// memory: halving it to 8 KiB changed nothing measurable with 1000 open
// streams, so it keeps room for any provider's headers.
const upstreamReadBuffer = 16 << 10

// errStaleConn marks a request that failed on a connection the server had
// closed while it sat idle.
var errStaleConn = errors.New("upstream closed a kept-alive connection")

// trackedConn is an upstream connection that remembers whether it served
// an exchange. Its local address carries that memory, because the address
// is the one thing of the connection a fasthttp response keeps. Its
// deadlines are coalesced: fasthttp sets a write and a read deadline per
// exchange, and a connection that serves requests back to back keeps the
// ones in force, so an exchange's timeout fires at most an eighth of it,
// and at most deadline.MaxSlack, late.
type trackedConn struct {
	deadline.Conn
	addr trackedAddr
}

// trackedAddr is a connection's local address and whether the connection
// answered a request before.
type trackedAddr struct {
	net.Addr
	served atomic.Bool
}

// LocalAddr returns the address with the connection's memory.
func (c *trackedConn) LocalAddr() net.Addr { return &c.addr }

// trackedDial dials with dial, or fasthttp's TCP dialer within timeout,
// and tracks the connection.
//
// The dial runs on a goroutine of its own. The resolver and the TCP
// dialer take several KiB of stack below the engine's frames, which would
// double the request's goroutine stack to 16 KiB, and that goroutine keeps
// it while it relays the stream that follows (the runtime shrinks a stack
// only while less than a quarter of it is in use): 8 KiB more per open
// stream. A dial happens once per upstream connection, not per request.
func trackedDial(dial fasthttp.DialFunc) fasthttp.DialFuncWithTimeout {
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		done := make(chan dialed, 1)
		go func() {
			var d dialed
			switch {
			case dial != nil:
				d.c, d.err = dial(addr)
			case timeout > 0:
				d.c, d.err = fasthttp.DialTimeout(addr, timeout)
			default:
				d.c, d.err = fasthttp.Dial(addr)
			}
			done <- d
		}()
		d := <-done
		if d.err != nil {
			return nil, d.err
		}
		return &trackedConn{Conn: deadline.Conn{Conn: d.c}, addr: trackedAddr{Addr: d.c.LocalAddr()}}, nil
	}
}

// dialed is the outcome of one dial.
type dialed struct {
	c   net.Conn
	err error
}

// reuseTransport is fasthttp's transport, plus telling a failure on a
// stale connection from any other.
type reuseTransport struct{}

// RoundTrip makes one exchange with fasthttp's transport and marks a
// failure on a stale connection.
func (reuseTransport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (bool, error) {
	retry, err := fasthttp.DefaultTransport.RoundTrip(hc, req, resp)
	a, _ := resp.LocalAddr().(*trackedAddr)
	switch {
	case a == nil:
	case err == nil:
		a.served.Store(true)
	case a.served.Load() && unanswered(err):
		// A server that closed one idle connection is closing the
		// others; dropping them all makes sure the retry dials.
		hc.CloseIdleConnections()
		return true, fmt.Errorf("%w (%w)", errStaleConn, err)
	}
	return retry, err
}

// unanswered reports whether err ended an exchange before a byte of the
// answer came: fasthttp says io.EOF when the connection closed before the
// first byte, and a failed write leaves nothing to answer.
func unanswered(err error) bool {
	var op *net.OpError
	return err == io.EOF || errors.As(err, &op) && op.Op == "write"
}

// retryStale sends a request that met a stale connection once more, and
// keeps fasthttp's own rule, which this hook replaces, for the rest:
// idempotent requests are retried.
func retryStale(req *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
	if attempts == 1 && errors.Is(err, errStaleConn) {
		return false, true
	}
	return false, req.Header.IsGet() || req.Header.IsHead() || req.Header.IsPut() || req.Header.IsQuery()
}

// endpoint is an upstream URL, parsed once: fasthttp would otherwise
// parse and normalize it on every request.
type endpoint struct {
	url string
	// uri is url parsed; nil for a URL built per request (Gemini's of a
	// model not configured), or one fasthttp does not take, whose
	// request fails as it always did.
	uri *fasthttp.URI
}

func newEndpoint(url string) endpoint {
	u := fasthttp.AcquireURI()
	if err := u.Parse(nil, []byte(url)); err != nil {
		fasthttp.ReleaseURI(u)
		return endpoint{url: url}
	}
	return endpoint{url: url, uri: u}
}

// set makes req's URI the endpoint's, already parsed.
func (e *endpoint) set(req *fasthttp.Request) {
	if e.uri == nil {
		req.SetRequestURI(e.url)
		return
	}
	req.SetURI(e.uri)
}
