package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"gateway/config"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, and it
// returns either a config or an Errors listing at least one problem.
// The testdata files, gateway.yaml and the examples are its seed corpus, so
// `go test` runs them as a plain test.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	more, _ := filepath.Glob("../examples/*.yaml")
	seeds = append(append(seeds, more...), "../gateway.yaml")
	for _, file := range seeds {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("providers: [unclosed\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if readsOutsideTestdata(data) {
			t.Skip("a file: reference that may name a device, which would block the read")
		}
		cfg, err := config.Parse(data, testOptions())
		if err != nil {
			if cfg != nil {
				t.Errorf("Parse returned a config along with the error %v", err)
			}
			var es config.Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("Parse error is %T %v, want a non-empty config.Errors", err, err)
			}
			for _, e := range es {
				if e == nil || e.Msg == "" {
					t.Errorf("Parse returned an empty error in %q", es)
				}
			}
			return
		}
		if cfg == nil {
			t.Fatal("Parse returned neither a config nor an error")
		}
		for _, g := range cfg.Models {
			for _, tg := range g.Chain {
				if tg.Provider == nil || tg.Model == nil {
					t.Fatalf("group %s has a target with a nil provider or model", g.Name)
				}
			}
		}
	})
}

// readsOutsideTestdata reports whether a file: reference could leave
// testdata/, where everything is a small regular file (or /nonexistent/).
func readsOutsideTestdata(data []byte) bool {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return false
	}
	var walk func(n *yaml.Node) bool
	walk = func(n *yaml.Node) bool {
		if path, ok := strings.CutPrefix(strings.TrimSpace(n.Value), "file:"); ok && n.Kind == yaml.ScalarNode {
			safe := strings.HasPrefix(path, "/nonexistent/") || !strings.ContainsAny(path, `/\`)
			if !safe || strings.Contains(path, "..") {
				return true
			}
		}
		for _, c := range n.Content {
			if walk(c) {
				return true
			}
		}
		return false
	}
	return walk(&root)
}
