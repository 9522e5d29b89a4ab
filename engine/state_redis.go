package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/redis/go-redis/v9"

	"gateway/config"
)

// redisBackend is the Backend that replicas share: every decision is one
// Lua script in Redis (state_redis_scripts.go), one round trip.
//
// What the request path only reads (is a key cooling down, is a breaker
// open) comes from a local mirror of each record: the replies of the
// scripts refresh it, and every change any replica makes is published on
// one channel that each replica follows, so those reads cost no round
// trip. A resync every few seconds repairs what a dropped subscription
// missed.
//
// While Redis fails, each replica counts alone on its own records (the
// memory implementations, which it keeps whole all along); on_error
// closed refuses requests instead. A PING a second finds Redis back, and
// the replica folds its own counts into it before it counts shared again.
type redisBackend struct {
	rdb     *redis.Client
	prefix  string
	channel string
	closed  bool
	log     *slog.Logger
	// up says Redis answers: the decisions go there.
	up atomic.Bool

	mu       sync.Mutex
	limiters map[string]weak.Pointer[redisLimiter]
	cools    map[string]weak.Pointer[redisCooldown]
	breakers map[string]weak.Pointer[redisBreaker]
	// gen is the id of the data Redis held when last seen.
	gen      string
	sessions *redisSessions

	stop chan struct{}
	wg   sync.WaitGroup
}

// healthEvery is how often the backend PINGs Redis; resyncEvery how many
// PINGs apart the mirrors are refreshed.
const (
	healthEvery = time.Second
	resyncEvery = 10
)

// newRedisBackend connects to the configured Redis. It does not fail when
// Redis is down: the replica then starts counting alone, and joins the
// shared counts when Redis answers.
func newRedisBackend(cfg config.State, log *slog.Logger) (*redisBackend, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := cfg.Redis
	opt, err := redis.ParseURL(r.URL.Reveal())
	if err != nil {
		// go-redis quotes the URL in some errors: never repeat it.
		return nil, errors.New("state.redis.url: not a Redis URL go-redis accepts")
	}
	t := r.Timeout.D()
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = t, t, t, t
	// A failed call falls back to the replica's own counts at once; a
	// retry would only make the request wait longer.
	opt.MaxRetries = -1
	opt.DisableIdentity = true
	b := &redisBackend{
		rdb: redis.NewClient(opt), prefix: r.Prefix, channel: r.Prefix + "state", closed: r.OnError == "closed",
		log: log, limiters: map[string]weak.Pointer[redisLimiter]{}, cools: map[string]weak.Pointer[redisCooldown]{},
		breakers: map[string]weak.Pointer[redisBreaker]{}, stop: make(chan struct{}),
	}
	b.sessions = &redisSessions{b: b}
	// go-redis logs its pool's dial failures to stderr itself, one line
	// per try while Redis is down; the backend logs each up/down
	// transition once, so those go to the debug level of the gateway's
	// log instead.
	redis.SetLogger(redisLog{log})
	// The subscription first, so no change published after the first
	// sync is missed.
	sub := b.rdb.Subscribe(context.Background(), b.channel)
	b.check(true)
	b.wg.Add(2)
	go b.follow(sub)
	go b.watch()
	return b, nil
}

// close stops the health check and the subscription, and drops the
// connections.
func (b *redisBackend) close() {
	close(b.stop)
	b.wg.Wait()
	_ = b.rdb.Close()
}

// refusing reports whether requests are to be refused: on_error closed
// and Redis down.
func (b *redisBackend) refusing() bool { return b.closed && !b.up.Load() }

// fail records a failed call: the replica counts alone until the health
// check finds Redis again. Logged once per transition.
func (b *redisBackend) fail(err error) {
	if b.up.CompareAndSwap(true, false) {
		mode := "counting on this replica alone"
		if b.closed {
			mode = "refusing requests (on_error: closed)"
		}
		b.log.Error("shared state backend failed; "+mode, "backend", "redis", "err", err)
	}
}

// watch PINGs Redis every healthEvery, and resyncs the mirrors every
// resyncEvery PINGs.
func (b *redisBackend) watch() {
	defer b.wg.Done()
	tick := time.NewTicker(healthEvery)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-b.stop:
			return
		case <-tick.C:
			b.check(n%resyncEvery == 0)
		}
	}
}

// check PINGs Redis. Coming back, the replica folds its own state into
// Redis before it takes decisions there again.
func (b *redisBackend) check(resync bool) {
	ctx := context.Background()
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		b.fail(err)
		return
	}
	if b.up.Load() {
		if resync {
			b.sync(ctx, false)
		}
		return
	}
	if err := b.sync(ctx, true); err != nil {
		b.log.Warn("shared state backend answers, but reconciling with it failed; retrying", "backend", "redis", "err", err)
		return
	}
	b.up.Store(true)
	b.log.Info("shared state backend up; counting shared", "backend", "redis")
}

// sync brings Redis and the mirrors together. Back from an outage
// (merge), the replica's own counts go into Redis: added when Redis lost
// its data since this replica last saw it, else kept at the larger. Then
// every cooldown and breaker mirror is refreshed from Redis, a running
// cooldown of this replica kept.
func (b *redisBackend) sync(ctx context.Context, merge bool) error {
	var id [8]byte
	_, _ = rand.Read(id[:])
	gen, err := generationScript.Run(ctx, b.rdb, []string{b.prefix + "generation"}, hex.EncodeToString(id[:])).Text()
	if err != nil {
		return err
	}
	b.mu.Lock()
	lost := b.gen != "" && b.gen != gen
	b.gen = gen
	lims, cools, brks := live(b.limiters), live(b.cools), live(b.breakers)
	b.mu.Unlock()
	now := nanotime()
	if merge {
		for _, l := range lims {
			if err := l.merge(ctx, now, lost); err != nil {
				return err
			}
		}
	}
	for _, c := range cools {
		if err := c.sync(ctx, now); err != nil {
			return err
		}
	}
	for _, br := range brks {
		if err := br.sync(ctx, now); err != nil {
			return err
		}
	}
	return nil
}

// live returns the records still in use, forgetting those the engine
// dropped (a provider key or model gone from the config).
func live[T any](m map[string]weak.Pointer[T]) []*T {
	out := make([]*T, 0, len(m))
	for name, p := range m {
		if v := p.Value(); v != nil {
			out = append(out, v)
		} else {
			delete(m, name)
		}
	}
	return out
}

// follow applies the changes other replicas publish to the mirrors.
func (b *redisBackend) follow(sub *redis.PubSub) {
	defer b.wg.Done()
	ch := sub.Channel()
	for {
		select {
		case <-b.stop:
			_ = sub.Close()
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			b.apply(m.Payload)
		}
	}
}

// apply applies one published change: c|us|un|reason|version|name for a
// cooldown, b|state|fails|us|un|version|name for a breaker. The name is
// last, so a '|' in it does no harm.
func (b *redisBackend) apply(msg string) {
	kind, rest, _ := strings.Cut(msg, "|")
	fields := 4
	if kind == "b" {
		fields = 5
	}
	parts := strings.SplitN(rest, "|", fields+1)
	if len(parts) != fields+1 {
		return
	}
	v := make([]int64, fields)
	for i := range v {
		n, err := strconv.ParseInt(parts[i], 10, 64)
		if err != nil {
			return
		}
		v[i] = n
	}
	name := parts[fields]
	b.mu.Lock()
	var c *redisCooldown
	var br *redisBreaker
	if kind == "c" {
		c = b.cools[name].Value()
	} else {
		br = b.breakers[name].Value()
	}
	b.mu.Unlock()
	switch {
	case c != nil:
		c.mirror(v, false)
	case br != nil:
		br.mirror(append([]int64{0}, v...), false)
	}
}

// Limiter implements Backend. The hashes are named win:, not the lim:
// of the first layout (a whole-hash read per call), so that during a
// rolling upgrade a replica of either version never reads the other's.
func (b *redisBackend) Limiter(name string) Limiter {
	return register(b, b.limiters, name, &redisLimiter{b: b, key: b.prefix + "win:" + name, local: newLimiter()})
}

// Cooldown implements Backend.
func (b *redisBackend) Cooldown(name string) Cooldown {
	return register(b, b.cools, name, &redisCooldown{b: b, name: name, key: b.prefix + "cool:" + name})
}

// Breaker implements Backend.
func (b *redisBackend) Breaker(name string) Breaker {
	return register(b, b.breakers, name, &redisBreaker{b: b, name: name, key: b.prefix + "brk:" + name})
}

// register files a record under its name, for sync and for the changes
// other replicas publish; weakly, so a record the engine drops goes.
func register[T any](b *redisBackend, m map[string]weak.Pointer[T], name string, v *T) *T {
	b.mu.Lock()
	m[name] = weak.Make(v)
	b.mu.Unlock()
	return v
}

// Sessions implements Backend.
func (b *redisBackend) Sessions() Sessions { return b.sessions }

// run runs one script and returns its integer reply; an error marks
// Redis down.
func (b *redisBackend) run(s *redis.Script, key string, args ...any) ([]int64, error) {
	v, err := s.Run(context.Background(), b.rdb, []string{key}, args...).Int64Slice()
	if err != nil {
		b.fail(err)
		return nil, err
	}
	return v, nil
}

// maxCount bounds what a script is sent, so Lua's doubles hold it
// exactly: no real window comes near 2^50.
const maxCount = 1 << 50

func bounded(n int64) int64 { return max(-maxCount, min(maxCount, n)) }

// splitTime gives unix ns as seconds and nanoseconds, the way the
// scripts take times; joinTime is the reverse.
func splitTime(ns int64) (int64, int64) {
	if ns < 0 {
		return 0, 0
	}
	return ns / int64(time.Second), ns % int64(time.Second)
}

func joinTime(s, ns int64) int64 { return s*int64(time.Second) + ns }

// stateRefusal is the answer to a request while the shared state is out
// of reach and on_error is closed; nil otherwise.
func (e *Engine) stateRefusal() *apiError {
	if e.shared == nil || !e.shared.refusing() {
		return nil
	}
	return &apiError{status: 503, typ: "server_error", code: "state_unavailable", retryAfter: 1,
		msg: "the gateway's shared state (Redis) is unreachable and state.redis.on_error is closed; retry shortly"}
}

// sameState reports whether two state settings are the same, the URL
// compared by value.
func sameState(a, b config.State) bool {
	ar, br := a.Redis, b.Redis
	return a.Backend == b.Backend && ar.URL.Reveal() == br.URL.Reveal() && ar.Prefix == br.Prefix &&
		ar.Timeout == br.Timeout && ar.OnError == br.OnError
}

// redisLog passes go-redis's own log lines to the gateway's log at debug
// level. go-redis keeps one logger for the process: the last backend made
// sets it.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis client", "msg", fmt.Sprintf(format, v...))
}
