package config

import (
	"fmt"
	"strings"
	"testing"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/vm"
)

// keyMatchExprs are match expressions that read the key in every way the
// language allows, mixed with request fields that fail at run time.
var keyMatchExprs = []string{
	`key.metadata.team == "ml" && tools`,
	`tools && key.metadata.team == "ml"`,
	`key.name == "a"`,
	`key.name != "a" || stream`,
	`stream || key.name == "a"`,
	`key.metadata.missing == ""`,
	`key.metadata["team"] in ["ml", "ops"]`,
	`key.metadata.team not in ["ml"] and tokens > 10`,
	`"team" in key.metadata`,
	`"team" in key.metadata && tools`,
	`key.metadata?.team == "ml"`,
	`key.metadata?.team == nil || tools`,
	`key?.name == "a"`,
	`key.metadata[headers["x-team"]] == "ml"`,
	`headers["x-team"] == key.metadata.team`,
	`key.metadata.team in split(headers["x-teams"], ",")`,
	`any(split(headers["x-teams"], ","), {# == key.metadata.team})`,
	`!(int(headers["x-n"]) > 3 && key.metadata.team == "ops")`,
	`int(headers["x-n"]) > 3 || key.metadata.team == "ml"`,
	`!(int(headers["x-n"]) > 3 || key.metadata.team == "ml")`,
	`int(key.metadata.n) > 2`,
	`int(key.metadata.n) > 2 && tools`,
	`!(int(key.metadata.n) > 2) || tools`,
	`tools && int(key.metadata.n) > 2`,
	`len(key.metadata) > 1 && tokens > 100`,
	`key.metadata.team == "ml" ? tools : stream`,
	`(key.metadata.team == "ml" ? metadata.flag : true) == true`,
	`(key.metadata.team == "ml") == tools`,
	`metadata.tier == "gold" && key.metadata.team == "ml"`,
	`metadata.n > 2 && key.name == "a"`,
	`metadata.flag && key.name == "a"`,
	`metadata.flag || key.name == "a"`,
	`!(metadata.flag || key.name == "a")`,
	`!(metadata.flag && key.name == "b")`,
	`(metadata.flag && key.name == "b") == false`,
	`(metadata.flag || key.name != "b") != true`,
	`metadata.team.a == 1 || key.metadata.team == "ml"`,
	`metadata.team?.a == 1 && key.metadata.team == "ml"`,
	`(metadata.team ?? key.metadata.team) == "ml"`,
	`get(metadata, "tier") == key.metadata.tier`,
	`key.name matches "^a"`,
	`key.name startsWith "a" and model contains "gpt"`,
	`upper(key.metadata.team) == "ML" && operation == "chat"`,
	`model == "gpt-4" || key.metadata.vip == "true"`,
	`key.metadata.quote == "a\"b"`,
	`key.metadata.a + key.metadata.b == "xy" || messages > 3`,
	`headers["x-n"] == string(len(key.metadata))`,
	`tokens % (len(key.metadata.team) - 2) == 0`,
	`[1, 2][len(key.name)] == 2 || tools`,
	`method == "POST" && path startsWith "/v1" && key.name in ["a", "b"]`,
	`messages > 2 and key.metadata.level >= "3"`,
	`stream ? key.metadata.team == "ml" : key.metadata.team == "ops"`,
	`not (key.metadata.team == "ml")`,
	`key.metadata.team == "ml" and false`,
	`key.name == key.name`,
	`true`,
	`tools`,
	`$env.key.name == "a" && tools`,
	`let k = key.name; k == "a" && tools`,
	`let n = int(headers["x-n"]); n > 1 || key.name == "a"`,
	`filter(split(headers["x-teams"], ","), # == key.metadata.team) != [] && !stream`,
	`key.metadata.team == "ml" && metadata.n > 2 || key.name == "b" && metadata.flag`,
	`!((key.name == "a" ? 1 : false) || tools)`,
	`!((key.name == "a" ? 1 : true) && tools)`,
	`((key.name == "a" ? "x" : false) || tools) == false`,
	`!(stream ? int(key.metadata.n) > 2 : tools)`,
	`(tools ? key.metadata.team : stream) == "ml"`,
	`!(stream ? tools : int(key.metadata.n) > 2)`,
	`!((key.name == "a" ? 1 : false) ? tools : stream)`,
	`int(key.metadata.n) > 2 ? tools : stream`,
	`!(tools && int(key.metadata.n) > 2)`,
	`!(tools || int(key.metadata.n) > 2)`,
	`100 < tokens && key.name != "a"`,
	`tokens >= 11 or messages <= 1`,
	`tokens == 11 || messages != 2 && not stream`,
	`11 > tokens || 2 == messages`,
	`model != "gpt-4" and path == "/v1/chat/completions" and method == "POST"`,
	`"responses" == operation || key.metadata.team == "ml" && headers["x-team"] != "ml"`,
	`headers["x-n"] == "5" || !stream`,
	`tokens == 11.0 || messages > 1.5`,
	`tokens > 10.5 && key.name == "a"`,
	`headers?.["x-n"] == "1"`,
	`"mla" in map(filter(split(headers["x-teams"], ","), # != ""), # + key.name)`,
	`"mla" in map(filter(split(headers["x-teams"], ","), # != key.metadata.team), # + key.name) || key.name == "b"`,
}

// keyMatchKeys are gateway keys with odd metadata; the first is no key.
var keyMatchKeys = []KeyEnv{
	{},
	{Name: "a"},
	{Name: "b", Metadata: map[string]string{}},
	{Name: "c", Metadata: map[string]string{"team": "ml"}},
	{Name: "ab", Metadata: map[string]string{"team": "ops", "n": "5", "level": "10"}},
	{Name: "a", Metadata: map[string]string{"team": "ml", "n": "abc", "quote": `a"b`, "vip": "true"}},
	{Name: "", Metadata: map[string]string{"": "", "team": "", "n": "-1", "tier": "gölD", "a": "x", "b": "y"}},
	{Name: "ünï\x00", Metadata: map[string]string{"team": "ml,ops", "n": "3.5", "level": "3", "tier": "gold"}},
}

// keyMatchRequests are request environments, the key left out: every
// combination of the fields the expressions read, with headers and
// metadata missing, of the wrong type, nested, nil.
func keyMatchRequests() []RequestEnv {
	headers := []map[string]string{
		nil,
		{"x-team": "team", "x-n": "5", "x-teams": "ml,ops"},
		{"x-n": "abc", "x-teams": ""},
		{"x-n": "1", "x-team": "ml"},
	}
	metadata := []map[string]any{
		nil,
		{"tier": "gold", "n": 3, "flag": true},
		{"flag": "yes", "n": "3", "team": map[string]any{"a": 1}},
		{"flag": false, "n": 3.5, "team": "ml", "tier": nil},
		{"team": []any{1}, "n": nil, "flag": nil},
		{"team": map[string]any{"a": 1.0}, "tier": "gölD"},
	}
	var out []RequestEnv
	for i, h := range headers {
		for j, m := range metadata {
			for _, tokens := range []int{0, 11, 101} {
				for _, b := range []int{0, 1, 2, 3} {
					r := RequestEnv{Headers: h, Metadata: m, Tokens: tokens, Tools: b&1 != 0, Stream: b&2 != 0,
						Messages: (i + j) % 5, Operation: "chat", Method: "POST", Path: "/v1/chat/completions"}
					if (i+j+b)%2 == 0 {
						r.Model, r.Operation, r.Path = "gpt-4", "responses", "/v1/responses"
					}
					out = append(out, r)
				}
			}
		}
	}
	return out
}

// matches is what the engine makes of a run: true, and nothing else, with
// no error, is a match.
func matches(t *testing.T, prog *vm.Program, env *RequestEnv) bool {
	t.Helper()
	out, err := expr.Run(prog, env)
	return err == nil && out == true
}

// TestKeyMatchesAsGeneric evaluates every expression three ways, over
// every key and request: compiled as before per-key resolution (on a
// pointer environment), the generic program with the key in the request,
// and the one resolved for the key. The answers must be the same.
func TestKeyMatchesAsGeneric(t *testing.T) {
	decided, direct, runs, matched := 0, 0, 0, 0
	requests := keyMatchRequests()
	for _, src := range keyMatchExprs {
		before, err := expr.Compile(src, expr.Env(&RequestEnv{}), expr.AsBool())
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		prog, _, err := compileMatch(src)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		ms, _ := resolveRoute(&Route{Match: src, Program: prog}, keyMatchKeys, maxKeyPrograms)
		for ki, key := range keyMatchKeys {
			m := ms[ki]
			if m.Program == nil {
				decided++
			}
			if m.Direct != nil {
				direct++
			}
			for ri, req := range requests {
				runs++
				req.Key = key
				want := matches(t, before, &req)
				if want {
					matched++
				}
				if got := matches(t, prog, &req); got != want {
					t.Errorf("%s, key %d %+v, request %d: generic says %v, before %v", src, ki, key, ri, got, want)
				}
				got := m.Match
				if m.Program != nil {
					got = matches(t, m.Program, &req)
				}
				if got != want {
					t.Errorf("%s, key %d %+v, request %d: resolved says %v, before %v", src, ki, key, ri, got, want)
				}
				if m.Direct != nil && m.Direct(&req) != want {
					t.Errorf("%s, key %d %+v, request %d: direct says %v, before %v", src, ki, key, ri, !want, want)
				}
			}
		}
	}
	t.Logf("%d expressions, %d keys, %d requests: %d runs agree, %d of them a match; of the (expression, key) pairs %d decided at load, %d read directly",
		len(keyMatchExprs), len(keyMatchKeys), len(requests), runs, matched, decided, direct)
}

// FuzzKeyMatch is TestKeyMatchesAsGeneric for any expression that
// compiles: resolving must never panic nor change an answer.
func FuzzKeyMatch(f *testing.F) {
	for _, src := range keyMatchExprs {
		f.Add(src)
	}
	requests := keyMatchRequests()
	f.Fuzz(func(t *testing.T, src string) {
		prog, _, err := compileMatch(src)
		if err != nil {
			return
		}
		ms, _ := resolveRoute(&Route{Match: src, Program: prog}, keyMatchKeys, maxKeyPrograms)
		for ki, key := range keyMatchKeys {
			for ri := 0; ri < len(requests); ri += 7 {
				req := requests[ri]
				req.Key = key
				want := matches(t, prog, &req)
				got := ms[ki].Match
				if ms[ki].Program != nil {
					got = matches(t, ms[ki].Program, &req)
				}
				if ms[ki].Direct != nil && ms[ki].Direct(&req) != want || got != want {
					t.Fatalf("%s, key %d, request %d: resolved %v (direct: %v), generic %v", src, ki, ri, got, ms[ki].Direct != nil, want)
				}
			}
		}
	})
}

// TestKeyMatchFolds pins what resolving buys: the key alone decides, or
// what is left reads no key field.
func TestKeyMatchFolds(t *testing.T) {
	ml, ops := KeyEnv{Name: "m", Metadata: map[string]string{"team": "ml"}}, KeyEnv{Name: "o", Metadata: map[string]string{"team": "ops"}}
	for _, c := range []struct {
		src   string
		key   KeyEnv
		left  string // the program's disassembly holds this; empty: decided
		match bool
	}{
		{`key.metadata.team == "ml" && tools`, ml, "tools", false},
		{`key.metadata.team == "ml" && tools`, ops, "", false},
		{`tools && key.metadata.team == "ml"`, ml, "tools", false},
		{`tools && key.metadata.team == "ml"`, ops, "", false},
		{`key.name in ["m", "x"] || tools`, ml, "", true},
		{`key.name in ["m", "x"] || tools`, ops, "tools", false},
		{`headers["x-team"] == key.metadata.team`, ops, "ops", false},
		{`upper(key.metadata.team) == "ML" ? stream : tokens > 10`, ml, "stream", false},
		{`int(key.metadata.team) > 1`, ml, "", false},
		{`!(metadata.flag && key.metadata.team == "ops")`, ml, "OpNot", false},
	} {
		prog, _, err := compileMatch(c.src)
		if err != nil {
			t.Fatal(err)
		}
		ms, n := resolveRoute(&Route{Match: c.src, Program: prog}, []KeyEnv{c.key}, 1)
		if n != 1 {
			t.Fatalf("%s: %d programs compiled, want 1", c.src, n)
		}
		m := ms[0]
		switch {
		case c.left == "" && m.Program != nil:
			t.Errorf("%s for %s: left to run:\n%s", c.src, c.key.Name, m.Program.Disassemble())
		case c.left == "" && m.Match != c.match:
			t.Errorf("%s for %s: decided %v, want %v", c.src, c.key.Name, m.Match, c.match)
		case c.left != "":
			if m.Program == nil {
				t.Fatalf("%s for %s: decided %v, want a program", c.src, c.key.Name, m.Match)
			}
			dis := m.Program.Disassemble()
			if !strings.Contains(dis, c.left) || strings.Contains(dis, "OpFetch") && !strings.Contains(c.src, "headers") && !strings.Contains(c.src, "metadata.flag") {
				t.Errorf("%s for %s: left to run, want %s and no fetch:\n%s", c.src, c.key.Name, c.left, dis)
			}
			if strings.Contains(dis, "key") {
				t.Errorf("%s for %s: the program still reads the key:\n%s", c.src, c.key.Name, dis)
			}
		}
	}
}

// TestKeyMatchNaiveFoldDiffers proves the table above can fail: putting
// the key's values in with expr.Patch and letting expr fold, as a first
// try would, answers differently where a request field fails.
func TestKeyMatchNaiveFoldDiffers(t *testing.T) {
	src := `!(metadata.flag && key.metadata.team == "ops")`
	key := KeyEnv{Metadata: map[string]string{"team": "ml"}}
	naive, err := expr.Compile(src, expr.Env(&RequestEnv{}), expr.AsBool(), expr.Patch(naiveKey{key}))
	if err != nil {
		t.Fatal(err)
	}
	generic, _, _ := compileMatch(src)
	req := RequestEnv{Key: key, Metadata: map[string]any{"flag": "yes"}}
	if matches(t, generic, &req) || !matches(t, naive, &req) {
		t.Fatalf("want the generic program to fail and expr's folding to match; generic %v, naive %v",
			matches(t, generic, &req), matches(t, naive, &req))
	}
	ms, _ := resolveRoute(&Route{Match: src, Program: generic}, []KeyEnv{key}, 1)
	if ms[0].Program == nil || matches(t, ms[0].Program, &req) {
		t.Fatalf("resolved: %+v, want a program that does not match", ms[0])
	}
}

type naiveKey struct{ env KeyEnv }

func (k naiveKey) Visit(n *ast.Node) {
	m, ok := (*n).(*ast.MemberNode)
	if !ok {
		return
	}
	if in, ok := m.Node.(*ast.MemberNode); ok && isKey(in.Node) {
		ast.Patch(n, &ast.StringNode{Value: k.env.Metadata[m.Property.(*ast.StringNode).Value]})
	}
}

// TestMatchTreeIsExprCompile pins matchTree to what expr.Compile does: the
// same bytecode, so a key that reads nothing gets today's program.
func TestMatchTreeIsExprCompile(t *testing.T) {
	for _, src := range keyMatchExprs {
		want, _, err := compileMatch(src)
		if err != nil {
			t.Fatal(err)
		}
		cfg := matchConfig()
		tree, err := matchTree(src, cfg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := compiler.Compile(tree, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got.Disassemble() != want.Disassemble() {
			t.Errorf("%s: matchTree compiles to\n%s\nexpr.Compile to\n%s", src, got.Disassemble(), want.Disassemble())
		}
	}
}

// TestKeyMatchBounds: keys alike share a program, and past the bounds the
// remaining routes run their generic program.
func TestKeyMatchBounds(t *testing.T) {
	route := func(src string) *Route {
		prog, _, err := compileMatch(src)
		if err != nil {
			t.Fatal(err)
		}
		return &Route{Match: src, Program: prog}
	}
	var keys []*Key
	for i := range 3000 {
		keys = append(keys, &Key{Name: fmt.Sprint("k", i), Metadata: map[string]string{"team": fmt.Sprint(i % 3)}})
	}
	c := &Config{Auth: Auth{Keys: keys}, Routes: []*Route{
		route(`key.metadata.team == "1" && tools`), // 3 programs, one per team
		route(`key.name == "k7" || stream`),        // 3001 programs
		route(`key.name + "x" == "k7x" || stream`), // 3001: 6005 so far
		route(`key.name + "y" == "k7y" || stream`), // 3001: 9006 so far
		route(`key.name + "z" == "k7z" || stream`), // 3001 more is too many
		route(`tools`),
	}}
	c.resolveMatches()
	if len(c.NoKeyMatches) != 4 || len(keys[0].Matches) != 4 {
		t.Fatalf("resolved %d routes without a key, %d for a key; want 4", len(c.NoKeyMatches), len(keys[0].Matches))
	}
	if keys[1].Matches[0].Program != keys[4].Matches[0].Program || keys[1].Matches[0].Program == keys[2].Matches[0].Program {
		t.Error("keys of one team do not share one program, or keys of two teams do")
	}
	if m := keys[2].Matches[0]; m.Program != nil || m.Match {
		t.Errorf("team 2 on route 0: %+v, want decided: no match", m)
	}

	// Pairs: 50000 keys and no key take two routes' worth of the 100000.
	keys = keys[:0]
	for i := range 49999 {
		keys = append(keys, &Key{Name: fmt.Sprint("k", i)})
	}
	c = &Config{Auth: Auth{Keys: keys}, Routes: []*Route{route(`tools`), route(`stream`), route(`tools`)}}
	c.resolveMatches()
	if len(keys[0].Matches) != 2 || len(c.NoKeyMatches) != 2 {
		t.Errorf("resolved %d routes for %d keys, want 2", len(keys[0].Matches), len(keys))
	}
}

// BenchmarkResolveMatches is the load-time cost of the worst case: every
// key its own program, up to maxKeyPrograms.
func BenchmarkResolveMatches(b *testing.B) {
	prog, _, err := compileMatch(`key.name == "k7" && tools || stream`)
	if err != nil {
		b.Fatal(err)
	}
	var keys []*Key
	for i := range maxKeyPrograms - 1 {
		keys = append(keys, &Key{Name: fmt.Sprint("k", i)})
	}
	c := &Config{Auth: Auth{Keys: keys}, Routes: []*Route{{Match: `key.name == "k7" && tools || stream`, Program: prog}}}
	for b.Loop() {
		c.resolveMatches()
	}
	if len(keys[0].Matches) != 1 {
		b.Fatal("not resolved")
	}
}
