package config

import (
	"reflect"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	exprparser "github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// folder evaluates at load what of a match expression no longer reads the
// request once the key is a constant. It answers exactly as the program
// before it would, run-time errors included, so it does not use expr's
// own folding: that turns `x && false` into false, which is not the same
// when x fails. It folds only what expr itself evaluates to a value.
//
// In a truth context only whether the value is exactly true matters (the
// whole expression: an error, false and a non-bool are all no match);
// there a constant that is not true may become false, and `x && true`
// become x.
type folder struct {
	cfg *conf.Config
	// inChain is how many `?.` chains the node being simplified is in.
	// A member of one is not evaluated alone: out of its chain, `a?.b`
	// on a nil a reads b instead of giving nil.
	inChain int
}

// pureBuiltins are the builtins that always give the same answer for the
// same arguments, in the same order (keys and values do not), and cost
// little: a call of one on constants is evaluated at load.
var pureBuiltins = map[string]bool{
	"len": true, "abs": true, "int": true, "float": true, "string": true,
	"trim": true, "trimPrefix": true, "trimSuffix": true, "upper": true, "lower": true,
	"split": true, "replace": true, "indexOf": true, "lastIndexOf": true,
	"hasPrefix": true, "hasSuffix": true, "get": true,
}

// simplify folds n and what is under it, truth saying whether n is in a
// truth context. It reports whether n is free of the request: reads no
// field of it, so expr can evaluate it at load.
func (f *folder) simplify(n *ast.Node, truth bool) bool {
	free := false
	switch x := (*n).(type) {
	case *ast.NilNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.StringNode, *ast.BytesNode, *ast.ConstantNode:
		return true
	case *ast.BinaryNode:
		switch x.Operator {
		case "&&", "and":
			free = f.and(n, x, truth)
		case "||", "or":
			free = f.or(n, x, truth)
		default:
			free = f.all(false, &x.Left, &x.Right)
		}
	case *ast.ConditionalNode:
		free = f.conditional(n, x, truth)
	case *ast.UnaryNode:
		free = f.simplify(&x.Node, false)
	case *ast.ChainNode:
		f.inChain++
		free = f.simplify(&x.Node, false)
		f.inChain--
	case *ast.MemberNode:
		free = f.all(false, &x.Node, &x.Property) && !x.Method
	case *ast.SliceNode:
		free = f.all(false, &x.Node, &x.From, &x.To)
	case *ast.BuiltinNode:
		free = f.all(false, ptrs(x.Arguments)...) && pureBuiltins[x.Name]
	case *ast.ArrayNode:
		// Free, but not a value folded in place: only its parent is.
		return f.all(false, ptrs(x.Nodes)...)
	case *ast.MapNode:
		return f.all(false, ptrs(x.Pairs)...)
	case *ast.PairNode:
		return f.all(false, &x.Key, &x.Value)
	case *ast.CallNode:
		f.all(false, append(ptrs(x.Arguments), &x.Callee)...)
	case *ast.PredicateNode:
		f.simplify(&x.Node, false)
	case *ast.SequenceNode:
		f.all(false, ptrs(x.Nodes)...)
	}
	if free {
		f.fold(n, truth)
	}
	return free
}

// all simplifies each node, nil ones left out, and reports whether all
// are free.
func (f *folder) all(truth bool, ns ...*ast.Node) bool {
	free := true
	for _, n := range ns {
		if *n != nil {
			free = f.simplify(n, truth) && free
		}
	}
	return free
}

func ptrs(ns []ast.Node) []*ast.Node {
	out := make([]*ast.Node, len(ns))
	for i := range ns {
		out[i] = &ns[i]
	}
	return out
}

// and folds `l && r`: r runs only when l is true, and the answer is then
// r's, whatever it is; l not a bool is an error.
func (f *folder) and(n *ast.Node, x *ast.BinaryNode, truth bool) bool {
	lFree := f.simplify(&x.Left, truth)
	rFree := f.simplify(&x.Right, truth)
	l, lok := constOf(x.Left)
	r, rok := constOf(x.Right)
	switch {
	case lok && l == true:
		*n = x.Right
		return rFree
	case lok && (l == false || truth):
		setBool(n, false)
		return true
	case truth && rok && r == true:
		*n = x.Left
		return lFree
	case truth && rok:
		setBool(n, false)
		return true
	}
	return lFree && rFree
}

// or folds `l || r`: r runs only when l is false. In a truth context `l`
// is not one (`l || r` with l failing fails, while false lets r answer),
// but r is.
func (f *folder) or(n *ast.Node, x *ast.BinaryNode, truth bool) bool {
	lFree := f.simplify(&x.Left, false)
	rFree := f.simplify(&x.Right, truth)
	l, lok := constOf(x.Left)
	r, rok := constOf(x.Right)
	switch {
	case lok && l == true:
		setBool(n, true)
		return true
	case lok && l == false:
		*n = x.Right
		return rFree
	case lok && truth:
		setBool(n, false)
		return true
	case truth && rok && r != true:
		*n = x.Left
		return f.simplify(n, true)
	}
	return lFree && rFree
}

// conditional folds `c ? a : b` (and if/else) whose condition is known.
func (f *folder) conditional(n *ast.Node, x *ast.ConditionalNode, truth bool) bool {
	cFree := f.simplify(&x.Cond, false)
	aFree := f.simplify(&x.Exp1, truth)
	bFree := f.simplify(&x.Exp2, truth)
	c, ok := constOf(x.Cond)
	switch {
	case ok && c == true:
		*n = x.Exp1
		return aFree
	case ok && c == false:
		*n = x.Exp2
		return bFree
	case ok && truth:
		setBool(n, false)
		return true
	}
	return cFree && aFree && bFree
}

// fold puts in place of the free node n its value, when that is a
// scalar; in a truth context, an error or a value other than true is
// false.
func (f *folder) fold(n *ast.Node, truth bool) {
	if _, ok := constOf(*n); ok || f.inChain > 0 {
		return
	}
	v, err, ok := f.eval(*n)
	switch {
	case !ok:
	case truth:
		setBool(n, err == nil && v == true)
	case err != nil:
	case v == nil:
		replace(n, &ast.NilNode{})
	default:
		if b, isBool := v.(bool); isBool {
			setBool(n, b)
			return
		}
		switch reflect.TypeOf(v).Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
			reflect.Float32, reflect.Float64, reflect.String:
			replace(n, &ast.ConstantNode{Value: v})
		}
	}
}

// eval runs n, free of the request, as the compiled expression would;
// ok is false when it does not compile on its own.
func (f *folder) eval(n ast.Node) (v any, err error, ok bool) {
	expect := f.cfg.Expect
	f.cfg.Expect = reflect.Invalid
	prog, cerr := compiler.Compile(&exprparser.Tree{Node: n}, f.cfg)
	f.cfg.Expect = expect
	if cerr != nil {
		return nil, nil, false
	}
	v, err = vm.Run(prog, nil)
	return v, err, true
}

// constOf returns the value of a literal or folded node.
func constOf(n ast.Node) (any, bool) {
	switch x := n.(type) {
	case *ast.NilNode:
		return nil, true
	case *ast.BoolNode:
		return x.Value, true
	case *ast.IntegerNode:
		return x.Value, true
	case *ast.FloatNode:
		return x.Value, true
	case *ast.StringNode:
		return x.Value, true
	case *ast.BytesNode:
		return x.Value, true
	case *ast.ConstantNode:
		return x.Value, true
	}
	return nil, false
}

func setBool(n *ast.Node, b bool) { replace(n, &ast.BoolNode{Value: b}) }

// replace puts c in place of *n, with its nature, so what contains it
// compiles as before.
func replace(n *ast.Node, c ast.Node) {
	c.SetNature(*(*n).Nature())
	ast.Patch(n, c)
}
