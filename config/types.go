package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written as "30s", "5m" or "1h30m".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "want a duration such as 30s, got a %s", kindName(n))
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return typeErr(n, "invalid duration %q (write e.g. 30s, 5m, 1h)", n.Value)
	}
	if v < 0 {
		return typeErr(n, "duration %q is negative", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration back in its string form.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ByteSize is a size in bytes written as a number or with a unit:
// "64MiB", "512KiB", "1GB".
type ByteSize int64

var byteUnits = []struct {
	suffix string
	scale  int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

// UnmarshalYAML parses a byte size.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "want a size such as 64MiB, got a %s", kindName(n))
	}
	s := strings.TrimSpace(n.Value)
	scale := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, scale = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.scale
			break
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return typeErr(n, "invalid size %q (write e.g. 64MiB, 512KiB, 1048576)", n.Value)
	}
	*b = ByteSize(v * scale)
	return nil
}

// MarshalYAML writes the size as a plain number of bytes.
func (b ByteSize) MarshalYAML() (any, error) { return int64(b), nil }

// typeErr reports a bad value the way yaml.v3 does, so decoding goes on and
// every such error is collected.
func typeErr(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: ", n.Line) + fmt.Sprintf(format, args...)}}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	}
	return "value"
}

// TargetRef is one entry of a chain: `provider/model`, or a mapping
// `{target: provider/model, weight: 3}`.
type TargetRef struct {
	Ref    string `yaml:"target"`
	Weight int    `yaml:"weight"`
	line   int
}

// UnmarshalYAML accepts both forms.
func (t *TargetRef) UnmarshalYAML(n *yaml.Node) error {
	t.line = n.Line
	switch n.Kind {
	case yaml.ScalarNode:
		t.Ref, t.Weight = n.Value, 1
		return nil
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			switch k.Value {
			case "target":
				if v.Kind != yaml.ScalarNode {
					return typeErr(v, "want provider/model, got a %s", kindName(v))
				}
				t.Ref = v.Value
			case "weight":
				w, err := strconv.Atoi(v.Value)
				if err != nil || v.Kind != yaml.ScalarNode || w < 1 {
					return typeErr(v, "weight must be a whole number of at least 1, got %q", v.Value)
				}
				t.Weight = w
			default:
				return typeErr(k, "unknown field %q in a target; use target and weight", k.Value)
			}
		}
		if t.Weight == 0 {
			t.Weight = 1
		}
		return nil
	}
	return typeErr(n, "want provider/model or {target: provider/model, weight: N}, got a %s", kindName(n))
}

// MarshalYAML writes the short form when the weight is the default.
func (t TargetRef) MarshalYAML() (any, error) {
	if t.Weight <= 1 {
		return t.Ref, nil
	}
	return map[string]any{"target": t.Ref, "weight": t.Weight}, nil
}
