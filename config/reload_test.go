package config

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// reloadWait bounds every wait in these tests: generous, because a busy
// machine running -race can be slow to deliver an fsnotify event, but a
// passing test returns as soon as its condition holds.
const reloadWait = 10 * time.Second

// reloadEnv stands in for the process environment.
func reloadEnv(name string) (string, bool) {
	if name == "RELOAD_TEST_KEY" {
		return "k-reload", true
	}
	return "", false
}

// reloadYAML is a good config whose `auto` group is served by mock/<model>.
// Its key comes from reloadEnv, so a reload that ignored Options would fail.
func reloadYAML(model string) string {
	return fmt.Sprintf(`providers:
  mock:
    type: mock
    keys: ["${RELOAD_TEST_KEY}"]
    models:
      %[1]s: {}
models:
  auto:
    targets: [mock/%[1]s]
`, model)
}

const (
	reloadBadYAML     = "providers: [unclosed\n"
	reloadBadSemantic = `providers:
  mock:
    type: mock
    models:
      echo: {}
models:
  auto:
    targets: [mock/nope]
`
)

func reloadSum(s string) string {
	b := sha256.Sum256([]byte(s))
	return hex.EncodeToString(b[:])
}

// reloadEventually polls cond until it holds or d passes.
func reloadEventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// reloadLog collects log output from the Run goroutine.
type reloadLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *reloadLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *reloadLog) count(s string) int { return strings.Count(l.String(), s) }

func (l *reloadLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// reloadRig is a Reloader on a file in a temp dir, with an apply that
// records what it was handed.
type reloadRig struct {
	t    *testing.T
	path string
	r    *Reloader
	log  *reloadLog
	// refuse, when set before start, decides which configs apply rejects.
	refuse func(*Config) error

	mu    sync.Mutex
	calls []*Config // every config apply was called with
	good  []*Config // the ones it accepted

	cancel context.CancelFunc
	done   chan error
}

// newReloadRig writes initial to a fresh dir/gateway.yaml and builds a
// Reloader for it.
func newReloadRig(t *testing.T, initial string, debounce time.Duration) *reloadRig {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte(initial), 0o644); err != nil {
		t.Fatal(err)
	}
	return newReloadRigAt(t, path, debounce)
}

// newReloadRigAt builds a Reloader for the existing config file at path.
func newReloadRigAt(t *testing.T, path string, debounce time.Duration) *reloadRig {
	t.Helper()
	return newReloadRigOpt(t, path, debounce, Options{LookupEnv: reloadEnv})
}

// newReloadRigOpt is newReloadRigAt with the Options given.
func newReloadRigOpt(t *testing.T, path string, debounce time.Duration, opt Options) *reloadRig {
	t.Helper()
	cfg, err := Load(path, opt)
	if err != nil {
		t.Fatalf("loading the initial config: %v", err)
	}
	g := &reloadRig{t: t, path: path, log: &reloadLog{}}
	logger := slog.New(slog.NewTextHandler(g.log, nil))
	g.r = NewReloader(path, opt, cfg, g.apply, logger)
	g.r.SetDebounce(debounce)
	return g
}

func (g *reloadRig) apply(c *Config) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, c)
	if g.refuse != nil {
		if err := g.refuse(c); err != nil {
			return err
		}
	}
	g.good = append(g.good, c)
	return nil
}

// start runs the Reloader until the test ends, and returns once it is
// watching: a first rewrite of the file (a comment added) has been applied,
// and then forgotten.
func (g *reloadRig) start() {
	g.t.Helper()
	g.startRaw()
	data, err := os.ReadFile(g.path)
	if err != nil {
		g.t.Fatal(err)
	}
	warm := string(data) + "# watched\n"
	g.writeAtomic(warm)
	reloadEventually(g.t, reloadWait, "the Reloader to start watching", func() bool {
		return g.r.Status().Checksum == reloadSum(warm)
	})
	g.mu.Lock()
	g.calls, g.good = nil, nil
	g.mu.Unlock()
}

// startRaw runs the Reloader until the test ends, without waiting.
func (g *reloadRig) startRaw() {
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel, g.done = cancel, make(chan error, 1)
	go func() { g.done <- g.r.Run(ctx) }()
	g.t.Cleanup(g.stop)
}

// stop cancels Run and waits for it to return. It may be called twice.
func (g *reloadRig) stop() {
	g.t.Helper()
	if g.cancel == nil {
		return
	}
	g.cancel()
	g.cancel = nil
	select {
	case err := <-g.done:
		if err != nil {
			g.t.Errorf("Run returned %v", err)
		}
	case <-time.After(reloadWait):
		g.t.Errorf("Run did not return within %v of cancel", reloadWait)
	}
}

// models lists the `auto` target of every accepted config, in order.
func (g *reloadRig) models() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]string, len(g.good))
	for i, c := range g.good {
		out[i] = c.Models["auto"].Targets[0].Ref
	}
	return out
}

func (g *reloadRig) callCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.calls)
}

// waitModel waits until the last accepted config routes auto to
// mock/model.
func (g *reloadRig) waitModel(model string) {
	g.t.Helper()
	want := "mock/" + model
	reloadEventually(g.t, reloadWait, "a reload to "+want, func() bool {
		m := g.models()
		return len(m) > 0 && m[len(m)-1] == want
	})
}

// writeAtomic replaces the file as editors do: a new file in the same
// directory renamed over the old one.
func (g *reloadRig) writeAtomic(content string) {
	g.t.Helper()
	f, err := os.CreateTemp(filepath.Dir(g.path), ".gateway.yaml.tmp*")
	if err != nil {
		g.t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		g.t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		g.t.Fatal(err)
	}
	if err := os.Rename(f.Name(), g.path); err != nil {
		g.t.Fatal(err)
	}
}

func TestReloadWriteInPlace(t *testing.T) {
	g := newReloadRig(t, reloadYAML("v1"), 20*time.Millisecond)
	g.start()
	v2 := reloadYAML("v2")
	if err := os.WriteFile(g.path, []byte(v2), 0o644); err != nil {
		t.Fatal(err)
	}
	g.waitModel("v2")
	reloadEventually(t, reloadWait, "status OK", func() bool { return g.r.Status().OK })
	g.stop()

	if m := g.models(); len(m) != 1 {
		t.Errorf("applies = %v, want one", m)
	}
	c := g.good[0]
	if c.Checksum != reloadSum(v2) {
		t.Errorf("applied checksum %s, want that of the new file", c.Checksum)
	}
	if got := c.Providers["mock"].Keys[0].Reveal(); got != "k-reload" {
		t.Errorf("key resolved to %q: the reload did not use the Options' LookupEnv", got)
	}
	if st := g.r.Status(); !st.OK || st.Checksum != reloadSum(v2) || len(st.Errors) != 0 {
		t.Errorf("status = %+v, want OK with the new checksum", st)
	}
}

func TestReloadRenameOver(t *testing.T) {
	g := newReloadRig(t, reloadYAML("v1"), 20*time.Millisecond)
	g.start()
	g.writeAtomic(reloadYAML("v2"))
	g.waitModel("v2")
	g.writeAtomic(reloadYAML("v3"))
	g.waitModel("v3")
	g.stop()
	if got := strings.Join(g.models(), " "); got != "mock/v2 mock/v3" {
		t.Errorf("applies = %s, want mock/v2 mock/v3", got)
	}
}

// TestReloadKubernetesSymlinkSwap mounts the config the way the kubelet
// does a ConfigMap: gateway.yaml -> ..data/gateway.yaml, ..data ->
// ..<timestamp>, and an update swaps ..data atomically.
func TestReloadKubernetesSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	version := func(ts, content string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ts, "gateway.yaml"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_a", reloadYAML("v1"))
	if err := os.Symlink("..2026_a", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "gateway.yaml"), filepath.Join(dir, "gateway.yaml")); err != nil {
		t.Fatal(err)
	}
	g := newReloadRigAt(t, filepath.Join(dir, "gateway.yaml"), 20*time.Millisecond)
	// Rewriting gateway.yaml would replace the symlink, so no warm-up: the
	// first swap may be seen by Run's initial look, the second only
	// through the watch.
	g.startRaw()

	swap := func(old, ts, content string) {
		t.Helper()
		version(ts, content)
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(ts, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
	swap("..2026_a", "..2026_b", reloadYAML("v2"))
	g.waitModel("v2")
	swap("..2026_b", "..2026_c", reloadYAML("v3"))
	g.waitModel("v3")
	g.stop()
	if got := strings.Join(g.models(), " "); got != "mock/v2 mock/v3" {
		t.Errorf("applies = %s, want mock/v2 mock/v3", got)
	}
	if st := g.r.Status(); !st.OK || st.Checksum != reloadSum(reloadYAML("v3")) {
		t.Errorf("status = %+v, want OK on v3", st)
	}
}

func TestReloadRejectsBadFile(t *testing.T) {
	g := newReloadRig(t, reloadYAML("v1"), 20*time.Millisecond)
	g.start()
	serving := g.r.Status().Checksum

	for _, tc := range []struct {
		name, content, want string
	}{
		{"yaml error", reloadBadYAML, "(line 1)"},
		{"semantic error", reloadBadSemantic, `models.auto.targets[0]: target "mock/nope": provider "mock" has no model "nope" (line 8)`},
	} {
		g.writeAtomic(tc.content)
		var st ReloadStatus
		reloadEventually(t, reloadWait, tc.name+" rejected", func() bool {
			st = g.r.Status()
			return !st.OK && len(st.Errors) > 0 && strings.Contains(st.Errors[0], tc.want)
		})
		if st.Checksum != serving {
			t.Errorf("%s: status checksum %s, want the one still serving", tc.name, st.Checksum)
		}
	}
	if n := g.callCount(); n != 0 {
		t.Errorf("apply called %d times for bad files", n)
	}
	// The status is published just before the log line is written.
	reloadEventually(t, reloadWait, "a logged rejection per bad file", func() bool {
		return g.log.count("config rejected") == 2
	})

	g.writeAtomic(reloadYAML("v2"))
	g.waitModel("v2")
	reloadEventually(t, reloadWait, "status OK after the fix", func() bool {
		st := g.r.Status()
		return st.OK && len(st.Errors) == 0 && st.Checksum == reloadSum(reloadYAML("v2"))
	})
}

// TestReloadRemembersBadChecksum drives reload directly, so it can tell
// that a second look at the same bad bytes did nothing at all.
func TestReloadRemembersBadChecksum(t *testing.T) {
	g := newReloadRig(t, reloadYAML("v1"), 20*time.Millisecond)

	g.writeAtomic(reloadBadSemantic)
	g.r.reload(false)
	first := g.r.status.Load()
	if first.OK || len(first.Errors) != 1 {
		t.Fatalf("status after a bad file = %+v, want one error", *first)
	}
	if n := g.log.count("config rejected"); n != 1 {
		t.Fatalf("logged %d rejections, want 1", n)
	}

	// The same bytes again, as a new file: neither logged nor reported.
	g.writeAtomic(reloadBadSemantic)
	g.r.reload(false)
	g.r.reload(false)
	if n := g.log.count("config rejected"); n != 1 {
		t.Errorf("the same bad file logged %d times, want once", n)
	}
	if g.r.status.Load() != first {
		t.Errorf("the same bad file changed the status to %+v", g.r.Status())
	}

	g.writeAtomic(reloadYAML("v2"))
	g.r.reload(false)
	if got := strings.Join(g.models(), " "); got != "mock/v2" {
		t.Fatalf("applies = %q, want mock/v2", got)
	}

	// After a good config, the old bad bytes are news again.
	g.writeAtomic(reloadBadSemantic)
	g.r.reload(false)
	if n := g.log.count("config rejected"); n != 2 {
		t.Errorf("a bad file after a good one logged %d rejections in all, want 2", n)
	}
	if n := g.callCount(); n != 1 {
		t.Errorf("apply called %d times, want 1", n)
	}
}

// TestReloadRevertClearsError: a bad edit reverted to the config still
// serving has nothing to apply, but the rejection is over.
func TestReloadRevertClearsError(t *testing.T) {
	v1 := reloadYAML("v1")
	g := newReloadRig(t, v1, 20*time.Millisecond)

	g.writeAtomic(reloadBadYAML)
	g.r.reload(false)
	if g.r.Status().OK {
		t.Fatal("a bad file left the status OK")
	}
	g.writeAtomic(v1)
	g.r.reload(false)
	if st := g.r.Status(); !st.OK || len(st.Errors) != 0 || st.Checksum != reloadSum(v1) {
		t.Errorf("status after reverting to the serving config = %+v, want OK", st)
	}
	if n := g.callCount(); n != 0 {
		t.Errorf("apply called %d times for the config already serving", n)
	}

	// A missing file is an error too, and its return clears it.
	if err := os.Remove(g.path); err != nil {
		t.Fatal(err)
	}
	g.r.reload(false)
	if st := g.r.Status(); st.OK || len(st.Errors) != 1 || !strings.Contains(st.Errors[0], "reading config") {
		t.Errorf("status with the file gone = %+v, want a read error", st)
	}
	g.writeAtomic(v1)
	g.r.reload(false)
	if st := g.r.Status(); !st.OK {
		t.Errorf("status after the file came back = %+v, want OK", st)
	}

	// Reverting means the bad bytes are reported again if they return.
	g.writeAtomic(reloadBadYAML)
	g.r.reload(false)
	if n := g.log.count("config rejected"); n != 3 {
		t.Errorf("logged %d rejections, want 3 (bad, missing, bad again)", n)
	}
}

func TestReloadSkipsIdenticalBytes(t *testing.T) {
	v1 := reloadYAML("v1")

	t.Run("direct", func(t *testing.T) {
		g := newReloadRig(t, v1, 20*time.Millisecond)
		before := g.r.status.Load()
		if err := os.WriteFile(g.path, []byte(v1), 0o644); err != nil {
			t.Fatal(err)
		}
		g.r.reload(false)
		g.writeAtomic(v1)
		g.r.reload(false)
		later := time.Now().Add(time.Hour)
		if err := os.Chtimes(g.path, later, later); err != nil {
			t.Fatal(err)
		}
		g.r.reload(false)
		if n := g.callCount(); n != 0 {
			t.Errorf("apply called %d times for unchanged bytes", n)
		}
		if g.r.status.Load() != before {
			t.Errorf("unchanged bytes changed the status to %+v", g.r.Status())
		}
	})

	t.Run("watched", func(t *testing.T) {
		g := newReloadRig(t, v1, 20*time.Millisecond)
		g.start()
		serving, err := os.ReadFile(g.path) // start's rewrite, now serving
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(g.path, serving, 0o644); err != nil {
			t.Fatal(err)
		}
		g.writeAtomic(string(serving))
		later := time.Now().Add(time.Hour)
		if err := os.Chtimes(g.path, later, later); err != nil {
			t.Fatal(err)
		}
		g.r.Trigger()
		// A real change afterwards: whatever the rewrites did, they must
		// not show up as an apply before it.
		g.writeAtomic(reloadYAML("v2"))
		g.waitModel("v2")
		g.stop()
		if got := strings.Join(g.models(), " "); got != "mock/v2" {
			t.Errorf("applies = %s, want only mock/v2", got)
		}
	})
}

// TestReloadTrigger edits a file the watch cannot see: gateway.yaml is a
// symlink into another directory, and that file is rewritten in place.
// Only Trigger (what SIGHUP calls) can bring such an edit in.
func TestReloadTrigger(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	file := filepath.Join(other, "real.yaml")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(reloadYAML("v1"))
	path := filepath.Join(dir, "gateway.yaml")
	if err := os.Symlink(file, path); err != nil {
		t.Fatal(err)
	}
	g := newReloadRigAt(t, path, 20*time.Millisecond)
	g.startRaw()

	// The first edit may also be caught by Run's initial look at the file;
	// once it is applied, Run is past that look, and the second edit has
	// nothing but Trigger.
	write(reloadYAML("v2"))
	g.r.Trigger()
	g.waitModel("v2")
	write(reloadYAML("v3"))
	g.r.Trigger()
	g.r.Trigger() // never blocks
	g.waitModel("v3")
	g.stop()
	if got := strings.Join(g.models(), " "); got != "mock/v2 mock/v3" {
		t.Errorf("applies = %s, want mock/v2 mock/v3", got)
	}
}

func TestReloadCoalescesBurst(t *testing.T) {
	g := newReloadRig(t, reloadYAML("v0"), 20*time.Millisecond)
	g.start()
	const writes = 20
	for i := 1; i <= writes; i++ {
		g.writeAtomic(reloadYAML(fmt.Sprintf("v%d", i)))
	}
	g.waitModel(fmt.Sprintf("v%d", writes))
	g.stop()

	m := g.models()
	t.Logf("%d writes, %d applies: %v", writes, len(m), m)
	if len(m) >= writes {
		t.Errorf("a burst of %d writes made %d applies, want them coalesced", writes, len(m))
	}
	// The file only moves forward, so applies must too: no stale version
	// may be applied after a newer one.
	prev := 0
	for _, name := range m {
		var n int
		if _, err := fmt.Sscanf(name, "mock/v%d", &n); err != nil || n <= prev {
			t.Fatalf("applies out of order: %v", m)
		}
		prev = n
	}
	if last := m[len(m)-1]; last != fmt.Sprintf("mock/v%d", writes) {
		t.Errorf("last apply %s, want the last write", last)
	}
}

func TestReloadApplyErrorRejects(t *testing.T) {
	g := newReloadRig(t, reloadYAML("v1"), 20*time.Millisecond)
	g.refuse = func(c *Config) error {
		if c.Models["auto"].Targets[0].Ref == "mock/refused" {
			return fmt.Errorf("building provider mock: refused for the test")
		}
		return nil
	}
	g.start()
	serving := g.r.Status().Checksum

	g.writeAtomic(reloadYAML("refused"))
	var st ReloadStatus
	reloadEventually(t, reloadWait, "the refused config rejected", func() bool {
		st = g.r.Status()
		return !st.OK
	})
	if len(st.Errors) != 1 || !strings.Contains(st.Errors[0], "refused for the test") {
		t.Errorf("errors = %q, want apply's error", st.Errors)
	}
	if st.Checksum != serving {
		t.Errorf("status checksum %s, want the one still serving", st.Checksum)
	}
	if n := g.callCount(); n != 1 {
		t.Errorf("apply called %d times, want 1", n)
	}

	g.writeAtomic(reloadYAML("v2"))
	g.waitModel("v2")
	reloadEventually(t, reloadWait, "status OK", func() bool { return g.r.Status().OK })
	if got := strings.Join(g.models(), " "); got != "mock/v2" {
		t.Errorf("accepted = %s, want only mock/v2", got)
	}
}

func TestReloadRunFailsWithoutDirectory(t *testing.T) {
	opt := Options{LookupEnv: reloadEnv}
	cfg, err := Parse([]byte(reloadYAML("v1")), opt)
	if err != nil {
		t.Fatal(err)
	}
	r := NewReloader(filepath.Join(t.TempDir(), "missing", "gateway.yaml"), opt, cfg,
		func(*Config) error { return nil }, slog.New(slog.DiscardHandler))
	err = r.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "watching config directory") {
		t.Errorf("Run on a missing directory = %v, want a watch error", err)
	}
}

func TestReloadNoGoroutineLeak(t *testing.T) {
	baseline := runtime.NumGoroutine()
	g := newReloadRig(t, reloadYAML("v0"), 20*time.Millisecond)
	g.start()
	const reloads = 100
	for i := 1; i <= reloads; i++ {
		g.writeAtomic(reloadYAML(fmt.Sprintf("v%d", i)))
		g.waitModel(fmt.Sprintf("v%d", i))
	}
	g.stop()
	if n := len(g.models()); n != reloads {
		t.Errorf("%d applies, want %d", n, reloads)
	}
	deadline := time.Now().Add(reloadWait)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after stopping Run, %d before:\n%s",
				runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// reloadSecretYAML serves `auto` by mock/m, whose key is the file at ref;
// optRef, when set, adds an optional provider `backup` keyed by that file.
func reloadSecretYAML(ref, optRef string) string {
	y := fmt.Sprintf(`providers:
  mock:
    type: mock
    keys: ["file:%s"]
    models:
      m: {}
`, ref)
	if optRef != "" {
		y += fmt.Sprintf(`  backup:
    type: mock
    optional: true
    keys: ["file:%s"]
    models:
      b: {}
`, optRef)
	}
	return y + `models:
  auto:
    targets: [mock/m]
`
}

// reloadWriteFile writes content to path, creating it or rewriting it in
// place.
func reloadWriteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// lastKey returns the first key of provider in the last accepted config,
// "" when there is none or the provider was left out.
func (g *reloadRig) lastKey(provider string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.good) == 0 {
		return ""
	}
	p := g.good[len(g.good)-1].Providers[provider]
	if p == nil || len(p.Keys) == 0 {
		return ""
	}
	return p.Keys[0].Reveal()
}

// waitKey waits until the last accepted config holds key as provider's
// first key.
func (g *reloadRig) waitKey(provider, key string) {
	g.t.Helper()
	reloadEventually(g.t, reloadWait, provider+"'s key to be "+key, func() bool { return g.lastKey(provider) == key })
}

// TestReloadTriggerRereadsSecrets: the key file is a symlink into a
// directory no watch covers, and its target is rewritten in place. The
// config's bytes are the same; Trigger (SIGHUP) must still read the key
// again and apply it.
func TestReloadTriggerRereadsSecrets(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	target := filepath.Join(other, "key")
	reloadWriteFile(t, target, "sk-rotate-SECRET-one")
	if err := os.Symlink(target, filepath.Join(dir, "key")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "gateway.yaml")
	reloadWriteFile(t, path, reloadSecretYAML("key", ""))
	g := newReloadRigAt(t, path, 20*time.Millisecond)
	g.start()
	serving := g.r.Status().Checksum

	for _, key := range []string{"sk-rotate-SECRET-two", "sk-rotate-SECRET-three"} {
		reloadWriteFile(t, target, key)
		g.r.Trigger()
		g.waitKey("mock", key)
	}
	g.stop()
	if st := g.r.Status(); !st.OK || st.Checksum != serving {
		t.Errorf("status = %+v, want OK on the same file", st)
	}
	if n := g.callCount(); n != 2 {
		t.Errorf("apply called %d times, want once per rotation", n)
	}
	if strings.Contains(g.log.String(), "SECRET") {
		t.Errorf("the log shows a key:\n%s", g.log)
	}
}

// TestReloadSecretFileAppears: a key file mounted after the config was
// read is noticed without SIGHUP, because the directories of key files
// are watched like the config's, including one that does not exist yet.
func TestReloadSecretFileAppears(t *testing.T) {
	tests := []struct {
		name string
		// first is the config written once the rig runs; keyDir holds
		// the key file, which appears last.
		first, keyDir string
		provider      string
		// rejected says the first config is refused until the key
		// appears (else an optional provider is left out of it).
		rejected bool
	}{
		{"a rejected config is taken", reloadSecretYAML("secrets/new.key", ""), "secrets", "mock", true},
		{"an optional provider joins", reloadSecretYAML("present.key", "secrets/new.key"), "secrets", "backup", false},
		{"an optional provider joins once its directory is mounted", reloadSecretYAML("present.key", "later/new.key"), "later", "backup", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.keyDir == "secrets" {
				if err := os.Mkdir(filepath.Join(dir, "secrets"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			reloadWriteFile(t, filepath.Join(dir, "present.key"), "sk-present-SECRET")
			path := filepath.Join(dir, "gateway.yaml")
			reloadWriteFile(t, path, reloadYAML("v1"))
			g := newReloadRigAt(t, path, 20*time.Millisecond)
			g.start()

			g.writeAtomic(tc.first)
			if tc.rejected {
				reloadEventually(t, reloadWait, "the config rejected for its missing key", func() bool {
					st := g.r.Status()
					return !st.OK && len(st.Errors) == 1 && strings.Contains(st.Errors[0], "does not exist")
				})
			} else {
				reloadEventually(t, reloadWait, "the config applied without "+tc.provider, func() bool {
					return g.lastKey("mock") == "sk-present-SECRET"
				})
				if got := g.lastKey(tc.provider); got != "" {
					t.Fatalf("%s has key %q before its file exists", tc.provider, got)
				}
			}
			if err := os.MkdirAll(filepath.Join(dir, tc.keyDir), 0o755); err != nil {
				t.Fatal(err)
			}
			reloadWriteFile(t, filepath.Join(dir, tc.keyDir, "new.key"), "sk-new-SECRET")
			g.waitKey(tc.provider, "sk-new-SECRET")
			reloadEventually(t, reloadWait, "status OK", func() bool { return g.r.Status().OK })
		})
	}
}

// TestReloadSecretKubernetesSwap mounts the key the way the kubelet does
// a Secret: key -> ..data/key, ..data -> ..<timestamp>; a rotation swaps
// ..data, and the gateway takes the new key without SIGHUP.
func TestReloadSecretKubernetesSwap(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	version := func(ts, key string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(secrets, ts), 0o755); err != nil {
			t.Fatal(err)
		}
		reloadWriteFile(t, filepath.Join(secrets, ts, "key"), key)
	}
	version("..2026_a", "sk-k8s-SECRET-a")
	if err := os.Symlink("..2026_a", filepath.Join(secrets, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "key"), filepath.Join(secrets, "key")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "gateway.yaml")
	reloadWriteFile(t, path, reloadSecretYAML("secrets/key", ""))
	g := newReloadRigAt(t, path, 20*time.Millisecond)
	g.start()

	swap := func(old, ts, key string) {
		t.Helper()
		version(ts, key)
		tmp := filepath.Join(secrets, "..data_tmp")
		if err := os.Symlink(ts, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(secrets, "..data")); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(secrets, old)); err != nil {
			t.Fatal(err)
		}
	}
	swap("..2026_a", "..2026_b", "sk-k8s-SECRET-b")
	g.waitKey("mock", "sk-k8s-SECRET-b")
	swap("..2026_b", "..2026_c", "sk-k8s-SECRET-c")
	g.waitKey("mock", "sk-k8s-SECRET-c")
	g.stop()
	if n := g.callCount(); n != 2 {
		t.Errorf("apply called %d times, want once per swap", n)
	}
}
