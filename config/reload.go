package config

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// ReloadStatus is the outcome of the last reload attempt.
type ReloadStatus struct {
	// At is when the attempt finished (or when the first config loaded).
	At time.Time `json:"at"`
	// OK is false when the last file read could not be used.
	OK bool `json:"ok"`
	// Checksum is the checksum of the config now serving.
	Checksum string `json:"checksum"`
	// Errors lists what was wrong with a rejected file.
	Errors []string `json:"errors,omitempty"`
}

// Reloader owns the reloads of one config file: fsnotify events on the
// file's directory and on the directories of its key files, and explicit
// triggers (SIGHUP), feed one goroutine, which debounces them, reads the
// file and resolves its key references again, skips what is unchanged
// (the bytes and every key), and hands each new good config to apply. A
// bad file, or one apply refuses, changes nothing but the status.
type Reloader struct {
	path     string
	opt      Options
	apply    func(*Config) error
	log      *slog.Logger
	debounce time.Duration

	trigger chan struct{}
	status  atomic.Pointer[ReloadStatus]

	// Owned by the Run goroutine. current is the checksum of the file
	// serving; serving and bad are the states (file and keys) serving
	// and last rejected. keyDirs are the directories watched for the key
	// files of the config serving (servingFiles) and of the last file
	// read (triedFiles): a rejected file's missing key may appear.
	current      string
	serving, bad state
	servingFiles []string
	triedFiles   []string
	keyDirs      map[string]bool
}

// state tells one reading of the config from another: the file's bytes
// and what every key reference resolved to.
type state [sha256.Size]byte

func stateOf(checksum string, res resolved) state {
	h := sha256.New()
	h.Write([]byte(checksum))
	h.Write(res.digest[:])
	var s state
	h.Sum(s[:0])
	return s
}

// NewReloader returns a Reloader for the file at path, whose config now
// serving is current.
func NewReloader(path string, opt Options, current *Config, apply func(*Config) error, log *slog.Logger) *Reloader {
	if opt.Dir == "" {
		opt.Dir = filepath.Dir(path)
	}
	r := &Reloader{
		path: path, opt: opt, apply: apply, log: log,
		debounce:     100 * time.Millisecond,
		trigger:      make(chan struct{}, 1),
		current:      current.Checksum,
		serving:      stateOf(current.Checksum, current.resolved),
		keyDirs:      map[string]bool{},
		servingFiles: current.resolved.files,
	}
	r.status.Store(&ReloadStatus{At: current.LoadedAt, OK: true, Checksum: current.Checksum})
	return r
}

// SetDebounce sets how long the Reloader waits for a burst of events to end.
// Call it before Run.
func (r *Reloader) SetDebounce(d time.Duration) { r.debounce = d }

// Trigger asks for a reload, as SIGHUP does: the file is read and every
// key reference resolved again, and a file rejected before is tried
// again. It never blocks.
func (r *Reloader) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Status returns the outcome of the last reload attempt.
func (r *Reloader) Status() ReloadStatus { return *r.status.Load() }

// Run watches the file, and the directories of its key files, until ctx
// ends.
func (r *Reloader) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching config: %w", err)
	}
	defer w.Close()
	// Watch the directory, not the file: editors save by renaming a new
	// file over the old one, and Kubernetes swaps a ..data symlink, both of
	// which a watch on the file itself would lose.
	dir := filepath.Dir(r.path)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watching config directory %s: %w", dir, err)
	}
	base := filepath.Base(r.path)
	r.watchKeys(w, dir)
	// The file may have changed between its load and this watch; look
	// once, so such an edit is not lost until the next one.
	timer := time.NewTimer(r.debounce)
	defer timer.Stop()
	force := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			name := filepath.Base(ev.Name)
			// In a key file's directory any event may be the key: a
			// Kubernetes Secret volume swaps its ..data symlink, and
			// the names in it are links through that.
			if ev.Op != fsnotify.Chmod && (r.keyDirs[filepath.Dir(ev.Name)] ||
				filepath.Dir(ev.Name) == dir && (name == base || name == "..data")) {
				timer.Reset(r.debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			r.log.Warn("config watch error", "err", err)
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				// Events were lost, perhaps the one that mattered: look.
				timer.Reset(r.debounce)
			}
		case <-r.trigger:
			force = true
			timer.Reset(r.debounce)
		case <-timer.C:
			r.reload(force)
			force = false
			if r.watchKeys(w, dir) {
				// A key may have changed between its read and the new
				// watch; look once more.
				timer.Reset(r.debounce)
			}
		}
	}
}

// watchKeys watches the directories of the key files of the config
// serving and of the last file read (the nearest existing parent of one
// not mounted yet), and stops watching the others. It reports whether it
// added a watch. dir, the config's own directory, stays watched.
func (r *Reloader) watchKeys(w *fsnotify.Watcher, dir string) bool {
	want := map[string]bool{}
	for _, f := range append(append([]string(nil), r.servingFiles...), r.triedFiles...) {
		want[existing(filepath.Dir(f))] = true
	}
	for d := range r.keyDirs {
		if !want[d] {
			delete(r.keyDirs, d)
			if d != dir {
				_ = w.Remove(d)
			}
		}
	}
	added := false
	for d := range want {
		if r.keyDirs[d] {
			continue
		}
		if err := w.Add(d); err != nil {
			r.log.Warn("cannot watch a key file directory; SIGHUP still reloads its keys", "dir", d, "err", err)
			continue
		}
		r.keyDirs[d], added = true, true
	}
	return added
}

// existing returns dir, or its nearest parent that exists.
func existing(dir string) string {
	for {
		if _, err := os.Stat(dir); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			return dir
		}
		dir = up
	}
}

// reload reads the file and its keys and applies them if they changed.
// force (SIGHUP) tries a rejected state again and says when nothing
// changed.
func (r *Reloader) reload(force bool) {
	data, err := os.ReadFile(r.path)
	if err != nil {
		// Mid-rename the file may be briefly absent; the next event retries.
		r.fail(state{}, []string{fmt.Sprintf("reading config: %v", errors.Unwrap(err))})
		return
	}
	s := sha256.Sum256(data)
	sum := hex.EncodeToString(s[:])
	cfg, res, err := parse(data, r.opt)
	r.triedFiles = res.files
	st := stateOf(sum, res)
	if st == r.serving {
		switch {
		case !r.status.Load().OK:
			// A bad edit was reverted (or the file or key came back):
			// nothing to apply, but the rejection no longer describes
			// the file.
			r.bad = state{}
			r.status.Store(&ReloadStatus{At: time.Now(), OK: true, Checksum: sum})
			r.log.Info("config file is back to the one serving", "file", r.path, "checksum", sum[:12])
		case force:
			r.log.Info("config file and keys unchanged", "file", r.path, "checksum", sum[:12])
		}
		return
	}
	if st == r.bad && !force {
		return
	}
	if err != nil {
		var msgs []string
		var es Errors
		if errors.As(err, &es) {
			for _, e := range es {
				msgs = append(msgs, e.Error())
			}
		} else {
			msgs = []string{err.Error()}
		}
		r.fail(st, msgs)
		return
	}
	for _, w := range cfg.Warnings {
		r.log.Warn(w)
	}
	if err := r.apply(cfg); err != nil {
		r.fail(st, []string{err.Error()})
		return
	}
	what := "config reloaded"
	if sum == r.current {
		what = "config reloaded: a key changed"
	}
	r.current, r.serving, r.bad, r.servingFiles = sum, st, state{}, res.files
	r.status.Store(&ReloadStatus{At: time.Now(), OK: true, Checksum: sum})
	r.log.Info(what, "file", r.path, "checksum", sum[:12])
}

func (r *Reloader) fail(st state, msgs []string) {
	r.bad = st
	r.status.Store(&ReloadStatus{At: time.Now(), OK: false, Checksum: r.current, Errors: msgs})
	for _, m := range msgs {
		r.log.Error("config rejected, still serving the previous one", "file", r.path, "err", m)
	}
}
