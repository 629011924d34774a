//go:build linux

package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// The connect workload, interleaved: every target is started at once and
// the harness measures them in turn, a short slice each, the targets'
// order reversed every cycle, until each has had its sessions or its time.
//
//	cycle 1:  direct | wschaos | wschaos-rules | nginx | toxiproxy
//	cycle 2:  toxiproxy | nginx | wschaos-rules | wschaos | direct
//	...
//	slice:    [ settle ------ | window ------------------- | drain ]
//	            dialers start   first echoes counted, CPU     the last
//	            together        read at both ends              sessions end
//
// The machine's speed moves by tens of percent over seconds here (other
// work on the host), and the rate of a CPU-bound workload with it; slices
// a fraction of a second apart see much the same machine, where turns a
// minute apart do not. Each slice counts only its steady state: the
// sessions whose first echo came in its window, after the dialers' start
// has settled and before they stop dialing, and the CPU time spent over
// the same span, so neither the ramp nor the drain, whose length is the
// target's own latency, weighs on the rate.

// connRun is one target's part of an interleaved connect run.
type connRun struct {
	name string
	inst *instance

	f         failures
	samples   []time.Duration // connect to first echo, of counted sessions
	window    time.Duration   // the slices' windows, summed
	slices    int
	proxy     time.Duration // CPU time over the windows
	harness   time.Duration
	proxyOK   bool // false once a reading failed, or for direct
	harnessOK bool
}

// done reports whether r has had its sessions or its time.
func (r *connRun) done(e *env) bool {
	return len(r.samples) >= e.o.connCount || r.window >= e.o.connDuration
}

// failing reports whether every session r tried failed.
func (r *connRun) failing() bool { return len(r.samples) == 0 && r.f.n.Load() > 0 }

// connectInterleaved starts every target present, runs the connect
// workload on them slice by slice and reports each as connectRate does.
func connectInterleaved(ctx context.Context, e *env, targets []*target, rep *report) {
	var runs []*connRun
	defer func() {
		for _, r := range runs {
			r.inst.stop()
		}
	}()
	for _, t := range targets {
		if inst := startTarget(ctx, e, t, rep, "connect"); inst != nil {
			runs = append(runs, &connRun{name: t.name, inst: inst, proxyOK: inst.pids != nil, harnessOK: true})
		}
	}
	payload := []byte("0123456789abcdef0123456789abcdef")
	frame := clientFrame(ws.OpText, payload)
	// The warm-up, unmeasured, spares the first slice of each target the
	// harness's own first-time costs (its dialers' stacks and heap), and
	// the proxy its own.
	for _, r := range runs {
		logf("%s: connect warm-up", r.name)
		dialFor(ctx, e, r.inst.url+"/bench/connect", frame, len(payload), time.Now().Add(e.o.warmup), nil, &failures{})
	}
	logf("connect: slices of %s after %s settling, the targets interleaved", e.o.connSlice, e.o.connSettle)
	for cycle := 0; ctx.Err() == nil && len(runs) > 0; cycle++ {
		if !slices.ContainsFunc(runs, func(r *connRun) bool { return !r.done(e) }) {
			break
		}
		for _, r := range cycleOrder(runs, cycle) {
			if ctx.Err() == nil {
				r.slice(ctx, e, frame, len(payload))
			}
		}
		// A target that fails every session is not tried again.
		runs = slices.DeleteFunc(runs, func(r *connRun) bool {
			if r.failing() {
				rep.markAll("connect", r.name, statusError, "no session opened: "+r.f.note(r.f.n.Load()))
				r.inst.stop()
			}
			return r.failing()
		})
	}
	for _, r := range runs {
		r.report(e, rep)
	}
}

// slice runs one slice of r: the dialers start together and dial until
// the window ends; sessions whose first echo comes within the window
// count, and the CPU time between its ends.
func (r *connRun) slice(ctx context.Context, e *env, frame []byte, want int) {
	start := time.Now()
	end := start.Add(e.o.connSettle + e.o.connSlice)
	var got [][]echoed
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the slice's dialers: end with the window
		defer wg.Done()
		got = dialFor(ctx, e, r.inst.url+"/bench/connect", frame, want, end, nil, &r.f)
	}()
	sleepCtx(ctx, time.Until(start.Add(e.o.connSettle)))
	from := time.Now()
	p0, perr0 := cpuOf(r.inst.pids)
	h0, herr0 := cpuOf(e.harnessPIDs)
	sleepCtx(ctx, time.Until(end))
	to := time.Now()
	p1, perr1 := cpuOf(r.inst.pids)
	h1, herr1 := cpuOf(e.harnessPIDs)
	wg.Wait()
	r.samples = appendCounted(r.samples, got, from, to)
	r.window += to.Sub(from)
	r.slices++
	r.proxyOK = r.proxyOK && perr0 == nil && perr1 == nil
	r.harnessOK = r.harnessOK && herr0 == nil && herr1 == nil
	r.proxy += p1 - p0
	r.harness += h1 - h0
}

// appendCounted appends to samples the connect times of the sessions
// whose first echo came from from to to, both included.
func appendCounted(samples []time.Duration, got [][]echoed, from, to time.Time) []time.Duration {
	for _, d := range got {
		for _, s := range d {
			if !s.at.Before(from) && !s.at.After(to) {
				samples = append(samples, s.took)
			}
		}
	}
	return samples
}

// cycleOrder is the order of runs in cycle (from 0): as given, and
// reversed every other cycle, so that each target follows one neighbour
// as often as the other.
func cycleOrder[T any](runs []T, cycle int) []T {
	order := slices.Clone(runs)
	if cycle%2 == 1 {
		slices.Reverse(order)
	}
	return order
}

// report adds r's figures, as connectRate does.
func (r *connRun) report(e *env, rep *report) {
	n := len(r.samples)
	if n == 0 {
		rep.markAll("connect", r.name, statusError, "no session counted: "+r.f.note(r.f.n.Load()))
		return
	}
	slices.Sort(r.samples)
	windows := "windows"
	if r.slices == 1 {
		windows = "window"
	}
	note := fmt.Sprintf("%d sessions in %d %s of %s (%s in all), %d dialers, interleaved with the other targets",
		n, r.slices, windows, e.o.connSlice, r.window.Round(time.Millisecond), e.o.connDialers)
	if fn := r.f.note(int64(n) + r.f.n.Load()); fn != "" {
		note += "; " + fn
	}
	rep.add("connect", "new sessions/s", r.name, float64(n)/r.window.Seconds(), note)
	rep.add("connect", "p50 connect to first echo", r.name, ms(percentile(r.samples, 0.50)), "")
	rep.add("connect", "p99 connect to first echo", r.name, ms(percentile(r.samples, 0.99)), "")
	per := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(n) }
	cpuFigures{proxy: per(r.proxy), harness: per(r.harness), proxyOK: r.proxyOK, harnessOK: r.harnessOK}.add(rep, "connect", "session", r.name,
		"user and system time of the proxy's processes over the windows")
}

// cpuOf is the CPU time pids have used so far; nothing for no pids
// (direct).
func cpuOf(pids func() []int) (time.Duration, error) {
	if pids == nil {
		return 0, nil
	}
	return cpuTime(pids())
}

// echoed is a session's first echo: when it came, and how long after
// the dial began.
type echoed struct {
	at   time.Time
	took time.Duration
}

// dialFor runs the workload's dialers until end, or until left (if not
// nil) runs out: each dials url, upgrades, echoes frame (want bytes back)
// and closes gracefully, again and again. It returns each dialer's first
// echoes.
func dialFor(ctx context.Context, e *env, url string, frame []byte, want int, end time.Time, left *atomic.Int64, f *failures) [][]echoed {
	all := make([][]echoed, e.o.connDialers)
	var wg sync.WaitGroup
	for i := range e.o.connDialers {
		wg.Add(1)
		go func() { // a bench dialer: ends at end, or when left runs out
			defer wg.Done()
			for (left == nil || left.Add(-1) >= 0) && time.Now().Before(end) && ctx.Err() == nil {
				t0 := time.Now()
				c, err := e.dialer.dial(ctx, url, 10*time.Second)
				if err != nil {
					f.add(err)
					continue
				}
				if err := c.echo(frame, want, 10*time.Second); err != nil {
					f.add(err)
					c.c.Close()
					continue
				}
				at := time.Now()
				all[i] = append(all[i], echoed{at, at.Sub(t0)})
				c.closeGracefully(5 * time.Second)
			}
		}()
	}
	wg.Wait()
	return all
}
