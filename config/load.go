package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

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
