package engine

import "time"

// The state that several replicas of the gateway would have to share sits
// behind the interfaces of this file: rate windows, key cooldowns,
// circuit breakers and sticky sessions. Each operation is a whole
// decision (fit and take, or refuse), so a shared implementation can make
// it atomically in one round trip. The in-memory implementations are the
// types of ratelimit.go, cooldown.go, breaker.go and sticky.go.

// Backend makes the shared state, named by the stable names the engine
// keeps its state under (they survive reloads, so a shared backend can
// key its records by them). memory is this process's own; a backend
// shared by replicas (Redis) plugs in by being another Backend given to
// the engine's states.
type Backend interface {
	// Limiter returns the rate windows of one (provider, model, key) or
	// one gateway key.
	Limiter(name string) Limiter
	// Cooldown returns the cooldown of one (provider, model, key).
	Cooldown(name string) Cooldown
	// Breaker returns the circuit breaker of one (provider, model).
	Breaker(name string) Breaker
	// Sessions returns the sticky sessions' table.
	Sessions() Sessions
}

// Limiter counts requests and tokens per minute and per day against caps;
// the caps come with each call, from the snapshot, and the counts outlive
// reloads.
type Limiter interface {
	// Check reports, without taking anything, whether one request of
	// tokens fits every cap now, and if not the earliest time it would
	// (never when tokens alone exceed a cap).
	Check(now int64, c caps, tokens int64) (ok bool, at int64)
	// Reserve takes one request and tokens if every cap allows them and
	// returns the handle to settle or cancel them; otherwise it returns
	// what Check does.
	Reserve(now int64, c caps, tokens int64) (r Reservation, ok bool, at int64)
	// Settle corrects r to used tokens, the real usage.
	Settle(r Reservation, now, used int64)
	// Cancel takes r back whole, for a request that was never sent.
	Cancel(r Reservation)
	// Admit is Reserve for a gateway key's request, which also returns
	// what Requests would right after it for the cap c.rpm (zero without
	// one): the X-RateLimit headers of its answer, in the same decision.
	Admit(now int64, c caps, tokens int64) (r Reservation, ok bool, at int64, q quota)
	// Requests returns how many more requests the minute cap rpm allows
	// and when the next one frees (unix ns), for X-RateLimit headers.
	Requests(now, rpm int64) (remaining, reset int64)
	// Used returns the requests and tokens counted in the minute windows.
	Used(now int64) (requests, tokens int64)
}

// quota is where a minute cap of requests stands, as Requests tells it.
type quota struct{ remaining, reset int64 }

// Reservation is what one Reserve took, to settle against the real usage
// or cancel. The zero Reservation holds nothing and its methods do
// nothing, so a request without caps carries one all the same.
type Reservation struct {
	lim  Limiter
	caps caps
	// at is the time the reservation was counted at: settling corrects
	// that bucket, not the current one.
	at, tokens int64
}

// Settle corrects the reservation to used tokens (a refund is 0).
func (r Reservation) Settle(now, used int64) {
	if r.lim != nil {
		r.lim.Settle(r, now, used)
	}
}

// Cancel takes the reservation back whole.
func (r Reservation) Cancel() {
	if r.lim != nil {
		r.lim.Cancel(r)
	}
}

// Cooldown is the time until which one (provider, model, key) is skipped,
// and why (coolFailure, coolRate, coolAuth).
type Cooldown interface {
	// Start begins a cooldown of d from now; a longer running one is kept.
	Start(now int64, d time.Duration, reason int32)
	// Active reports whether a cooldown runs at now, until when and why.
	Active(now int64) (until int64, reason int32, on bool)
	// Lift ends the cooldown that runs until until, unless a newer one
	// has replaced it since.
	Lift(until int64)
}

// Breaker is the circuit breaker of one (provider, model).
type Breaker interface {
	// Refuses reports, without taking the probe, whether the breaker
	// would refuse a call at now, and until when.
	Refuses(now int64) (bool, int64)
	// Allow reports whether a call may go now, taking the half-open probe
	// when there is one to take, and if not until when it refuses.
	Allow(now int64) (bool, int64)
	// Success records a call that reached a working upstream.
	Success()
	// Failure records a call that says the upstream is unwell, opening
	// the breaker at threshold consecutive ones for openFor ns.
	Failure(now int64, threshold int32, openFor int64)
	// State names the breaker's state at now: closed, open or half_open.
	State(now int64) string
}

// Sessions remembers which target each conversation used.
type Sessions interface {
	// Get returns the target a session is pinned to, if still fresh.
	Get(id uint64, now int64) (via string, ok bool)
	// Set pins a session to a target for ttl ns from now.
	Set(id uint64, via string, now, ttl int64)
	// Len returns the number of sessions held, fresh or not.
	Len() int
}

// memory is the Backend of one gateway on its own: state in this
// process, lock-free where it is read per request.
type memory struct{}

func (memory) Limiter(string) Limiter   { return newLimiter() }
func (memory) Cooldown(string) Cooldown { return new(cooldown) }
func (memory) Breaker(string) Breaker   { return new(breaker) }
func (memory) Sessions() Sessions       { return new(stickyStore) }
