package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gateway/config"
)

func TestHealthURL(t *testing.T) {
	file := writeConfig(t, "listen: \"10.1.2.3:9000\"\nproviders:\n  m: {type: mock, models: {e: {}}}\nauth: {anonymous: true}\n")
	bare := writeConfig(t, "providers:\n  m: {type: mock, models: {e: {}}}\n")
	for _, c := range []struct {
		name, url, listen, path, want, err string
	}{
		{"-url as given", "http://gw.internal:8080/healthz", "", file, "http://gw.internal:8080/healthz", ""},
		{"-url without a path", "http://127.0.0.1:9", "", file, "http://127.0.0.1:9/health", ""},
		{"-url with a bare slash", "https://gw:443/", "", file, "https://gw:443/health", ""},
		{"-url beats -listen", "http://a:1", "127.0.0.1:2", file, "http://a:1/health", ""},
		{"-url without a scheme", "127.0.0.1:8080", "", file, "", "-url wants http://host:port"},
		{"-url of another scheme", "ftp://x:1", "", file, "", "-url wants http://host:port"},
		{"-listen beats the file", "", "127.0.0.1:7000", file, "http://127.0.0.1:7000/health", ""},
		{"every IPv4 interface", "", "0.0.0.0:8080", file, "http://127.0.0.1:8080/health", ""},
		{"every IPv6 interface", "", "[::]:8080", file, "http://127.0.0.1:8080/health", ""},
		{"every interface, no host", "", ":8080", file, "http://127.0.0.1:8080/health", ""},
		{"IPv6 loopback", "", "[::1]:8080", file, "http://[::1]:8080/health", ""},
		{"the file's listen", "", "", file, "http://10.1.2.3:9000/health", ""},
		{"the default listen", "", "", bare, "http://127.0.0.1:8080/health", ""},
		{"no file", "", "", filepath.Join(t.TempDir(), "none.yaml"), "", "reading config"},
		{"a listen that is no address", "", "8080", file, "", `listen address "8080": want host:port`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := healthURL(c.url, c.listen, c.path)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("healthURL = %q, %v; want an error with %q", got, err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("healthURL = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

// serveFor serves the config file at path in process until the test ends,
// with opt as the command line would give it, and returns once /health
// answers.
func serveFor(t *testing.T, path string, opt config.Options) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, path, opt, nil, io.Discard, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	u, err := healthURL("", opt.Listen, path)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := checkHealth(context.Background(), u); err == nil {
			return
		}
		select {
		case err := <-served:
			t.Fatalf("serve returned before listening: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the gateway never answered /health")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeHealth serves handler on loopback and returns its address.
func fakeHealth(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// TestHealthCommand runs `gateway health` against a real gateway, found
// each way serving finds its address, and against whatever else may
// answer on a port: only a gateway's 200 {"status":"ok"} is healthy.
func TestHealthCommand(t *testing.T) {
	t.Setenv(envListen, "")
	t.Setenv(envConfig, "")
	addr := freeAddr(t)
	// The file names another address: the override is what serves.
	file := writeConfig(t, "listen: \"127.0.0.1:1\"\nproviders:\n  m: {type: mock, models: {e: {}}}\n")
	serveFor(t, file, config.Options{Listen: addr})
	atAddr := writeConfig(t, "listen: \""+addr+"\"\nproviders:\n  m: {type: mock, models: {e: {}}}\n")

	healthy := func(t *testing.T, args ...string) {
		t.Helper()
		code, out, errOut := runs(t, append([]string{"health"}, args...)...)
		want := "ok: http://" + addr + "/health: version " + buildVersion() + "\n"
		if code != 0 || out != want {
			t.Errorf("health %q: exit %d, stdout %q, stderr %q; want 0 and %q", args, code, out, errOut, want)
		}
	}
	t.Run("-listen", func(t *testing.T) { healthy(t, "-config", file, "-listen", addr) })
	t.Run("-url", func(t *testing.T) { healthy(t, "-url", "http://"+addr) })
	t.Run("-config", func(t *testing.T) { healthy(t, "-config", atAddr) })
	t.Run("GATEWAY_LISTEN", func(t *testing.T) {
		t.Setenv(envListen, addr)
		healthy(t, "-config", file)
	})
	t.Run("GATEWAY_CONFIG", func(t *testing.T) {
		t.Setenv(envConfig, atAddr)
		healthy(t)
	})
	t.Run("-config beats GATEWAY_CONFIG", func(t *testing.T) {
		t.Setenv(envConfig, file)
		healthy(t, "-config", atAddr)
	})
	t.Run("-listen beats GATEWAY_LISTEN", func(t *testing.T) {
		t.Setenv(envListen, "127.0.0.1:1")
		healthy(t, "-config", file, "-listen", addr)
	})

	stalled, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close() // accepted by the kernel, never answered
	for _, c := range []struct {
		name    string
		handler http.HandlerFunc
		args    []string
		code    int
		err     string
	}{
		{"nothing listens", nil, []string{"-url", "http://" + freeAddr(t)}, 1, "connection refused"},
		{"no answer in time", nil, []string{"-url", "http://" + stalled.Addr().String(), "-timeout", "200ms"}, 1, "context deadline exceeded"},
		{"an error status", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }, nil, 1, "status 503"},
		{"a redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/elsewhere", http.StatusFound) }, nil, 1, "status 302"},
		{"not a gateway", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "<html>hello</html>") }, nil, 1, "the answer is not a gateway's /health"},
		{"status not ok", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"status":"starting"}`) }, nil, 1, `status "starting"`},
		{"a file with no listen", nil, []string{"-config", filepath.Join(t.TempDir(), "none.yaml")}, 1, "unhealthy: reading config"},
		{"a stray argument", nil, []string{"-url", "http://" + addr, "now"}, 2, `unexpected argument "now"`},
		{"no time to answer", nil, []string{"-url", "http://" + addr, "-timeout", "0s"}, 2, "-timeout must be positive, got 0s"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := c.args
			if c.handler != nil {
				args = []string{"-url", "http://" + fakeHealth(t, c.handler)}
			}
			code, out, errOut := runs(t, append([]string{"health"}, args...)...)
			if code != c.code || out != "" || !strings.Contains(errOut, c.err) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d and %q", code, out, errOut, c.code, c.err)
			}
			if c.code == 1 && (strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "unhealthy: ")) {
				t.Errorf("not one line of reason: %q", errOut)
			}
		})
	}
}

// TestHealthSaysARejectedReload checks that a rejected edit keeps the
// gateway healthy (its last good config serves) and that the check says
// so. The edit is one the listen override makes bad: reloads hold the
// override to the auth rule too, so dropping auth.anonymous cannot open
// the gateway, auth off, on every interface.
func TestHealthSaysARejectedReload(t *testing.T) {
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	listen := "0.0.0.0:" + port
	file := filepath.Join(t.TempDir(), "gateway.yaml")
	const good = "listen: \"127.0.0.1:1\"\nproviders:\n  m: {type: mock, models: {e: {}}}\n"
	if err := os.WriteFile(file, []byte(good+"auth: {anonymous: true}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	serveFor(t, file, config.Options{Listen: listen})
	if err := os.WriteFile(file, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	want := "ok: http://127.0.0.1:" + port + "/health: version " + buildVersion() +
		"; the last reload was rejected (errors: 1), the previous config serves\n"
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out, errOut := runs(t, "health", "-config", file, "-listen", listen)
		if code != 0 {
			t.Fatalf("health after a bad edit: exit %d, %s", code, errOut)
		}
		if out == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health says %q, want %q", out, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
