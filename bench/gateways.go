package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// gatewayConfig is the gateway.yaml of the run: one openai provider on the
// fake upstream, a model group, auth on with one key whose rpm never binds,
// and a route rule the non-stream request matches. stream_usage is off so
// the gateway sends the upstream the client's bytes, as the floor does.
// The access log is left at its default (on) unless accessLog is false.
// With a redisURL the state lives in that Redis (on_error: closed, so a
// failing Redis shows as errors, not as a silent fall back to memory), and
// the provider model gets an rpm cap that never binds but makes every
// request reserve there.
func gatewayConfig(listen, upstream string, accessLog bool, redisURL string) string {
	extra, limits := "", ""
	if !accessLog {
		extra = "log: {access: false}\n"
	}
	if redisURL != "" {
		extra += `state: {backend: redis, redis: {url: "` + redisURL + `", prefix: "bench:", on_error: closed}}` + "\n"
		limits = ", limits: {rpm: 1000000000}"
	}
	return extra + `listen: "` + listen + `"
auth:
  keys:
    - name: bench
      key: ${BENCH_GW_KEY}
      rpm: 1000000000
      metadata: {team: ml}
providers:
  up:
    type: openai
    base_url: http://` + upstream + `/v1
    keys: ["${BENCH_UPSTREAM_KEY}"]
    timeout: 60s
    stream_usage: false
    models:
      m: {upstream: upstream-model` + limits + `}
models:
  auto:
    targets: [up/m]
routes:
  - name: tools
    match: 'key.metadata.team == "ml" && tools'
    model: auto
`
}

// gatewayEnv is the environment a gateway resolves the bench's keys from.
func gatewayEnv() []string {
	return append(os.Environ(), "BENCH_GW_KEY="+gatewayKey, "BENCH_UPSTREAM_KEY="+upstreamKey)
}

// startGateway writes cfg to dir/name.yaml and starts bin on it with args,
// its access log (stdout) going to devnull: produced, as in production,
// but not kept.
func startGateway(name, bin, dir, cfg string, args []string, devnull *os.File, onExit func(error)) (*child, error) {
	path := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, append([]string{"-config", path}, args...)...)
	cmd.Env = gatewayEnv()
	cmd.Stdout = devnull
	return start(name, cmd, filepath.Join(dir, name+".log"), nil, onExit)
}

// startRedisGateway starts a Redis and a gateway keeping its state there,
// its config the first gateway's with a redisURL. It returns no child and
// why when the phase cannot run: no redis-server on PATH, or a gateway
// that does not know `state:` (checked with `gateway validate` first).
func startRedisGateway(ctx context.Context, bin, dir, addr, upAddr string, accessLog bool, devnull *os.File, onExit func(error)) (*child, *redisServer, string, error) {
	rs, err := startRedis(ctx, dir, onExit)
	if err != nil || rs == nil {
		return nil, nil, "no redis-server on PATH", err
	}
	cfg := gatewayConfig(addr, upAddr, accessLog, "redis://"+rs.addr+"/0")
	path := filepath.Join(dir, "check.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, nil, "", err
	}
	check := exec.CommandContext(ctx, bin, "validate", path)
	check.Env = gatewayEnv()
	if out, err := check.CombinedOutput(); err != nil {
		msg := strings.TrimSpace(string(out))
		if !strings.Contains(msg, "state") {
			return nil, nil, "", fmt.Errorf("the Redis gateway's config: %v: %s", err, msg)
		}
		rs.proc.stop()
		first, _, _ := strings.Cut(msg, "\n")
		return nil, nil, "the gateway refuses the state block: " + strings.TrimPrefix(first, path+": "), nil
	}
	gw, err := startGateway("gateway-redis", bin, dir, cfg, nil, devnull, onExit)
	return gw, rs, "", err
}

// startSoakGateway stops the gateway the phases ran on and starts a fresh
// one with the same config on a new port, for the soak.
func startSoakGateway(ctx context.Context, old *server, bin, dir, upAddr string, accessLog bool, devnull *os.File, onExit func(error), conns int) (*server, error) {
	old.client.CloseIdleConnections()
	old.proc.stop()
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	gw, err := startGateway("gateway-soak", bin, dir, gatewayConfig(addr, upAddr, accessLog, ""), nil, devnull, onExit)
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, gw, addr, 20*time.Second); err != nil {
		return nil, err
	}
	return &server{name: "gateway", addr: addr, proc: gw, client: newClient(addr, conns)}, nil
}
