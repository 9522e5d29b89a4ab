package engine

import (
	"strconv"
	"sync"

	"github.com/valyala/fasthttp"

	"gateway/adapters"
	"gateway/config"
)

// upstreams holds each provider's HTTP client outside the snapshots, so a
// reload that keeps a provider's address and transport settings keeps its
// pooled connections. A client the config no longer uses is forgotten and
// its idle connections closed; requests still running on an older
// snapshot finish on it.
type upstreams struct {
	dial    fasthttp.DialFunc
	mu      sync.Mutex
	clients map[string]*fasthttp.HostClient
}

// clientKey names what a provider's client is built from.
func clientKey(p *config.Provider) string {
	return p.Name + " " + p.BaseURL + " " + p.IdleConnTimeout.D().String() + " " + strconv.FormatInt(int64(p.MaxResponseBody), 10)
}

// client returns p's client, built on first use; nil for a provider
// without an upstream.
func (u *upstreams) client(p *config.Provider) *fasthttp.HostClient {
	k := clientKey(p)
	u.mu.Lock()
	defer u.mu.Unlock()
	c, ok := u.clients[k]
	if !ok {
		c = adapters.NewClient(p, u.dial)
		if u.clients == nil {
			u.clients = map[string]*fasthttp.HostClient{}
		}
		u.clients[k] = c
	}
	return c
}

// keep forgets the clients cfg does not use and closes their idle
// connections.
func (u *upstreams) keep(cfg *config.Config) {
	used := make(map[string]bool, len(cfg.ProviderOrder))
	for _, name := range cfg.ProviderOrder {
		used[clientKey(cfg.Providers[name])] = true
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, c := range u.clients {
		if !used[k] {
			delete(u.clients, k)
			if c != nil {
				c.CloseIdleConnections()
			}
		}
	}
}

// closeIdle closes every client's idle connections.
func (u *upstreams) closeIdle() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.clients {
		if c != nil {
			c.CloseIdleConnections()
		}
	}
}
