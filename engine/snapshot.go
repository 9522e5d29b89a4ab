package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/adapters"
	"gateway/config"
)

// snapshot is a config compiled for serving: adapters built, chains
// resolved to targets whose state pointers outlive the snapshot. It is
// immutable once published.
type snapshot struct {
	cfg       *config.Config
	providers map[string]*provider
	// groups maps every name a client may ask for to its chain: model
	// groups, bare provider model names, and provider/model references.
	groups map[string]*group
	routes []*route
	// defaultRoute counts the requests no rule matched.
	defaultRoute *routeState
	uses         config.EnvUses
	// keys holds every gateway key by the SHA-256 of its value; keyIndex
	// finds most of them cheaper.
	keys     map[[32]byte]*gatewayKey
	keyIndex keyIndex
	byName   map[string]*gatewayKey
	// modelsAll is the /v1/models body for a key without an allow-list;
	// modelsByKey holds the others.
	modelsAll   []byte
	modelsByKey map[*config.Key][]byte
	targetsJSON []byte
	cooldown    int64 // failover.cooldown, ns
	authCool    int64 // failover.auth_cooldown, ns
	authRecheck int64 // failover.auth_recheck, ns
	breakAfter  int32
	openFor     int64
	stickyTTL   int64
	cacheTTL    time.Duration
	access      bool
	// anon is the engine's per-address count when auth is off and
	// auth.anonymous_rpm is set; nil otherwise.
	anon *anonymous
	// red keeps every provider key of the config out of what upstreams
	// answer: the adapters' replies and the passthrough's.
	red *adapters.Redactor
	// cors is the cors: block compiled; nil when there is none.
	cors *corsPolicy
	// probes lists every provider key for the prober, in provider order.
	probes []*probeKey
}

type provider struct {
	name    string
	cfg     *config.Provider
	adapter adapters.Provider
	// client is the provider's HTTP client, nil for mock.
	client *fasthttp.HostClient
	// pass is nil for a provider without an HTTP API (mock).
	pass  *passTarget
	stats *providerStats
}

// gatewayKey is a configured gateway key with its counters.
type gatewayKey struct {
	cfg   *config.Key
	caps  caps
	lim   Limiter
	stats *keyStats
	// rpmText is caps.rpm in decimal, for X-RateLimit-Limit.
	rpmText []byte
	// upstreams holds, per provider, the provider's names of the models
	// the key's allow-list reaches there: what the key may name in a
	// passthrough body. Nil when the key may use every model.
	upstreams map[string]map[string]bool
}

type group struct {
	name     string
	strategy string
	targets  []*target
	hedge    time.Duration
	weights  int
	state    *groupState
}

type route struct {
	cfg   *config.Route
	group *group
	stats *routeState
	// header is the route's name for X-Gateway-Route.
	header []byte
}

// target is one (provider, model) of a chain, with one state per key.
type target struct {
	provider     *provider
	model        *config.ProviderModel
	via          []byte // "provider/model", for x-routed-via
	name         string
	upstreamJSON []byte
	weight       int
	caps         caps
	// reserveOut is what a request without max_tokens is assumed to
	// generate; reserveMax the most completion any request reserves.
	reserveOut, reserveMax int64
	keys                   []*keyState
	state                  *targetState
}

// keyState is what the engine remembers of one (provider, model, key)
// across reloads.
type keyState struct {
	until Cooldown
	// probe is the state of the provider key's probes, shared by every
	// model of the provider; set when the keyState is made, never after.
	probe *probeState
	// lim counts against the target's caps; nil until a snapshot gives
	// it some. A build sets it while requests of the snapshot before read
	// it, hence atomic; once set it stays, so caps that come and go across
	// reloads keep their counts.
	lim atomic.Pointer[Limiter]
}

// limiter returns the key's limiter, nil until a snapshot gave it caps.
func (ks *keyState) limiter() Limiter {
	if p := ks.lim.Load(); p != nil {
		return *p
	}
	return nil
}

// targetState is what the engine remembers of one (provider, model).
type targetState struct {
	breaker Breaker
	// ttfb is a moving average of the time to first byte, ns; 0 until
	// measured.
	ttfb atomic.Int64
	// keyTurn rotates the first key tried, so load spreads over keys.
	keyTurn atomic.Uint32
	use     counters
}

// groupState is what the engine remembers of one chain.
type groupState struct {
	turn atomic.Uint32
}

// states holds the engine's state by stable name; snapshots point into
// it. build prunes what the new config no longer names. The state that
// replicas would share (limiters, cooldowns, breakers) comes from backend,
// memory today; a Backend shared by replicas goes there. The rest
// (counters, latency, rotation) is each replica's own.
type states struct {
	backend   Backend
	analytics *analytics
	mu        sync.Mutex
	keys      map[string]*keyState
	targets   map[string]*targetState
	groups    map[string]*groupState
	gkeys     map[string]*keyStats
	routes    map[string]*routeState
	providers map[string]*providerStats
	probes    map[string]*probeState
}

// keep collects the state a snapshot under construction uses.
type keep struct {
	keys      map[string]*keyState
	targets   map[string]*targetState
	groups    map[string]*groupState
	gkeys     map[string]*keyStats
	routes    map[string]*routeState
	providers map[string]*providerStats
	probes    map[string]*probeState
}

func reuse[T any](old, kept map[string]*T, name string) *T {
	v := old[name]
	if v == nil {
		v = new(T)
	}
	kept[name] = v
	return v
}

// build compiles cfg into a snapshot. State of (provider, model, key)
// triples, targets, groups and gateway keys still in the config is kept;
// the rest is dropped.
// upstreamModels holds, per provider, the model ids its upstream listed
// (list_models); they join the models the file declares. red is
// redactorFor(cfg).
func build(cfg *config.Config, ups *upstreams, st *states, upstreamModels map[string][]string, red *adapters.Redactor) (*snapshot, error) {
	s := &snapshot{
		cfg:         cfg,
		providers:   map[string]*provider{},
		groups:      map[string]*group{},
		keys:        map[[32]byte]*gatewayKey{},
		keyIndex:    newKeyIndex(),
		byName:      map[string]*gatewayKey{},
		modelsByKey: map[*config.Key][]byte{},
		cooldown:    int64(cfg.Failover.Cooldown),
		authCool:    int64(cfg.Failover.AuthCooldown),
		authRecheck: int64(cfg.Failover.AuthRecheck),
		breakAfter:  int32(cfg.CircuitBreaker.Failures),
		openFor:     int64(cfg.CircuitBreaker.OpenFor),
		stickyTTL:   int64(cfg.Sticky.TTL),
		cacheTTL:    cfg.Cache.TTL.D(),
		access:      *cfg.Log.Access,
		red:         red,
		cors:        newCORS(cfg.CORS),
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	k := keep{keys: map[string]*keyState{}, targets: map[string]*targetState{},
		groups: map[string]*groupState{}, gkeys: map[string]*keyStats{},
		routes: map[string]*routeState{}, providers: map[string]*providerStats{}, probes: map[string]*probeState{}}
	// keyIDs names each provider's keys by a digest of the key, so that
	// reordering keys in the file keeps each one's state and a rotated key
	// starts fresh; "#none" stands for a provider without keys.
	keyIDs := map[string][]string{}
	for _, name := range cfg.ProviderOrder {
		ids := []string{"#none"}
		if keys := cfg.Providers[name].Keys; len(keys) > 0 {
			ids = ids[:0]
			for _, key := range keys {
				sum := sha256.Sum256([]byte(key.Reveal()))
				ids = append(ids, "#"+hex.EncodeToString(sum[:8]))
			}
		}
		keyIDs[name] = ids
	}
	// cools holds, per provider key, its (provider, model, key) states.
	cools := map[string][]*keyState{}
	for _, name := range cfg.ProviderOrder {
		pc := cfg.Providers[name]
		client := ups.client(pc)
		a, err := adapters.New(pc, client, red)
		if err != nil {
			return nil, err
		}
		p := &provider{name: name, cfg: pc, adapter: a, client: client, stats: reuse(st.providers, k.providers, name)}
		if client != nil {
			p.pass = newPassTarget(pc.BaseURL)
		}
		s.providers[name] = p
	}
	s.defaultRoute = reuse(st.routes, k.routes, "default")
	targets := map[string]*target{}
	targetFor := func(t config.Target) *target {
		via := t.String()
		if tg := targets[via]; tg != nil {
			// Limits and weight differ per chain only in weight; a
			// target shared by chains keeps its first weight, so give it
			// its own copy when the weight differs.
			if tg.weight == t.Weight {
				return tg
			}
			cp := *tg
			cp.weight = t.Weight
			return &cp
		}
		up, _ := json.Marshal(t.Model.Upstream)
		tg := &target{
			provider: s.providers[t.Provider.Name], model: t.Model, via: []byte(via), name: via,
			upstreamJSON: up, weight: t.Weight, caps: capsOf(t.Limits),
			reserveOut: int64(t.Provider.DefaultMaxTokens), reserveMax: int64(t.Provider.ReserveMaxTokens),
			state: reuse(st.targets, k.targets, via),
		}
		if tg.state.breaker == nil {
			tg.state.breaker = st.backend.Breaker(via)
		}
		for _, id := range keyIDs[t.Provider.Name] {
			n := via + id
			ks := reuse(st.keys, k.keys, n)
			ps := reuse(st.probes, k.probes, t.Provider.Name+id)
			if ks.until == nil {
				ks.until = st.backend.Cooldown(n)
				ks.probe = ps
			}
			cools[t.Provider.Name+id] = append(cools[t.Provider.Name+id], ks)
			if !tg.caps.none() && ks.lim.Load() == nil {
				lim := st.backend.Limiter(n)
				ks.lim.Store(&lim)
			}
			tg.keys = append(tg.keys, ks)
		}
		targets[via] = tg
		return tg
	}
	chain := func(stateName, name, strategy string, hedge time.Duration, ts []config.Target) *group {
		g := &group{name: name, strategy: strategy, hedge: hedge, state: reuse(st.groups, k.groups, stateName)}
		if g.strategy == "" {
			g.strategy = "priority"
		}
		for _, t := range ts {
			tg := targetFor(t)
			g.targets = append(g.targets, tg)
			g.weights += tg.weight
		}
		return g
	}
	// Provider models by bare name, then provider/model: lower precedence
	// first, so model groups override.
	var bare []string
	byName := map[string][]config.Target{}
	for _, pn := range cfg.ProviderOrder {
		pc := cfg.Providers[pn]
		models := make([]*config.ProviderModel, 0, len(pc.ModelOrder)+len(upstreamModels[pn]))
		for _, mn := range pc.ModelOrder {
			models = append(models, pc.Models[mn])
		}
		for _, id := range upstreamModels[pn] {
			if pc.Models[id] == nil {
				models = append(models, &config.ProviderModel{Name: id, Upstream: id})
			}
		}
		for _, m := range models {
			mn := m.Name
			t := config.Target{Provider: pc, Model: m, Weight: 1, Limits: config.Overlay(pc.Limits, m.Limits)}
			if byName[mn] == nil {
				bare = append(bare, mn)
			}
			byName[mn] = append(byName[mn], t)
			s.groups[t.String()] = chain("target:"+t.String(), t.String(), "priority", 0, []config.Target{t})
		}
	}
	for _, mn := range bare {
		s.groups[mn] = chain("model:"+mn, mn, "priority", 0, byName[mn])
	}
	for _, gn := range cfg.GroupOrder {
		g := cfg.Models[gn]
		s.groups[gn] = chain("group:"+gn, gn, g.Strategy, g.HedgeAfter.D(), g.Chain)
	}
	for _, r := range cfg.Routes {
		g := s.groups[r.Group.Name]
		if r.Model == "" {
			g = chain("route:"+r.Name, r.Name, r.Strategy, 0, r.Group.Chain)
		}
		s.routes = append(s.routes, &route{cfg: r, group: g, stats: reuse(st.routes, k.routes, r.Name), header: []byte(r.Name)})
		s.uses = s.uses.Or(r.Uses)
	}

	for _, key := range cfg.Auth.Keys {
		ks := reuse(st.gkeys, k.gkeys, key.Name)
		if ks.lim == nil {
			ks.lim = st.backend.Limiter("key:" + key.Name)
		}
		gk := &gatewayKey{cfg: key, lim: ks.lim, stats: ks,
			caps:    caps{rpm: int64(key.RPM), tpm: int64(key.TPM), rpd: int64(key.RPD), tpd: int64(key.TPD)},
			rpmText: strconv.AppendInt(nil, int64(key.RPM), 10)}
		if key.Allowed != nil {
			gk.upstreams = s.passUpstreams(key.Allowed)
		}
		s.keys[key.Hash] = gk
		s.keyIndex.add(key.Key.Reveal(), gk)
		s.byName[key.Name] = gk
	}
	for _, name := range cfg.ProviderOrder {
		s.probes = appendProbes(s.probes, s.providers[name], s.groups, keyIDs[name], k.probes, cools, time.Duration(s.authRecheck))
	}
	st.keys, st.targets, st.groups, st.gkeys, st.routes, st.providers = k.keys, k.targets, k.groups, k.gkeys, k.routes, k.providers
	s.timeOnce(st.analytics)
	st.probes = k.probes

	listed := append(append([]string(nil), cfg.GroupOrder...), bare...)
	entry := func(name string) modelEntry {
		m := modelEntry{ID: name, Object: "model", Created: cfg.LoadedAt.Unix(), Operations: s.operationsOf(name)}
		if g := cfg.Models[name]; g != nil {
			m.OwnedBy, m.Description = "gateway", g.Description
		} else {
			m.OwnedBy = byName[name][0].Provider.Name
		}
		return m
	}
	s.modelsAll = modelList(listed, nil, entry)
	for _, key := range cfg.Auth.Keys {
		if key.Allowed != nil {
			s.modelsByKey[key] = modelList(listed, key.Allowed, entry)
		}
	}
	s.targetsJSON, _ = json.Marshal(map[string][]string{"targets": append([]string{}, cfg.ProviderOrder...)})
	return s, nil
}

// passUpstreams maps each provider to the upstream names of the targets
// the names in allowed route to there: a model group's chain, every
// provider's model of a bare name, a provider/model. A route rule that
// names a group sends to that same group; a rule with a chain of its own
// is not counted, since whether it matches depends on a chat request.
func (s *snapshot) passUpstreams(allowed map[string]bool) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for name := range allowed {
		g := s.groups[name]
		if g == nil {
			continue
		}
		for _, t := range g.targets {
			pn := t.provider.name
			if out[pn] == nil {
				out[pn] = map[string]bool{}
			}
			out[pn][t.model.Upstream] = true
		}
	}
	return out
}

// redactorFor builds the redactor of every provider key in cfg.
func redactorFor(cfg *config.Config) *adapters.Redactor {
	var keys []string
	for _, p := range cfg.Providers {
		for _, k := range p.Keys {
			keys = append(keys, k.Reveal())
		}
	}
	return adapters.NewRedactor(keys)
}

type modelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	// Operations lists the client APIs the name serves: an extra field
	// that SDKs ignore.
	Operations []string `json:"operations"`
	// Description is a model group's, when it has one.
	Description string `json:"description,omitempty"`
}

// operationsOf lists the operations some target of name's chain serves.
func (s *snapshot) operationsOf(name string) []string {
	out := []string{}
	if g := s.groups[name]; g != nil {
		for _, op := range operations {
			for _, t := range g.targets {
				if op.servedBy(t) {
					out = append(out, op.name)
					break
				}
			}
		}
	}
	return out
}

// modelList renders an OpenAI model list of the names allowed lets
// through (nil: all), each as entry says.
func modelList(names []string, allowed map[string]bool, entry func(string) modelEntry) []byte {
	list := struct {
		Object string       `json:"object"`
		Data   []modelEntry `json:"data"`
	}{Object: "list", Data: []modelEntry{}}
	for _, n := range names {
		if allowed == nil || allowed[n] {
			list.Data = append(list.Data, entry(n))
		}
	}
	b, err := json.Marshal(list)
	if err != nil {
		panic(fmt.Sprintf("encoding model list: %v", err))
	}
	return b
}
