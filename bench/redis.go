package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// redisServer is a redis-server the load tool started for the gateway
// that keeps its state in Redis.
type redisServer struct {
	proc *child
	addr string // 127.0.0.1:port
}

// startRedis starts redis-server on a free loopback port, without
// persistence, its files in dir, and waits until it answers PING. It
// returns nil and no error when redis-server is not on PATH.
func startRedis(ctx context.Context, dir string, onExit func(error)) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, nil
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no")
	p, err := start("redis", cmd, filepath.Join(dir, "redis.log"), nil, onExit)
	if err != nil {
		return nil, err
	}
	r := &redisServer{proc: p, addr: addr}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p.exited() {
			return nil, fmt.Errorf("redis exited before it was ready: %v\n%s", p.err, p.logTail(20))
		}
		reply, err := redisCmd(addr, "PING")
		if err == nil && reply == "PONG" {
			return r, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("redis not ready on %s after 10s: %q %v\n%s", addr, reply, err, p.logTail(20))
		}
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// redisCounts are the commands a Redis has run, INFO left out.
type redisCounts struct {
	// scripts counts the script calls (EVAL, EVALSHA, FCALL and their
	// read-only forms): a gateway makes one per decision.
	scripts uint64
	// commands counts every command, those that scripts ran included.
	commands uint64
}

var scriptCommands = []string{"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"}

// counts asks the server for its command counts.
func (r *redisServer) counts() (redisCounts, error) {
	info, err := redisCmd(r.addr, "INFO commandstats")
	if err != nil {
		return redisCounts{}, err
	}
	return parseCommandStats(info)
}

// parseCommandStats sums the calls of an INFO commandstats reply, whose
// lines read cmdstat_NAME:calls=N,usec=...
func parseCommandStats(info string) (redisCounts, error) {
	var c redisCounts
	for line := range strings.Lines(info) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_")
		if !ok {
			continue
		}
		name, stats, _ := strings.Cut(rest, ":")
		calls, _, _ := strings.Cut(strings.TrimPrefix(stats, "calls="), ",")
		n, err := strconv.ParseUint(calls, 10, 64)
		if err != nil || !strings.HasPrefix(stats, "calls=") {
			return redisCounts{}, fmt.Errorf("unexpected commandstats line %q", strings.TrimSpace(line))
		}
		switch {
		case name == "info":
		case slices.Contains(scriptCommands, name):
			c.scripts += n
			c.commands += n
		default:
			c.commands += n
		}
	}
	return c, nil
}

// since is c less an earlier count.
func (c redisCounts) since(before redisCounts) redisCounts {
	return redisCounts{scripts: c.scripts - before.scripts, commands: c.commands - before.commands}
}

// redisCmd sends one inline command (words without quotes or newlines)
// on a fresh connection and returns the reply: a simple string, an
// integer or a bulk string as text, or the server's error.
func redisCmd(addr, cmd string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, cmd+"\r\n"); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(conn))
}

// maxReply bounds a bulk reply: INFO stats is a few kilobytes.
const maxReply = 1 << 20

// readReply reads one RESP reply that is not an array.
func readReply(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New("redis: " + line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 || n > maxReply {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(br, b); err != nil {
			return "", err
		}
		return string(b[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", truncate([]byte(line), 80))
}
