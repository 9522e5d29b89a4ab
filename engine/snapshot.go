package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"

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
	uses   config.EnvUses
	keys   map[[32]byte]*config.Key
	// modelsAll is the /v1/models body for a key without an allow-list;
	// modelsByKey holds the others.
	modelsAll   []byte
	modelsByKey map[*config.Key][]byte
	targetsJSON []byte
}

type provider struct {
	name    string
	cfg     *config.Provider
	adapter adapters.Provider
}

type group struct {
	name    string
	targets []*target
}

type route struct {
	cfg   *config.Route
	group *group
}

// target is one (provider, model) of a chain, with one state per key.
type target struct {
	provider     *provider
	model        *config.ProviderModel
	via          []byte // "provider/model", for x-routed-via
	upstreamJSON []byte
	keys         []*keyState
}

// keyState is what the engine remembers of one (provider, model, key)
// across reloads.
type keyState struct {
	// until is the unix-nano time a cooldown ends; 0 when none.
	until cooldown
}

// states holds keyStates by stable name; snapshots point into it.
type states struct {
	mu sync.Mutex
	m  map[string]*keyState
}

func (s *states) get(name string, keep map[string]*keyState) *keyState {
	ks := s.m[name]
	if ks == nil {
		ks = &keyState{}
	}
	keep[name] = ks
	return ks
}

// build compiles cfg into a snapshot. State of (provider, model, key)
// triples still in the config is kept; the rest is dropped.
func build(cfg *config.Config, client *fasthttp.Client, st *states) (*snapshot, error) {
	s := &snapshot{
		cfg:         cfg,
		providers:   map[string]*provider{},
		groups:      map[string]*group{},
		keys:        map[[32]byte]*config.Key{},
		modelsByKey: map[*config.Key][]byte{},
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	keep := map[string]*keyState{}
	for _, name := range cfg.ProviderOrder {
		pc := cfg.Providers[name]
		a, err := adapters.New(pc, client)
		if err != nil {
			return nil, err
		}
		s.providers[name] = &provider{name: name, cfg: pc, adapter: a}
	}
	targets := map[string]*target{}
	targetFor := func(t config.Target) *target {
		via := t.String()
		if tg := targets[via]; tg != nil {
			return tg
		}
		up, _ := json.Marshal(t.Model.Upstream)
		tg := &target{provider: s.providers[t.Provider.Name], model: t.Model, via: []byte(via), upstreamJSON: up}
		if len(t.Provider.Keys) == 0 {
			tg.keys = []*keyState{st.get(via+"#none", keep)}
		}
		for _, k := range t.Provider.Keys {
			// Keyed by a digest of the key, so reordering keys in the file
			// keeps each one's state.
			sum := sha256.Sum256([]byte(k.Reveal()))
			tg.keys = append(tg.keys, st.get(via+"#"+hex.EncodeToString(sum[:8]), keep))
		}
		targets[via] = tg
		return tg
	}
	chain := func(name string, ts []config.Target) *group {
		g := &group{name: name}
		for _, t := range ts {
			g.targets = append(g.targets, targetFor(t))
		}
		return g
	}
	// Provider models by bare name, then provider/model: lower precedence
	// first, so model groups override.
	var bare []string
	byName := map[string][]config.Target{}
	for _, pn := range cfg.ProviderOrder {
		pc := cfg.Providers[pn]
		for _, mn := range pc.ModelOrder {
			t := config.Target{Provider: pc, Model: pc.Models[mn]}
			if byName[mn] == nil {
				bare = append(bare, mn)
			}
			byName[mn] = append(byName[mn], t)
			s.groups[t.String()] = chain(t.String(), []config.Target{t})
		}
	}
	for _, mn := range bare {
		s.groups[mn] = chain(mn, byName[mn])
	}
	for _, gn := range cfg.GroupOrder {
		s.groups[gn] = chain(gn, cfg.Models[gn].Chain)
	}
	for _, r := range cfg.Routes {
		g := s.groups[r.Group.Name]
		if r.Model == "" {
			g = chain(r.Name, r.Group.Chain)
		}
		s.routes = append(s.routes, &route{cfg: r, group: g})
		s.uses = s.uses.Or(r.Uses)
	}
	st.m = keep

	for _, k := range cfg.Auth.Keys {
		s.keys[k.Hash] = k
	}
	listed := append(append([]string(nil), cfg.GroupOrder...), bare...)
	owner := func(name string) string {
		if cfg.Models[name] != nil {
			return "gateway"
		}
		return byName[name][0].Provider.Name
	}
	s.modelsAll = modelList(listed, nil, owner, cfg.LoadedAt.Unix())
	for _, k := range cfg.Auth.Keys {
		if k.Allowed != nil {
			s.modelsByKey[k] = modelList(listed, k.Allowed, owner, cfg.LoadedAt.Unix())
		}
	}
	s.targetsJSON, _ = json.Marshal(map[string][]string{"targets": append([]string{}, cfg.ProviderOrder...)})
	return s, nil
}

type modelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// modelList renders an OpenAI model list of the names allowed lets
// through (nil: all).
func modelList(names []string, allowed map[string]bool, owner func(string) string, created int64) []byte {
	list := struct {
		Object string       `json:"object"`
		Data   []modelEntry `json:"data"`
	}{Object: "list", Data: []modelEntry{}}
	for _, n := range names {
		if allowed == nil || allowed[n] {
			list.Data = append(list.Data, modelEntry{ID: n, Object: "model", Created: created, OwnedBy: owner(n)})
		}
	}
	b, err := json.Marshal(list)
	if err != nil {
		panic(fmt.Sprintf("encoding model list: %v", err))
	}
	return b
}
