package config_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"gateway/config"
)

func TestStateDefaultsToMemory(t *testing.T) {
	cfg, err := config.Parse([]byte("providers:\n  mock: {type: mock, models: {echo: {}}}\n"), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.State.Redis
	if cfg.State.Backend != "memory" || r.Prefix != "gw:" || r.Timeout.D() != 50*time.Millisecond || r.OnError != "local" {
		t.Fatalf("state = %+v, want memory with prefix gw:, timeout 50ms, on_error local", cfg.State)
	}
}

// TestStateRedisURLIsASecret: a URL that holds a password comes from a
// reference and never prints, in an error, in %v or in YAML.
func TestStateRedisURLIsASecret(t *testing.T) {
	const pass = "s3cr3t-redis-pass"
	env := map[string]string{"REDIS_URL": "redis://:" + pass + "@10.0.0.5:6379/2", "BAD_URL": "http://" + pass + "@x/"}
	opt := config.Options{LookupEnv: lookup(env)}
	src := "state:\n  backend: redis\n  redis: {url: '${REDIS_URL}'}\nproviders:\n  mock: {type: mock, models: {echo: {}}}\n"
	cfg, err := config.Parse([]byte(src), opt)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.State.Redis.URL.Reveal(); got != env["REDIS_URL"] {
		t.Fatalf("URL resolved to %q", got)
	}
	y, _ := yaml.Marshal(cfg.State)
	for _, out := range []string{fmt.Sprintf("%v %+v %s", cfg.State, cfg, cfg.State.Redis.URL), string(y)} {
		if strings.Contains(out, pass) {
			t.Fatalf("the password printed: %s", out)
		}
	}
	_, err = config.Parse([]byte(strings.Replace(src, "REDIS_URL", "BAD_URL", 1)), opt)
	if err == nil || strings.Contains(err.Error(), pass) || !strings.Contains(err.Error(), "state.redis.url: want a redis://") {
		t.Fatalf("a wrong scheme: %v", err)
	}
}
