package adapters

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/tidwall/gjson"
)

// This file turns the JSON Schemas of OpenAI tools and response formats
// into the OpenAPI subset Gemini's Schema accepts.

// geminiSchema is the OpenAPI subset Gemini's Schema takes.
type geminiSchema struct {
	Type             string          `json:"type,omitempty"`
	Format           string          `json:"format,omitempty"`
	Title            string          `json:"title,omitempty"`
	Description      string          `json:"description,omitempty"`
	Nullable         bool            `json:"nullable,omitempty"`
	Enum             []string        `json:"enum,omitempty"`
	Properties       *schemaProps    `json:"properties,omitempty"`
	PropertyOrdering []string        `json:"propertyOrdering,omitempty"`
	Required         []string        `json:"required,omitempty"`
	Items            *geminiSchema   `json:"items,omitempty"`
	AnyOf            []*geminiSchema `json:"anyOf,omitempty"`
	MinItems         json.RawMessage `json:"minItems,omitempty"`
	MaxItems         json.RawMessage `json:"maxItems,omitempty"`
	MinLength        json.RawMessage `json:"minLength,omitempty"`
	MaxLength        json.RawMessage `json:"maxLength,omitempty"`
	MinProperties    json.RawMessage `json:"minProperties,omitempty"`
	MaxProperties    json.RawMessage `json:"maxProperties,omitempty"`
	Minimum          json.RawMessage `json:"minimum,omitempty"`
	Maximum          json.RawMessage `json:"maximum,omitempty"`
	Pattern          string          `json:"pattern,omitempty"`
	Example          json.RawMessage `json:"example,omitempty"`
}

// schemaProps is a schema's properties in the order the client wrote them.
type schemaProps struct {
	names []string
	vals  []*geminiSchema
}

func (p *schemaProps) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	for i, n := range p.names {
		if i > 0 {
			b = append(b, ',')
		}
		k, _ := json.Marshal(n)
		v, err := json.Marshal(p.vals[i])
		if err != nil {
			return nil, err
		}
		b = append(append(append(b, k...), ':'), v...)
	}
	return append(b, '}'), nil
}

// geminiFormats lists, per type, the formats Gemini accepts; it refuses
// others ("uri", "email") outright.
var geminiFormats = map[string][]string{
	"STRING": {"enum", "date-time"}, "NUMBER": {"float", "double"}, "INTEGER": {"int32", "int64"},
}

// maxSchemaRefs bounds $ref inlining, so deep or self-referring schemas
// end rather than grow.
const maxSchemaRefs = 8

// cleanSchema rewrites a JSON Schema for Gemini: keywords it rejects
// ($schema, additionalProperties, strict, $defs, examples, default, ...)
// go, local $refs are inlined (a cycle is cut), type lists and null
// alternatives become nullable, and types are upper-cased. ordered adds
// propertyOrdering, which structured output follows.
func cleanSchema(raw []byte, ordered bool) *geminiSchema {
	root := gjson.ParseBytes(raw)
	sc := schemaCleaner{root: root, ordered: ordered}
	return sc.clean(root)
}

type schemaCleaner struct {
	root    gjson.Result
	ordered bool
	// active are the $refs being inlined, to cut cycles.
	active []string
}

// member returns the value at key, which may hold characters gjson paths
// treat as syntax.
func member(obj gjson.Result, key string) gjson.Result {
	var r gjson.Result
	obj.ForEach(func(k, v gjson.Result) bool {
		if k.Str == key {
			r = v
			return false
		}
		return true
	})
	return r
}

func (sc *schemaCleaner) clean(s gjson.Result) *geminiSchema {
	out := &geminiSchema{}
	if !s.IsObject() {
		return out
	}
	if ref := member(s, "$ref"); ref.Type == gjson.String {
		target := sc.resolve(ref.Str)
		switch {
		case !target.IsObject():
			// Not a local reference: nothing is known of it.
		case len(sc.active) >= maxSchemaRefs || slices.Contains(sc.active, ref.Str):
			// A cycle (or a chain too deep) is cut to the type alone.
			sc.setType(out, target.Get("type").Str)
			out.Description = target.Get("description").Str
		default:
			sc.active = append(sc.active, ref.Str)
			out = sc.clean(target)
			sc.active = sc.active[:len(sc.active)-1]
		}
		// Words next to a $ref describe this use of the definition.
		if d := s.Get("description"); d.Type == gjson.String {
			out.Description = d.Str
		}
		return out
	}
	switch t := s.Get("type"); {
	case t.Type == gjson.String:
		sc.setType(out, t.Str)
	case t.IsArray():
		for _, v := range t.Array() {
			sc.setType(out, v.Str)
		}
	}
	if s.Get("nullable").Bool() {
		out.Nullable = true
	}
	for _, kv := range [...]struct {
		key string
		dst *string
	}{{"title", &out.Title}, {"description", &out.Description}, {"pattern", &out.Pattern}} {
		if v := s.Get(kv.key); v.Type == gjson.String {
			*kv.dst = v.Str
		}
	}
	for _, kv := range [...]struct {
		key string
		dst *json.RawMessage
	}{
		{"minItems", &out.MinItems}, {"maxItems", &out.MaxItems}, {"minLength", &out.MinLength},
		{"maxLength", &out.MaxLength}, {"minProperties", &out.MinProperties},
		{"maxProperties", &out.MaxProperties}, {"minimum", &out.Minimum}, {"maximum", &out.Maximum},
	} {
		if v := s.Get(kv.key); v.Type == gjson.Number {
			*kv.dst = json.RawMessage(v.Raw)
		}
	}
	if v := s.Get("example"); v.Exists() {
		out.Example = json.RawMessage(v.Raw)
	}
	if e := s.Get("enum"); e.IsArray() {
		ok := true
		for _, v := range e.Array() {
			switch v.Type {
			case gjson.String:
				out.Enum = append(out.Enum, v.Str)
			case gjson.Null:
				out.Nullable = true
			default:
				ok = false
			}
		}
		if !ok {
			// Gemini's enums are strings; a typed enum stays a plain type.
			out.Enum = nil
		}
	} else if c := s.Get("const"); c.Type == gjson.String {
		out.Enum = []string{c.Str}
	}
	if props := s.Get("properties"); props.IsObject() {
		p := &schemaProps{}
		props.ForEach(func(k, v gjson.Result) bool {
			p.names = append(p.names, k.Str)
			p.vals = append(p.vals, sc.clean(v))
			return true
		})
		if len(p.names) > 0 {
			out.Properties = p
			for _, r := range s.Get("required").Array() {
				if r.Type == gjson.String && slices.Contains(p.names, r.Str) {
					out.Required = append(out.Required, r.Str)
				}
			}
			for _, o := range s.Get("propertyOrdering").Array() {
				if slices.Contains(p.names, o.Str) {
					out.PropertyOrdering = append(out.PropertyOrdering, o.Str)
				}
			}
			if out.PropertyOrdering == nil && sc.ordered && len(p.names) > 1 {
				out.PropertyOrdering = p.names
			}
		}
	}
	if it := s.Get("items"); it.IsObject() {
		out.Items = sc.clean(it)
	}
	var alts []*geminiSchema
	for _, key := range [...]string{"anyOf", "oneOf", "allOf"} {
		for _, v := range s.Get(key).Array() {
			if t := v.Get("type"); t.Str == "null" && len(v.Map()) == 1 {
				out.Nullable = true
				continue
			}
			alts = append(alts, sc.clean(v))
		}
	}
	if len(alts) == 1 && out.Type == "" {
		// An alternative of one (Optional[X], or allOf around a $ref) is
		// that one, described and nullable as here.
		one := alts[0]
		if out.Title != "" {
			one.Title = out.Title
		}
		if out.Description != "" {
			one.Description = out.Description
		}
		one.Nullable = one.Nullable || out.Nullable
		return one
	} else if len(alts) > 0 {
		out.AnyOf = alts
	}
	if out.Type == "" {
		switch {
		case out.Properties != nil:
			out.Type = "OBJECT"
		case out.Items != nil:
			out.Type = "ARRAY"
		case len(out.Enum) > 0:
			out.Type = "STRING"
		}
	}
	// Gemini refuses properties on anything but an OBJECT and items on
	// anything but an ARRAY.
	if out.Type != "OBJECT" {
		out.Properties, out.Required, out.PropertyOrdering = nil, nil, nil
	}
	if out.Type != "ARRAY" {
		out.Items = nil
	}
	if f := s.Get("format"); f.Type == gjson.String && slices.Contains(geminiFormats[out.Type], f.Str) {
		out.Format = f.Str
	}
	if out.Format == "" && len(out.Enum) > 0 && out.Type == "STRING" {
		out.Format = "enum"
	}
	return out
}

func (sc *schemaCleaner) setType(out *geminiSchema, t string) {
	switch {
	case t == "null":
		out.Nullable = true
	case out.Type == "" && t != "":
		out.Type = strings.ToUpper(t)
	}
}

// resolve finds a local reference ("#/$defs/X", "#/definitions/X").
func (sc *schemaCleaner) resolve(ref string) gjson.Result {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return gjson.Result{}
	}
	v := sc.root
	for _, tok := range strings.Split(rest, "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		if v = member(v, tok); !v.Exists() {
			break
		}
	}
	return v
}
