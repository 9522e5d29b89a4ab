// Command gateway is an OpenAI-compatible LLM gateway that routes each
// request across many providers, as declared in gateway.yaml.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"gateway/config"
	"gateway/engine"
)

const usage = `usage:
  gateway [-config gateway.yaml] [-listen ADDR] [-log-level info] [-cpuprofile F]
                                                     serve (same as: gateway serve ...)
  gateway validate [-secrets] [-listen ADDR] FILE... check config files without serving;
                                                     -secrets also reads every key reference;
                                                     enc: values are decrypted when the master
                                                     key is set, else checked for form only
  gateway explain -model M [-config F | -url URL] [-key NAME] [-header k=v]...
                  [-tokens N] [-max-tokens N] [-stream] [-tools] [-operation OP]
                  [-skip-secrets]
                                                     show the route and candidates for a request:
                                                     from the file, or with -url from a running
                                                     gateway's live state (an admin gateway key
                                                     in $GATEWAY_KEY when auth is on)
  gateway encrypt < SECRET                           print the enc:v1: reference of the secret
                                                     on stdin, sealed with GATEWAY_MASTER_KEY
                                                     (or the file named by GATEWAY_MASTER_KEY_FILE)
  gateway encrypt -rekey FILE                        reseal every enc:v1: value of FILE from
                                                     GATEWAY_MASTER_KEY_OLD to GATEWAY_MASTER_KEY
  gateway health [-url URL] [-config F] [-listen ADDR] [-timeout 2s]
                                                     ask a running gateway's /health; without
                                                     -url, the address serving would listen on
  gateway version                                    print the build's version (also: -version)

environment: GATEWAY_CONFIG, the config file when -config is not given (else
./gateway.yaml); GATEWAY_LISTEN, the listen address when -listen is not given
(else the config's listen)

exit status: 0 ok; 1 a config error, a serving failure, a request explain
says would be refused, or an unhealthy gateway; 2 a usage error
`

// version is the build's version, set with
// -ldflags "-X main.version=v1.2.3"; empty, the build info gives it.
var version string

// buildVersion returns the binary's version.
func buildVersion() string {
	bi, _ := debug.ReadBuildInfo()
	return versionOf(version, bi)
}

// versionOf returns the version set at link time, else the module version
// or VCS revision the Go toolchain stamped into the build (bi, nil when it
// has none), else "devel".
func versionOf(linked string, bi *debug.BuildInfo) string {
	if linked != "" {
		return linked
	}
	if bi == nil {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, st := range bi.Settings {
		switch st.Key {
		case "vcs.revision":
			rev = st.Value
		case "vcs.modified":
			dirty = st.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if dirty {
		rev += "+dirty"
	}
	return rev
}

// usageError reports a command line that cannot be run, then the usage,
// and returns the exit status for it.
func usageError(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "gateway: "+format+"\n", args...)
	fmt.Fprint(stderr, usage)
	return 2
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "validate":
			return validate(args[1:], stdout, stderr)
		case "explain":
			return explain(args[1:], stdout, stderr)
		case "encrypt":
			return encrypt(args[1:], os.Stdin, stdout, stderr)
		case "health":
			return health(args[1:], stdout, stderr)
		case "serve":
			args = args[1:]
		case "version":
			if len(args) > 1 {
				return usageError(stderr, "version takes no argument, got %q", args[1])
			}
			fmt.Fprintln(stdout, buildVersion())
			return 0
		case "help", "-h", "-help", "--help":
			fmt.Fprint(stdout, usage)
			return 0
		default:
			// A typo must not start a server on the default config.
			if !strings.HasPrefix(args[0], "-") {
				return usageError(stderr, "unknown command %q", args[0])
			}
		}
	}
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	path := fs.String("config", configPath(), "the config file")
	listen := fs.String("listen", listenAddr(), "the address to listen on, instead of the config's listen")
	level := fs.String("log-level", "", "debug, info, warn or error (default: the config's log.level)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to this file until shutdown")
	showVersion := fs.Bool("version", false, "print the build's version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		return usageError(stderr, "unexpected argument %q", fs.Arg(0))
	}
	if *showVersion {
		fmt.Fprintln(stdout, buildVersion())
		return 0
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "gateway:", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "gateway:", err)
			return 1
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	var force *slog.Level
	if *level != "" {
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(*level)); err != nil {
			fmt.Fprintf(stderr, "invalid -log-level %q\n", *level)
			return 2
		}
		force = &lv
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, *path, config.Options{Listen: *listen}, force, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "gateway:", err)
		return 1
	}
	return 0
}

// logs is the diagnostic log on stderr, whose level follows the config on
// reload; the access log goes to stdout through the engine.
type logs struct {
	level  slog.LevelVar
	force  *slog.Level
	diag   *slog.Logger
	format string
}

func newLogs(cfg *config.Config, force *slog.Level, stdout, stderr io.Writer) *logs {
	l := &logs{force: force, format: cfg.Log.Format}
	opts := &slog.HandlerOptions{Level: &l.level}
	if cfg.Log.Format == "json" {
		l.diag = slog.New(slog.NewJSONHandler(stderr, opts))
	} else {
		l.diag = slog.New(slog.NewTextHandler(stderr, opts))
	}
	l.apply(cfg)
	return l
}

// apply takes a reloaded config's log settings.
func (l *logs) apply(cfg *config.Config) {
	lv := slog.LevelInfo
	_ = lv.UnmarshalText([]byte(cfg.Log.Level))
	if l.force != nil {
		lv = *l.force
	}
	l.level.Set(lv)
	if cfg.Log.Format != l.format {
		l.diag.Warn("log.format changed; restart the gateway to apply it", "serving", l.format, "file", cfg.Log.Format)
	}
}

// validate checks each file and prints every problem found. By default key
// references are checked for form only, so a GitOps repo's CI, which holds
// no secrets, can run it; `enc:` values are decrypted all the same when the
// master key is given, and a warning counts them when it is not.
func validate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	secrets := fs.Bool("secrets", false, "also resolve every ${ENV} and file: reference, and require the master key for enc: ones, as serving would")
	listen := fs.String("listen", listenAddr(), "check the files as served on this address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	files := fs.Args()
	if len(files) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	code := 0
	for _, f := range files {
		cfg, err := config.Load(f, config.Options{SkipSecrets: !*secrets, Listen: *listen})
		if err != nil {
			code = 1
			var es config.Errors
			if errors.As(err, &es) {
				for _, e := range es {
					fmt.Fprintf(stderr, "%s: %v\n", f, e)
				}
			} else {
				fmt.Fprintf(stderr, "%s: %v\n", f, err)
			}
			continue
		}
		for _, w := range cfg.Warnings {
			fmt.Fprintf(stderr, "%s: warning: %s\n", f, w)
		}
		fmt.Fprintf(stdout, "%s: ok (%d providers, %d model groups, %d routes, %d gateway keys)\n",
			f, len(cfg.Providers), len(cfg.Models), len(cfg.Routes), len(cfg.Auth.Keys))
	}
	return code
}

// headerFlags collects repeated -header k=v flags.
type headerFlags map[string]string

func (h headerFlags) String() string { return fmt.Sprint(map[string]string(h)) }

func (h headerFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want -header name=value, got %q", v)
	}
	h[k] = val
	return nil
}

// explain prints how the gateway would route one request, from a fresh
// engine built exactly as serve builds it.
func explain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	path := fs.String("config", configPath(), "the config file")
	var req engine.ExplainRequest
	headers := headerFlags{}
	fs.StringVar(&req.Model, "model", "", "the model the request asks for (required)")
	fs.StringVar(&req.Key, "key", "", "the gateway key's name")
	fs.StringVar(&req.Operation, "operation", "chat", "the client API: chat, responses, embeddings or completions")
	fs.Var(headers, "header", "a request header as name=value (repeatable)")
	fs.IntVar(&req.Tokens, "tokens", 100, "estimated prompt tokens")
	fs.IntVar(&req.MaxTokens, "max-tokens", 0, "the request's max_tokens")
	fs.IntVar(&req.Messages, "messages", 1, "number of messages")
	fs.BoolVar(&req.Stream, "stream", false, "a streaming request")
	fs.BoolVar(&req.Tools, "tools", false, "the request carries tools")
	skip := fs.Bool("skip-secrets", false, "do not read key references (explain a file whose secrets are elsewhere)")
	live := fs.String("url", "", "ask the gateway at this URL (GET /api/explain) instead of reading -config")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		return usageError(stderr, "unexpected argument %q", fs.Arg(0))
	}
	if req.Model == "" {
		fmt.Fprintln(stderr, "explain: -model is required")
		return 2
	}
	req.Headers = headers
	var x *engine.Explanation
	var err error
	if *live != "" {
		x, err = explainLive(*live, os.Getenv("GATEWAY_KEY"), req)
	} else {
		x, err = explainFile(*path, *skip, req)
	}
	if err != nil {
		fmt.Fprintln(stderr, "explain:", err)
		return 1
	}
	fmt.Fprint(stdout, x.Text)
	// A CI check of routing fails when the request would be refused.
	if x.Status >= 400 {
		return 1
	}
	return 0
}

// explainFile explains req from a fresh engine built from the file at
// path exactly as serve builds it.
func explainFile(path string, skipSecrets bool, req engine.ExplainRequest) (*engine.Explanation, error) {
	cfg, err := config.Load(path, config.Options{SkipSecrets: skipSecrets})
	if err != nil {
		return nil, fmt.Errorf("%s:\n%w", path, err)
	}
	eng, err := engine.New(cfg, engine.Options{})
	if err != nil {
		return nil, err
	}
	defer eng.Close()
	return eng.Explain(req)
}

// explainTimeout bounds a live explain's round trip.
const explainTimeout = 10 * time.Second

// explainLive asks the gateway at base for its live explanation of req,
// with gatewayKey (empty when its auth is off).
func explainLive(base, gatewayKey string, req engine.ExplainRequest) (*engine.Explanation, error) {
	u := strings.TrimRight(base, "/") + "/api/explain?" + req.Query()
	hr, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("-url %q: %w", base, err)
	}
	if gatewayKey != "" {
		hr.Header.Set("Authorization", "Bearer "+gatewayKey)
	}
	resp, err := (&http.Client{Timeout: explainTimeout}).Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of %s: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
			return nil, fmt.Errorf("%s answered %d: %s", base, resp.StatusCode, e.Error.Message)
		}
		return nil, fmt.Errorf("%s answered %d", base, resp.StatusCode)
	}
	var x engine.Explanation
	if err := json.Unmarshal(body, &x); err != nil {
		return nil, fmt.Errorf("%s did not answer an explanation: %w", base, err)
	}
	return &x, nil
}

// shutdownGrace bounds how long open requests and streams may run on after
// SIGINT or SIGTERM.
const shutdownGrace = 30 * time.Second

// serve serves the config file at path; opt is how every load and reload
// reads it (a -listen override).
func serve(ctx context.Context, path string, opt config.Options, force *slog.Level, stdout, stderr io.Writer) error {
	cfg, err := config.Load(path, opt)
	if err != nil {
		return fmt.Errorf("loading %s:\n%w", path, err)
	}
	lg := newLogs(cfg, force, stdout, stderr)
	log := lg.diag
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	var reloader *config.Reloader
	eng, err := engine.New(cfg, engine.Options{
		Logger:    log,
		AccessLog: stdout,
		Status:    func() config.ReloadStatus { return reloader.Status() },
		Version:   buildVersion(),
	})
	if err != nil {
		return err
	}
	defer eng.Close()
	apply := func(c *config.Config) error {
		if err := eng.Swap(c); err != nil {
			return err
		}
		lg.apply(c)
		return nil
	}
	reloader = config.NewReloader(path, opt, cfg, apply, log)

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go collectGarbage(rctx)
	reloadDone := make(chan error, 1)
	go func() { reloadDone <- reloader.Run(rctx) }()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-hup:
				log.Info("SIGHUP: reloading config")
				reloader.Trigger()
			case <-rctx.Done():
				return
			}
		}
	}()

	// net.Listen, not fasthttp's ListenAndServe (tcp4 only): an IPv6
	// listen address serves, a wildcard one serves both families, and a
	// taken port fails here, before the gateway says it listens.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("serving on %s: %w", cfg.Listen, err)
	}
	srv := eng.Server()
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ln) }()
	log.Info("gateway listening", "addr", cfg.Listen, "version", buildVersion(), "config", path, "checksum", cfg.Checksum[:12],
		"providers", len(cfg.Providers), "models", len(cfg.Models))

	select {
	case err := <-serveDone:
		return fmt.Errorf("serving on %s: %w", cfg.Listen, err)
	case err := <-reloadDone:
		if err != nil {
			return err
		}
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing open requests", "grace", shutdownGrace)
	sctx, scancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer scancel()
	if err := srv.ShutdownWithContext(sctx); err != nil {
		log.Warn("shutdown grace ran out; closing the remaining connections", "err", err)
	}
	cancel()
	<-serveDone
	return nil
}
