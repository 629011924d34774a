//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// Fault precision: how close to its schedule wschaos ends sessions. Both
// rules run on one wschaos whose upstream is the echo upstream's "faults"
// port: first an after = "1s" rule on /fault/after, then an every rule on
// /fault/every, added by a reload (SIGHUP) once all its sessions are open,
// so that its first tick falls one period after the reload.

const (
	afterCode = 4000
	everyCode = 4001
)

const faultRuleAfter = `
[proxy]
seed = 1

[[rule]]
name = "bench-after"
match = { path = "/fault/after" }
after = "1s"
action = "close"
code = 4000
reason = "after 1s"
`

const faultRuleEvery = `
[[rule]]
name = "bench-every"
match = { path = "/fault/every" }
every = "%s"
action = "close"
code = 4001
reason = "tick"
`

func runFaults(ctx context.Context, e *env, rep *report) {
	if e.wschaosErr != nil {
		rep.markAll("faults", "wschaos", statusError, e.wschaosErr.Error())
		return
	}
	logf("wschaos: fault precision")
	w, err := e.startWschaos(ctx, "faults", faultRuleAfter)
	if err != nil {
		rep.markAll("faults", "wschaos", statusError, "start: "+err.Error())
		return
	}
	defer w.stop()
	if e.o.faultAfter > 0 {
		afterPrecision(ctx, e, w, rep)
	}
	if e.o.faultEvery > 0 && ctx.Err() == nil {
		everySpread(ctx, e, w, rep)
	}
}

// afterPrecision opens sessions under an after = "1s" close rule and
// measures, at each client, the close frame's arrival against its 101
// plus one second, both as the client's kernel received them (see
// stampConn); the times at which client goroutines read them are noted
// beside. The proxy starts a session's clock just before it writes the
// 101, so a close is early by as long as the 101 then takes to arrive.
func afterPrecision(ctx context.Context, e *env, w *wschaosProc, rep *report) {
	n := e.o.faultAfter
	url := w.url + "/fault/after"
	var f failures
	var wrong, unstamped atomic.Int64
	errs := make([]time.Duration, n)
	read := make([]time.Duration, n) // the same, by the reading goroutines' clocks
	got := make([]bool, n)
	var readers sync.WaitGroup
	eachIndex(ctx, e.o.dialers, n, func(i int) {
		c, err := e.stampDialer.dial(ctx, url, 10*time.Second)
		if err != nil {
			f.add(err)
			return
		}
		readAt := time.Now().Add(time.Second)
		t101, ok := arrived(c.c)
		at := t101.Add(time.Second)
		readers.Add(1)
		go func() { // the session's reader: ends with its close or its deadline
			defer readers.Done()
			tclose, now, ok2, closed := awaitClose(c, at.Add(15*time.Second), afterCode, &f, &wrong)
			if !closed {
				return
			}
			if !ok || !ok2 {
				unstamped.Add(1)
			}
			errs[i], read[i], got[i] = tclose.Sub(at), now.Sub(readAt), true
			c.answerClose(5 * time.Second)
		}()
	})
	readers.Wait()
	var samples, readSamples []time.Duration
	for i, ok := range got {
		if ok {
			samples = append(samples, errs[i])
			readSamples = append(readSamples, read[i])
		}
	}
	if len(samples) == 0 {
		rep.markAll("faults", "wschaos", statusError, "after 1s: no close observed: "+f.note(int64(n)))
		return
	}
	slices.Sort(samples)
	slices.Sort(readSamples)
	// An early close is as wrong as a late one: the signed percentiles
	// below do not show it, the one of the sizes does.
	sizes := make([]time.Duration, len(samples))
	for i, e := range samples {
		sizes[i] = max(e, -e)
	}
	slices.Sort(sizes)
	note := closeNote(fmt.Sprintf("kernel receive times; min %.2f ms, max %.2f ms, p99 of the error's size %.2f ms",
		ms(samples[0]), ms(samples[len(samples)-1]), ms(percentile(sizes, 0.99))),
		unstamped.Load(), wrong.Load(), &f, n)
	rep.add("faults", "after 1s: close error p50", "wschaos", ms(percentile(samples, 0.50)), note)
	rep.add("faults", "after 1s: close error p99", "wschaos", ms(percentile(samples, 0.99)),
		fmt.Sprintf("as read by the client goroutines: p50 %.2f ms, p99 %.2f ms",
			ms(percentile(readSamples, 0.50)), ms(percentile(readSamples, 0.99))))
	rep.add("faults", "after 1s: sessions closed", "wschaos", float64(len(samples)), fmt.Sprintf("of %d", n))
}

// everySpread holds sessions open, adds an every rule by a reload, and
// measures when each client's kernel received the tick's close frame
// (and, in a note, when each client goroutine read it).
func everySpread(ctx context.Context, e *env, w *wschaosProc, rep *report) {
	n := e.o.faultEvery
	var f failures
	conns := openMany(ctx, e.stampDialer, w.url+"/fault/every", n, e.o.dialers, time.Duration(n)*10*time.Millisecond+30*time.Second, &f)
	if len(conns) == 0 {
		rep.markAll("faults", "wschaos", statusError, "every: no session opened: "+f.note(int64(n)))
		return
	}
	period := e.o.everyPeriod
	wait := period + 30*time.Second
	times := make([]time.Time, len(conns))
	readTimes := make([]time.Time, len(conns))
	var wrong, unstamped atomic.Int64
	var readers sync.WaitGroup
	for i, c := range conns {
		readers.Add(1)
		go func() {
			defer readers.Done()
			t, now, ok, closed := awaitClose(c, time.Now().Add(wait), everyCode, &f, &wrong)
			if !closed {
				return
			}
			if !ok {
				unstamped.Add(1)
			}
			times[i], readTimes[i] = t, now
			c.answerClose(5 * time.Second)
		}()
	}
	drain(w.reloaded)
	cfg := faultRuleAfter + fmt.Sprintf(faultRuleEvery, period)
	if err := os.WriteFile(w.cfg, []byte(cfg), 0o644); err != nil {
		rep.markAll("faults", "wschaos", statusError, err.Error())
		closeMany(conns, e.o.dialers)
		return
	}
	hup := time.Now()
	syscall.Kill(w.c.pid(), syscall.SIGHUP)
	select {
	case <-w.reloaded:
	case <-time.After(5 * time.Second):
		logf("wschaos: no \"rules reloaded\" line within 5s of SIGHUP")
	}
	readers.Wait()

	var seen, readSeen []time.Time
	for i, t := range times {
		if !t.IsZero() {
			seen = append(seen, t)
			readSeen = append(readSeen, readTimes[i])
		}
	}
	if len(seen) == 0 {
		rep.markAll("faults", "wschaos", statusError, "every: no close observed: "+f.note(int64(n)))
		return
	}
	slices.SortFunc(seen, func(a, b time.Time) int { return a.Compare(b) })
	slices.SortFunc(readSeen, func(a, b time.Time) int { return a.Compare(b) })
	first := seen[0]
	after := make([]time.Duration, len(seen))
	for i, t := range seen {
		after[i] = t.Sub(first)
	}
	note := closeNote(fmt.Sprintf("%d sessions open at the reload; every = %q; kernel receive times", len(conns), period.String()),
		unstamped.Load(), wrong.Load(), &f, n)
	rep.add("faults", "every: first→last close spread", "wschaos", ms(after[len(after)-1]), note)
	rep.add("faults", "every: first→last read by the clients", "wschaos", ms(readSeen[len(readSeen)-1].Sub(readSeen[0])),
		"the same closes as the client goroutines, sharing the cores with the proxy, got to read them")
	rep.add("faults", "every: p50 after first close", "wschaos", ms(percentile(after, 0.50)), "")
	rep.add("faults", "every: p99 after first close", "wschaos", ms(percentile(after, 0.99)), "")
	rep.add("faults", "every: first close − (SIGHUP + period)", "wschaos", ms(first.Sub(hup.Add(period))),
		"the tick's time as the earliest close seen; includes the reload")
	rep.add("faults", "every: sessions closed", "wschaos", float64(len(seen)), fmt.Sprintf("of %d", n))
	select {
	case took := <-w.ticked:
		rep.add("faults", "every: tick's work in wschaos", "wschaos", ms(took),
			"from its \"clock ticked\" line: close frames to every client, then to every upstream")
	case <-time.After(2 * time.Second):
		logf("wschaos: no \"clock ticked\" line after the tick")
	}
}

// closeNote appends to note what went otherwise for n fault sessions:
// closes timed by goroutines for want of kernel receive times, closes
// with another code than the rule's, and failures.
func closeNote(note string, unstamped, wrong int64, f *failures, n int) string {
	if unstamped > 0 {
		note += fmt.Sprintf("; %d without receive times, timed by goroutines", unstamped)
	}
	if wrong > 0 {
		note += fmt.Sprintf("; %d closes with another code", wrong)
	}
	if fn := f.note(int64(n)); fn != "" {
		note += "; " + fn
	}
	return note
}

// awaitClose reads c's close frame, until deadline. It returns when the
// frame reached the client's kernel (stamped false: when it was read, see
// arrived) and when it was read; closed is false, the failure counted in f
// and c closed, if no close frame came. A close with another code than
// want is counted in wrong.
func awaitClose(c *wsConn, deadline time.Time, want ws.StatusCode, f *failures, wrong *atomic.Int64) (arrival, read time.Time, stamped, closed bool) {
	c.c.SetDeadline(deadline)
	_, err := c.readMessage(nil)
	read = time.Now()
	var ce *closeError
	if !errors.As(err, &ce) {
		f.add(fmt.Errorf("no close frame: %v", err))
		c.c.Close()
		return time.Time{}, read, false, false
	}
	if ce.code != want {
		wrong.Add(1)
	}
	arrival, stamped = arrived(c.c)
	return arrival, read, stamped, true
}

func drain(ch chan time.Time) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
