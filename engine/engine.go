// Package engine owns the request path (ingress, auth, routing, failover)
// and all state that outlives a config reload.
package engine

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/adapters"
	"gateway/config"
)

// Options are an engine's fixed settings.
type Options struct {
	// Logger receives the engine's logs; nil discards them.
	Logger *slog.Logger
	// Dial replaces the upstream dialer (tests use in-memory listeners).
	Dial fasthttp.DialFunc
	// Status reports the last reload for /health; nil reports the first load.
	Status func() config.ReloadStatus
	// AccessLog receives one JSON line per request, buffered; nil turns
	// it off.
	AccessLog io.Writer
	// Version is the binary's version, reported by /health.
	Version string
	// Clock replaces the clock of the usage analytics (tests); nil is
	// the engine's own.
	Clock func() time.Time
}

// Engine serves the gateway's HTTP API from the current config snapshot.
type Engine struct {
	snap   atomic.Pointer[snapshot]
	ups    upstreams
	states states
	// shared is the Redis backend of states when state.backend is redis.
	shared *redisBackend
	sticky Sessions
	cache  *responseCache
	listMu sync.Mutex
	lists  map[string]fetchedModels
	log    *slog.Logger
	access *accessWriter
	// anon counts auth-off requests per client address across reloads.
	anon *anonymous
	// answers keeps Responses API answers for previous_response_id.
	answers *responseStore
	// bg holds the prober and the probes it runs; stop ends them.
	bg   sync.WaitGroup
	stop chan struct{}
	// probeWake has the prober look at its schedule again (probe.go).
	probeWake chan struct{}
	// requests counts every API request answered.
	requests atomic.Int64
	// recent holds the last requests answered, for /api/requests.
	recent  recentRing
	status  func() config.ReloadStatus
	started time.Time
	version string
	// idPrefix and idSeq make request ids unique without a random read
	// per request.
	idPrefix [12]byte
	idSeq    atomic.Uint64

	// writeTimeout is client_write_timeout as the engine started with;
	// the server is built with it, so a change needs a restart.
	writeTimeout time.Duration
}

// New builds an engine serving cfg.
func New(cfg *config.Config, opt Options) (*Engine, error) {
	clock := nanotime
	if opt.Clock != nil {
		clock = func() int64 { return opt.Clock().UnixNano() }
	}
	e := &Engine{
		log:          opt.Logger,
		status:       opt.Status,
		anon:         newAnonymous(),
		answers:      newResponseStore(),
		stop:         make(chan struct{}),
		probeWake:    make(chan struct{}, 1),
		version:      opt.Version,
		started:      time.Now(),
		ups:          upstreams{dial: opt.Dial},
		states:       states{backend: memory{}, analytics: newAnalytics(clock)},
		writeTimeout: cfg.ClientWriteTimeout.D(),
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if cfg.State.Backend == "redis" {
		b, err := newRedisBackend(cfg.State, e.log)
		if err != nil {
			return nil, err
		}
		e.shared, e.states.backend = b, b
	}
	e.sticky = e.states.backend.Sessions()
	// fasthttp pools body buffers, request and response, upstream and
	// client side, and a pooled buffer keeps its capacity: one large body
	// would stay in memory for good, reused by small ones. Larger ones are
	// dropped instead.
	fasthttp.SetBodySizePoolLimit(maxPooledBody, maxPooledBody)
	var b [6]byte
	_, _ = rand.Read(b[:])
	hex.Encode(e.idPrefix[:], b[:])
	if opt.AccessLog != nil {
		e.access = newAccessWriter(opt.AccessLog)
	}
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		e.states.analytics.run(e.stop)
	}()
	if cfg.Cache.TTL.D() > 0 {
		c, err := newResponseCache(int64(cfg.Cache.MaxBytes))
		if err != nil {
			return nil, fmt.Errorf("creating the response cache: %w", err)
		}
		e.cache = c
	}
	if err := e.Swap(cfg); err != nil {
		e.Close()
		return nil, err
	}
	e.bg.Add(1)
	go e.probeLoop()
	return e, nil
}

// Swap publishes cfg. Requests already running finish on the snapshot
// they started with.
func (e *Engine) Swap(cfg *config.Config) error {
	red := redactorFor(cfg)
	s, err := build(cfg, &e.ups, &e.states, e.modelLists(cfg, red), red)
	if err != nil {
		return err
	}
	if old := e.snap.Load(); old != nil {
		if old.cfg.Listen != cfg.Listen {
			e.log.Warn("listen changed; restart the gateway to apply it", "serving", old.cfg.Listen, "file", cfg.Listen)
		}
		if old.cfg.Cache.MaxBytes != cfg.Cache.MaxBytes || (e.cache == nil) != (cfg.Cache.TTL.D() == 0) {
			e.log.Warn("cache size changed (or the cache was turned on or off); restart the gateway to apply it")
		}
		if old.cfg.MaxBody != cfg.MaxBody {
			e.log.Warn("max_body changed; restart the gateway to apply it", "serving", int64(old.cfg.MaxBody), "file", int64(cfg.MaxBody))
		}
		if !sameState(old.cfg.State, cfg.State) {
			e.log.Warn("state changed; restart the gateway to apply it", "serving", old.cfg.State.Backend, "file", cfg.State.Backend)
		}
		if d := cfg.ClientWriteTimeout.D(); d != e.writeTimeout {
			e.log.Warn("client_write_timeout changed; restart the gateway to apply it", "serving", e.writeTimeout, "file", d)
		}
	}
	if len(cfg.Auth.Keys) == 0 {
		e.log.Warn("no gateway keys configured: authentication is off")
		if cfg.Auth.AnonymousRPM > 0 {
			s.anon = e.anon
		}
	}
	e.states.analytics.keep(s.timelines())
	e.snap.Store(s)
	e.ups.keep(cfg)
	e.wakeProber()
	return nil
}

// maxPooledBody is the largest body buffer fasthttp may pool: a typical
// answer is a few KiB, so only rare large ones are allocated afresh.
const maxPooledBody = 1 << 20

// closeGrace bounds how long Close waits for the probes in flight.
const closeGrace = 5 * time.Second

// listTimeout bounds one list_models fetch.
const listTimeout = 10 * time.Second

// fetchedModels is one provider's fetched model ids, and what they were
// fetched for.
type fetchedModels struct {
	source string
	ids    []string
}

// modelLists returns the upstream model ids of each list_models provider:
// fetched when the provider is new or its base_url or keys changed, else
// the ones fetched before. A failed fetch is logged and lists nothing. An
// id that holds a key (red finds it) is dropped.
func (e *Engine) modelLists(cfg *config.Config, red *adapters.Redactor) map[string][]string {
	e.listMu.Lock()
	defer e.listMu.Unlock()
	out := map[string][]string{}
	keep := map[string]fetchedModels{}
	for _, name := range cfg.ProviderOrder {
		p := cfg.Providers[name]
		if !p.ListModels {
			continue
		}
		src := p.Protocol + " " + p.BaseURL
		for _, k := range p.Keys {
			src += " " + k.Ref()
		}
		l, ok := e.lists[name]
		if !ok || l.source != src {
			ids, err := adapters.ListModels(p, e.ups.client(p), listTimeout, red)
			if err != nil {
				e.log.Warn("list_models failed; serving the declared models only", "provider", name, "err", err)
				continue
			}
			e.log.Info("listed upstream models", "provider", name, "models", len(ids))
			l = fetchedModels{source: src, ids: ids}
		}
		keep[name] = l
		out[name] = l.ids
	}
	e.lists = keep
	return out
}

// Close stops the prober, drops idle upstream connections and stops the
// cache. It waits for the probes in flight at most closeGrace: fasthttp
// cannot cancel a call, so one stuck on a hung upstream is left to end by
// its provider's timeout, touching nothing but its key's probe state.
func (e *Engine) Close() {
	close(e.stop)
	done := make(chan struct{})
	go func() { e.bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeGrace):
		e.log.Warn("a provider key probe is still running at close; it ends by its provider's timeout")
	}
	if e.access != nil {
		e.access.close()
	}
	e.ups.closeIdle()
	if e.shared != nil {
		e.shared.close()
	}
	if e.cache != nil {
		e.cache.close()
	}
}

// Server returns a fasthttp server for the engine. Its body limit is the
// config's max_body at the time of the call. Its write timeout, the
// engine's client_write_timeout, bounds writing a response held whole; a
// streamed body moves that deadline on as it makes progress (clientWrites).
func (e *Engine) Server() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:               e.Handler,
		ErrorHandler:          e.errorHandler,
		MaxRequestBodySize:    int(e.snap.Load().cfg.MaxBody),
		ReadTimeout:           60 * time.Second,
		WriteTimeout:          e.writeTimeout,
		IdleTimeout:           120 * time.Second,
		NoDefaultServerHeader: true,
		// The clock is read for a request when the handler asks
		// (arrival), not for every request before it runs.
		LazyRequestTime: true,
		CloseOnShutdown: true,
		Logger:          fasthttpLogger{e.log},
	}
}

type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp", "msg", format, "args", len(args))
}

func (e *Engine) errorHandler(ctx *fasthttp.RequestCtx, err error) {
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		(&apiError{status: fasthttp.StatusRequestEntityTooLarge, typ: "invalid_request_error", code: "request_too_large",
			msg: "request body is larger than the gateway's max_body"}).write(ctx)
		return
	}
	badRequest("", "malformed_request", "the HTTP request could not be read").write(ctx)
}

var (
	strJSON        = []byte("application/json")
	strEventStream = []byte("text/event-stream")
	hdrRequestID   = []byte("X-Request-Id")
	hdrRoutedVia   = []byte("X-Routed-Via")
	hdrFallbacks   = []byte("X-Fallback-Attempts")
	hdrRoute       = []byte("X-Gateway-Route")
	// strDefaultRoute is X-Gateway-Route when no route rule matched.
	strDefaultRoute = []byte("default")
)

// Handler serves one request.
func (e *Engine) Handler(ctx *fasthttp.RequestCtx) {
	defer e.contain(ctx)
	s := e.snap.Load()
	e.setRequestID(ctx)
	if s.cors != nil && s.cors.apply(ctx) {
		return
	}
	path := ctx.Path()
	switch string(path) {
	case "/v1/chat/completions", "/chat/completions":
		e.post(ctx, s, opChat)
	case "/v1/embeddings", "/embeddings":
		e.post(ctx, s, opEmbeddings)
	case "/v1/completions", "/completions":
		e.post(ctx, s, opCompletions)
	case "/v1/responses", "/responses":
		e.responses(ctx, s)
	case "/v1/messages":
		e.messages(ctx, s)
	case "/v1/messages/count_tokens":
		e.countTokens(ctx, s)
	case "/v1/models", "/models":
		if !ctx.IsGet() {
			methodNotAllowed(ctx, "GET")
			return
		}
		key, err := s.authenticate(ctx)
		if err != nil {
			err.write(ctx)
			return
		}
		body := s.modelsAll
		if key != nil && key.cfg.Allowed != nil {
			body = s.modelsByKey[key.cfg]
		}
		ctx.SetContentTypeBytes(strJSON)
		ctx.SetBody(body)
	case "/health":
		e.health(ctx, s)
	case "/api/stats", "/api/stats/series", "/api/requests":
		key, err := s.authenticate(ctx)
		if err != nil {
			err.write(ctx)
			return
		}
		switch string(path) {
		case "/api/stats":
			e.stats(ctx, s, key)
		case "/api/stats/series":
			e.series(ctx, key)
		default:
			e.requestsList(ctx, key)
		}
	case "/api/explain":
		e.explainAPI(ctx, s)
	case "/metrics":
		e.metrics(ctx, s)
	case "/targets":
		ctx.SetContentTypeBytes(strJSON)
		ctx.SetBody(s.targetsJSON)
	case "/", "/status":
		page(ctx)
	default:
		if bytes.HasPrefix(path, []byte("/status/")) {
			page(ctx)
			return
		}
		if id, ok := bytes.CutPrefix(path, []byte("/v1/responses/")); ok {
			e.storedResponse(ctx, s, string(id))
			return
		}
		if bytes.HasPrefix(path, []byte(proxyPrefix)) {
			key, err := s.authenticate(ctx)
			if err != nil {
				err.write(ctx)
				return
			}
			if err := e.stateRefusal(); err != nil {
				err.write(ctx)
				return
			}
			start := arrival(ctx)
			via := e.proxy(ctx, s, key)
			e.passed(ctx, s, key, via, start)
			return
		}
		(&apiError{status: fasthttp.StatusNotFound, typ: "invalid_request_error", code: "unknown_path",
			msg: "no such endpoint: " + string(path)}).write(ctx)
	}
}

// contain is the last line of defence: a panic while serving one request
// answers that request with a 500 and a log line (its id, path and the
// panic, never its body) instead of ending the process and every other
// request with it.
func (e *Engine) contain(ctx *fasthttp.RequestCtx) {
	r := recover()
	if r == nil {
		return
	}
	e.log.Error("panic while serving a request", "request_id", string(ctx.Response.Header.PeekCanonical(hdrRequestID)),
		"path", string(ctx.Path()), "panic", panicText(r), "stack", string(debug.Stack()))
	ctx.Response.Reset()
	(&apiError{status: fasthttp.StatusInternalServerError, typ: "server_error", code: "internal_error",
		msg: "the gateway failed while serving this request; it has been logged"}).write(ctx)
}

// panicText is a recovered panic for the log, cut short: a panic value
// built from request data must not carry much of it into the log.
func panicText(p any) string {
	s := fmt.Sprint(p)
	return s[:min(len(s), 200)]
}

// post serves a POST of op's endpoint from an authenticated key.
func (e *Engine) post(ctx *fasthttp.RequestCtx, s *snapshot, op *operation) {
	if key, ok := admit(ctx, s, fasthttp.MethodPost); ok {
		e.serve(ctx, s, key, op, ctx.PostBody(), nil)
	}
}

// admit checks an API request's method and gateway key, answering when
// either is wrong; ok reports that the request may go on.
func admit(ctx *fasthttp.RequestCtx, s *snapshot, method string) (key *gatewayKey, ok bool) {
	if string(ctx.Method()) != method {
		methodNotAllowed(ctx, method)
		return nil, false
	}
	key, err := s.authenticate(ctx)
	if err != nil {
		err.write(ctx)
		return nil, false
	}
	return key, true
}

func methodNotAllowed(ctx *fasthttp.RequestCtx, allow string) {
	ctx.Response.Header.Set(fasthttp.HeaderAllow, allow)
	(&apiError{status: fasthttp.StatusMethodNotAllowed, typ: "invalid_request_error", code: "method_not_allowed",
		msg: "this endpoint accepts " + allow + " only"}).write(ctx)
}

// passed counts a passthrough answer and writes its access log line.
func (e *Engine) passed(ctx *fasthttp.RequestCtx, s *snapshot, key *gatewayKey, via string, start time.Time) {
	status := ctx.Response.StatusCode()
	lat := time.Since(start)
	at := start.Add(lat)
	e.requests.Add(1)
	e.states.analytics.all.at().answered(status, lat, false)
	l := accessLine{id: bytesString(ctx.Response.Header.PeekCanonical(hdrRequestID)), method: bytesString(ctx.Method()),
		path: bytesString(ctx.Path()), route: "passthrough", via: via, status: status, latency: lat,
		cache: bytesString(ctx.Response.Header.Peek("X-Cache"))}
	if key != nil {
		key.stats.answered(status, lat, false)
		l.key = key.cfg.Name
	}
	e.recent.record(&l, at)
	if e.access != nil && s.access {
		e.access.write(&l, at)
	}
}

// setRequestID echoes the client's X-Request-Id or makes one.
func (e *Engine) setRequestID(ctx *fasthttp.RequestCtx) {
	if id := ctx.Request.Header.PeekCanonical(hdrRequestID); len(id) > 0 && len(id) <= 128 {
		ctx.Response.Header.SetCanonical(hdrRequestID, id)
		return
	}
	var buf [32]byte
	b := append(buf[:0], "req_"...)
	b = append(b, e.idPrefix[:]...)
	n := e.idSeq.Add(1)
	var seq [16]byte
	for i := len(seq) - 1; i >= 0; i-- {
		seq[i] = "0123456789abcdef"[n&15]
		n >>= 4
	}
	b = append(b, seq[:]...)
	ctx.Response.Header.SetCanonical(hdrRequestID, b)
}

// refusal says why the key may not be used at now, or nil.
func (gk *gatewayKey) refusal(now time.Time) *apiError {
	k := gk.cfg
	switch {
	case k.Disabled:
		return &apiError{status: fasthttp.StatusForbidden, typ: "permission_error", code: "key_disabled",
			msg: "gateway key " + k.Name + " is disabled"}
	case !k.Expires.IsZero() && now.After(k.Expires):
		return &apiError{status: fasthttp.StatusForbidden, typ: "permission_error", code: "key_expired",
			msg: "gateway key " + k.Name + " expired at " + k.Expires.UTC().Format(time.RFC3339)}
	}
	return nil
}

// modelRefusal says why the key may not ask for model, or nil.
func (gk *gatewayKey) modelRefusal(model string) *apiError {
	if gk.cfg.Allowed == nil || gk.cfg.Allowed[model] {
		return nil
	}
	return &apiError{status: fasthttp.StatusForbidden, typ: "permission_error", code: "model_not_allowed",
		msg: "gateway key " + gk.cfg.Name + " may not use model " + strconv.Quote(model)}
}

// reloadStatus is the last reload's outcome, or the first load's.
func (e *Engine) reloadStatus(s *snapshot) config.ReloadStatus {
	if e.status != nil {
		return e.status()
	}
	return config.ReloadStatus{At: s.cfg.LoadedAt, OK: true, Checksum: s.cfg.Checksum}
}

type healthBody struct {
	Status string `json:"status"`
	// TS is the server's clock, unix ms: a client can tell a stale
	// answer (a cache between) and its clock's skew.
	TS            int64       `json:"ts"`
	Region        string      `json:"region,omitempty"`
	Version       string      `json:"version"`
	Config        configState `json:"config"`
	LastReload    reloadState `json:"last_reload"`
	UptimeSeconds int64       `json:"uptime_seconds"`
}

type configState struct {
	Checksum string    `json:"checksum"`
	LoadedAt time.Time `json:"loaded_at"`
}

type reloadState struct {
	OK     bool      `json:"ok"`
	At     time.Time `json:"at"`
	Errors int       `json:"errors"`
}

func (e *Engine) health(ctx *fasthttp.RequestCtx, s *snapshot) {
	st := e.reloadStatus(s)
	b, _ := json.Marshal(healthBody{
		Status:  "ok",
		TS:      time.Now().UnixMilli(),
		Region:  s.cfg.Region,
		Version: e.version,
		Config:  configState{Checksum: s.cfg.Checksum, LoadedAt: s.cfg.LoadedAt.UTC()},
		// Reload errors name files and lines; they go to the log, and this
		// public endpoint gives only their count.
		LastReload:    reloadState{OK: st.OK, At: st.At.UTC(), Errors: len(st.Errors)},
		UptimeSeconds: int64(time.Since(e.started).Seconds()),
	})
	ctx.SetContentTypeBytes(strJSON)
	ctx.SetBody(b)
}
