//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// allWorkloads are the -workloads names, in the report's order.
var allWorkloads = []string{"latency", "throughput", "idle", "connect", "faults"}

// interleavedLoads are the selected workloads that run on every target at
// once, in slices (interleaved), in the order they run.
func (e *env) interleavedLoads() []string {
	var loads []string
	if e.o.latSlice > 0 && e.wantsLoad("latency") {
		loads = append(loads, "latency")
	}
	if e.o.connSlice > 0 && e.wantsLoad("connect") {
		loads = append(loads, "connect")
	}
	return loads
}

// runTarget starts t, runs the selected workloads against it and stops it.
// Idle memory runs first, on a process that has served only a warm-up.
func runTarget(ctx context.Context, e *env, t *target, rep *report) {
	loads := []string{}
	sliced := e.interleavedLoads()
	for _, w := range []string{"idle", "latency", "throughput", "connect"} {
		if e.wantsLoad(w) && !slices.Contains(sliced, w) {
			loads = append(loads, w)
		}
	}
	if len(loads) == 0 {
		return
	}
	inst := startTarget(ctx, e, t, rep, loads...)
	if inst == nil {
		return
	}
	defer inst.stop()
	baseFDs := fdCount(inst.fdPids())
	for _, w := range loads {
		if ctx.Err() != nil {
			return
		}
		logf("%s: %s", t.name, w)
		switch w {
		case "idle":
			idleMemory(ctx, e, t.name, inst, rep)
		case "latency":
			latency(ctx, e, t.name, inst, rep)
		case "throughput":
			throughput(ctx, e, t.name, inst, rep)
		case "connect":
			connectRate(ctx, e, t.name, inst, rep)
		}
		// Sessions of one workload must be gone before the next starts.
		if n := waitFDs(inst.fdPids, baseFDs+32, 20*time.Second); n > baseFDs+32 {
			logf("%s: still %d descriptors open after %s (%d before)", t.name, n, w, baseFDs)
		}
	}
}

// startTarget starts t and checks it with smoke; it returns nil, with
// every figure of loads marked, if t is missing or fails to start.
func startTarget(ctx context.Context, e *env, t *target, rep *report, loads ...string) *instance {
	if t.missing != nil {
		status := statusMissing
		if t.name == "wschaos" || t.name == "wschaos-rules" {
			status = statusError
		}
		for _, w := range loads {
			rep.markAll(w, t.name, status, t.missing.Error())
		}
		logf("%s: %s: %v", t.name, status, t.missing)
		return nil
	}
	logf("%s: starting", t.name)
	inst, err := t.start(ctx)
	if err == nil {
		err = smoke(ctx, e, inst)
		if err != nil {
			inst.stop()
		}
	}
	if err != nil {
		for _, w := range loads {
			rep.markAll(w, t.name, statusError, "start: "+err.Error())
		}
		logf("%s: %v", t.name, err)
		return nil
	}
	return inst
}

// smoke checks that a message goes through the target and back.
func smoke(ctx context.Context, e *env, inst *instance) error {
	var err error
	for range 20 { // nginx and toxiproxy may need a moment after listening
		var c *wsConn
		if c, err = e.dialer.dial(ctx, inst.url+"/bench/smoke", 5*time.Second); err == nil {
			err = c.echo(clientFrame(ws.OpText, []byte("hello")), 5, 5*time.Second)
			c.closeGracefully(2 * time.Second)
			if err == nil {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("smoke test: %w", err)
}

// failures counts sessions that failed and remembers the first reason.
type failures struct {
	n     atomic.Int64
	mu    sync.Mutex
	first error
}

func (f *failures) add(err error) {
	if f.n.Add(1) == 1 {
		f.mu.Lock()
		f.first = err
		f.mu.Unlock()
	}
}

func (f *failures) note(of int64) string {
	n := f.n.Load()
	if n == 0 {
		return ""
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("%d of %d failed, first: %v", n, of, f.first)
}

// openMany opens n sessions to url with the given number of concurrent
// dialers, each proven by one small echo; it gives up after limit.
func openMany(ctx context.Context, d *clientDialer, url string, n, dialers int, limit time.Duration, f *failures) []*wsConn {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	frame := clientFrame(ws.OpText, []byte("idle"))
	out := make([]*wsConn, n)
	eachIndex(ctx, dialers, n, func(i int) {
		c, err := d.dial(ctx, url, 10*time.Second)
		if err == nil {
			if err = c.echo(frame, 4, 10*time.Second); err != nil {
				c.c.Close()
			}
		}
		if err != nil {
			f.add(err)
			return
		}
		out[i] = c
	})
	return slices.DeleteFunc(out, func(c *wsConn) bool { return c == nil })
}

// closeMany closes sessions gracefully with the given concurrency.
func closeMany(conns []*wsConn, workers int) {
	eachIndex(context.Background(), workers, len(conns), func(i int) {
		conns[i].closeGracefully(5 * time.Second)
	})
}

// eachIndex calls fn for every index below n on at most workers
// goroutines, each taking the next index until none is left or ctx is
// done, and returns when they have all returned.
func eachIndex(ctx context.Context, workers, n int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() { // a bench worker: ends when the indexes run out or ctx is done
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				fn(int(i))
			}
		}()
	}
	wg.Wait()
}

// idleMemory opens idle sessions through the proxy and divides the growth
// of its resident memory by their number.
func idleMemory(ctx context.Context, e *env, name string, inst *instance, rep *report) {
	if inst.pids == nil {
		rep.markAll("idle", name, statusNA, "no proxy process")
		return
	}
	n := e.o.idleSessions
	url := inst.url + "/bench/idle"
	// A warm-up, so that one-time allocations (pools, code paths first
	// taken) are in the baseline.
	var wf failures
	closeMany(openMany(ctx, e.dialer, url, min(100, n), e.o.dialers, 30*time.Second, &wf), e.o.dialers)
	base := fdCount(inst.fdPids())
	sleepCtx(ctx, e.o.settle)
	before, err := rssKiB(inst.pids())
	if err != nil {
		rep.markAll("idle", name, statusError, err.Error())
		return
	}
	var f failures
	t := time.Now()
	conns := openMany(ctx, e.dialer, url, n, e.o.dialers, time.Duration(n)*10*time.Millisecond+30*time.Second, &f)
	opened := time.Since(t)
	sleepCtx(ctx, e.o.settle)
	after, err := rssKiB(inst.pids())
	fds := fdCount(inst.fdPids()) - base
	closeMany(conns, e.o.dialers)
	if err != nil {
		rep.markAll("idle", name, statusError, err.Error())
		return
	}
	if len(conns) == 0 {
		rep.markAll("idle", name, statusError, "no session opened: "+f.note(int64(n)))
		return
	}
	note := fmt.Sprintf("%d sessions (opened in %s), RSS %.1f → %.1f MiB, +%d fds",
		len(conns), opened.Round(time.Millisecond), float64(before)/1024, float64(after)/1024, fds)
	if fn := f.note(int64(n)); fn != "" {
		note += "; " + fn
	}
	rep.add("idle", "RSS per idle session", name, float64(after-before)/float64(len(conns)), note)
	rep.add("idle", "RSS growth", name, float64(after-before)/1024, "")
}

// latency runs closed-loop echoes of text messages on several
// connections: each sends a message and waits for it to come back before
// sending the next. Round trips that start during the warm-up are not
// recorded.
func latency(ctx context.Context, e *env, name string, inst *instance, rep *report) {
	r := newLatRun(ctx, e, name, inst, rep)
	if r == nil {
		return
	}
	start := time.Now()
	from := start.Add(e.o.warmup)
	end := from.Add(e.o.latDuration)
	cpu, hcpu := startCPU(inst.pids), startCPU(e.harnessPIDs)
	all := r.roundTrips(ctx, end, from, max(1, e.o.latMax/len(r.conns)))
	window := time.Since(from)
	trips := 0 // warm-up included, as is in the CPU time
	for _, d := range all {
		trips += len(d)
	}
	cpuFigures := measureCPU(cpu, hcpu, trips)
	conns := len(r.conns)
	r.close()
	samples := appendCounted(nil, all, from, end)
	if len(samples) == 0 {
		rep.markAll("latency", name, statusError, "no round trip measured: "+r.f.note(int64(conns)))
		return
	}
	note := fmt.Sprintf("%d round trips on %d connections", len(samples), conns)
	if fn := r.f.note(int64(conns)); fn != "" {
		note += "; connections: " + fn
	}
	addLatency(rep, name, samples, window, note, cpuFigures,
		"user and system time of the proxy's processes over every round trip, warm-up included")
}

// addLatency reports the latency workload's figures for target: the
// round trips' times, made over window, note on the first figure, and
// the CPU figures with cpuNote. It sorts samples.
func addLatency(rep *report, target string, samples []time.Duration, window time.Duration, note string, cpu cpuFigures, cpuNote string) {
	slices.Sort(samples)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	rep.add("latency", "p50 round trip", target, us(percentile(samples, 0.50)), note)
	rep.add("latency", "p99 round trip", target, us(percentile(samples, 0.99)), "")
	rep.add("latency", "p99.9 round trip", target, us(percentile(samples, 0.999)), "")
	rep.add("latency", "round trips/s", target, float64(len(samples))/window.Seconds(), "")
	cpu.add(rep, "latency", "round trip", target, cpuNote)
}

// throughput echoes large binary messages on a few connections, with a
// bounded number in flight on each, and counts the payload that comes
// back during the measured time.
func throughput(ctx context.Context, e *env, name string, inst *instance, rep *report) {
	var f failures
	conns := openMany(ctx, e.dialer, inst.url+"/bench/throughput", e.o.tputConns, e.o.dialers, 30*time.Second, &f)
	if len(conns) == 0 {
		rep.markAll("throughput", name, statusError, "no session opened: "+f.note(int64(e.o.tputConns)))
		return
	}
	for _, c := range conns {
		if c.br.Buffered() == 0 { // large reads: the client must not be the bottleneck
			c.br = bufio.NewReaderSize(c.c, 256<<10)
		}
	}
	frame := clientFrame(ws.OpBinary, bytes.Repeat([]byte{0xa5}, e.o.tputSize))
	start := time.Now()
	from := start.Add(e.o.warmup)
	end := from.Add(e.o.tputDuration)
	var counted atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		c.c.SetDeadline(end.Add(20 * time.Second))
		window := make(chan struct{}, e.o.tputWindow)
		wg.Add(2)
		go func() { // writer: as many in flight as the window allows, then a close frame
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				select {
				case window <- struct{}{}:
				case <-time.After(time.Until(end) + time.Millisecond):
					continue
				}
				if _, err := c.c.Write(frame); err != nil {
					f.add(err)
					return
				}
			}
			c.c.Write(clientClose)
		}()
		go func() { // reader: counts echoes until the close frame comes back
			defer wg.Done()
			defer c.c.Close()
			for {
				n, err := c.readMessage(nil)
				var ce *closeError
				if errors.As(err, &ce) {
					return
				}
				if err != nil {
					f.add(err)
					return
				}
				if t := time.Now(); !t.Before(from) && !t.After(end) {
					counted.Add(int64(n))
				}
				select {
				case <-window:
				default:
				}
			}
		}()
	}
	wg.Wait()
	if counted.Load() == 0 {
		rep.markAll("throughput", name, statusError, "nothing came back: "+f.note(int64(len(conns))))
		return
	}
	note := fmt.Sprintf("%d connections, %d KiB messages, %d in flight each", len(conns), e.o.tputSize>>10, e.o.tputWindow)
	if fn := f.note(int64(len(conns))); fn != "" {
		note += "; " + fn
	}
	rep.add("throughput", "echo throughput", name, float64(counted.Load())/e.o.tputDuration.Seconds()/1e6, note)
}

// connectRate opens sessions as fast as a number of concurrent dialers
// can: each dials, upgrades, echoes one small message, closes gracefully
// and starts again, until the count or the time is reached.
func connectRate(ctx context.Context, e *env, name string, inst *instance, rep *report) {
	url := inst.url + "/bench/connect"
	payload := []byte("0123456789abcdef0123456789abcdef")
	frame := clientFrame(ws.OpText, payload)
	// The warm-up opens sessions the same way, unmeasured, so that the
	// harness's own first-time costs (its dialers' stacks and heap) do not
	// fall on whichever target runs first.
	dialFor(ctx, e, url, frame, len(payload), time.Now().Add(e.o.warmup), nil, &failures{})

	var f failures
	var left atomic.Int64
	left.Store(int64(e.o.connCount))
	start := time.Now()
	cpu, hcpu := startCPU(inst.pids), startCPU(e.harnessPIDs)
	all := dialFor(ctx, e, url, frame, len(payload), start.Add(e.o.connDuration), &left, &f)
	elapsed := time.Since(start)
	var samples []time.Duration
	for _, d := range all {
		for _, s := range d {
			samples = append(samples, s.took)
		}
	}
	cpuFigures := measureCPU(cpu, hcpu, len(samples))
	if len(samples) == 0 {
		rep.markAll("connect", name, statusError, "no session opened: "+f.note(int64(e.o.connCount)))
		return
	}
	note := fmt.Sprintf("%d sessions in %s, %d dialers", len(samples), elapsed.Round(time.Millisecond), e.o.connDialers)
	if fn := f.note(int64(len(samples)) + f.n.Load()); fn != "" {
		note += "; " + fn
	}
	addConnect(rep, name, samples, elapsed, note, cpuFigures,
		"user and system time of the proxy's processes, from the first dial to the last close")
}

// addConnect reports the connect workload's figures for target: the
// sessions' connect-to-first-echo times, opened over elapsed, note on
// the first figure, and the CPU figures with cpuNote. It sorts samples.
func addConnect(rep *report, target string, samples []time.Duration, elapsed time.Duration, note string, cpu cpuFigures, cpuNote string) {
	slices.Sort(samples)
	rep.add("connect", "new sessions/s", target, float64(len(samples))/elapsed.Seconds(), note)
	rep.add("connect", "p50 connect to first echo", target, ms(percentile(samples, 0.50)), "")
	rep.add("connect", "p99 connect to first echo", target, ms(percentile(samples, 0.99)), "")
	cpu.add(rep, "connect", "session", target, cpuNote)
}

// cpuFigures are the proxy's and the harness's CPU time per round trip or
// session, each with whether it could be measured.
type cpuFigures struct {
	proxy, harness     float64
	proxyOK, harnessOK bool
}

// measureCPU reads both meters, per n round trips or sessions.
func measureCPU(proxy, harness *cpuMeter, n int) cpuFigures {
	var f cpuFigures
	f.proxy, f.proxyOK = proxy.per(n)
	f.harness, f.harnessOK = harness.per(n)
	return f
}

// add reports the figures measured, per unit ("round trip", "session"),
// and their quotient when both were.
func (f cpuFigures) add(rep *report, workload, unit, target, proxyNote string) {
	if f.proxyOK {
		rep.add(workload, "proxy CPU per "+unit, target, f.proxy, proxyNote)
	}
	if f.harnessOK {
		rep.add(workload, "harness CPU per "+unit, target, f.harness, harnessCPUNote)
	}
	if f.proxyOK && f.harnessOK && f.harness > 0 {
		rep.add(workload, "proxy CPU ÷ harness CPU", target, f.proxy/f.harness, cpuQuotientNote)
	}
}

// percentile returns the q-quantile of sorted samples (nearest rank).
func percentile[T any](sorted []T, q float64) T {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
