//go:build linux

package main

import (
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

// The latency and connect workloads, interleaved: every target is started
// at once and the harness measures them in turn, a short slice each, in
// blocks of slices in which each target follows each other once
// (sliceOrder), until each has had its round trips or sessions, or its
// time.
//
//	block (5 targets, D W R N T):  D W R N T  D R T W N  D N W T R  D T N R W
//	slice:    [ settle ------ | window ------------------- | drain ]
//	            clients start   round trips or first echoes   the last
//	            together        counted, CPU read at both     ones end
//	                            ends
//
// The machine's speed moves by tens of percent over seconds here (other
// work on the host), and the rate of a CPU-bound workload with it; slices
// a fraction of a second apart see much the same machine, where turns a
// minute apart do not. Each slice counts only its steady state: the round
// trips that began, or the sessions whose first echo came, in its window,
// after the clients' start has settled and before they stop, and the CPU
// time spent over the same span, so neither the ramp nor the drain, whose
// length is the target's own latency, weighs on the figures.

// slicer is one target's part of an interleaved workload.
type slicer interface {
	target() string
	warm(ctx context.Context)  // runs the workload unmeasured
	slice(ctx context.Context) // measures one slice
	done() bool                // has had its round trips or sessions, or its time
	failed() error             // every attempt failed, and the first reason
	report(rep *report)
	close()
}

// interleaved starts every target present, runs each of loads on all of
// them slice by slice, and stops them.
func interleaved(ctx context.Context, e *env, targets []*target, rep *report, loads []string) {
	type started struct {
		name string
		inst *instance
	}
	var insts []started
	defer func() {
		for _, s := range insts {
			s.inst.stop()
		}
	}()
	for _, t := range targets {
		if inst := startTarget(ctx, e, t, rep, loads...); inst != nil {
			insts = append(insts, started{t.name, inst})
		}
	}
	for _, load := range loads {
		var runs []slicer
		for _, s := range insts {
			if ctx.Err() != nil {
				return
			}
			var r slicer
			switch load {
			case "latency":
				if lr := newLatRun(ctx, e, s.name, s.inst, rep); lr != nil {
					r = lr // not a nil *latRun in a non-nil slicer
				}
			case "connect":
				r = newConnRun(e, s.name, s.inst)
			}
			if r != nil {
				runs = append(runs, r)
			}
		}
		for _, r := range runs {
			logf("%s: %s warm-up", r.target(), load)
			r.warm(ctx)
		}
		logf("%s: the targets in turn, a slice each", load)
		for ctx.Err() == nil && len(runs) > 0 {
			if !slices.ContainsFunc(runs, func(r slicer) bool { return !r.done() }) {
				break
			}
			for _, i := range sliceOrder(len(runs)) {
				if ctx.Err() == nil {
					runs[i].slice(ctx)
				}
			}
			// A target that fails every attempt is not tried again.
			runs = slices.DeleteFunc(runs, func(r slicer) bool {
				if err := r.failed(); err != nil {
					rep.markAll(load, r.target(), statusError, err.Error())
					r.close()
					return true
				}
				return false
			})
		}
		for _, r := range runs {
			r.report(rep)
			r.close()
		}
	}
}

// sliced is what every target's part of an interleaved workload keeps:
// its windows and the CPU time spent in them.
type sliced struct {
	e    *env
	name string
	inst *instance

	window    time.Duration // the slices' windows, summed
	slices    int
	proxy     time.Duration // CPU time over the windows
	harness   time.Duration
	proxyOK   bool // false once a reading failed, or for direct (no process)
	harnessOK bool
}

func (s *sliced) target() string { return s.name }

func newSliced(e *env, name string, inst *instance) sliced {
	return sliced{e: e, name: name, inst: inst, proxyOK: true, harnessOK: true}
}

// measure runs run, which must return at end, for settle and then a
// window of length, reading the CPU times at the window's ends, and
// returns the window.
func (s *sliced) measure(ctx context.Context, settle, length time.Duration, run func(end time.Time)) (from, to time.Time) {
	start := time.Now()
	end := start.Add(settle + length)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the slice's clients: end with the window
		defer wg.Done()
		run(end)
	}()
	sleepCtx(ctx, time.Until(start.Add(settle)))
	from = time.Now()
	pm, hm := startCPU(s.inst.pids), startCPU(s.e.harnessPIDs)
	sleepCtx(ctx, time.Until(end))
	to = time.Now()
	p, pok := pm.used()
	h, hok := hm.used()
	wg.Wait()
	s.window += to.Sub(from)
	s.slices++
	s.proxyOK = s.proxyOK && pok
	s.harnessOK = s.harnessOK && hok
	s.proxy += p
	s.harness += h
	return from, to
}

// windows describes the windows for a figure's note.
func (s *sliced) windows(length time.Duration) string {
	w := "windows"
	if s.slices == 1 {
		w = "window"
	}
	return fmt.Sprintf("%d %s of %s (%s in all), interleaved with the other targets", s.slices, w, length, s.window.Round(time.Millisecond))
}

// cpu returns the CPU figures over the windows, per one of n round
// trips or sessions.
func (s *sliced) cpu(n int) cpuFigures {
	per := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(n) }
	return cpuFigures{proxy: per(s.proxy), harness: per(s.harness), proxyOK: s.proxyOK, harnessOK: s.harnessOK}
}

// windowsCPUNote is the proxy CPU figure's note for interleaved workloads.
const windowsCPUNote = "user and system time of the proxy's processes over the windows"

// connRun is one target's part of the interleaved connect workload.
type connRun struct {
	sliced
	frame   []byte
	want    int
	f       failures
	samples []time.Duration // connect to first echo, of counted sessions
}

func newConnRun(e *env, name string, inst *instance) *connRun {
	payload := []byte("0123456789abcdef0123456789abcdef")
	return &connRun{sliced: newSliced(e, name, inst), frame: clientFrame(ws.OpText, payload), want: len(payload)}
}

func (r *connRun) url() string { return r.inst.url + "/bench/connect" }

// warm spares the first slice the harness's own first-time costs (its
// dialers' stacks and heap), and the proxy its own.
func (r *connRun) warm(ctx context.Context) {
	dialFor(ctx, r.e, r.url(), r.frame, r.want, time.Now().Add(r.e.o.warmup), nil, &failures{})
}

func (r *connRun) done() bool {
	return len(r.samples) >= r.e.o.connCount || r.window >= r.e.o.connDuration
}

func (r *connRun) failed() error {
	if len(r.samples) == 0 && r.f.n.Load() > 0 {
		return errors.New("no session opened: " + r.f.note(r.f.n.Load()))
	}
	return nil
}

func (r *connRun) close() {}

// slice runs one slice: the dialers start together and dial until the
// window ends; sessions whose first echo comes within the window count.
func (r *connRun) slice(ctx context.Context) {
	var got [][]echoed
	from, to := r.measure(ctx, r.e.o.connSettle, r.e.o.connSlice, func(end time.Time) {
		got = dialFor(ctx, r.e, r.url(), r.frame, r.want, end, nil, &r.f)
	})
	r.samples = appendCounted(r.samples, got, from, to)
}

// report adds r's figures (addConnect).
func (r *connRun) report(rep *report) {
	n := len(r.samples)
	if n == 0 {
		rep.markAll("connect", r.name, statusError, "no session counted: "+r.f.note(r.f.n.Load()))
		return
	}
	note := fmt.Sprintf("%d sessions in %s, %d dialers", n, r.windows(r.e.o.connSlice), r.e.o.connDialers)
	if fn := r.f.note(int64(n) + r.f.n.Load()); fn != "" {
		note += "; " + fn
	}
	addConnect(rep, r.name, r.samples, r.window, note, r.cpu(n), windowsCPUNote)
}

// latRun is one target's part of the interleaved latency workload: its
// connections stay open from slice to slice.
type latRun struct {
	sliced
	frame   []byte
	conns   []*wsConn // nil where one failed
	f       failures
	samples []time.Duration
}

// newLatRun opens the target's connections; nil, with the figures
// marked, if none opened.
func newLatRun(ctx context.Context, e *env, name string, inst *instance, rep *report) *latRun {
	r := &latRun{sliced: newSliced(e, name, inst), frame: clientFrame(ws.OpText, bytes.Repeat([]byte("x"), e.o.latSize))}
	r.conns = openMany(ctx, e.dialer, inst.url+"/bench/latency", e.o.latConns, e.o.dialers, 30*time.Second, &r.f)
	if len(r.conns) == 0 {
		rep.markAll("latency", name, statusError, "no session opened: "+r.f.note(int64(e.o.latConns)))
		return nil
	}
	return r
}

func (r *latRun) warm(ctx context.Context) {
	r.roundTrips(ctx, time.Now().Add(r.e.o.warmup), time.Time{}, 0)
}

func (r *latRun) done() bool {
	return len(r.samples) >= r.e.o.latMax || r.window >= r.e.o.latDuration
}

func (r *latRun) failed() error {
	if !slices.ContainsFunc(r.conns, func(c *wsConn) bool { return c != nil }) {
		return errors.New("every connection failed: " + r.f.note(int64(len(r.conns))))
	}
	return nil
}

func (r *latRun) close() {
	closeMany(slices.DeleteFunc(r.conns, func(c *wsConn) bool { return c == nil }), r.e.o.dialers)
	r.conns = nil
}

// slice runs the closed loop on every connection; the round trips that
// began within the window count.
func (r *latRun) slice(ctx context.Context) {
	var got [][]echoed
	from, to := r.measure(ctx, r.e.o.latSettle, r.e.o.latSlice, func(end time.Time) {
		got = r.roundTrips(ctx, end, time.Time{}, 0)
	})
	r.samples = appendCounted(r.samples, got, from, to)
}

// roundTrips runs the closed loop on every connection until end, or,
// if limit > 0, until it has made limit round trips beginning at or after
// from, and returns each one's round trips, by when each began. A
// connection that fails is closed and not used again.
func (r *latRun) roundTrips(ctx context.Context, end, from time.Time, limit int) [][]echoed {
	all := make([][]echoed, len(r.conns))
	var wg sync.WaitGroup
	for i, c := range r.conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() { // a bench client: ends at end
			defer wg.Done()
			buf := make([]byte, r.e.o.latSize)
			c.c.SetDeadline(end.Add(10 * time.Second))
			defer c.c.SetDeadline(time.Time{})
			out := make([]echoed, 0, 1024)
			counted := 0
			for ctx.Err() == nil && (limit <= 0 || counted < limit) {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				_, err := c.c.Write(r.frame)
				if err == nil {
					var n int
					n, err = c.readMessage(buf)
					if err == nil && n != r.e.o.latSize {
						err = fmt.Errorf("echo of %d bytes came back with %d", r.e.o.latSize, n)
					}
				}
				if err != nil {
					r.f.add(err)
					c.c.Close()
					r.conns[i] = nil
					break
				}
				out = append(out, echoed{t0, time.Since(t0)})
				if !t0.Before(from) {
					counted++
				}
			}
			all[i] = out
		}()
	}
	wg.Wait()
	return all
}

// report adds r's figures (addLatency).
func (r *latRun) report(rep *report) {
	n := len(r.samples)
	if n == 0 {
		rep.markAll("latency", r.name, statusError, "no round trip measured: "+r.f.note(int64(len(r.conns))))
		return
	}
	note := fmt.Sprintf("%d round trips on %d connections in %s", n, len(r.conns), r.windows(r.e.o.latSlice))
	if fn := r.f.note(int64(len(r.conns))); fn != "" {
		note += "; connections: " + fn
	}
	addLatency(rep, r.name, r.samples, r.window, note, r.cpu(n), windowsCPUNote)
}

// appendCounted appends to samples the times taken by the exchanges that
// came (first echoes) or began (round trips) from from to to, both
// included.
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

// sliceOrder is the order in which n targets take their slices, by
// index, a block that repeats: a circuit through every ordered pair of
// different targets (an Eulerian circuit of the complete directed graph,
// Hierholzer's), so that over a block each target takes n-1 slices and
// follows each other target exactly once, the block's last slice leading
// into the next block's first. Whatever a slice leaves behind for the
// next (garbage to collect in the harness or the echo process, the
// kernel's caches and timers) then falls on every target alike, which
// a fixed order or its reversal does not do: the target after the
// busiest one would always pay for it.
func sliceOrder(n int) []int {
	if n < 2 {
		return make([]int, n)
	}
	next := make([]int, n) // the next neighbour each vertex has not left for
	stack := []int{0}
	var circuit []int
	for len(stack) > 0 {
		u := stack[len(stack)-1]
		if next[u] < n-1 {
			next[u]++
			stack = append(stack, (u+next[u])%n)
			continue
		}
		circuit = append(circuit, u)
		stack = stack[:len(stack)-1]
	}
	slices.Reverse(circuit)
	return circuit[:len(circuit)-1] // it ends where it began
}

// echoed is a timed exchange: a session's first echo (when it came, and
// how long after the dial began) or a round trip (when it began, and how
// long it took).
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
