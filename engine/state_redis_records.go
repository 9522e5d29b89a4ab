package engine

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisCooldown is the Cooldown of one (provider, model, key) in Redis.
// Active reads the embedded memory cooldown, the mirror: Start sets it
// at once, and the replies and published changes keep it level with
// Redis.
type redisCooldown struct {
	cooldown
	b         *redisBackend
	name, key string
	mu        sync.Mutex
	// ver is the version of the record the mirror holds.
	ver int64
}

// Start implements Cooldown.
func (c *redisCooldown) Start(now int64, d time.Duration, reason int32) {
	c.cooldown.Start(now, d, reason)
	if c.b.up.Load() {
		c.send("start", now+int64(d), reason, d+time.Minute)
	}
}

// Lift implements Cooldown.
func (c *redisCooldown) Lift(until int64) {
	c.cooldown.Lift(until)
	if c.b.up.Load() {
		c.send("lift", until, 0, time.Minute)
	}
}

// send runs one cooldown decision and mirrors its reply.
func (c *redisCooldown) send(op string, until int64, reason int32, ttl time.Duration) {
	s, ns := splitTime(until)
	if v, err := c.b.run(cooldownScript, c.key, op, s, ns, reason, ttl.Milliseconds(), c.b.channel, c.name); err == nil {
		c.mirror(v, false)
	}
}

// sync hands a running cooldown of this replica to Redis, and takes
// Redis's record in any case.
func (c *redisCooldown) sync(ctx context.Context, now int64) error {
	until, reason, _ := c.cooldown.Active(now)
	s, ns := splitTime(until)
	v, err := cooldownScript.Run(ctx, c.b.rdb, []string{c.key}, "start", s, ns, reason,
		max(0, until-now)/int64(time.Millisecond)+60_000, c.b.channel, c.name).Int64Slice()
	if err != nil {
		return err
	}
	c.mirror(v, true)
	return nil
}

// mirror takes a record (until s, until ns, reason, version) newer than
// the one held, or any when force (a resync: Redis may have restarted
// and counted its versions anew).
func (c *redisCooldown) mirror(v []int64, force bool) {
	if len(v) != 4 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !force && v[3] <= c.ver {
		return
	}
	c.ver = v[3]
	c.reason.Store(int32(v[2]))
	c.until.Store(joinTime(v[0], v[1]))
}

// redisBreaker is the Breaker of one (provider, model) in Redis. The
// embedded memory breaker is the mirror: Refuses and State read it, and
// Allow and Success go to Redis only when the mirror says there is
// something to decide (a probe to take, failures to reset), so a closed
// breaker costs no round trip.
type redisBreaker struct {
	breaker
	b         *redisBackend
	name, key string
	mu        sync.Mutex
	ver       int64
}

// Allow implements Breaker.
func (br *redisBreaker) Allow(now int64) (bool, int64) {
	if !br.b.up.Load() {
		return br.breaker.Allow(now)
	}
	st, until := br.state.Load(), br.openUntil.Load()
	if st == breakerClosed {
		return true, 0
	}
	if now < until {
		return false, until
	}
	v, ok := br.send("allow", now, 0, 0, 0)
	if !ok {
		return br.breaker.Allow(now)
	}
	return v[0] == 1, joinTime(v[3], v[4])
}

// Success implements Breaker.
func (br *redisBreaker) Success() {
	if !br.b.up.Load() {
		br.breaker.Success()
		return
	}
	if br.state.Load() == breakerClosed && br.fails.Load() == 0 {
		return
	}
	if _, ok := br.send("success", 0, 0, 0, 0); !ok {
		br.breaker.Success()
	}
}

// Failure implements Breaker.
func (br *redisBreaker) Failure(now int64, threshold int32, openFor int64) {
	if !br.b.up.Load() {
		br.breaker.Failure(now, threshold, openFor)
		return
	}
	if _, ok := br.send("failure", now, now+openFor, threshold, openFor/int64(time.Millisecond)); !ok {
		br.breaker.Failure(now, threshold, openFor)
	}
}

// send runs one breaker decision and mirrors its reply.
func (br *redisBreaker) send(op string, now, until int64, threshold int32, openForMs int64) ([]int64, bool) {
	s, ns := splitTime(now)
	us, un := splitTime(until)
	v, err := br.b.run(breakerScript, br.key, op, s, ns, us, un, threshold, openForMs, br.b.channel, br.name)
	if err != nil || len(v) != 6 {
		return nil, false
	}
	br.mirror(v, false)
	return v, true
}

// sync takes Redis's record into the mirror.
func (br *redisBreaker) sync(ctx context.Context, now int64) error {
	s, ns := splitTime(now)
	v, err := breakerScript.Run(ctx, br.b.rdb, []string{br.key}, "get", s, ns, 0, 0, 0, 0, br.b.channel, br.name).Int64Slice()
	if err != nil {
		return err
	}
	br.mirror(v, true)
	return nil
}

// mirror takes a record (granted, state, fails, until s, until ns,
// version) newer than the one held, or any when force.
func (br *redisBreaker) mirror(v []int64, force bool) {
	if len(v) != 6 {
		return
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	if !force && v[5] <= br.ver {
		return
	}
	br.ver = v[5]
	br.openUntil.Store(joinTime(v[3], v[4]))
	br.fails.Store(int32(v[2]))
	br.state.Store(int32(v[1]))
}

// redisSessions is the sticky table in Redis, one key per session that
// expires with it. The replica's own table beside it serves while Redis
// fails, and counts the sessions this replica pinned for /api/stats.
type redisSessions struct {
	b     *redisBackend
	local stickyStore
}

func (s *redisSessions) key(id uint64) string {
	return s.b.prefix + "sess:" + strconv.FormatUint(id, 16)
}

// Get implements Sessions.
func (s *redisSessions) Get(id uint64, now int64) (string, bool) {
	if !s.b.up.Load() {
		return s.local.Get(id, now)
	}
	via, err := s.b.rdb.Get(context.Background(), s.key(id)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", false
	case err != nil:
		s.b.fail(err)
		return s.local.Get(id, now)
	}
	return via, true
}

// Set implements Sessions.
func (s *redisSessions) Set(id uint64, via string, now, ttl int64) {
	s.local.Set(id, via, now, ttl)
	if !s.b.up.Load() {
		return
	}
	if err := s.b.rdb.Set(context.Background(), s.key(id), via, time.Duration(max(ttl, int64(time.Millisecond)))).Err(); err != nil {
		s.b.fail(err)
	}
}

// Len implements Sessions: the sessions this replica pinned.
func (s *redisSessions) Len() int { return s.local.Len() }
