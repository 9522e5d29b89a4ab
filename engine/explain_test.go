package engine

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"gateway/config"
)

var update = flag.Bool("update", false, "rewrite golden files")

func explainEngine(t *testing.T) *Engine {
	t.Helper()
	cfg, err := config.Load("testdata/explain.yaml", config.Options{LookupEnv: func(k string) (string, bool) { return "v-" + k, true }})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

// TestExplainGolden checks explain's story for a fresh engine against
// testdata/explain.golden (go test -run TestExplainGolden -update rewrites it).
func TestExplainGolden(t *testing.T) {
	eng := explainEngine(t)
	cases := []struct {
		title  string
		req    ExplainRequest
		status int // what the server would answer
	}{
		{"no rule matches", ExplainRequest{Model: "auto", Key: "web"}, 200},
		{"long prompt", ExplainRequest{Model: "auto", Key: "web", Tokens: 40000}, 200},
		{"ml team with tools", ExplainRequest{Model: "fast", Key: "team-ml", Tools: true}, 200},
		{"bare provider model name", ExplainRequest{Model: "llama-8b", Key: "team-ml"}, 200},
		{"a request over every token cap", ExplainRequest{Model: "llama-8b", Key: "team-ml", Tokens: 7000}, 400},
		{"not on the key's allow-list", ExplainRequest{Model: "fast", Key: "web"}, 403},
		{"unknown model", ExplainRequest{Model: "gpt-9", Key: "team-ml"}, 404},
	}
	var out bytes.Buffer
	for _, c := range cases {
		out.WriteString("== " + c.title + "\n")
		x, err := eng.Explain(c.req)
		if err != nil {
			t.Fatalf("%s: %v", c.title, err)
		}
		out.WriteString(x.Text)
		if x.Status != c.status {
			t.Errorf("%s: status %d, want %d", c.title, x.Status, c.status)
		}
	}
	if *update {
		if err := os.WriteFile("testdata/explain.golden", out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("testdata/explain.golden")
	if err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != string(want) {
		t.Errorf("explain output differs from testdata/explain.golden:\n%s", got)
	}
}

// TestExplainSeesLiveState checks that explain reads the same state the
// request path skips on, and changes none of it.
func TestExplainSeesLiveState(t *testing.T) {
	eng := explainEngine(t)
	s := eng.snap.Load()
	auto := s.groups["auto"]
	now := nanotime()
	auto.targets[0].keys[0].until.Start(now, time.Minute, coolRate)
	auto.targets[0].keys[1].until.Start(now, time.Minute, coolAuth)
	claude := auto.targets[1]
	claude.state.breaker.Failure(now, 1, int64(time.Minute))
	x, err := eng.Explain(ExplainRequest{Model: "auto", Key: "web"})
	if err != nil {
		t.Fatal(err)
	}
	// One candidate cools down after a 429: the verdict is 429, not the
	// breaker's 503.
	if x.Status != 429 {
		t.Errorf("status %d, want 429", x.Status)
	}
	if x.Pick != "" || len(x.Candidates) != 3 || x.Candidates[0].Until == nil || x.Candidates[2].Until == nil {
		t.Errorf("pick %q, candidates %+v: want no pick and every candidate skipped until a time", x.Pick, x.Candidates)
	}
	for _, want := range []string{
		"groq/llama-70b (key 1 of 2)", "skipped: cooling down after a 429 until",
		"groq/llama-70b (key 2 of 2)", "skipped: key refused by the upstream (401/403) until",
		"claude/sonnet", "skipped: circuit breaker open until",
		"no candidate is eligible now",
	} {
		if !strings.Contains(x.Text, want) {
			t.Errorf("explain output lacks %q:\n%s", want, x.Text)
		}
	}
	if refuses, _ := claude.state.breaker.Refuses(now); !refuses || claude.state.breaker.State(now) != "open" {
		t.Error("explain changed the breaker's state")
	}
}

func TestExplainUnknownKey(t *testing.T) {
	if _, err := explainEngine(t).Explain(ExplainRequest{Model: "auto", Key: "nobody"}); err == nil {
		t.Fatal("explain accepted an unknown key name")
	}
}

func TestExplainLeavesRoundRobinTurn(t *testing.T) {
	eng := explainEngine(t)
	fast := eng.snap.Load().groups["fast"]
	before := fast.state.turn.Load()
	for range 3 {
		if _, err := eng.Explain(ExplainRequest{Model: "fast", Key: "team-ml"}); err != nil {
			t.Fatal(err)
		}
	}
	if fast.state.turn.Load() != before {
		t.Error("explain advanced round_robin's turn")
	}
}
