package config

import "github.com/expr-lang/expr/ast"

// direct turns what is left of a resolved match expression into a Go
// function, when it is made only of operations that cannot fail: bool
// fields, not, and, or, and comparisons of a request field with a
// literal. Such a function answers as the program does without a VM run,
// and without expr's reflective field reads (one allocation each). Nil
// for anything else.
func direct(n ast.Node) func(*RequestEnv) bool {
	switch x := n.(type) {
	case *ast.IdentifierNode:
		switch x.Value {
		case "tools":
			return func(e *RequestEnv) bool { return e.Tools }
		case "stream":
			return func(e *RequestEnv) bool { return e.Stream }
		}
	case *ast.UnaryNode:
		if x.Operator == "!" || x.Operator == "not" {
			if f := direct(x.Node); f != nil {
				return func(e *RequestEnv) bool { return !f(e) }
			}
		}
	case *ast.BinaryNode:
		return directBinary(x)
	}
	return nil
}

func directBinary(x *ast.BinaryNode) func(*RequestEnv) bool {
	switch x.Operator {
	case "&&", "and", "||", "or":
		l, r := direct(x.Left), direct(x.Right)
		switch {
		case l == nil || r == nil:
			return nil
		case x.Operator == "&&" || x.Operator == "and":
			return func(e *RequestEnv) bool { return l(e) && r(e) }
		}
		return func(e *RequestEnv) bool { return l(e) || r(e) }
	}
	field, lit, op := x.Left, x.Right, x.Operator
	if _, ok := constOf(field); ok {
		field, lit, op = lit, field, flipped[op]
	}
	if s, ok := stringField(field); ok {
		v, ok := literal(lit).(string)
		switch {
		case ok && op == "==":
			return func(e *RequestEnv) bool { return s(e) == v }
		case ok && op == "!=":
			return func(e *RequestEnv) bool { return s(e) != v }
		}
		return nil
	}
	i := intField(field)
	v, ok := literal(lit).(int)
	if i == nil || !ok {
		return nil
	}
	switch op {
	case "==":
		return func(e *RequestEnv) bool { return i(e) == v }
	case "!=":
		return func(e *RequestEnv) bool { return i(e) != v }
	case "<":
		return func(e *RequestEnv) bool { return i(e) < v }
	case "<=":
		return func(e *RequestEnv) bool { return i(e) <= v }
	case ">":
		return func(e *RequestEnv) bool { return i(e) > v }
	case ">=":
		return func(e *RequestEnv) bool { return i(e) >= v }
	}
	return nil
}

// flipped is the comparison with its sides swapped; "" for others.
var flipped = map[string]string{"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}

// literal is the value of a literal int or string node, nil for others.
func literal(n ast.Node) any {
	v, _ := constOf(n)
	switch v.(type) {
	case int, string:
		return v
	}
	return nil
}

// stringField reads a string field, or a header by a literal name (a
// missing one reads "", as in expr).
func stringField(n ast.Node) (func(*RequestEnv) string, bool) {
	if id, ok := n.(*ast.IdentifierNode); ok {
		switch id.Value {
		case "model":
			return func(e *RequestEnv) string { return e.Model }, true
		case "path":
			return func(e *RequestEnv) string { return e.Path }, true
		case "method":
			return func(e *RequestEnv) string { return e.Method }, true
		case "operation":
			return func(e *RequestEnv) string { return e.Operation }, true
		}
	}
	m, ok := n.(*ast.MemberNode)
	if !ok || m.Optional || m.Method {
		return nil, false
	}
	if id, ok := m.Node.(*ast.IdentifierNode); !ok || id.Value != "headers" {
		return nil, false
	}
	name, ok := m.Property.(*ast.StringNode)
	if !ok {
		return nil, false
	}
	return func(e *RequestEnv) string { return e.Headers[name.Value] }, true
}

func intField(n ast.Node) func(*RequestEnv) int {
	if id, ok := n.(*ast.IdentifierNode); ok {
		switch id.Value {
		case "tokens":
			return func(e *RequestEnv) int { return e.Tokens }
		case "messages":
			return func(e *RequestEnv) int { return e.Messages }
		}
	}
	return nil
}
