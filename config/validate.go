package config

// This file checks a decoded config and compiles what the request path
// needs from it; load.go decodes it and locates every error.

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"
)

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@-]*$`)

func (p *parser) validate(c *Config) {
	p.validateProviders(c)
	p.validateGroups(c)
	p.validateRoutes(c)
	p.validateAuth(c)
	p.validateState(c)
	if c.Failover.MaxAttempts < 1 {
		p.errorf("failover.max_attempts", "must be at least 1, got %d", c.Failover.MaxAttempts)
	}
	if c.CircuitBreaker.Failures < 1 {
		p.errorf("circuit_breaker.failures", "must be at least 1, got %d", c.CircuitBreaker.Failures)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		p.errorf("log.level", "unknown level %q; one of: debug, info, warn, error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		p.errorf("log.format", "unknown format %q; one of: text, json", c.Log.Format)
	}
	if c.MaxBody < 1024 {
		p.errorf("max_body", "must be at least 1KiB, got %d bytes", c.MaxBody)
	}
	if c.ClientWriteTimeout <= 0 {
		p.errorf("client_write_timeout", "must be positive, got %s", c.ClientWriteTimeout.D())
	}
	if p.encSkipped > 0 {
		c.Warnings = append(c.Warnings, fmt.Sprintf("%d enc: key references checked for form only: no master key to decrypt them (set %s or %s_FILE)",
			p.encSkipped, MasterKeyEnv, MasterKeyEnv))
	}
	if hasControl(c.Region) {
		p.errorf("region", "must not hold control characters (tab, newline, ...)")
	}
	p.validateCORS(c.CORS)
}

// hasControl reports whether s holds a control character: a name that
// ends up in a header, a log line or a metrics label must not.
func hasControl(s string) bool {
	return strings.ContainsFunc(s, unicode.IsControl)
}

// headerName matches an HTTP header name (RFC 9110's token).
var headerName = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")

func (p *parser) validateCORS(c *CORS) {
	if c == nil {
		return
	}
	if len(c.Origins) == 0 {
		p.errorf("cors.origins", "is empty; list the origins allowed, such as https://app.example.com, or \"*\"")
	}
	for i, o := range c.Origins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" ||
			u.RawQuery != "" || u.Fragment != "" || u.User != nil || o != strings.ToLower(o) {
			p.errorf(fmt.Sprintf("cors.origins[%d]", i), "want an origin as a browser sends it, scheme://host[:port] "+
				"in lower case with no path (not even /), or \"*\"; got %q", o)
		}
	}
	for i, h := range c.Headers {
		if !headerName.MatchString(h) {
			p.errorf(fmt.Sprintf("cors.headers[%d]", i), "invalid header name %q", h)
		}
	}
}

func (p *parser) validateProviders(c *Config) {
	if len(c.Providers) == 0 {
		p.errorf("providers", "at least one provider is needed")
	}
	for _, name := range p.mapKeys("providers") {
		pv := c.Providers[name]
		path := "providers." + name
		if pv == nil {
			p.errorf(path, "is empty; a provider needs at least a type and models")
			delete(c.Providers, name)
			continue
		}
		pv.Name = name
		if !namePattern.MatchString(name) {
			p.errorf(path, "provider name %q may hold only letters, digits and ._:@- (no /)", name)
		}
		pr := LookupPreset(pv.Type)
		if pr == nil && !slices.Contains(Protocols, pv.Type) {
			if pv.Type == "" {
				p.errorf(path, "type is missing; %s", typeChoices())
			} else {
				p.errorf(path+".type", "unknown type %q; %s", pv.Type, typeChoices())
			}
		}
		if pr != nil {
			p.applyPreset(pv, pr)
		}
		p.baseURL(pv, pr, path)
		pv.defaults()
		// With its type unknown, the provider has no base_url to fall back
		// on; the type is the error to report.
		if pv.Protocol != "mock" && slices.Contains(Protocols, pv.Protocol) {
			u, err := url.Parse(pv.BaseURL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				p.errorf(path+".base_url", "must be an http:// or https:// URL, got %q", pv.BaseURL)
			}
			pv.BaseURL = strings.TrimRight(pv.BaseURL, "/")
		}
		// An optional provider keeps the keys that resolve and is left out
		// only when none do.
		kept := pv.Keys[:0]
		unset := 0
		for i := range pv.Keys {
			kp := fmt.Sprintf("%s.keys[%d]", path, i)
			k := pv.Keys[i]
			if err := p.resolve(&k, false); err != nil {
				if pv.Optional && errors.Is(err, errUnset) {
					unset++
					c.Warnings = append(c.Warnings, fmt.Sprintf("%s: skipped because %s (the provider is optional)", kp, refProblem(err)))
					continue
				}
				p.errorf(kp, "%s", refProblem(err))
			}
			kept = append(kept, k)
		}
		left := unset > 0 && len(kept) == 0
		if left {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s: left out: none of its keys is set (the provider is optional)", path))
		}
		pv.Keys = kept
		for k, v := range pv.Headers {
			if !namePattern.MatchString(k) || strings.ContainsAny(v, "\r\n") {
				p.errorf(path+".headers."+k, "invalid header")
			}
		}
		p.limits(path+".limits", pv.Limits)
		if pv.DefaultMaxTokens < 0 {
			p.errorf(path+".default_max_tokens", "must not be negative, got %d", pv.DefaultMaxTokens)
		}
		switch {
		case pv.Responses != "" && pv.Responses != "translate" && pv.Responses != "native":
			p.errorf(path+".responses", "want translate or native, got %q", pv.Responses)
		case pv.Responses == "native" && pv.Protocol != "openai":
			p.errorf(path+".responses", "native needs an OpenAI-compatible provider; %s is translated", pv.Protocol)
		}
		if pv.ReserveMaxTokens < 0 {
			p.errorf(path+".reserve_max_tokens", "must not be negative, got %d", pv.ReserveMaxTokens)
		}
		if pv.MaxResponseBody < 1024 {
			p.errorf(path+".max_response_body", "must be at least 1KiB, got %d bytes", pv.MaxResponseBody)
		}
		if len(pv.Models) == 0 {
			p.errorf(path, "models is empty; list the models this provider serves")
		}
		pv.ModelOrder = p.mapKeys("providers", name, "models")
		for _, mn := range pv.ModelOrder {
			mp := path + ".models." + mn
			m := pv.Models[mn]
			if m == nil {
				m = &ProviderModel{}
				pv.Models[mn] = m
			}
			m.Name = mn
			if !namePattern.MatchString(mn) {
				p.errorf(mp, "model name %q may hold only letters, digits and ._:@- (no /)", mn)
			}
			if m.Upstream == "" {
				m.Upstream = mn
			}
			for _, op := range m.Operations {
				if !slices.Contains(Operations, op) {
					p.errorf(mp+".operations", "unknown operation %q; use %s", op, strings.Join(Operations, ", "))
				}
			}
			m.Serves = serves(m.Operations, pv.Protocol)
			p.presetModelLimits(pv, pr, m)
			p.limits(mp+".limits", m.Limits)
		}
		if pv.Health == nil {
			pv.Health = &Health{}
		}
		pv.Health.defaults(*c.Health.Interval)
		p.probe(pv, path)
		if left {
			p.dropped[name] = pv
			delete(c.Providers, name)
			continue
		}
		c.ProviderOrder = append(c.ProviderOrder, name)
	}
}

// probe resolves how pv's keys are probed: its probe mode, defaulted by
// protocol, and the model a chat probe asks.
func (p *parser) probe(pv *Provider, path string) {
	for _, mn := range pv.ModelOrder {
		if m := pv.Models[mn]; m.Serves["chat"] {
			pv.ProbeModel = m
			break
		}
	}
	if pv.ProbeModel == nil && len(pv.ModelOrder) > 0 {
		pv.ProbeModel = pv.Models[pv.ModelOrder[0]]
	}
	// Every protocol but the built-in mock lists its models.
	lists := pv.Protocol != "mock"
	switch pv.Probe {
	case "":
		pv.Probe = ProbeChat
		if lists {
			pv.Probe = ProbeModels
		}
	case ProbeModels:
		if !lists {
			p.errorf(path+".probe", "the mock protocol has no model list to probe; use chat")
		}
	case ProbeChat:
		if pv.ProbeModel != nil && !pv.ProbeModel.Serves["chat"] {
			p.errorf(path+".probe", "chat needs a model that serves chat; none of this provider's does")
		}
	default:
		p.errorf(path+".probe", "unknown probe %q; one of: models, chat", pv.Probe)
	}
}

// refProblem words a secret resolution error without its sentinel.
func refProblem(err error) string {
	return strings.TrimSuffix(err.Error(), ": "+errUnset.Error())
}

func (p *parser) limits(path string, l Limits) {
	for _, f := range []struct {
		name string
		v    int
	}{{"rpm", l.RPM}, {"rpd", l.RPD}, {"tpm", l.TPM}, {"tpd", l.TPD}} {
		if f.v < 0 {
			p.errorf(path+"."+f.name, "must not be negative, got %d", f.v)
		}
	}
}

// chain resolves target references. Targets of optional providers that were
// left out are dropped; anything else unknown is an error.
func (p *parser) chain(c *Config, path string, refs []TargetRef) []Target {
	if len(refs) == 0 {
		p.errorf(path, "targets is empty; list provider/model references")
	}
	out := make([]Target, 0, len(refs))
	for i, tr := range refs {
		ip := fmt.Sprintf("%s[%d]", path, i)
		ref := tr.Ref
		prov, model, ok := strings.Cut(ref, "/")
		if !ok || prov == "" || model == "" {
			p.errorf(ip, "target %q must be provider/model", ref)
			continue
		}
		pv := c.Providers[prov]
		if pv == nil {
			if p.dropped[prov] != nil {
				continue
			}
			p.errorf(ip, "target %q names unknown provider %q", ref, prov)
			continue
		}
		m := pv.Models[model]
		if m == nil {
			p.errorf(ip, "target %q: provider %q has no model %q", ref, prov, model)
			continue
		}
		if slices.ContainsFunc(out, func(t Target) bool { return t.Provider == pv && t.Model == m }) {
			p.errorf(ip, "target %q is listed twice", ref)
			continue
		}
		out = append(out, Target{Provider: pv, Model: m, Weight: tr.Weight, Limits: Overlay(pv.Limits, m.Limits)})
	}
	return out
}

// Overlay returns base with every non-zero field of over laid on it: a
// model's limits over its provider's.
func Overlay(base, over Limits) Limits {
	pick := func(b, o int) int {
		if o != 0 {
			return o
		}
		return b
	}
	return Limits{RPM: pick(base.RPM, over.RPM), RPD: pick(base.RPD, over.RPD),
		TPM: pick(base.TPM, over.TPM), TPD: pick(base.TPD, over.TPD)}
}

func (p *parser) strategy(path string, s *string) {
	if *s == "" {
		*s = "priority"
	}
	if !slices.Contains(Strategies, *s) {
		p.errorf(path, "unknown strategy %q; one of: %s", *s, strings.Join(Strategies, ", "))
	}
}

func (p *parser) validateGroups(c *Config) {
	c.GroupOrder = p.mapKeys("models")
	for _, name := range c.GroupOrder {
		g := c.Models[name]
		path := "models." + name
		if g == nil {
			p.errorf(path, "is empty; a model group needs targets")
			delete(c.Models, name)
			continue
		}
		g.Name = name
		if !namePattern.MatchString(name) {
			p.errorf(path, "model name %q may hold only letters, digits and ._:@- (no /)", name)
		}
		p.strategy(path+".strategy", &g.Strategy)
		g.Chain = p.chain(c, path+".targets", g.Targets)
		if len(g.Chain) == 0 && len(g.Targets) > 0 {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s: every target's provider was left out; requests for %q will find no provider", path, name))
		}
	}
}

func (p *parser) validateRoutes(c *Config) {
	seen := map[string]bool{}
	for i, r := range c.Routes {
		path := fmt.Sprintf("routes[%d]", i)
		if r == nil {
			p.errorf(path, "is empty")
			continue
		}
		if r.Name == "" {
			p.errorf(path, "name is missing")
		} else if hasControl(r.Name) {
			// It is sent as x-gateway-route and written as a metrics label.
			p.errorf(path+".name", "route name %q must not hold control characters (tab, newline, ...)", r.Name)
		} else if seen[r.Name] {
			p.errorf(path+".name", "route name %q is used twice", r.Name)
		}
		seen[r.Name] = true
		if r.Match == "" {
			p.errorf(path, "match is missing")
		} else {
			prog, uses, err := compileMatch(r.Match)
			if err != nil {
				p.errorf(path+".match", "%s", strings.ReplaceAll(err.Error(), "\n", " "))
			}
			r.Program, r.Uses = prog, uses
		}
		switch {
		case r.Model != "" && len(r.Targets) > 0:
			p.errorf(path, "give either model or targets, not both")
		case r.Model != "":
			if r.Strategy != "" {
				p.errorf(path+".strategy", "strategy belongs to the model group %q, not to a route that names it", r.Model)
			}
			r.Group = c.Models[r.Model]
			if r.Group == nil {
				p.errorf(path+".model", "unknown model group %q", r.Model)
			}
		case len(r.Targets) > 0:
			p.strategy(path+".strategy", &r.Strategy)
			r.Group = &Group{Name: r.Name, Strategy: r.Strategy, Targets: r.Targets,
				Chain: p.chain(c, path+".targets", r.Targets)}
		default:
			p.errorf(path, "give a model group (model) or a chain (targets)")
		}
	}
}

func (p *parser) validateAuth(c *Config) {
	if c.Auth.DefaultRPM < 0 {
		p.errorf("auth.default_rpm", "must not be negative, got %d", c.Auth.DefaultRPM)
	}
	if c.Auth.AnonymousRPM < 0 {
		p.errorf("auth.anonymous_rpm", "must not be negative, got %d", c.Auth.AnonymousRPM)
	}
	p.validateListen(c)
	names := map[string]bool{}
	hashes := map[[32]byte]string{}
	for i, k := range c.Auth.Keys {
		path := fmt.Sprintf("auth.keys[%d]", i)
		if k == nil {
			p.errorf(path, "is empty")
			continue
		}
		switch {
		case k.Name == "":
			p.errorf(path, "name is missing")
		case names[k.Name]:
			p.errorf(path+".name", "key name %q is used twice", k.Name)
		}
		names[k.Name] = true
		for _, f := range []struct {
			name string
			v    int
		}{{"rpm", k.RPM}, {"tpm", k.TPM}, {"rpd", k.RPD}, {"tpd", k.TPD}} {
			if f.v < 0 {
				p.errorf(path+"."+f.name, "must not be negative, got %d", f.v)
			}
		}
		if k.RPM == 0 {
			k.RPM = c.Auth.DefaultRPM
		}
		if err := p.resolve(&k.Key, true); err != nil {
			p.errorf(path+".key", "%s", refProblem(err))
		} else if k.Key.value != nil || k.Key.hash != nil {
			if k.Key.hash != nil {
				copy(k.Hash[:], k.Key.hash)
			} else {
				k.Hash = sha256.Sum256([]byte(k.Key.Reveal()))
			}
			if other, dup := hashes[k.Hash]; dup {
				p.errorf(path+".key", "same key as %q", other)
			}
			hashes[k.Hash] = k.Name
		}
		if k.Models != nil {
			k.Allowed = make(map[string]bool, len(k.Models))
			for j, m := range k.Models {
				if !knownModel(c.Providers, c.Models, m) && !knownModel(p.dropped, nil, m) {
					p.errorf(fmt.Sprintf("%s.models[%d]", path, j), "unknown model %q", m)
				}
				k.Allowed[m] = true
			}
		}
	}
}

// validateListen refuses auth off on an address other machines can reach,
// unless the file says auth.anonymous: a gateway without keys spends its
// provider keys for whoever reaches the port.
func (p *parser) validateListen(c *Config) {
	fail := p.errorf
	if p.opt.Listen != "" {
		// The address is not the file's: no line of the file is to blame.
		fail = func(_ string, format string, args ...any) {
			p.errs = append(p.errs, &Error{Path: "listen (from -listen or GATEWAY_LISTEN)", Msg: fmt.Sprintf(format, args...)})
		}
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		fail("listen", "want host:port such as 127.0.0.1:8080, got %q", c.Listen)
		return
	}
	if len(c.Auth.Keys) > 0 {
		if c.Auth.Anonymous || c.Auth.AnonymousRPM > 0 {
			c.Warnings = append(c.Warnings, "auth.anonymous and auth.anonymous_rpm are ignored: gateway keys are set, so every request needs one")
		}
		return
	}
	if c.Auth.Anonymous || loopback(host) {
		return
	}
	fail("listen", "%q is reachable from other machines and auth is off (no auth.keys): "+
		"anyone who can reach the port can spend the provider keys; add gateway keys under auth.keys, "+
		"listen on 127.0.0.1, or set auth.anonymous: true to serve without keys on purpose", c.Listen)
}

// ListenOf returns the address the file at path asks to listen on, reading
// that one setting only: a health check must still find a gateway whose
// file has a bad edit, since the gateway goes on serving its last good one.
func ListenOf(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading config: %w", err)
	}
	var f struct {
		Listen string `yaml:"listen"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		return "", fmt.Errorf("reading listen from %s: %w", path, err)
	}
	if f.Listen == "" {
		return defaultListen, nil
	}
	return f.Listen, nil
}

// loopback reports whether a listen host accepts connections from this
// machine only: localhost, 127.0.0.0/8 or ::1. An empty host is every
// interface.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// knownModel reports whether name is a group, a provider model name or a
// provider/model reference.
func knownModel(providers map[string]*Provider, groups map[string]*Group, name string) bool {
	if groups[name] != nil {
		return true
	}
	if prov, model, ok := strings.Cut(name, "/"); ok {
		pv := providers[prov]
		return pv != nil && pv.Models[model] != nil
	}
	for _, pv := range providers {
		if pv.Models[name] != nil {
			return true
		}
	}
	return false
}
