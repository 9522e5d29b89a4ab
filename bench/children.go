package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// child is a server process the load tool started. Every child is stopped
// when the run ends, however it ends: by stopAll on return or panic of the
// main goroutine, by SIGKILL from the kernel if the tool itself dies
// (Pdeathsig), and our own children also exit when their parent pid changes.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // its exit status, once done
	// stopping is set before we kill it, so its exit is not an error.
	stopping bool
	// grace is how long it may take to exit after SIGTERM.
	grace time.Duration
}

var (
	childrenMu sync.Mutex
	children   []*child
)

// start runs cmd as a child, its output going to logPath (stdout only if
// cmd has none set). ln, when not
// nil, is handed to the child as fd 3 and closed here. onExit is called if
// the child exits before it is stopped.
func start(name string, cmd *exec.Cmd, logPath string, ln *net.TCPListener, onExit func(error)) (*child, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	if cmd.Stdout == nil {
		cmd.Stdout = logf
	}
	cmd.Stderr = logf
	// The main goroutine is locked to the main thread (see init), and
	// children are started from it, so this fires only when the tool's
	// process ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if ln != nil {
		f, err := ln.File()
		_ = ln.Close()
		if err != nil {
			_ = logf.Close()
			return nil, err
		}
		defer f.Close()
		cmd.ExtraFiles = []*os.File{f}
	}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{}), grace: 3 * time.Second}
	childrenMu.Lock()
	children = append(children, c)
	childrenMu.Unlock()
	go func() {
		c.err = cmd.Wait()
		_ = logf.Close()
		childrenMu.Lock()
		stopping := c.stopping
		childrenMu.Unlock()
		close(c.done)
		if !stopping && onExit != nil {
			onExit(fmt.Errorf("%s (pid %d) exited during the run: %v\n%s", name, c.pid(), c.err, c.logTail(20)))
		}
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// logTail returns the last n lines of the child's output.
func (c *child) logTail(n int) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// stop sends SIGTERM, and SIGKILL to its process group if it has not
// exited within its grace.
func (c *child) stop() {
	childrenMu.Lock()
	c.stopping = true
	childrenMu.Unlock()
	if c.exited() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(c.grace):
		_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// stopAll stops every child started, in reverse order.
func stopAll() {
	childrenMu.Lock()
	cs := append([]*child(nil), children...)
	children = nil
	childrenMu.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(c.stop)
	}
	wg.Wait()
}

// freeListener reserves a loopback port.
func freeListener() (*net.TCPListener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// freePort returns a loopback port that was free a moment ago, for the
// gateway, whose listen address comes from its config.
func freePort() (string, error) {
	ln, err := freeListener()
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr, nil
}

// waitReady polls GET /health until it answers 200, the child exits, or
// timeout passes.
func waitReady(ctx context.Context, c *child, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if c.exited() {
			return fmt.Errorf("%s exited before it was ready: %v\n%s", c.name, c.err, c.logTail(20))
		}
		code, body, err := fasthttp.GetTimeout(nil, "http://"+addr+"/health", time.Second)
		if err == nil && code == 200 {
			return nil
		}
		if err == nil {
			last = fmt.Errorf("GET /health: HTTP %d: %s", code, bytes.TrimSpace(truncate(body, 200)))
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return errors.Join(fmt.Errorf("%s not ready on %s after %s", c.name, addr, timeout), last, errors.New(c.logTail(20)))
}
