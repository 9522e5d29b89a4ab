package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateShippedConfigs runs `gateway validate` on every config the
// repo ships, as a GitOps CI would: with no secrets set.
func TestValidateShippedConfigs(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	files = append(files, "gateway.yaml")
	var out, errOut bytes.Buffer
	if code := run(append([]string{"validate"}, files...), &out, &errOut); code != 0 {
		t.Fatalf("validate exited %d:\n%s", code, errOut.String())
	}
	for _, f := range files {
		if !strings.Contains(out.String(), f+": ok") {
			t.Errorf("no ok line for %s:\n%s", f, out.String())
		}
	}
}

func TestValidateReportsEveryError(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("listen: 8080\nproviders:\n  p:\n    type: nope\n    models: {m: {}}\nfailover: {max_attempts: 0}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"validate", bad}, &out, &errOut); code != 1 {
		t.Fatalf("validate exited %d, want 1", code)
	}
	for _, want := range []string{`providers.p.type: unknown type "nope"`, "(line 4)", "failover.max_attempts: must be at least 1, got 0 (line 6)"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("validate output lacks %q:\n%s", want, errOut.String())
		}
	}
	if code := run([]string{"validate"}, &out, &errOut); code != 2 {
		t.Errorf("validate with no file exited %d, want 2", code)
	}
}

func TestExplainCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"explain", "-config", "examples/team.yaml", "-skip-secrets", "-model", "auto", "-key", "team-ml", "-tools"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("explain exited %d: %s", code, errOut.String())
	}
	for _, want := range []string{"route: ml-team-tools", "1. openai/gpt-4o", "2. groq/llama-70b", "eligible"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("explain output lacks %q:\n%s", want, out.String())
		}
	}
	if code := run([]string{"explain", "-config", "examples/team.yaml", "-skip-secrets"}, &out, &errOut); code != 2 {
		t.Errorf("explain without -model exited %d, want 2", code)
	}
}
