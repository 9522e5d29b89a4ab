package engine

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"gateway/config"
)

// redisServer is a real redis-server on a free loopback port, with no
// persistence, in a temporary directory; a test may kill it and start it
// again on the same port.
type redisServer struct {
	bin, dir string
	port     int
	mu       sync.Mutex
	cmd      *exec.Cmd
}

// newRedisServer starts a redis-server, or skips the test when there is
// none to start. The caller stops it.
func newRedisServer(tb testing.TB, dir string) *redisServer {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Skip("redis-server is not installed (apt-get install redis-server): the shared state tests need a real one")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	r := &redisServer{bin: bin, dir: dir, port: port}
	if err := r.start(); err != nil {
		tb.Fatal(err)
	}
	return r
}

// start runs the server and waits until it answers PING.
func (r *redisServer) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmd := exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--logfile", "")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	r.cmd = cmd
	c := redis.NewClient(&redis.Options{Addr: r.addr(), MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer c.Close()
	for deadline := time.Now().Add(fakeDeadline); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if c.Ping(context.Background()).Err() == nil {
			return nil
		}
	}
	return fmt.Errorf("redis-server on port %d did not answer", r.port)
}

// kill ends the server at once, as a crash would.
func (r *redisServer) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

func (r *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *redisServer) url() string { return "redis://" + r.addr() + "/0" }

// client returns a plain client of the server, for a test to look in.
func (r *redisServer) client(tb testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.addr(), MaxRetries: -1})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

var (
	sharedRedisOnce sync.Once
	sharedRedis     *redisServer
	sharedRedisDir  string
)

// testRedis returns the package's shared redis-server, started on first
// use and stopped by TestMain; tests keep apart by key prefix.
func testRedis(tb testing.TB) *redisServer {
	sharedRedisOnce.Do(func() {
		if _, err := exec.LookPath("redis-server"); err != nil {
			return
		}
		dir, err := os.MkdirTemp("", "gateway-redis-")
		if err != nil {
			tb.Fatal(err)
		}
		sharedRedisDir = dir
		sharedRedis = newRedisServer(tb, dir)
	})
	if sharedRedis == nil {
		tb.Skip("redis-server is not installed (apt-get install redis-server): the shared state tests need a real one")
	}
	return sharedRedis
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedRedis != nil {
		sharedRedis.kill()
		_ = os.RemoveAll(sharedRedisDir)
	}
	os.Exit(code)
}

// redisStateYAML is the state section of a config on r.
func redisStateYAML(r *redisServer, prefix, onError string) string {
	return fmt.Sprintf("state:\n  backend: redis\n  redis: {url: %q, prefix: %q, on_error: %s, timeout: 200ms}\n", r.url(), prefix, onError)
}

var testPrefixes struct {
	sync.Mutex
	n int
}

// uniquePrefix is a key prefix no other test of this process uses.
func uniquePrefix(name string) string {
	testPrefixes.Lock()
	defer testPrefixes.Unlock()
	testPrefixes.n++
	return fmt.Sprintf("t%d-%s:", testPrefixes.n, name)
}

// newTestRedisBackend is a Redis backend on the shared server, under a
// prefix of its own.
func newTestRedisBackend(tb testing.TB) *redisBackend {
	tb.Helper()
	r := testRedis(tb)
	cfg, err := config.Parse([]byte(redisStateYAML(r, uniquePrefix("unit"), "local")+"providers:\n  mock: {type: mock, models: {echo: {}}}\n"), config.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	b, err := newRedisBackend(cfg.State, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.close)
	return b
}
