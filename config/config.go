// Package config turns gateway.yaml into a validated, compiled, immutable
// snapshot, and watches the file for changes.
//
// A *Config returned by Load or Parse is never modified afterwards: the
// engine publishes it behind one atomic pointer and every request reads it
// without locks.
package config

import (
	"time"

	"github.com/expr-lang/expr/vm"
)

// Protocols lists the wire protocols a provider's `type` may name; it may
// name one of the Presets instead. The adapters package implements exactly
// these.
var Protocols = []string{"openai", "anthropic", "gemini", "cohere", "mock"}

// Strategies lists the selection strategies a model group may name.
var Strategies = []string{"priority", "round_robin", "weighted", "least_latency"}

// Config is one loaded gateway.yaml.
type Config struct {
	Listen         string               `yaml:"listen"`
	MaxBody        ByteSize             `yaml:"max_body"`
	Auth           Auth                 `yaml:"auth"`
	Providers      map[string]*Provider `yaml:"providers"`
	Models         map[string]*Group    `yaml:"models"`
	Routes         []*Route             `yaml:"routes"`
	Failover       Failover             `yaml:"failover"`
	CircuitBreaker CircuitBreaker       `yaml:"circuit_breaker"`
	Sticky         Sticky               `yaml:"sticky"`
	ResponseStore  ResponseStore        `yaml:"responses"`
	Cache          Cache                `yaml:"cache"`
	Log            Log                  `yaml:"log"`
	State          State                `yaml:"state"`

	// CORS lets browser apps on other origins call the gateway; nil (no
	// cors: block) answers no preflight and sets no CORS header.
	CORS *CORS `yaml:"cors"`
	// Region names where this gateway runs, reported by /health; empty
	// is left out.
	Region string `yaml:"region"`
	// Health is how often provider keys are probed; a provider may
	// override it with its own health block.
	Health Health `yaml:"health"`

	// ClientWriteTimeout is how long one write to a client may make no
	// progress before the response is given up and its upstream released.
	ClientWriteTimeout Duration `yaml:"client_write_timeout"`

	// ProviderOrder holds the provider names in file order, without the
	// optional providers that were left out.
	ProviderOrder []string `yaml:"-"`
	// GroupOrder holds the model group names in file order.
	GroupOrder []string `yaml:"-"`
	// Checksum is the hex SHA-256 of the file's bytes.
	Checksum string `yaml:"-"`
	// LoadedAt is when the file was parsed.
	LoadedAt time.Time `yaml:"-"`
	// Warnings are things worth logging that did not stop the load.
	Warnings []string `yaml:"-"`
	// NoKeyMatches is Key.Matches for a request without a gateway key.
	NoKeyMatches []KeyMatch `yaml:"-" json:"-"`

	// resolved is what the key references came to, for the Reloader.
	resolved resolved
}

// Log says how the gateway logs. Level applies on reload; format needs a
// restart.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json, for the diagnostic log on stderr.
	Format string `yaml:"format"`
	// Access turns the one-line-per-request JSON access log on stdout on
	// or off.
	Access *bool `yaml:"access"`
}

func (l *Log) defaults() {
	if l.Level == "" {
		l.Level = "info"
	}
	if l.Format == "" {
		l.Format = "text"
	}
	if l.Access == nil {
		on := true
		l.Access = &on
	}
}

// preset fills, before decoding, the defaults whose zero is invalid, so
// that an explicit 0 in the file is reported rather than replaced.
func (c *Config) preset() {
	c.Failover.MaxAttempts = 5
	c.CircuitBreaker.Failures = 5
	// An explicit `auth_recheck: 0s` turns the checks off.
	c.Failover.AuthRecheck = Duration(30 * time.Second)
	// An explicit `ttl: 0s` turns sticky sessions off.
	c.Sticky.TTL = Duration(30 * time.Minute)
	// A client reading normally never leaves a write blocked for more than
	// a moment; half a minute rides out a stalled mobile link or a
	// buffering proxy, and still frees a stuck upstream soon.
	c.ClientWriteTimeout = Duration(30 * time.Second)
}

// defaultListen is loopback: a file that names no address must not open the
// gateway, auth off, to the network.
const defaultListen = "127.0.0.1:8080"

func (c *Config) defaults() {
	if c.Listen == "" {
		c.Listen = defaultListen
	}
	if c.MaxBody == 0 {
		c.MaxBody = 16 << 20
	}
	c.Auth.defaults()
	c.Failover.defaults()
	c.CircuitBreaker.defaults()
	c.Sticky.defaults()
	c.ResponseStore.defaults()
	c.Cache.defaults()
	c.Log.defaults()
	if c.CORS != nil {
		c.CORS.defaults()
	}
	c.State.defaults()
	c.Health.defaults(Duration(DefaultHealthInterval))
}

// Auth holds the gateway keys clients present. No keys at all turns
// authentication off.
type Auth struct {
	DefaultRPM int    `yaml:"default_rpm"`
	Keys       []*Key `yaml:"keys"`
	// Anonymous allows auth off on an address other machines can reach:
	// without it such a file is refused, since anyone who reaches the port
	// could spend the provider keys.
	Anonymous bool `yaml:"anonymous"`
	// AnonymousRPM, with auth off, caps each client address at this many
	// requests per minute; zero is no cap.
	AnonymousRPM int `yaml:"anonymous_rpm"`
}

func (a *Auth) defaults() {
	if a.DefaultRPM == 0 {
		a.DefaultRPM = 60
	}
	for _, k := range a.Keys {
		if k != nil {
			k.defaults()
		}
	}
}

// Key is one gateway key.
type Key struct {
	Name     string            `yaml:"name"`
	Key      Secret            `yaml:"key"`
	RPM      int               `yaml:"rpm"`
	Models   []string          `yaml:"models"`
	TPM      int               `yaml:"tpm"`
	RPD      int               `yaml:"rpd"`
	TPD      int               `yaml:"tpd"`
	Expires  time.Time         `yaml:"expires"`
	Disabled bool              `yaml:"disabled"`
	Metadata map[string]string `yaml:"metadata"`
	// Proxy lets the key use the raw passthrough, /proxy/; false refuses
	// it every request there. Default true.
	Proxy *bool `yaml:"proxy"`
	// Admin lets the key see what is not its own: every gateway key's
	// usage in /api/stats. Default false.
	Admin bool `yaml:"admin"`

	// Hash is the SHA-256 of the key's value, the only form kept for
	// comparison.
	Hash [32]byte `yaml:"-"`
	// Allowed is Models as a set; nil means every model.
	Allowed map[string]bool `yaml:"-"`
	// Matches holds Routes[i]'s match expression resolved for this key at
	// Matches[i]; a route past its end runs its Program (see keymatch.go).
	Matches []KeyMatch `yaml:"-" json:"-"`
}

func (k *Key) defaults() {
	if k.Proxy == nil {
		on := true
		k.Proxy = &on
	}
}

// Provider is one upstream account: a wire protocol, an API root and keys.
type Provider struct {
	Type    string `yaml:"type"`
	BaseURL string `yaml:"base_url"`
	// AccountID fills {account_id} in the base URL: Cloudflare's API root
	// names the account.
	AccountID string   `yaml:"account_id"`
	Keys      []Secret `yaml:"keys"`
	Optional  bool     `yaml:"optional"`
	Timeout   Duration `yaml:"timeout"`
	// FirstByteTimeout bounds, for a stream, the wait for its first event;
	// IdleTimeout the wait between two events. Zero: only Timeout.
	FirstByteTimeout Duration `yaml:"first_byte_timeout"`
	IdleTimeout      Duration `yaml:"idle_timeout"`
	// IdleConnTimeout is how long an unused upstream connection is kept
	// for the next request; it must end before the server's own
	// keep-alive does, or the next request meets a closed connection.
	IdleConnTimeout Duration `yaml:"idle_conn_timeout"`
	// MaxResponseBody bounds an upstream answer read whole (a non-stream
	// reply, an error body, a cached passthrough GET) and each event of a
	// stream.
	MaxResponseBody ByteSize `yaml:"max_response_body"`
	// DefaultMaxTokens is what a request that sets no max_tokens is
	// assumed to generate, for reserving tokens against caps.
	DefaultMaxTokens int `yaml:"default_max_tokens"`
	// ReserveMaxTokens bounds the completion a request reserves against
	// token caps before it is sent: coding agents ask for 32k-64k
	// max_tokens and use a fraction, and settling corrects the count to
	// the real usage afterwards.
	ReserveMaxTokens int `yaml:"reserve_max_tokens"`
	// StreamUsage asks the upstream for a usage chunk at the end of each
	// stream (stream_options.include_usage); turn it off for servers that
	// reject the field.
	StreamUsage *bool `yaml:"stream_usage"`
	// Responses is how POST /v1/responses reaches this provider:
	// "translate" (the default) onto chat completions, or "native" to an
	// OpenAI-compatible upstream that serves the Responses API itself.
	Responses string `yaml:"responses"`
	// ListModels adds the upstream's own model list (fetched at load) to
	// the models this provider serves, each under its upstream name.
	ListModels bool `yaml:"list_models"`
	// Health overrides the top-level health block for this provider's
	// keys; nil takes it whole.
	Health *Health `yaml:"health"`
	// Probe is how a key is probed: "models" (its model list, which
	// spends no tokens) or "chat" (a 1-token request to ProbeModel).
	// Empty is models where the protocol lists models, else chat.
	Probe   string                    `yaml:"probe"`
	Headers map[string]string         `yaml:"headers"`
	Limits  Limits                    `yaml:"limits"`
	Models  map[string]*ProviderModel `yaml:"models"`

	// Name is the provider's key under `providers:`.
	Name string `yaml:"-"`
	// Protocol is the wire protocol: Type itself, or the protocol of the
	// preset Type names.
	Protocol string `yaml:"-"`
	// ModelOrder holds the model names in file order.
	ModelOrder []string `yaml:"-"`
	// ProbeModel is the model a chat probe asks, and whose caps (per
	// key) every probe of a key counts against: the first model that
	// serves chat, else the first model.
	ProbeModel *ProviderModel `yaml:"-"`
}

func (p *Provider) defaults() {
	if p.Timeout == 0 {
		p.Timeout = Duration(300 * time.Second)
	}
	if p.DefaultMaxTokens == 0 {
		p.DefaultMaxTokens = 1024
	}
	if p.ReserveMaxTokens == 0 {
		p.ReserveMaxTokens = DefaultReserveMaxTokens
	}
	if p.IdleConnTimeout == 0 {
		// Node, uvicorn (so vLLM) and most keep-alive servers close an idle
		// connection after 5s; dropping ours a second earlier means a
		// request never goes out on one the server is closing.
		p.IdleConnTimeout = Duration(4 * time.Second)
	}
	if p.MaxResponseBody == 0 {
		// A long completion is tens of KiB and a big tool-call answer a
		// few MiB; 8MiB holds any real one and bounds what a broken
		// upstream can make the gateway hold per request.
		p.MaxResponseBody = 8 << 20
	}
	if p.StreamUsage == nil {
		on := true
		p.StreamUsage = &on
	}
	if p.Protocol == "" {
		p.Protocol = p.Type
	}
}

// Health says how often provider keys are probed in the background.
type Health struct {
	// Interval is the time between two probes of one key; 0s turns the
	// probes off. Nil until defaults: the top level's 5m, a provider's
	// the top level's.
	Interval *Duration `yaml:"interval"`
}

// DefaultHealthInterval is how often a key is probed when the file does
// not say: often enough that a revoked key is found before many requests
// meet it, rare enough to cost nothing against any provider's caps.
const DefaultHealthInterval = 5 * time.Minute

func (h *Health) defaults(inherit Duration) {
	if h.Interval == nil {
		h.Interval = &inherit
	}
}

// Every returns the probe interval, 0 when probes are off.
func (h Health) Every() time.Duration {
	if h.Interval == nil {
		return 0
	}
	return h.Interval.D()
}

// Probe modes a provider's `probe` may name.
const (
	ProbeModels = "models"
	ProbeChat   = "chat"
)

// DefaultReserveMaxTokens is the completion reserved against token caps
// when a provider sets no reserve_max_tokens, and for gateway keys.
const DefaultReserveMaxTokens = 2000

// ProviderModel is a model a provider serves, under the name the gateway
// uses for it.
type ProviderModel struct {
	Upstream string `yaml:"upstream"`
	Limits   Limits `yaml:"limits"`
	// Operations lists the client APIs this model serves (Operations
	// names them); empty is the chat family: chat, responses and
	// messages, and completions on OpenAI-compatible providers. An
	// embedding model says [embeddings].
	Operations []string `yaml:"operations"`

	// Name is the model's key under the provider's `models:`.
	Name string `yaml:"-"`
	// Serves is Operations resolved, as a set.
	Serves map[string]bool `yaml:"-"`
}

// Operations lists the client APIs a provider model may serve.
var Operations = []string{"chat", "responses", "messages", "embeddings", "completions"}

// serves resolves the operations of a model of a provider speaking
// protocol.
func serves(ops []string, protocol string) map[string]bool {
	out := map[string]bool{}
	if len(ops) == 0 {
		ops = []string{"chat", "responses", "messages"}
		if protocol == "openai" || protocol == "mock" {
			ops = append(ops, "completions")
		}
	}
	for _, op := range ops {
		out[op] = true
	}
	return out
}

// Limits are upstream rate caps per (provider, model, key); zero is no cap.
// A model's limits override its provider's field by field.
type Limits struct {
	RPM int `yaml:"rpm"`
	RPD int `yaml:"rpd"`
	TPM int `yaml:"tpm"`
	TPD int `yaml:"tpd"`
}

// Group is a model name clients ask for, backed by a chain of targets.
type Group struct {
	// Description says what the name is for ("fast and cheap"), shown in
	// /v1/models.
	Description string      `yaml:"description"`
	Strategy    string      `yaml:"strategy"`
	Targets     []TargetRef `yaml:"targets"`
	// HedgeAfter, when set, starts the next candidate if the current one
	// has not answered by then, and takes whichever answers first.
	HedgeAfter Duration `yaml:"hedge_after"`

	// Name is the group's key under `models:`.
	Name string `yaml:"-"`
	// Chain is Targets resolved, without targets of left-out providers.
	Chain []Target `yaml:"-"`
}

// Target is one resolved `provider/model` reference.
type Target struct {
	Provider *Provider
	Model    *ProviderModel
	// Weight is the target's share under the weighted strategy.
	Weight int
	// Limits are the provider's limits with the model's laid over them.
	Limits Limits
}

// String gives the target back as `provider/model`.
func (t Target) String() string { return t.Provider.Name + "/" + t.Model.Name }

// Route is a rule that sends matching requests to a model group or to a
// chain of its own.
type Route struct {
	Name     string      `yaml:"name"`
	Match    string      `yaml:"match"`
	Model    string      `yaml:"model"`
	Strategy string      `yaml:"strategy"`
	Targets  []TargetRef `yaml:"targets"`

	// Program is Match compiled against RequestEnv.
	Program *vm.Program `yaml:"-"`
	// Uses lists which request fields the expression reads, so the engine
	// fills only those.
	Uses EnvUses `yaml:"-"`
	// Group is what the route sends to: the named group, or one built from
	// the route's own targets.
	Group *Group `yaml:"-"`
}

// Failover bounds how hard the gateway tries before it gives up.
type Failover struct {
	MaxAttempts int      `yaml:"max_attempts"`
	Cooldown    Duration `yaml:"cooldown"`
	// AuthCooldown is how long a key the upstream refused (401/403) is
	// held invalid.
	AuthCooldown Duration `yaml:"auth_cooldown"`
	// AuthRecheck is when a key held invalid is first checked again
	// (with a call that spends no tokens); the wait doubles after each
	// refusal, and a key that works returns at once. 0s: no checks.
	AuthRecheck Duration `yaml:"auth_recheck"`
}

func (f *Failover) defaults() {
	if f.Cooldown == 0 {
		f.Cooldown = Duration(60 * time.Second)
	}
	if f.AuthCooldown == 0 {
		f.AuthCooldown = Duration(time.Hour)
	}
}

// CircuitBreaker opens a (provider, model) after consecutive failures.
type CircuitBreaker struct {
	Failures int      `yaml:"failures"`
	OpenFor  Duration `yaml:"open_for"`
}

func (b *CircuitBreaker) defaults() {
	if b.OpenFor == 0 {
		b.OpenFor = Duration(30 * time.Second)
	}
}

// ResponseStore bounds the in-memory store of Responses API answers that
// previous_response_id and GET /v1/responses/{id} read.
type ResponseStore struct {
	// StoreTTL is how long a stored response is kept.
	StoreTTL Duration `yaml:"store_ttl"`
	// StoreMaxBytes bounds the store; the oldest responses go first.
	StoreMaxBytes ByteSize `yaml:"store_max_bytes"`
}

func (r *ResponseStore) defaults() {
	if r.StoreTTL == 0 {
		r.StoreTTL = Duration(time.Hour)
	}
	if r.StoreMaxBytes == 0 {
		r.StoreMaxBytes = 64 << 20
	}
}

// Sticky keeps a conversation on the target it started on.
type Sticky struct {
	TTL Duration `yaml:"ttl"`
}

func (s *Sticky) defaults() {}

// Cache is the passthrough GET response cache.
type Cache struct {
	TTL      *Duration `yaml:"ttl"`
	MaxBytes ByteSize  `yaml:"max_bytes"`
}

func (c *Cache) defaults() {
	if c.TTL == nil {
		d := Duration(300 * time.Second)
		c.TTL = &d
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 64 << 20
	}
}

// CORS says which browser origins may call the gateway.
type CORS struct {
	// Origins are the allowed origins, each exactly scheme://host[:port]
	// as a browser sends it, or "*" for any.
	Origins []string `yaml:"origins"`
	// Headers are request headers allowed beyond the gateway's own
	// (authorization, content-type, x-api-key, ...).
	Headers []string `yaml:"headers"`
	// MaxAge is how long a browser may cache a preflight's answer.
	MaxAge Duration `yaml:"max_age"`
}

func (c *CORS) defaults() {
	if c.MaxAge == 0 {
		c.MaxAge = Duration(10 * time.Minute)
	}
}
