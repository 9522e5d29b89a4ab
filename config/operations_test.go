package config

import (
	"strings"
	"testing"
)

func TestOperationsAndResponsesSettings(t *testing.T) {
	for _, tt := range []struct {
		name, typ, extra, model, err string
		serves                       string
	}{
		{"chat family on openai", "openai", "", "", "", "chat responses messages completions"},
		{"chat family on anthropic", "anthropic", "", "", "", "chat responses messages"},
		{"embeddings only", "openai", "", "operations: [embeddings]", "", "embeddings"},
		{"unknown operation", "openai", "", "operations: [telepathy]", `unknown operation "telepathy"`, ""},
		{"native responses", "openai", "    responses: native\n", "", "", "chat responses messages completions"},
		{"native needs openai", "anthropic", "    responses: native\n", "", "native needs an OpenAI-compatible provider", ""},
		{"bad responses value", "openai", "    responses: maybe\n", "", "want translate or native", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			y := "listen: 127.0.0.1:8080\nproviders:\n  p:\n    type: " + tt.typ + "\n    base_url: http://p.test\n" + tt.extra + "    models:\n      m: {" + tt.model + "}\n"
			cfg, err := Parse([]byte(y), Options{})
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, op := range Operations {
				if got, want := cfg.Providers["p"].Models["m"].Serves[op], strings.Contains(tt.serves, op); got != want {
					t.Errorf("serves %s = %v, want %v", op, got, want)
				}
			}
		})
	}
}
