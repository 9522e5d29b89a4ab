package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"
)

// Options says where a config's references point.
type Options struct {
	// LookupEnv resolves `${NAME}`; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// Dir is the base of relative `file:` paths; Load sets it to the
	// config file's directory.
	Dir string
	// SkipSecrets checks the form of key references without reading
	// them, for validating a file where its secrets are not (a GitOps
	// repo's CI). Optional providers are then kept whole.
	SkipSecrets bool
	// Listen, when set, replaces the file's listen address (the -listen
	// flag, GATEWAY_LISTEN), and is held to the same auth rule.
	Listen string
}

// Error is one problem in a config file, located by its YAML path and line.
type Error struct {
	Path string
	Line int
	Msg  string

	// unknownField marks a field the strict decode did not know.
	unknownField bool
}

func (e *Error) Error() string {
	s := e.Msg
	if e.Path != "" {
		s = e.Path + ": " + s
	}
	if e.Line > 0 {
		s += " (line " + strconv.Itoa(e.Line) + ")"
	}
	return s
}

// Errors is every problem found in one file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// Load reads and parses the config file at path.
func Load(path string, opt Options) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if opt.Dir == "" {
		opt.Dir = filepath.Dir(path)
	}
	return Parse(data, opt)
}

// Parse decodes, validates and compiles a config. On failure the error is
// an Errors listing every problem found.
func Parse(data []byte, opt Options) (*Config, error) {
	cfg, _, err := parse(data, opt)
	return cfg, err
}

// parse is Parse that also says what the key references resolved to,
// which a reload needs of a rejected file too.
func parse(data []byte, opt Options) (*Config, resolved, error) {
	if opt.LookupEnv == nil {
		opt.LookupEnv = os.LookupEnv
	}
	p := &parser{opt: &opt, lines: map[string]int{}, dropped: map[string]*Provider{}, secrets: sha256.New()}
	cfg, err := p.parse(data)
	p.secrets.Sum(p.resolved.digest[:0])
	if err != nil {
		return nil, p.resolved, err
	}
	cfg.resolved = p.resolved
	return cfg, p.resolved, nil
}

func (p *parser) parse(data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{syntaxError(err, data)}
	}
	if len(root.Content) == 0 {
		return nil, Errors{{Msg: "the file is empty"}}
	}
	if root.Content[0].Kind != yaml.MappingNode {
		return nil, Errors{{Line: root.Content[0].Line, Msg: "the file must be a mapping of settings"}}
	}
	p.root = root.Content[0]
	p.index(p.root, "")

	cfg := &Config{}
	cfg.preset()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, Errors{syntaxError(err, data)}
		}
		// An unknown field leaves every known value decoded, so the rest
		// is validated too and reported with it. A value of the wrong type
		// is left out, and what refers to it would fail for no real reason:
		// those errors stop here.
		decoded := true
		for _, msg := range te.Errors {
			e := p.typeError(msg)
			decoded = decoded && e.unknownField
			p.errs = append(p.errs, e)
		}
		if !decoded {
			return nil, p.sorted()
		}
	}
	sum := sha256.Sum256(data)
	cfg.Checksum = hex.EncodeToString(sum[:])
	cfg.LoadedAt = time.Now()
	if p.opt.Listen != "" {
		cfg.Listen = p.opt.Listen
	}
	cfg.defaults()
	p.validate(cfg)
	if len(p.errs) > 0 {
		return nil, p.sorted()
	}
	cfg.resolveMatches()
	return cfg, nil
}

type parser struct {
	opt   *Options
	root  *yaml.Node
	lines map[string]int // YAML path -> line
	keys  []keyAt        // every mapping key, for locating decoder errors
	nodes []nodeAt       // every value and list item, outermost first
	errs  Errors
	// dropped holds the optional providers left out for unset keys.
	dropped map[string]*Provider
	// secrets hashes the key references as they resolve, into resolved.
	secrets  hash.Hash
	resolved resolved
	// master is the master key, read at the first `enc:` value.
	master struct {
		read bool
		key  *MasterKey
		err  error
	}
	// encSkipped counts the `enc:` values left closed for want of a
	// master key, validating without secrets.
	encSkipped int
}

type keyAt struct {
	path, key string
	line      int
}

type nodeAt struct {
	path string
	n    *yaml.Node
}

func (p *parser) index(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			kp := k.Value
			if path != "" {
				kp = path + "." + k.Value
			}
			p.lines[kp] = k.Line
			p.keys = append(p.keys, keyAt{kp, k.Value, k.Line})
			p.nodes = append(p.nodes, nodeAt{kp, n.Content[i+1]})
			p.index(n.Content[i+1], kp)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			ip := path + "[" + strconv.Itoa(i) + "]"
			p.lines[ip] = c.Line
			p.nodes = append(p.nodes, nodeAt{ip, c})
			p.index(c, ip)
		}
	}
}

// errorf records a problem at a YAML path. A setting that is missing has
// no line of its own; the nearest enclosing one is given instead.
func (p *parser) errorf(path, format string, args ...any) {
	line := 0
	for at := path; line == 0 && at != ""; at = parent(at) {
		line = p.lines[at]
	}
	p.errs = append(p.errs, &Error{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) sorted() Errors {
	slices.SortStableFunc(p.errs, func(a, b *Error) int { return a.Line - b.Line })
	return p.errs
}

var (
	lineMsg       = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownField  = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	duplicateKey  = regexp.MustCompile(`^mapping key (".*") already defined at line \d+$`)
	cannotDecode  = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (.+)$")
	friendlyTypes = map[string]string{
		"int": "a whole number", "bool": "true or false", "string": "a string",
		"time.Time": "a time such as 2027-01-01T00:00:00Z", "[]string": "a list",
		"[]config.Secret": "a list of key references", "map[string]string": "a mapping",
	}
)

// typeError turns one of yaml.v3's decoder messages into a located Error.
func (p *parser) typeError(msg string) *Error {
	m := lineMsg.FindStringSubmatch(msg)
	if m == nil {
		return &Error{Msg: msg}
	}
	line, _ := strconv.Atoi(m[1])
	msg = m[2]
	if f := unknownField.FindStringSubmatch(msg); f != nil {
		e := &Error{Line: line, Msg: fmt.Sprintf("unknown field %q", f[1]), unknownField: true}
		for _, k := range p.keys {
			if k.line == line && k.key == f[1] {
				e.Path = parent(k.path)
				break
			}
		}
		return e
	}
	if d := duplicateKey.FindStringSubmatch(msg); d != nil {
		key, _ := strconv.Unquote(d[1])
		for _, k := range p.keys {
			if k.line == line && k.key == key {
				return &Error{Path: parent(k.path), Line: line, Msg: msg}
			}
		}
	}
	// yaml.v3 names only the line of the value at fault; of the values on
	// that line, the first (outermost) one the message fits is it.
	fits := func(n *yaml.Node) bool {
		return n.Kind == yaml.ScalarNode && strings.Contains(msg, strconv.Quote(n.Value))
	}
	if c := cannotDecode.FindStringSubmatch(msg); c != nil {
		want := friendlyTypes[c[3]]
		switch {
		case want != "":
		case strings.HasPrefix(c[3], "[]"):
			want = "a list"
		case strings.HasPrefix(c[3], "map[") || strings.HasPrefix(c[3], "config."):
			want = "a mapping"
		default:
			want = c[3]
		}
		msg = fmt.Sprintf("want %s, got %q", want, c[2])
		// Longer values come truncated to 7 characters and "...".
		short := strings.TrimSuffix(c[2], "...")
		fits = func(n *yaml.Node) bool {
			return n.Kind == yaml.ScalarNode && (n.Value == c[2] || len(n.Value) > 10 && strings.HasPrefix(n.Value, short))
		}
		if c[1] == "map" || c[1] == "seq" {
			msg = fmt.Sprintf("want %s, got a %s", want, map[string]string{"map": "mapping", "seq": "list"}[c[1]])
			kind := map[string]yaml.Kind{"map": yaml.MappingNode, "seq": yaml.SequenceNode}[c[1]]
			fits = func(n *yaml.Node) bool { return n.Kind == kind }
		}
	} else if strings.HasSuffix(msg, "got a list") {
		fits = func(n *yaml.Node) bool { return n.Kind == yaml.SequenceNode }
	} else if strings.HasSuffix(msg, "got a mapping") {
		fits = func(n *yaml.Node) bool { return n.Kind == yaml.MappingNode }
	}
	for _, a := range p.nodes {
		if a.n.Line == line && fits(a.n) {
			return &Error{Path: a.path, Line: line, Msg: msg}
		}
	}
	// The value sits on the line of its key, or on its own line in a list.
	path := ""
	for _, k := range p.keys {
		if k.line == line {
			path = k.path
		}
	}
	if path == "" {
		for ip, l := range p.lines {
			if l == line && (path == "" || len(ip) > len(path)) {
				path = ip
			}
		}
	}
	return &Error{Path: path, Line: line, Msg: msg}
}

func parent(path string) string {
	if i := strings.LastIndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return ""
}

var (
	yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	// parserProblem matches the errors of yaml.v3's parser (not its
	// scanner), whose line numbers are counted from 0.
	parserProblem = regexp.MustCompile(`^(did not find expected (',' or '[]}]'|'-' indicator|<document start>|<stream-start>|key|node content)|found (duplicate %(TAG|YAML) directive|incompatible YAML document|undefined tag handle))$`)
)

func syntaxError(err error, data []byte) *Error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		lines := bytes.Split(data, []byte("\n"))
		if parserProblem.MatchString(m[2]) {
			line++
			// At the end of the file, name the last line that holds something.
			for line > 1 && (line > len(lines) || len(bytes.TrimSpace(lines[line-1])) == 0) {
				line--
			}
		}
		e := &Error{Line: line, Msg: "invalid YAML: " + m[2]}
		// ${...} in a [flow, list] is YAML's flow-mapping syntax, not text.
		// The line named is where the list starts; it may go on below.
		for l := line - 1; l <= line && l < len(lines); l++ {
			if l >= 0 && bytes.Contains(lines[l], []byte("${")) && bytes.Contains(lines[l], []byte("[")) {
				e.Msg += `; inside [ ] quote references: ["${KEY_1}", "${KEY_2}"]`
				break
			}
		}
		return e
	}
	return &Error{Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// mapKeys returns the keys of the mapping at path, in file order.
func (p *parser) mapKeys(path ...string) []string {
	n := p.root
	for _, seg := range path {
		if n != nil && n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		var next *yaml.Node
		for i := 0; n != nil && n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == seg {
				next = n.Content[i+1]
			}
		}
		n = next
	}
	if n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	keys := make([]string, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		keys = append(keys, n.Content[i].Value)
	}
	return keys
}

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
