package config

import (
	"slices"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/optimizer"
	exprparser "github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// Bounds of resolving routes per gateway key. Routes are resolved in file
// order; from the first that would cross a bound on, every route runs its
// generic Program for every key.
const (
	// maxKeyPrograms bounds the programs compiled for (route, key) pairs:
	// one per route and distinct values of the key fields it reads, so
	// a thousand keys of three teams cost three.
	maxKeyPrograms = 10000
	// maxKeyPairs bounds the (route, key) pairs resolved, a KeyMatch each.
	maxKeyPairs = 100000
)

// KeyMatch is a route's match expression resolved for one gateway key,
// or for none: what reads the key alone (key.name, key.metadata.*) was
// evaluated at load, so it answers as Program would with the key in the
// request's KeyEnv.
type KeyMatch struct {
	// Program is what is left to run per request; nil when the key alone
	// decides, and Match is the answer.
	Program *vm.Program
	Match   bool
	// Direct, when set, answers as Program does, without a VM: what is
	// left only compares request fields with literals (see direct).
	Direct func(*RequestEnv) bool
}

// resolveMatches fills every key's Matches and NoKeyMatches, within the
// bounds above.
func (c *Config) resolveMatches() {
	envs := []KeyEnv{{}}
	for _, k := range c.Auth.Keys {
		envs = append(envs, KeyEnv{Name: k.Name, Metadata: k.Metadata})
	}
	out := make([][]KeyMatch, len(envs))
	programs, pairs := 0, 0
	for _, r := range c.Routes {
		if pairs += len(envs); pairs > maxKeyPairs {
			break
		}
		ms, n := resolveRoute(r, envs, maxKeyPrograms-programs)
		if ms == nil {
			break
		}
		programs += n
		for i := range envs {
			out[i] = append(out[i], ms[i])
		}
	}
	c.NoKeyMatches = out[0]
	for i, k := range c.Auth.Keys {
		k.Matches = out[i+1]
	}
}

// resolveRoute resolves r for each of envs and says how many programs
// that compiled; nil when it would take more than budget.
func resolveRoute(r *Route, envs []KeyEnv, budget int) ([]KeyMatch, int) {
	ms := make([]KeyMatch, len(envs))
	cfg := matchConfig()
	tree, err := matchTree(r.Match, cfg)
	var project func(KeyEnv) string
	if err == nil {
		project = keyProjection(tree.Node)
	}
	if project == nil {
		// The key is read where it cannot be told apart from a variable
		// (let, $env): the generic program, for every key.
		for i := range ms {
			ms[i] = KeyMatch{Program: r.Program}
		}
		return ms, 0
	}
	// Keys alike in what the expression reads share one program.
	seen := map[string]int{}
	var firsts []int
	group := make([]int, len(envs))
	for i, env := range envs {
		p := project(env)
		j, ok := seen[p]
		if !ok {
			j = len(firsts)
			seen[p] = j
			firsts = append(firsts, i)
		}
		group[i] = j
	}
	if len(firsts) > budget {
		return nil, 0
	}
	resolved := make([]KeyMatch, len(firsts))
	for j, i := range firsts {
		if j > 0 {
			// Folding rewrites the tree: each key gets a fresh one.
			tree, _ = matchTree(r.Match, cfg)
		}
		resolved[j] = foldKey(tree, cfg, envs[i], r.Program)
	}
	for i := range ms {
		ms[i] = resolved[group[i]]
	}
	return ms, len(firsts)
}

// foldKey resolves tree, the match expression as expr.Compile optimizes
// it, for env: the key becomes a constant, what then depends on
// constants alone is evaluated, and the rest compiles as expr.Compile
// would. generic stands in if that fails.
func foldKey(tree *exprparser.Tree, cfg *conf.Config, env KeyEnv, generic *vm.Program) KeyMatch {
	ast.Walk(&tree.Node, keyConstant{env})
	(&folder{cfg: cfg}).simplify(&tree.Node, true)
	if v, ok := constOf(tree.Node); ok {
		return KeyMatch{Match: v == true}
	}
	prog, err := compiler.Compile(tree, cfg)
	if err != nil {
		return KeyMatch{Program: generic}
	}
	return KeyMatch{Program: prog, Direct: direct(tree.Node)}
}

// matchConfig is the configuration expr.Compile makes of matchOptions.
func matchConfig() *conf.Config {
	var uses EnvUses
	cfg := conf.CreateNew()
	for _, op := range matchOptions(&uses) {
		op(cfg)
	}
	for name := range cfg.Disabled {
		delete(cfg.Builtins, name)
	}
	cfg.Check()
	return cfg
}

// matchTree is what expr.Compile does to src with cfg, a matchConfig, up
// to the bytecode: the tree a per-key program is cut from.
func matchTree(src string, cfg *conf.Config) (*exprparser.Tree, error) {
	tree, err := checker.ParseCheck(src, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Optimize {
		if err := optimizer.Optimize(&tree.Node, cfg); err != nil {
			return nil, err
		}
	}
	return tree, nil
}

// keyConstant puts a key's fields in place of the identifier `key`.
type keyConstant struct{ env KeyEnv }

func (k keyConstant) Visit(n *ast.Node) {
	if id, ok := (*n).(*ast.IdentifierNode); ok && id.Value == "key" {
		c := &ast.ConstantNode{Value: k.env}
		c.SetNature(*id.Nature())
		ast.Patch(n, c)
	}
}

// keyProjection returns what of a key the expression root reads, as a
// string equal for two keys exactly when the expression cannot tell them
// apart; nil when `key` may not be the request's key (a let, or $env).
// It walks as keyConstant does (ast.Walk): a `key` it does not see (in a
// node the optimizer keeps outside the walk) is not made a constant
// either, and reads the request's key.
func keyProjection(root ast.Node) func(KeyEnv) string {
	var r keyReads
	ast.Walk(&root, &r)
	switch {
	case r.opaque:
		return nil
	case r.refs == 0:
		return func(KeyEnv) string { return "" }
	case r.refs > len(r.static):
		return wholeKey
	}
	// Only key.name and key.metadata.X, and a missing X reads as "".
	slices.Sort(r.static)
	paths := slices.Compact(r.static)
	return func(k KeyEnv) string {
		var b strings.Builder
		for _, p := range paths {
			v := k.Name
			if meta, ok := strings.CutPrefix(p, "metadata."); ok {
				v = k.Metadata[meta]
			}
			b.WriteString(strconv.Quote(v))
		}
		return b.String()
	}
}

// wholeKey tells keys apart by everything, nil metadata from empty.
func wholeKey(k KeyEnv) string {
	var b strings.Builder
	b.WriteString(strconv.Quote(k.Name))
	if k.Metadata == nil {
		return b.String()
	}
	b.WriteString("{")
	names := make([]string, 0, len(k.Metadata))
	for n := range k.Metadata {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		b.WriteString(strconv.Quote(n) + ":" + strconv.Quote(k.Metadata[n]))
	}
	return b.String()
}

// keyReads counts the identifiers `key` of a tree and collects its plain
// reads, key.name and key.metadata.X (no `?.`, X a literal), one each.
type keyReads struct {
	refs   int
	static []string
	opaque bool
}

func (r *keyReads) Visit(n *ast.Node) {
	switch x := (*n).(type) {
	case *ast.IdentifierNode:
		switch x.Value {
		case "key":
			r.refs++
		case "$env":
			r.opaque = true
		}
	case *ast.VariableDeclaratorNode:
		r.opaque = true
	case *ast.MemberNode:
		if p, ok := plainMember(x); ok {
			if isKey(x.Node) && p == "name" {
				r.static = append(r.static, p)
			}
			if m, ok := x.Node.(*ast.MemberNode); ok && isKey(m.Node) {
				if q, ok := plainMember(m); ok && q == "metadata" {
					r.static = append(r.static, "metadata."+p)
				}
			}
		}
	}
}

// plainMember returns the property of a plain `.name` or `["name"]`.
func plainMember(m *ast.MemberNode) (string, bool) {
	s, ok := m.Property.(*ast.StringNode)
	if !ok || m.Optional || m.Method {
		return "", false
	}
	return s.Value, true
}

func isKey(n ast.Node) bool {
	id, ok := n.(*ast.IdentifierNode)
	return ok && id.Value == "key"
}
