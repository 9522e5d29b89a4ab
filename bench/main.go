// Command bench is the gateway's load test. In one run it starts three
// processes on loopback, a fake OpenAI upstream, the floor (a bare fasthttp
// reverse proxy) and the real gateway binary in front of the same upstream,
// drives each at fixed concurrencies for a fixed time, alternating them
// round by round, and prints a Markdown table of throughput, latency, CPU
// per request and memory, with the gateway/floor ratios and a verdict on
// each performance target. A streaming phase holds many streams open;
// extra phases measure the Responses and Messages APIs and, when
// redis-server is on PATH, a second gateway keeping its state in Redis; a
// soak mode watches the gateway's memory over minutes.
//
//	go run ./bench                     # the default run, about 3 minutes
//	go run ./bench -duration 2s -rounds 1
//	go run ./bench -soak 10m           # also soak the gateway for 10 minutes
//
// `bench upstream` and `bench floor` are the subcommands the tool starts
// its servers with.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

func init() {
	// Children are started from the main goroutine; locking it to the
	// main thread makes their Pdeathsig fire only when this process ends,
	// not when some runtime thread happens to exit.
	runtime.LockOSThread()
}

func main() {
	if code, ok := childMain(os.Args[1:]); ok {
		os.Exit(code)
	}
	os.Exit(run(os.Args[1:]))
}

// The keys the generated gateway config resolves from its environment.
const (
	gatewayKey  = "gw-bench-key"
	upstreamKey = "sk-bench-7Hq2xLp9Vd3mKf8RzT1wYc4N"
)

// chatBody is BenchmarkChat's request: it has tools, so the route rule
// matches, as in engine/bench_test.go.
const chatBody = `{"model":"auto","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}]}`

const streamBody = `{"model":"auto","stream":true,"messages":[{"role":"user","content":"Say hello."}]}`

type options struct {
	duration     time.Duration
	concurrency  []int
	rounds       int
	warmup       time.Duration
	streams      int
	chunks       int
	chunkDelay   time.Duration
	load, stream bool
	// apis and redis turn on the extra phases, which run for
	// extraDuration at the concurrencies of extraConc that are also in
	// concurrency.
	apis, redis   bool
	extraDuration time.Duration
	extraConc     []int
	soak          time.Duration
	soakEvery     time.Duration
	soakConc      int
	soakStreams   int
	accessLog     bool
	// pin keeps the tool and the servers on separate CPUs; pinned says
	// how, once done.
	pin        bool
	pinned     string
	gwProfile  string
	gatewayBin string
	repo       string
	out        string
}

// streamLen is how long the fake upstream takes to send one stream.
func (o *options) streamLen() time.Duration { return time.Duration(o.chunks-1) * o.chunkDelay }

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each measured phase")
	conc := fs.String("concurrency", "1,16,64", "comma-separated client concurrencies")
	fs.IntVar(&o.rounds, "rounds", 2, "rounds of upstream, floor, gateway phases (A B A B)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load on each server before the first phase")
	fs.IntVar(&o.streams, "streams", 1000, "concurrent streams held open in the streaming phase")
	fs.IntVar(&o.chunks, "chunks", 20, "SSE chunks the fake upstream sends per stream")
	fs.DurationVar(&o.chunkDelay, "chunk-delay", 50*time.Millisecond, "pause between two upstream chunks")
	fs.BoolVar(&o.load, "load", true, "run the fixed-concurrency phases")
	fs.BoolVar(&o.stream, "stream", true, "run the streaming phase")
	fs.BoolVar(&o.apis, "apis", true, "with -load: also run Responses and Anthropic Messages requests through the gateway, translated onto chat")
	fs.BoolVar(&o.redis, "redis", true, "with -load: also run chat through a second gateway keeping its state in a local Redis, when redis-server is on PATH")
	fs.DurationVar(&o.extraDuration, "extra-duration", 2*time.Second, "length of each -apis and -redis phase")
	extraConc := fs.String("extra-concurrency", "1,16", "the concurrencies, among -concurrency, of the -apis and -redis phases")
	fs.DurationVar(&o.soak, "soak", 0, "then soak the gateway this long (e.g. 10m), sampling its RSS")
	fs.DurationVar(&o.soakEvery, "soak-every", 10*time.Second, "RSS sampling interval of the soak")
	fs.IntVar(&o.soakConc, "soak-concurrency", 16, "non-stream clients during the soak")
	fs.IntVar(&o.soakStreams, "soak-streams", 100, "streams held open during the soak")
	fs.BoolVar(&o.pin, "pin", false, "run the load generator on one CPU and the servers on the others, so clients do not take CPU from the proxy under test")
	fs.BoolVar(&o.accessLog, "access-log", true, "leave the gateway's access log on (its default; written to /dev/null); false adds log: {access: false}")
	fs.StringVar(&o.gwProfile, "gateway-cpuprofile", "", "pass -cpuprofile FILE to the gateway: a CPU profile of the whole run, written when it stops")
	fs.StringVar(&o.gatewayBin, "gateway", "", "gateway binary to test (default: go build the repo's)")
	fs.StringVar(&o.repo, "repo", "", "the gateway repo's root (default: found from the working directory)")
	fs.StringVar(&o.out, "out", "", "where to write the table (default: <repo>/bench/results/last.md)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.concurrency, err = counts("-concurrency", *conc); err != nil {
		return nil, err
	}
	if o.extraConc, err = counts("-extra-concurrency", *extraConc); err != nil {
		return nil, err
	}
	switch {
	case o.duration <= 0 || o.extraDuration <= 0:
		return nil, errors.New("-duration and -extra-duration must be positive")
	case o.rounds < 1:
		return nil, errors.New("-rounds must be at least 1")
	case o.streams < 1 || o.chunks < 1:
		return nil, errors.New("-streams and -chunks must be at least 1")
	case o.soak > 0 && o.soakEvery <= 0:
		return nil, errors.New("-soak-every must be positive")
	}
	return o, nil
}

// counts parses a comma-separated list of positive numbers.
func counts(name, list string) ([]int, error) {
	var ns []int
	for f := range strings.SplitSeq(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s: %q is not a positive number", name, f)
		}
		ns = append(ns, n)
	}
	return ns, nil
}

func run(args []string) (code int) {
	o, err := parseFlags(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		if s, ok := <-sig; ok {
			cancel(fmt.Errorf("interrupted by %v", s))
		}
	}()
	defer signal.Stop(sig)
	// Deferred, so children are stopped on an error and on a panic of
	// this goroutine too.
	defer stopAll()

	rep, err := bench(ctx, cancel, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	md := rep.markdown()
	fmt.Print(md)
	if cause := context.Cause(ctx); cause != nil {
		// A partial table does not replace the last full one.
		fmt.Fprintln(os.Stderr, "bench: stopped early, table not saved:", cause)
		return 1
	}
	err = os.MkdirAll(filepath.Dir(o.out), 0o755)
	if err == nil {
		err = os.WriteFile(o.out, []byte(md), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: writing the table:", err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "bench: table written to", o.out)
	return 0
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// repoRoot finds the gateway module's root from the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "module gateway") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod of module gateway in %s or above; pass -repo", dir)
		}
	}
}

func bench(ctx context.Context, cancel context.CancelCauseFunc, o *options) (*report, error) {
	var err error
	if o.repo == "" {
		if o.repo, err = repoRoot(); err != nil {
			return nil, err
		}
	}
	if o.out == "" {
		o.out = filepath.Join(o.repo, "bench", "results", "last.md")
	}
	tmp, err := os.MkdirTemp("", "gateway-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	// Children stop before their directory goes (run stops them too, on
	// any way out).
	defer stopAll()
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	onExit := func(err error) { cancel(err) }

	bin := o.gatewayBin
	if bin == "" {
		bin = filepath.Join(tmp, "gateway")
		logf("building the gateway (go build -o %s .)", bin)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
		cmd.Dir = o.repo
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("building the gateway: %w", err)
		}
	}

	if o.pin {
		if o.pinned, err = pin(); err != nil {
			return nil, err
		}
		logf("%s", o.pinned)
	}

	// The fake upstream and the floor get their listening sockets from us
	// as fd 3, so their ports cannot be taken in between.
	upLn, err := freeListener()
	if err != nil {
		return nil, err
	}
	upAddr := upLn.Addr().String()
	up, err := start("upstream", exec.Command(self, "upstream", "-chunks", strconv.Itoa(o.chunks), "-chunk-delay", o.chunkDelay.String()),
		filepath.Join(tmp, "upstream.log"), upLn, onExit)
	if err != nil {
		return nil, err
	}
	flLn, err := freeListener()
	if err != nil {
		return nil, err
	}
	flAddr := flLn.Addr().String()
	fl, err := start("floor", exec.Command(self, "floor", "-upstream", upAddr), filepath.Join(tmp, "floor.log"), flLn, onExit)
	if err != nil {
		return nil, err
	}

	gwAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	var gargs []string
	if o.gwProfile != "" {
		abs, err := filepath.Abs(o.gwProfile)
		if err != nil {
			return nil, err
		}
		gargs = append(gargs, "-cpuprofile", abs)
		logf("the gateway writes its CPU profile to %s when it stops", abs)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	gw, err := startGateway("gateway", bin, tmp, gatewayConfig(gwAddr, upAddr, o.accessLog, ""), gargs, devnull, onExit)
	if err != nil {
		return nil, err
	}
	if o.gwProfile != "" {
		gw.grace = 20 * time.Second // to write the profile
	}

	conns := max(slices.Max(o.concurrency), o.streams, o.soakConc+o.soakStreams) + 64
	servers := []*server{
		{name: "upstream", addr: upAddr, proc: up},
		{name: "floor", addr: flAddr, proc: fl},
		{name: "gateway", addr: gwAddr, proc: gw},
	}
	for _, s := range servers {
		if err := waitReady(ctx, s.proc, s.addr, 20*time.Second); err != nil {
			return nil, err
		}
		s.client = newClient(s.addr, conns)
	}
	// Closing the load's connections lets the servers shut down at once.
	defer func() {
		for _, s := range servers {
			s.client.CloseIdleConnections()
		}
	}()
	watched = []int{os.Getpid(), up.pid(), fl.pid(), gw.pid()}
	fds := func() string {
		return fmt.Sprintf("fds u/f/g %d/%d/%d", countFDs(up.pid()), countFDs(fl.pid()), countFDs(gw.pid()))
	}
	logf("up: upstream %s (pid %d), floor %s (pid %d), gateway %s (pid %d)", upAddr, up.pid(), flAddr, fl.pid(), gwAddr, gw.pid())

	rep := newReport(o, cpuModel(), kernelRelease(), gitRev(o.repo), hz)
	for _, s := range servers {
		rep.idleRSS[s.name], _ = readRSS(s.proc.pid())
	}
	if err := sanity(servers, rep); err != nil {
		return nil, err
	}
	extras, err := startExtras(ctx, o, bin, tmp, upAddr, devnull, onExit, conns, rep)
	defer func() {
		for _, x := range extras {
			x.srv.client.CloseIdleConnections()
		}
	}()
	if err != nil {
		return nil, err
	}

	if o.load {
		if o.warmup > 0 {
			for _, s := range servers {
				phase(ctx, s, 16, o.warmup, chatCall, false, 0)
			}
			for _, x := range extras {
				phase(ctx, x.srv, 16, o.warmup, x.call, false, 0)
			}
		}
		for round := 1; round <= o.rounds && ctx.Err() == nil; round++ {
			for _, c := range o.concurrency {
				for _, s := range servers {
					if ctx.Err() != nil {
						break
					}
					r := phase(ctx, s, c, o.duration, chatCall, false, 0)
					logf("round %d/%d  c=%-3d %-9s %8.0f rps  p50 %7.1f µs  p99 %7.1f µs  cpu %5.1f µs/req  non-2xx %d  errors %d  %s",
						round, o.rounds, c, s.name, r.rps(), us(r.lat.quantile(.5)), us(r.lat.quantile(.99)),
						us(r.cpuPerReq(rep.hz)), r.non2xx, r.errs, fds())
					rep.addLoad(s.name, c, r)
				}
				if !slices.Contains(o.extraConc, c) {
					continue
				}
				for _, x := range extras {
					if ctx.Err() != nil {
						break
					}
					r := phase(ctx, x.srv, c, o.extraDuration, x.call, false, 0)
					logf("round %d/%d  c=%-3d %-9s %8.0f rps  p50 %7.1f µs  p99 %7.1f µs  cpu %5.1f µs/req  non-2xx %d  errors %d  (%s)",
						round, o.rounds, c, x.name, r.rps(), us(r.lat.quantile(.5)), us(r.lat.quantile(.99)),
						us(r.cpuPerReq(rep.hz)), r.non2xx, r.errs, extraLabel[x.name])
					rep.addLoad(x.name, c, r)
				}
			}
		}
	}

	if o.stream && ctx.Err() == nil {
		// Each stream lasts (chunks-1)*delay; hold them open at least
		// three stream lengths so every worker times a warm one.
		d := max(o.duration, 3*o.streamLen())
		for round := 1; round <= o.rounds && ctx.Err() == nil; round++ {
			for _, s := range servers {
				if ctx.Err() != nil {
					break
				}
				r := phase(ctx, s, o.streams, d, streamCall, true, o.streamLen())
				logf("round %d/%d  %d streams via %-8s ttfb p50 %8.1f µs  p99 %8.1f µs  peak open %d  cpu %.0f µs/stream (%.2f cores)  rss %.1f MB  non-2xx %d  errors %d  %s",
					round, o.rounds, o.streams, s.name, us(r.lat.quantile(.5)), us(r.lat.quantile(.99)), r.peakOpen,
					us(r.cpuPerReq(rep.hz)), ticksToDuration(r.cpuTicks, rep.hz).Seconds()/r.elapsed.Seconds(), mb(r.rssMax.total), r.non2xx, r.errs, fds())
				rep.streamRes(s.name).add(r)
			}
		}
	}

	if ctx.Err() == nil && (o.load || o.stream) {
		for _, s := range servers {
			s.client.CloseIdleConnections()
		}
		time.Sleep(2 * time.Second)
		after, _ := readRSS(gw.pid())
		rep.afterRSS = after.total
	}

	if o.soak > 0 && ctx.Err() == nil {
		// The soak gets a gateway of its own, started now: the one above
		// still holds what 1000 streams took until the runtime's scavenger
		// returns it, minutes later, which would read as a drift.
		soaked, err := startSoakGateway(ctx, servers[2], bin, tmp, upAddr, o.accessLog, devnull, onExit, conns)
		if err != nil {
			return nil, err
		}
		defer soaked.client.CloseIdleConnections()
		watched = append(watched, soaked.proc.pid())
		logf("soak: %s against a fresh gateway (pid %d), %d clients + %d streams, RSS every %s", o.soak, soaked.proc.pid(), o.soakConc, o.soakStreams, o.soakEvery)
		rep.soak, rep.soakNoise = soak(ctx, soaked, o.soakConc, o.soakStreams, o.soak, o.soakEvery, o.streamLen(), chatCall, streamCall, func(s soakSample) {
			logf("soak %8s  rss %6.1f MB  %8.0f rps  open streams %d  non-2xx %d  errors %d", s.at, mb(s.rss), s.rps, s.open, s.non2xx, s.errs)
		})
	}
	return rep, nil
}

// sanity sends one request and one stream through each server and checks
// that the gateway answers 200 with the same bytes the upstream sends.
func sanity(servers []*server, rep *report) error {
	bodies := map[string][2][]byte{}
	for _, s := range servers {
		var got [2][]byte
		for i, c := range []*call{chatCall, streamCall} {
			req := c.request(s.addr)
			resp := fasthttp.AcquireResponse()
			err := s.client.DoTimeout(req, resp, 10*time.Second)
			fasthttp.ReleaseRequest(req)
			if err != nil {
				fasthttp.ReleaseResponse(resp)
				return fmt.Errorf("first request to %s: %w", s.name, err)
			}
			if resp.StatusCode() != 200 {
				defer fasthttp.ReleaseResponse(resp)
				return fmt.Errorf("first request to %s: HTTP %d: %s\n%s", s.name, resp.StatusCode(), truncate(resp.Body(), 500), s.proc.logTail(10))
			}
			if s.name == "gateway" && len(resp.Header.Peek("X-Routed-Via")) == 0 {
				rep.notes = append(rep.notes, "the gateway's answer has no X-Routed-Via header")
			}
			got[i] = append([]byte(nil), resp.Body()...)
			fasthttp.ReleaseResponse(resp)
		}
		bodies[s.name] = got
	}
	for _, name := range []string{"floor", "gateway"} {
		for i, kind := range []string{"response", "stream"} {
			if string(bodies[name][i]) != string(bodies["upstream"][i]) {
				rep.notes = append(rep.notes, fmt.Sprintf("the %s's %s body differs from the upstream's (%d vs %d bytes)",
					name, kind, len(bodies[name][i]), len(bodies["upstream"][i])))
			}
		}
	}
	return nil
}

// gitRev names the commit under test, without touching the repo's state.
func gitRev(dir string) string {
	out, err := exec.Command("git", "-C", dir, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", dir, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		rev += "+dirty"
	}
	return rev
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func mb(b int64) float64         { return float64(b) / (1 << 20) }
func itoa(n int) string          { return strconv.Itoa(n) }
