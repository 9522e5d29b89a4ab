package engine

import (
	"container/list"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// anonymousClients bounds how many client addresses the auth-off limit
// tracks: past it the least recently seen is forgotten, so a client cycling
// through addresses costs at most this many windows (about 1 KiB each).
// Forgetting an address only gives it a fresh minute, which an attacker
// holding that many addresses has anyway.
const anonymousClients = 4096

// anonymous counts requests per client address when auth is off, for
// auth.anonymous_rpm. It lives in the engine, so counts survive reloads;
// the cap comes from the snapshot. One lock serves every client: this is
// the unauthenticated mode of a personal or trusted-network gateway, not
// the hot path of a shared one.
type anonymous struct {
	mu      sync.Mutex
	clients map[netip.Addr]*list.Element
	// recent orders the clients' *anonClient, most recently seen first.
	recent list.List
}

type anonClient struct {
	addr netip.Addr
	rpm  window
}

func newAnonymous() *anonymous {
	return &anonymous{clients: map[netip.Addr]*list.Element{}}
}

// clientAddr is what one client is counted as: its IPv4 address, or the
// /64 of its IPv6 address, since a single host commonly holds a whole /64.
func clientAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	a = a.Unmap()
	if a.Is6() {
		a = netip.PrefixFrom(a, 64).Masked().Addr()
	}
	return a
}

// reserve counts one request from addr at now if fewer than rpm were
// counted in the minute before, and otherwise returns when one frees.
func (a *anonymous) reserve(addr netip.Addr, now, rpm int64) (bool, int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	el := a.clients[addr]
	switch {
	case el != nil:
		a.recent.MoveToFront(el)
	case a.recent.Len() < anonymousClients:
		el = a.recent.PushFront(&anonClient{addr: addr, rpm: newWindow(time.Minute)})
		a.clients[addr] = el
	default:
		// Reuse the least recently seen client's entry for the new one.
		el = a.recent.Back()
		c := el.Value.(*anonClient)
		delete(a.clients, c.addr)
		*c = anonClient{addr: addr, rpm: newWindow(time.Minute)}
		a.clients[addr] = el
		a.recent.MoveToFront(el)
	}
	w := &el.Value.(*anonClient).rpm
	if at := w.freeAt(now, 1, rpm); at > now {
		return false, at
	}
	w.add(now, 1)
	return true, now
}

// admit counts the request against its client address's cap, or answers
// 429 when the address is over it.
func (a *anonymous) admit(ctx *fasthttp.RequestCtx, rpm int64) *apiError {
	now := nanotime()
	ok, at := a.reserve(clientAddr(ctx.RemoteIP()), now, rpm)
	if ok {
		return nil
	}
	retry := max(1, int((at-now+int64(time.Second)-1)/int64(time.Second)))
	return &apiError{status: fasthttp.StatusTooManyRequests, typ: "rate_limit_error", code: "rate_limit_exceeded",
		retryAfter: retry,
		msg: "this client address is over the gateway's limit of " + strconv.FormatInt(rpm, 10) +
			" requests per minute without a key; retry in " + strconv.Itoa(retry) + "s"}
}
