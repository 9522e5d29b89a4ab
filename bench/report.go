package main

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

// The targets the gateway is judged against (issue 15). Load ratios are
// the median of each round's gateway/floor pair, so a noisy round moves
// them less than a pooled sum would.
const (
	minThroughputRatio = 0.85                  // gateway RPS / floor RPS at concurrency 16 and 64
	maxCPURatio        = 1.25                  // gateway CPU per request / floor's, at 1, 16 and 64
	maxAddedP50        = 30 * time.Microsecond // gateway p50 - floor p50 at concurrency 1
	maxIdleRSS         = 25 << 20
	maxStreamCPURatio  = 1.1  // gateway CPU per stream / floor's, with the streaming phase's streams open
	maxStreamRSSRatio  = 1.15 // gateway RSS / floor's, the same
	maxSoakDrift       = 0.05
)

// throughputConcs and cpuConcs are the concurrencies the targets name.
var (
	throughputConcs = []int{16, 64}
	cpuConcs        = []int{1, 16, 64}
)

var serverOrder = []string{"upstream", "floor", "gateway"}

// phaseOrder orders the report's errors: servers, then extra phases.
var phaseOrder = append(slices.Clone(serverOrder), extraOrder...)

var serverLabel = map[string]string{"upstream": "upstream (direct)", "floor": "floor proxy", "gateway": "gateway"}

type loadKey struct {
	server string
	conc   int
}

type report struct {
	o        *options
	cpu      string
	kernel   string
	rev      string
	hz       int64
	at       time.Time
	idleRSS  map[string]rss
	afterRSS int64
	loads    map[loadKey]*result
	// perRound holds each round's result, to show how much the
	// gateway/floor ratios moved from round to round.
	perRound  map[loadKey][]*result
	streams   map[string]*result
	soak      []soakSample
	soakNoise float64
	// redisSkipped says why the Redis phase did not run, if it did not.
	redisSkipped string
	notes        []string
}

func newReport(o *options, cpu, kernel, rev string, hz int64) *report {
	return &report{o: o, cpu: cpu, kernel: kernel, rev: rev, hz: hz, at: time.Now(),
		idleRSS: map[string]rss{}, loads: map[loadKey]*result{}, perRound: map[loadKey][]*result{}, streams: map[string]*result{}}
}

func (r *report) load(server string, conc int) *result {
	k := loadKey{server, conc}
	if r.loads[k] == nil {
		r.loads[k] = &result{}
	}
	return r.loads[k]
}

// addLoad counts one round's phase of a server or an extra phase.
func (r *report) addLoad(name string, conc int, x *result) {
	r.load(name, conc).add(x)
	k := loadKey{name, conc}
	r.perRound[k] = append(r.perRound[k], x)
}

func (r *report) streamRes(server string) *result {
	if r.streams[server] == nil {
		r.streams[server] = &result{}
	}
	return r.streams[server]
}

type verdict struct {
	target, measured, limit, result string
}

func pass(ok bool) string {
	if ok {
		return "PASS"
	}
	return "**FAIL**"
}

func (r *report) markdown() string {
	var b strings.Builder
	o := r.o
	fmt.Fprintf(&b, "### Load test: gateway vs floor proxy vs upstream direct\n\n")
	fmt.Fprintf(&b, "%s · %s · %d CPUs · Linux %s · %s · gateway %s", r.at.UTC().Format("2006-01-02 15:04 UTC"),
		r.cpu, runtime.NumCPU(), r.kernel, runtime.Version(), r.rev)
	if len(r.loads)+len(r.streams) > 0 {
		fmt.Fprintf(&b, " · %s per phase × %d rounds, A/B alternating", o.duration, o.rounds)
	}
	fmt.Fprintf(&b, " · upstream streams %d chunks %s apart · gateway access log %s",
		o.chunks, o.chunkDelay, map[bool]string{true: "on (to /dev/null)", false: "off"}[o.accessLog])
	if o.pinned != "" {
		fmt.Fprintf(&b, " · %s", o.pinned)
	}
	b.WriteString("\n\n")

	var verdicts []verdict
	if len(r.loads) > 0 {
		b.WriteString("| conc | server | RPS | p50 µs | p99 µs | non-2xx | errors | CPU µs/req | RSS MB |\n")
		b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, c := range o.concurrency {
			for _, s := range serverOrder {
				x := r.loads[loadKey{s, c}]
				if x == nil {
					continue
				}
				fmt.Fprintf(&b, "| %d | %s | %.0f | %.1f | %.1f | %d | %d | %.1f | %.1f |\n", c, serverLabel[s], x.rps(),
					us(x.lat.quantile(.5)), us(x.lat.quantile(.99)), x.non2xx, x.errs, us(x.cpuPerReq(r.hz)), mb(x.rssMax.total))
			}
			g, f := r.loads[loadKey{"gateway", c}], r.loads[loadKey{"floor", c}]
			if g == nil || f == nil {
				continue
			}
			gr, fr := r.perRound[loadKey{"gateway", c}], r.perRound[loadKey{"floor", c}]
			rpsRange := spread(gr, fr, func(g, f *result) float64 { return 100 * ratio(g.rps(), f.rps()) }, "%.0f–%.0f%%")
			cpuRange := spread(gr, fr, func(g, f *result) float64 {
				return ratio(float64(g.cpuPerReq(r.hz)), float64(f.cpuPerReq(r.hz)))
			}, "%.2f–%.2f")
			fmt.Fprintf(&b, "| %d | **gateway / floor** | **%.0f%%**%s | **%+.1f** | **%+.1f** | | | **%.2f×**%s | **%.2f×** |\n", c,
				100*ratio(g.rps(), f.rps()), rpsRange, us(g.lat.quantile(.5)-f.lat.quantile(.5)), us(g.lat.quantile(.99)-f.lat.quantile(.99)),
				ratio(float64(g.cpuPerReq(r.hz)), float64(f.cpuPerReq(r.hz))), cpuRange, ratio(float64(g.rssMax.total), float64(f.rssMax.total)))
		}
		b.WriteString("\n")
		r.extrasTable(&b)

		for _, c := range throughputConcs {
			name := fmt.Sprintf("throughput at concurrency %d, gateway / floor (median of rounds)", c)
			q, ok := r.paired(c, func(g, f *result) float64 { return ratio(g.rps(), f.rps()) })
			if !ok {
				verdicts = append(verdicts, verdict{name, fmt.Sprintf("not measured (add %d to -concurrency)", c), fmt.Sprintf("≥ %.0f%%", 100*minThroughputRatio), "—"})
				continue
			}
			verdicts = append(verdicts, verdict{name, fmt.Sprintf("%.0f%%", 100*q), fmt.Sprintf("≥ %.0f%%", 100*minThroughputRatio), pass(q >= minThroughputRatio)})
		}
		for _, c := range cpuConcs {
			name := fmt.Sprintf("CPU per request at concurrency %d, gateway / floor (median of rounds)", c)
			q, ok := r.paired(c, func(g, f *result) float64 { return ratio(float64(g.cpuPerReq(r.hz)), float64(f.cpuPerReq(r.hz))) })
			if !ok {
				verdicts = append(verdicts, verdict{name, fmt.Sprintf("not measured (add %d to -concurrency)", c), fmt.Sprintf("≤ %.2f×", maxCPURatio), "—"})
				continue
			}
			g, f := r.loads[loadKey{"gateway", c}], r.loads[loadKey{"floor", c}]
			verdicts = append(verdicts, verdict{name, fmt.Sprintf("%.2f× (%.1f vs %.1f µs)", q, us(g.cpuPerReq(r.hz)), us(f.cpuPerReq(r.hz))),
				fmt.Sprintf("≤ %.2f×", maxCPURatio), pass(q <= maxCPURatio)})
		}
		name := "added p50 latency over the floor at concurrency 1 (median of rounds)"
		if d, ok := r.paired(1, func(g, f *result) float64 { return us(g.lat.quantile(.5) - f.lat.quantile(.5)) }); ok {
			verdicts = append(verdicts, verdict{name, fmt.Sprintf("%+.1f µs", d), fmt.Sprintf("≤ %.0f µs", us(maxAddedP50)), pass(d <= us(maxAddedP50))})
		} else {
			verdicts = append(verdicts, verdict{name, "not measured (add 1 to -concurrency)", fmt.Sprintf("≤ %.0f µs", us(maxAddedP50)), "—"})
		}
	}

	if len(r.streams) > 0 {
		fmt.Fprintf(&b, "Streaming: %d concurrent streams held open for %s per round (each %d chunks %s apart, opened at a steady rate); time to first byte of warm streams (each client's first stream, which dials, is left out).\n\n",
			o.streams, max(o.duration, 3*o.streamLen()), o.chunks, o.chunkDelay)
		b.WriteString("| via | streams | peak open | TTFB p50 µs | TTFB p99 µs | added TTFB p50 / p99 µs | stream p50 ms | non-2xx | errors | bad end | CPU µs/stream | RSS MB |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		d := r.streams["upstream"]
		for _, s := range serverOrder {
			x := r.streams[s]
			if x == nil {
				continue
			}
			added := "—"
			if s != "upstream" && d != nil {
				added = fmt.Sprintf("%+.1f / %+.1f", us(x.lat.quantile(.5)-d.lat.quantile(.5)), us(x.lat.quantile(.99)-d.lat.quantile(.99)))
			}
			fmt.Fprintf(&b, "| %s | %d | %d | %.1f | %.1f | %s | %.1f | %d | %d | %d | %.0f | %.1f |\n", serverLabel[s], x.reqs, x.peakOpen,
				us(x.lat.quantile(.5)), us(x.lat.quantile(.99)), added, float64(x.total.quantile(.5))/float64(time.Millisecond),
				x.non2xx, x.errs, x.badEnd, us(x.cpuPerReq(r.hz)), mb(x.rssMax.total))
		}
		var peaks []string
		for _, s := range serverOrder {
			if x := r.streams[s]; x != nil {
				peaks = append(peaks, fmt.Sprintf("%s %s", serverLabel[s], x.rssMax))
			}
		}
		fmt.Fprintf(&b, "\nThe largest RSS sample of the streaming phase, with its anonymous and file-backed parts: %s.\n\n", strings.Join(peaks, ", "))
	}

	idle := r.idleRSS["gateway"].total
	verdicts = append(verdicts, verdict{"gateway RSS idle (after start, before load)", fmt.Sprintf("%.1f MB", mb(idle)),
		fmt.Sprintf("≤ %d MB", maxIdleRSS>>20), pass(idle > 0 && idle <= maxIdleRSS)})
	if g, f := r.streams["gateway"], r.streams["floor"]; g != nil && f != nil {
		open := fmt.Sprintf("with %d open streams", o.streams)
		q := ratio(float64(g.cpuPerReq(r.hz)), float64(f.cpuPerReq(r.hz)))
		verdicts = append(verdicts, verdict{"CPU per stream " + open + ", gateway / floor", fmt.Sprintf("%.2f× (%.0f vs %.0f µs)", q, us(g.cpuPerReq(r.hz)), us(f.cpuPerReq(r.hz))),
			fmt.Sprintf("≤ %.2f×", maxStreamCPURatio), pass(q <= maxStreamCPURatio)})
		q = ratio(float64(g.rssMax.total), float64(f.rssMax.total))
		verdicts = append(verdicts, verdict{"RSS " + open + " (max sampled), gateway / floor", fmt.Sprintf("%.2f× (%.1f vs %.1f MB, peak open %d)", q, mb(g.rssMax.total), mb(f.rssMax.total), g.peakOpen),
			fmt.Sprintf("≤ %.2f×", maxStreamRSSRatio), pass(q <= maxStreamRSSRatio && g.peakOpen >= int64(o.streams)*99/100)})
	}

	if len(r.soak) > 0 {
		verdicts = append(verdicts, r.soakVerdict(&b))
	} else {
		verdicts = append(verdicts, verdict{"gateway RSS flat over a soak", "not run (add -soak 10m)", "± 5%", "—"})
	}

	var bad uint64
	for k, x := range r.loads {
		if k.server == "gateway" || slices.Contains(extraOrder, k.server) {
			bad += x.non2xx + x.errs + x.badEnd
		}
	}
	if x := r.streams["gateway"]; x != nil {
		bad += x.non2xx + x.errs + x.badEnd
	}
	if n := len(r.soak); n > 0 {
		bad += r.soak[n-1].non2xx + r.soak[n-1].errs
	}
	verdicts = append(verdicts, verdict{"gateway answers: non-2xx, errors, broken streams", fmt.Sprint(bad), "0", pass(bad == 0)})

	b.WriteString("| target | measured | limit | result |\n|---|---|---|---|\n")
	for _, v := range verdicts {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", v.target, v.measured, v.limit, v.result)
	}
	b.WriteString("\n")

	var info []string
	for _, s := range serverOrder {
		info = append(info, fmt.Sprintf("%s %s", serverLabel[s], r.idleRSS[s]))
	}
	var noisy float64
	for _, x := range r.loads {
		noisy = max(noisy, x.otherCores)
	}
	for _, x := range r.streams {
		noisy = max(noisy, x.otherCores)
	}
	if len(r.loads)+len(r.streams) > 0 {
		fmt.Fprintf(&b, "Other processes on the machine used up to %.2f of its %d CPUs during a phase", noisy, runtime.NumCPU())
	}
	if len(r.soak) > 0 {
		if len(r.loads)+len(r.streams) > 0 {
			fmt.Fprintf(&b, ", %.2f on average during the soak", r.soakNoise)
		} else {
			fmt.Fprintf(&b, "Other processes on the machine used %.2f of its %d CPUs on average during the soak", r.soakNoise, runtime.NumCPU())
		}
		noisy = max(noisy, r.soakNoise)
	}
	if len(r.loads)+len(r.streams)+len(r.soak) > 0 {
		if noisy > 0.1 {
			b.WriteString(" (noisy: rerun on a quiet machine before trusting small differences)")
		}
		b.WriteString(". ")
	}
	fmt.Fprintf(&b, "Idle RSS at start: %s.", strings.Join(info, ", "))
	if r.afterRSS > 0 {
		fmt.Fprintf(&b, " Gateway RSS 2 s after the load stopped: %.1f MB.", mb(r.afterRSS))
	}
	b.WriteString("\n")
	var errs []string
	for _, k := range sortedKeys(r.loads) {
		if x := r.loads[k]; x.firstErr != "" {
			errs = append(errs, fmt.Sprintf("c=%d %s: %s", k.conc, k.server, oneLine(x.firstErr)))
		}
	}
	for _, s := range serverOrder {
		if x := r.streams[s]; x != nil && x.firstErr != "" {
			errs = append(errs, fmt.Sprintf("streams via %s: %s", s, oneLine(x.firstErr)))
		}
	}
	for _, e := range errs {
		fmt.Fprintf(&b, "\nFirst error, %s", e)
	}
	for _, n := range r.notes {
		fmt.Fprintf(&b, "\nNote: %s.", n)
	}
	if len(errs)+len(r.notes) > 0 {
		b.WriteString("\n")
	}
	return b.String()
}

// soakVerdict writes the soak's table and judges its drift: the mean RSS
// of the last three samples against the first three after a warm-up of a
// fifth of the soak (at most a minute).
func (r *report) soakVerdict(b *strings.Builder) verdict {
	fmt.Fprintf(b, "Soak: %s against a fresh gateway (same config, started after the phases above, so it carries nothing they left), %d clients + %d open streams, RSS every %s.\n\n", r.o.soak, r.o.soakConc, r.o.soakStreams, r.o.soakEvery)
	b.WriteString("| t | RSS MB | RPS | open streams | non-2xx | errors |\n|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.soak {
		fmt.Fprintf(b, "| %s | %.1f | %.0f | %d | %d | %d |\n", s.at, mb(s.rss), s.rps, s.open, s.non2xx, s.errs)
	}
	warm := min(r.o.soak/5, time.Minute)
	var steady []soakSample
	for _, s := range r.soak {
		if s.at >= warm {
			steady = append(steady, s)
		}
	}
	if len(steady) < 2 {
		b.WriteString("\n")
		return verdict{"gateway RSS flat over a soak", fmt.Sprintf("%d samples after warm-up: too few", len(steady)), "± 5%", "—"}
	}
	n := min(3, len(steady)/2)
	mean := func(ss []soakSample) float64 {
		var t float64
		for _, s := range ss {
			t += float64(s.rss)
		}
		return t / float64(len(ss))
	}
	first, last := mean(steady[:n]), mean(steady[len(steady)-n:])
	lo, hi := steady[0].rss, steady[0].rss
	for _, s := range steady {
		lo, hi = min(lo, s.rss), max(hi, s.rss)
	}
	drift := (last - first) / first
	fmt.Fprintf(b, "\nAfter a %s warm-up: RSS min %.1f MB, max %.1f MB, drift %+.1f%% (mean of the last %d samples vs the first %d).\n\n",
		warm, mb(lo), mb(hi), 100*drift, n, n)
	return verdict{fmt.Sprintf("gateway RSS flat over a %s soak (drift)", r.o.soak),
		fmt.Sprintf("%+.1f%% (%.1f–%.1f MB)", 100*drift, mb(lo), mb(hi)), "± 5%", pass(math.Abs(drift) <= maxSoakDrift)}
}

// spread formats the range over rounds of a ratio of paired results, or
// nothing with a single round.
func spread(gs, fs []*result, f func(g, f *result) float64, format string) string {
	if len(gs) < 2 || len(gs) != len(fs) {
		return ""
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for i := range gs {
		v := f(gs[i], fs[i])
		lo, hi = min(lo, v), max(hi, v)
	}
	return " (" + fmt.Sprintf(format, lo, hi) + ")"
}

// paired returns the median over rounds of f(gateway's round, floor's
// round) at concurrency c; false when either was not measured.
func (r *report) paired(c int, f func(g, f *result) float64) (float64, bool) {
	gs, fs := r.perRound[loadKey{"gateway", c}], r.perRound[loadKey{"floor", c}]
	n := min(len(gs), len(fs))
	if n == 0 {
		return 0, false
	}
	vs := make([]float64, n)
	for i := range vs {
		vs[i] = f(gs[i], fs[i])
	}
	slices.Sort(vs)
	if n%2 == 1 {
		return vs[n/2], true
	}
	return (vs[n/2-1] + vs[n/2]) / 2, true
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

func sortedKeys(m map[loadKey]*result) []loadKey {
	ks := make([]loadKey, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b loadKey) int {
		if a.conc != b.conc {
			return a.conc - b.conc
		}
		return slices.Index(phaseOrder, a.server) - slices.Index(phaseOrder, b.server)
	})
	return ks
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// extrasTable writes the extra phases' table, if any ran, and why the
// Redis phase did not, if it did not. They have no targets yet: numbers
// and ratios only.
func (r *report) extrasTable(b *strings.Builder) {
	var rows []loadKey
	for _, c := range r.o.concurrency {
		for _, n := range extraOrder {
			if r.loads[loadKey{n, c}] != nil {
				rows = append(rows, loadKey{n, c})
			}
		}
	}
	if len(rows) > 0 {
		fmt.Fprintf(b, "New APIs and shared state, no targets yet: %s per phase, in the same rounds as the chat phases above. "+
			"The floor cannot translate, so each phase is compared with the floor's **chat** phase at the same concurrency, "+
			"and with the gateway's chat phase. The APIs run on a second gateway with the first one's config (it keeps "+
			"Responses answers for `previous_response_id`, as by default); the Redis phase sends chat to a third one with "+
			"`state: {backend: redis}` on a local redis-server and an rpm cap on the provider model that never binds, "+
			"which the first gateway does not have, so every request also reserves in Redis.\n\n", r.o.extraDuration)
		b.WriteString("| conc | phase | RPS | p50 µs | p99 µs | non-2xx | errors | CPU µs/req | RSS MB | RPS / floor chat | added p50 over floor chat µs | CPU / floor chat | RPS / gateway chat | added p50 over gateway chat µs |\n")
		b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, k := range rows {
			x := r.loads[k]
			fmt.Fprintf(b, "| %d | %s | %.0f | %.1f | %.1f | %d | %d | %.1f | %.1f | %s | %s |\n", k.conc, extraLabel[k.server], x.rps(),
				us(x.lat.quantile(.5)), us(x.lat.quantile(.99)), x.non2xx, x.errs, us(x.cpuPerReq(r.hz)), mb(x.rssMax.total),
				r.against(k, "floor", true), r.against(k, "gateway", false))
		}
		b.WriteString("\n")
	}
	var redis []string
	for _, c := range r.o.concurrency {
		if x := r.loads[loadKey{"redis", c}]; x != nil && x.reqs > 0 {
			n := float64(x.reqs)
			redis = append(redis, fmt.Sprintf("%.1f µs of CPU, %.1f script calls and %.1f commands in all per request at concurrency %d",
				us(ticksToDuration(x.stateTicks, r.hz)/time.Duration(x.reqs)), float64(x.stateCounts.scripts)/n, float64(x.stateCounts.commands)/n, c))
		}
	}
	if len(redis) > 0 {
		fmt.Fprintf(b, "The Redis server itself used %s (commands run by scripts included).\n\n", strings.Join(redis, "; "))
	}
	if r.redisSkipped != "" {
		fmt.Fprintf(b, "Redis phase not run: %s.\n\n", r.redisSkipped)
	}
}

// against formats the extra phase k's ratios to server's chat phase at
// the same concurrency: RPS share and added p50, and with cpu the CPU
// multiple; dashes when that phase was not measured.
func (r *report) against(k loadKey, server string, cpu bool) string {
	x, y := r.loads[k], r.loads[loadKey{server, k.conc}]
	if y == nil {
		if cpu {
			return "— | — | —"
		}
		return "— | —"
	}
	xs, ys := r.perRound[k], r.perRound[loadKey{server, k.conc}]
	s := fmt.Sprintf("%.0f%%%s | %+.1f", 100*ratio(x.rps(), y.rps()),
		spread(xs, ys, func(x, y *result) float64 { return 100 * ratio(x.rps(), y.rps()) }, "%.0f–%.0f%%"),
		us(x.lat.quantile(.5)-y.lat.quantile(.5)))
	if cpu {
		s += fmt.Sprintf(" | %.2f×", ratio(float64(x.cpuPerReq(r.hz)), float64(y.cpuPerReq(r.hz))))
	}
	return s
}
