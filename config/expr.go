package config

import (
	"errors"
	"fmt"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// RequestEnv is what a route's `match` expression sees of a request.
type RequestEnv struct {
	Model    string            `expr:"model"`
	Stream   bool              `expr:"stream"`
	Tokens   int               `expr:"tokens"`
	Messages int               `expr:"messages"`
	Tools    bool              `expr:"tools"`
	Headers  map[string]string `expr:"headers"`
	Key      KeyEnv            `expr:"key"`
	Metadata map[string]any    `expr:"metadata"`
	Path     string            `expr:"path"`
	Method   string            `expr:"method"`
	// Operation is the client API asked for: chat, responses, messages,
	// embeddings or completions.
	Operation string `expr:"operation"`
}

// KeyEnv is the calling gateway key as expressions see it.
type KeyEnv struct {
	Name     string            `expr:"name"`
	Metadata map[string]string `expr:"metadata"`
}

// EnvUses records which costly RequestEnv fields an expression reads.
type EnvUses struct {
	Headers  bool
	Metadata bool
}

// Or merges two sets of uses.
func (u EnvUses) Or(o EnvUses) EnvUses {
	return EnvUses{Headers: u.Headers || o.Headers, Metadata: u.Metadata || o.Metadata}
}

// compileMatch type-checks src against RequestEnv and requires a bool.
func compileMatch(src string) (*vm.Program, EnvUses, error) {
	var uses EnvUses
	prog, err := expr.Compile(src, matchOptions(&uses)...)
	if err != nil {
		// expr's own text spans lines with a caret drawing; one line with
		// the column reads better in a list of config errors.
		var fe *file.Error
		if errors.As(err, &fe) && fe.Line > 0 {
			return nil, uses, fmt.Errorf("invalid match expression: %s (at column %d)", fe.Message, fe.Column+1)
		}
		if errors.As(err, &fe) {
			return nil, uses, fmt.Errorf("invalid match expression: %s", fe.Message)
		}
		return nil, uses, fmt.Errorf("invalid match expression: %w", err)
	}
	return prog, uses, nil
}

// matchOptions are the options a match expression compiles with, the
// same for the generic program and the ones resolved per key. The
// environment is a struct value, not a pointer, though the engine runs
// them on a *RequestEnv: with a pointer expr reads each field by name
// (runtime.Fetch, a sync.Map lookup) where with a struct it compiles the
// field's index (OpLoadField).
func matchOptions(uses *EnvUses) []expr.Option {
	return []expr.Option{expr.Env(RequestEnv{}), expr.AsBool(), expr.Patch(usesVisitor{uses})}
}

// usesVisitor notes the identifiers an expression reads.
type usesVisitor struct{ uses *EnvUses }

func (v usesVisitor) Visit(node *ast.Node) {
	if id, ok := (*node).(*ast.IdentifierNode); ok {
		switch id.Value {
		case "headers":
			v.uses.Headers = true
		case "metadata":
			v.uses.Metadata = true
		}
	}
}
