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
// file's directory and explicit triggers (SIGHUP) feed one goroutine, which
// debounces them, skips unchanged bytes, and hands each new good config to
// apply. A bad file, or one apply refuses, changes nothing but the status.
type Reloader struct {
	path     string
	opt      Options
	apply    func(*Config) error
	log      *slog.Logger
	debounce time.Duration

	trigger chan struct{}
	status  atomic.Pointer[ReloadStatus]

	// Owned by the Run goroutine.
	current, bad string
}

// NewReloader returns a Reloader for the file at path, whose config now
// serving is current.
func NewReloader(path string, opt Options, current *Config, apply func(*Config) error, log *slog.Logger) *Reloader {
	if opt.Dir == "" {
		opt.Dir = filepath.Dir(path)
	}
	r := &Reloader{
		path: path, opt: opt, apply: apply, log: log,
		debounce: 100 * time.Millisecond,
		trigger:  make(chan struct{}, 1),
		current:  current.Checksum,
	}
	r.status.Store(&ReloadStatus{At: current.LoadedAt, OK: true, Checksum: current.Checksum})
	return r
}

// SetDebounce sets how long the Reloader waits for a burst of events to end.
// Call it before Run.
func (r *Reloader) SetDebounce(d time.Duration) { r.debounce = d }

// Trigger asks for a reload, as SIGHUP does. It never blocks.
func (r *Reloader) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Status returns the outcome of the last reload attempt.
func (r *Reloader) Status() ReloadStatus { return *r.status.Load() }

// Run watches the file until ctx ends.
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
	// The file may have changed between its load and this watch; look
	// once, so such an edit is not lost until the next one.
	timer := time.NewTimer(r.debounce)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			name := filepath.Base(ev.Name)
			if (name == base || name == "..data") && ev.Op != fsnotify.Chmod {
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
			timer.Reset(r.debounce)
		case <-timer.C:
			r.reload()
		}
	}
}

func (r *Reloader) reload() {
	data, err := os.ReadFile(r.path)
	if err != nil {
		// Mid-rename the file may be briefly absent; the next event retries.
		r.fail("", []string{fmt.Sprintf("reading config: %v", errors.Unwrap(err))})
		return
	}
	s := sha256.Sum256(data)
	sum := hex.EncodeToString(s[:])
	if sum == r.current {
		if !r.status.Load().OK {
			// A bad edit was reverted (or the file came back): nothing to
			// apply, but the rejection no longer describes the file.
			r.bad = ""
			r.status.Store(&ReloadStatus{At: time.Now(), OK: true, Checksum: sum})
			r.log.Info("config file is back to the one serving", "file", r.path, "checksum", sum[:12])
		}
		return
	}
	if sum == r.bad {
		return
	}
	cfg, err := Parse(data, r.opt)
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
		r.fail(sum, msgs)
		return
	}
	for _, w := range cfg.Warnings {
		r.log.Warn(w)
	}
	if err := r.apply(cfg); err != nil {
		r.fail(sum, []string{err.Error()})
		return
	}
	r.current, r.bad = sum, ""
	r.status.Store(&ReloadStatus{At: time.Now(), OK: true, Checksum: sum})
	r.log.Info("config reloaded", "file", r.path, "checksum", sum[:12])
}

func (r *Reloader) fail(sum string, msgs []string) {
	r.bad = sum
	r.status.Store(&ReloadStatus{At: time.Now(), OK: false, Checksum: r.current, Errors: msgs})
	for _, m := range msgs {
		r.log.Error("config rejected, still serving the previous one", "file", r.path, "err", m)
	}
}
