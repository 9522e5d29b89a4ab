package main

import (
	"bytes"
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// server is one process under test and how the load tool reaches it.
type server struct {
	name   string // upstream, floor, gateway
	addr   string // 127.0.0.1:port
	proc   *child
	client *fasthttp.HostClient
	// state is the Redis a gateway keeps its state in, whose CPU and
	// commands its phases count too; nil for the others.
	state *redisServer
}

func newClient(addr string, conns int) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                     addr,
		MaxConns:                 conns,
		MaxIdleConnDuration:      5 * time.Minute,
		ReadBufferSize:           16 << 10,
		WriteBufferSize:          16 << 10,
		NoDefaultUserAgentHeader: true,
		MaxResponseBodySize:      16 << 20,
	}
}

// worker is one load goroutine's tally. Counters are atomic so a soak can
// read them while the worker runs; histograms are read only after it ends.
type worker struct {
	reqs, non2xx, errs, badEnd atomic.Uint64
	lat                        hist // request latency, or time to first byte for a stream
	total                      hist // whole stream
	firstErr                   string
}

// fail counts a transport error, keeps the first one's text, and backs
// off a little so a dead server does not turn the loop into a spin.
func (w *worker) fail(err error) {
	if w.errs.Add(1) == 1 {
		w.firstErr = err.Error()
	}
	time.Sleep(time.Millisecond)
}

// call is one kind of request a phase sends: a path, a JSON body, and the
// headers its API wants besides the gateway key.
type call struct {
	path string
	body []byte
	// apiKey sends the gateway key in x-api-key, as Anthropic's SDKs do,
	// instead of Authorization: Bearer.
	apiKey bool
	header [][2]string
}

// request builds one POST of c to addr; the caller releases it.
func (c *call) request(addr string) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.SetRequestURI("http://" + addr + c.path)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	if c.apiKey {
		req.Header.Set("X-Api-Key", gatewayKey)
	} else {
		req.Header.Set("Authorization", "Bearer "+gatewayKey)
	}
	for _, h := range c.header {
		req.Header.Set(h[0], h[1])
	}
	req.SetBody(c.body)
	return req
}

// unary sends non-stream requests back to back until stop is set.
func (w *worker) unary(hc *fasthttp.HostClient, addr string, c *call, stop *atomic.Bool) {
	req := c.request(addr)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	for !stop.Load() {
		t0 := time.Now()
		err := hc.Do(req, resp)
		d := time.Since(t0)
		if err != nil {
			w.fail(err)
			continue
		}
		w.reqs.Add(1)
		w.lat.record(d)
		if c := resp.StatusCode(); c < 200 || c > 299 {
			if w.non2xx.Add(1) == 1 && w.firstErr == "" {
				w.firstErr = "HTTP " + itoa(c) + ": " + string(truncate(resp.Body(), 300))
			}
		}
	}
}

var doneFrame = []byte("data: [DONE]\n\n")

// streaming opens streams one after another until stop is set, timing the
// first body byte and the whole stream, starting after a pause. The first stream of each worker
// dials its connection while every other worker does too; its time to
// first byte is left out when skipFirst is set.
func (w *worker) streaming(hc *fasthttp.HostClient, addr string, c *call, stop *atomic.Bool, open *gauge, skipFirst bool, after time.Duration) {
	// Workers start spread over one stream's length, so streams open at a
	// steady rate instead of all at once every stream length.
	time.Sleep(after)
	req := c.request(addr)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	buf := make([]byte, 16<<10)
	tail := make([]byte, 0, 64)
	for n := 0; !stop.Load(); n++ {
		resp.StreamBody = true
		open.add(1)
		t0 := time.Now()
		err := hc.Do(req, resp)
		if err != nil {
			open.add(-1)
			w.fail(err)
			continue
		}
		var ttfb time.Duration
		tail = tail[:0]
		var rerr error
		for {
			k, err := resp.BodyStream().Read(buf)
			if k > 0 {
				if ttfb == 0 {
					ttfb = time.Since(t0)
				}
				tail = append(tail, buf[:k]...)
				if len(tail) > 32 {
					tail = append(tail[:0], tail[len(tail)-32:]...)
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				rerr = err
				break
			}
		}
		d := time.Since(t0)
		_ = resp.CloseBodyStream()
		open.add(-1)
		if rerr != nil {
			w.fail(rerr)
			continue
		}
		w.reqs.Add(1)
		if c := resp.StatusCode(); c < 200 || c > 299 {
			if w.non2xx.Add(1) == 1 && w.firstErr == "" {
				w.firstErr = "HTTP " + itoa(c) + ": " + string(truncate(tail, 300))
			}
			continue
		}
		if !bytes.HasSuffix(tail, doneFrame) {
			if w.badEnd.Add(1) == 1 && w.firstErr == "" {
				w.firstErr = "stream did not end with data: [DONE]: ..." + string(tail)
			}
		}
		if n > 0 || !skipFirst {
			w.lat.record(ttfb)
			w.total.record(d)
		}
	}
}

// gauge counts open streams and remembers the most seen at once.
type gauge struct{ cur, peak atomic.Int64 }

func (g *gauge) add(d int64) {
	v := g.cur.Add(d)
	for p := g.peak.Load(); v > p && !g.peak.CompareAndSwap(p, v); p = g.peak.Load() {
	}
}

// result is one or more phases against one server, summed.
type result struct {
	reqs, non2xx, errs, badEnd uint64
	elapsed                    time.Duration
	lat, total                 hist
	cpuTicks                   int64
	// rssMax is the largest RSS sampled, with its anonymous and
	// file-backed parts in that sample.
	rssMax   rss
	peakOpen int64
	firstErr string
	// otherCores is the most CPU, in cores, that processes other than
	// the load tool and its servers used during one phase: a measure of
	// how noisy the machine was.
	otherCores float64
	// stateTicks and stateCounts are the Redis server's CPU and the
	// commands it ran during the phases of a gateway keeping its state
	// there.
	stateTicks  int64
	stateCounts redisCounts
}

func (r *result) rps() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.reqs) / r.elapsed.Seconds()
}

// cpuPerReq is the server's own CPU time per request.
func (r *result) cpuPerReq(hz int64) time.Duration {
	if r.reqs == 0 {
		return 0
	}
	return ticksToDuration(r.cpuTicks, hz) / time.Duration(r.reqs)
}

func (r *result) add(o *result) {
	r.reqs += o.reqs
	r.non2xx += o.non2xx
	r.errs += o.errs
	r.badEnd += o.badEnd
	r.elapsed += o.elapsed
	r.lat.merge(&o.lat)
	r.total.merge(&o.total)
	r.cpuTicks += o.cpuTicks
	if o.rssMax.total > r.rssMax.total {
		r.rssMax = o.rssMax
	}
	r.peakOpen = max(r.peakOpen, o.peakOpen)
	r.otherCores = max(r.otherCores, o.otherCores)
	r.stateTicks += o.stateTicks
	r.stateCounts.scripts += o.stateCounts.scripts
	r.stateCounts.commands += o.stateCounts.commands
	if r.firstErr == "" {
		r.firstErr = o.firstErr
	}
}

// phase runs n workers against s for d and measures s's process meanwhile.
// Stream workers start spread evenly over spread.
func phase(ctx context.Context, s *server, n int, d time.Duration, c *call, stream bool, spread time.Duration) *result {
	var stop atomic.Bool
	var open gauge
	workers := make([]*worker, n)
	for i := range workers {
		workers[i] = new(worker)
	}
	before, _ := readStat(s.proc.pid())
	var stateBefore procStat
	var countsBefore redisCounts
	if s.state != nil {
		stateBefore, _ = readStat(s.state.proc.pid())
		countsBefore, _ = s.state.counts()
	}
	noise := startNoise()
	sampler := startSampler(s.proc.pid(), 100*time.Millisecond)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i, w := range workers {
		wg.Go(func() {
			if stream {
				w.streaming(s.client, s.addr, c, &stop, &open, true, spread*time.Duration(i)/time.Duration(n))
			} else {
				w.unary(s.client, s.addr, c, &stop)
			}
		})
	}
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	stop.Store(true)
	wg.Wait()
	r := &result{elapsed: time.Since(t0), peakOpen: open.peak.Load()}
	after, _ := readStat(s.proc.pid())
	r.cpuTicks = after.CPUTicks - before.CPUTicks
	r.otherCores = noise.cores(r.elapsed)
	r.rssMax = sampler.stop()
	if s.state != nil {
		st, _ := readStat(s.state.proc.pid())
		r.stateTicks = st.CPUTicks - stateBefore.CPUTicks
		if counts, err := s.state.counts(); err == nil {
			r.stateCounts = counts.since(countsBefore)
		}
	}
	for _, w := range workers {
		r.reqs += w.reqs.Load()
		r.non2xx += w.non2xx.Load()
		r.errs += w.errs.Load()
		r.badEnd += w.badEnd.Load()
		r.lat.merge(&w.lat)
		r.total.merge(&w.total)
		if r.firstErr == "" {
			r.firstErr = w.firstErr
		}
	}
	return r
}

// watched lists the pids whose CPU is the run's own: the load tool and
// its servers. Everything else busy on the machine is noise.
var watched []int

type noise struct{ sys, own int64 }

func ownTicks() int64 {
	var t int64
	for _, pid := range watched {
		if st, err := readStat(pid); err == nil {
			t += st.CPUTicks
		}
	}
	return t
}

func startNoise() noise { return noise{readSystemBusy(), ownTicks()} }

// cores is the CPU other processes used since n, in cores.
func (n noise) cores(elapsed time.Duration) float64 {
	other := (readSystemBusy() - n.sys) - (ownTicks() - n.own)
	return max(0, ticksToDuration(other, hz).Seconds()/elapsed.Seconds())
}

// sampler polls a process's RSS and keeps the largest sample.
type sampler struct {
	done chan struct{}
	max  chan rss
}

func startSampler(pid int, every time.Duration) *sampler {
	s := &sampler{done: make(chan struct{}), max: make(chan rss, 1)}
	go func() {
		var peak rss
		keep := func() {
			if v, err := readRSS(pid); err == nil && v.total > peak.total {
				peak = v
			}
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			keep()
			select {
			case <-s.done:
				keep()
				s.max <- peak
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) stop() rss {
	close(s.done)
	return <-s.max
}

// soakSample is one point of a soak.
type soakSample struct {
	at           time.Duration
	rss          int64
	rps          float64
	non2xx, errs uint64
	open         int64
}

// soak drives the gateway with conc non-stream workers and streams
// streaming ones for d, sampling its RSS every `every`.
func soak(ctx context.Context, s *server, conc, streams int, d, every, spread time.Duration, unary, stream *call, progress func(soakSample)) ([]soakSample, float64) {
	var stop atomic.Bool
	var open gauge
	var wg sync.WaitGroup
	workers := make([]*worker, conc+streams)
	for i := range workers {
		w := new(worker)
		workers[i] = w
		if i < conc {
			wg.Go(func() { w.unary(s.client, s.addr, unary, &stop) })
		} else {
			wg.Go(func() {
				w.streaming(s.client, s.addr, stream, &stop, &open, false, spread*time.Duration(i-conc)/time.Duration(streams))
			})
		}
	}
	sum := func() (reqs, non2xx, errs uint64) {
		for _, w := range workers {
			reqs += w.reqs.Load()
			non2xx += w.non2xx.Load() + w.badEnd.Load()
			errs += w.errs.Load()
		}
		return
	}
	var samples []soakSample
	n := startNoise()
	t0 := time.Now()
	last, lastReqs := t0, uint64(0)
	tick := time.NewTicker(every)
	end := time.After(d)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-end:
			break loop
		case now := <-tick.C:
			rss, _ := readRSS(s.proc.pid())
			reqs, non2xx, errs := sum()
			sm := soakSample{at: now.Sub(t0).Round(time.Second), rss: rss.total,
				rps: float64(reqs-lastReqs) / now.Sub(last).Seconds(), non2xx: non2xx, errs: errs, open: open.cur.Load()}
			last, lastReqs = now, reqs
			samples = append(samples, sm)
			progress(sm)
		}
	}
	tick.Stop()
	stop.Store(true)
	wg.Wait()
	return samples, n.cores(time.Since(t0))
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
