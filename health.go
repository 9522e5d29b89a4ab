package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"gateway/config"
)

// maxHealthBody bounds what the health check reads of an answer: /health
// is a few hundred bytes, and whatever answers on the port may not be a
// gateway.
const maxHealthBody = 64 << 10

// health asks a running gateway's /health whether it serves, for a
// container's HEALTHCHECK or a Kubernetes exec probe (a scratch image has
// no curl). It prints one line saying why, and exits 0 only on a 200 whose
// status is "ok".
func health(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	target := fs.String("url", "", "the gateway's URL, such as http://127.0.0.1:8080 (default: the address serving listens on)")
	path := fs.String("config", configPath(), "the config file whose listen address to check")
	listen := fs.String("listen", listenAddr(), "the listen address to check, as given to serving")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		return usageError(stderr, "unexpected argument %q", fs.Arg(0))
	}
	if *timeout <= 0 {
		return usageError(stderr, "-timeout must be positive, got %v", *timeout)
	}
	u, err := healthURL(*target, *listen, *path)
	if err != nil {
		fmt.Fprintln(stderr, "unhealthy:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	line, err := checkHealth(ctx, u)
	if err != nil {
		fmt.Fprintf(stderr, "unhealthy: %s: %v\n", u, err)
		return 1
	}
	fmt.Fprintf(stdout, "ok: %s: %s\n", u, line)
	return 0
}

// healthURL is the /health URL to ask: -url as given (its /health when it
// names no path), else the address serving would listen on, found the way
// serving finds it (-listen, GATEWAY_LISTEN, the config's listen), with a
// wildcard host asked on loopback.
func healthURL(target, listen, path string) (string, error) {
	if target != "" {
		u, err := url.Parse(target)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("-url wants http://host:port, got %q", target)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/health"
		}
		return u.String(), nil
	}
	if listen == "" {
		var err error
		if listen, err = config.ListenOf(path); err != nil {
			return "", err
		}
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("listen address %q: want host:port", listen)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		// Serving on every interface includes loopback.
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/health", nil
}

// healthClient asks the gateway itself: no HTTP_PROXY from the
// environment, and a redirect is an answer (not a 200), not followed.
var healthClient = &http.Client{
	Transport: &http.Transport{Proxy: nil},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// checkHealth GETs u and says what the gateway reported, or why it is not
// healthy.
func checkHealth(ctx context.Context, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := healthClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHealthBody))
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	var h struct {
		Status     string `json:"status"`
		Version    string `json:"version"`
		LastReload struct {
			OK     bool `json:"ok"`
			Errors int  `json:"errors"`
		} `json:"last_reload"`
	}
	if err := json.Unmarshal(body, &h); err != nil {
		return "", fmt.Errorf("the answer is not a gateway's /health: %w", err)
	}
	if h.Status != "ok" {
		return "", fmt.Errorf("status %q", h.Status)
	}
	line := "version " + h.Version
	if !h.LastReload.OK {
		// Still healthy: the last good config serves. Say so, for whoever reads the probe's output.
		line += fmt.Sprintf("; the last reload was rejected (errors: %d), the previous config serves", h.LastReload.Errors)
	}
	return line, nil
}
