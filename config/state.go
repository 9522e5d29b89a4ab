package config

import (
	"net/url"
	"strings"
	"time"
)

// State says where the state that replicas of the gateway share lives:
// rate windows, gateway-key limits, cooldowns, breakers and sticky
// sessions. memory keeps it in this process; redis shares it.
type State struct {
	Backend string `yaml:"backend"`
	Redis   Redis  `yaml:"redis"`
}

// Redis is the shared state backend's server and how to behave when it
// fails.
type Redis struct {
	// URL is redis://[user:password@]host:port/db (rediss:// for TLS). It
	// may hold a password, so it is a Secret: a ${ENV} or file: reference,
	// or a literal URL without a password.
	URL Secret `yaml:"url"`
	// Prefix starts every key the gateway writes, so several gateways can
	// share one Redis.
	Prefix string `yaml:"prefix"`
	// Timeout bounds one round trip; past it the call counts as failed.
	Timeout Duration `yaml:"timeout"`
	// OnError is what a replica does while Redis fails: local (count on
	// its own) or closed (refuse with 503).
	OnError string `yaml:"on_error"`
}

func (s *State) defaults() {
	if s.Backend == "" {
		s.Backend = "memory"
	}
	if s.Redis.Prefix == "" {
		s.Redis.Prefix = "gw:"
	}
	if s.Redis.Timeout == 0 {
		// A local or same-zone Redis answers in well under a millisecond;
		// 50ms rides out a GC pause or a busy moment, and bounds what a
		// sick Redis adds to a request before the replica counts alone.
		s.Redis.Timeout = Duration(50 * time.Millisecond)
	}
	if s.Redis.OnError == "" {
		s.Redis.OnError = "local"
	}
}

// maxStateTimeout bounds state.redis.timeout: a decision waits for it on
// the request path.
const maxStateTimeout = 5 * time.Second

func (p *parser) validateState(c *Config) {
	s := &c.State
	switch s.Backend {
	case "memory":
		return
	case "redis":
	default:
		p.errorf("state.backend", "unknown backend %q; one of: memory, redis", s.Backend)
		return
	}
	r := &s.Redis
	if r.OnError != "local" && r.OnError != "closed" {
		p.errorf("state.redis.on_error", "unknown mode %q; one of: local, closed", r.OnError)
	}
	if r.Timeout <= 0 || r.Timeout.D() > maxStateTimeout {
		p.errorf("state.redis.timeout", "must be between 1ms and %s, got %s", maxStateTimeout, r.Timeout.D())
	}
	if strings.ContainsAny(r.Prefix, " \t\r\n") {
		p.errorf("state.redis.prefix", "must not hold white space")
	}
	if err := p.resolveURL(&r.URL); err != "" {
		p.errorf("state.redis.url", "%s", err)
	}
}

// resolveURL resolves the Redis URL: a reference, or a literal URL that
// holds no password. The problem it returns never quotes the value.
func (p *parser) resolveURL(s *Secret) string {
	ref := strings.TrimSpace(s.ref)
	literal := false
	for _, scheme := range []string{"redis://", "rediss://", "unix://"} {
		literal = literal || strings.HasPrefix(ref, scheme)
	}
	if ref == "" {
		return "is missing: give redis://host:6379/0, or a ${ENV_VAR} or file: reference to one"
	}
	if literal {
		s.value = &ref
	} else if err := p.resolve(s, false); err != nil {
		return refProblem(err)
	}
	if p.opt.SkipSecrets && s.value == nil {
		return ""
	}
	u, err := url.Parse(s.Reveal())
	switch {
	case err != nil:
		return "is not a URL"
	case u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix":
		return "want a redis://, rediss:// or unix:// URL"
	case u.Scheme != "unix" && u.Host == "":
		return "names no host"
	}
	if _, has := u.User.Password(); has && literal {
		return "holds a password: a password does not belong in the file; put the URL in an environment variable and write ${REDIS_URL}, or use a file: reference"
	}
	return ""
}
