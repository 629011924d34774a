//go:build linux

package evloop

import (
	"container/heap"
	"slices"
	"syscall"
	"testing"
	"time"
)

// onLoop runs f on l and waits for it.
func onLoop(t *testing.T, l *Loop, f func()) {
	t.Helper()
	done := make(chan error, 1)
	l.submit(func() {
		f()
		done <- nil
	})
	await(t, done, "queued work did not run")
}

func TestTimersRunInOrder(t *testing.T) {
	g := newGroup(t, 1)
	l := g.loops[0]
	ran := make(chan int, 3)
	start := time.Now()
	onLoop(t, l, func() {
		for _, ms := range []int{30, 10, 20} {
			l.After(time.Duration(ms)*time.Millisecond, func() { ran <- ms })
		}
	})
	for _, want := range []int{10, 20, 30} {
		select {
		case got := <-ran:
			if got != want {
				t.Errorf("got the %d ms timer; want the %d ms one", got, want)
			}
			if since := time.Since(start); since < time.Duration(want)*time.Millisecond {
				t.Errorf("the %d ms timer ran after %v", got, since)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the %d ms timer did not run", want)
		}
	}
}

// TestTimerUntil checks that a waiting timer reports how long until it
// runs, and one that has run or was stopped that it is not waiting.
func TestTimerUntil(t *testing.T) {
	g := newGroup(t, 1)
	l := g.loops[0]
	ran := make(chan error, 1)
	var waiting, stopped, soon *Timer
	onLoop(t, l, func() {
		waiting = l.After(time.Hour, func() {})
		stopped = l.After(time.Hour, func() {})
		stopped.Stop()
		soon = l.After(time.Millisecond, func() { ran <- nil })
	})
	await(t, ran, "the 1 ms timer did not run")
	tests := []struct {
		name     string
		t        *Timer
		want     bool
		min, max time.Duration // when waiting
	}{
		{"waiting", waiting, true, 59 * time.Minute, time.Hour},
		{"stopped", stopped, false, 0, 0},
		{"run", soon, false, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var until time.Duration
			var ok bool
			onLoop(t, l, func() { until, ok = tt.t.Until() })
			if ok != tt.want || ok && (until < tt.min || until > tt.max) || !ok && until != 0 {
				t.Errorf("Until: got %v, %v; want %v, within [%v, %v]", until, ok, tt.want, tt.min, tt.max)
			}
		})
	}
}

func TestTimerStop(t *testing.T) {
	g := newGroup(t, 1)
	l := g.loops[0]
	ran := make(chan string, 2)
	var stopped, kept *Timer
	onLoop(t, l, func() {
		stopped = l.After(20*time.Millisecond, func() { ran <- "stopped" })
		kept = l.After(40*time.Millisecond, func() { ran <- "kept" })
	})
	var first, second bool
	onLoop(t, l, func() { first, second = stopped.Stop(), stopped.Stop() })
	if !first || second {
		t.Errorf("Stop twice: got %v, %v; want true, false", first, second)
	}
	select {
	case got := <-ran:
		if got != "kept" {
			t.Errorf("got the %s timer run; want the kept one", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the kept timer did not run")
	}
	var after bool
	onLoop(t, l, func() { after = kept.Stop() })
	if after {
		t.Error("Stop after the timer ran: got true; want false")
	}
	select {
	case got := <-ran:
		t.Errorf("got the %s timer run too", got)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestTimerWakesIdleLoop(t *testing.T) {
	g := newGroup(t, 1)
	l := g.loops[0]
	// The timer is due after the loop has gone back to its idle wait,
	// which the queued work that sets it ends: idleWaits empty waits of
	// busyWait later.
	d := 2 * idleWaits * busyWait * time.Millisecond
	ran := make(chan error, 1)
	var at time.Time
	onLoop(t, l, func() {
		at = time.Now()
		l.After(d, func() { ran <- nil })
	})
	await(t, ran, "a timer due after the loop fell idle did not run")
	if since := time.Since(at); since < d {
		t.Errorf("the %v timer ran after %v", d, since)
	}
}

func TestTimerFromTimer(t *testing.T) {
	g := newGroup(t, 1)
	l := g.loops[0]
	ran := make(chan error, 1)
	onLoop(t, l, func() {
		l.After(0, func() {
			l.After(0, func() { ran <- nil })
		})
	})
	await(t, ran, "a timer set by a timer did not run")
}

// TestNextWait checks how a loop waits with and without a timer, busy
// (fewer than idleWaits empty waits) and idle: a busy loop waits keeping
// its P for busyWait or until its next timer; an idle one waits through
// the runtime until keepPFor before its next timer, and keeping its P
// when that is sooner.
func TestNextWait(t *testing.T) {
	g := newGroup(t, 1)
	l := g.loops[0]
	const ms = time.Millisecond
	cases := []struct {
		name  string
		timer time.Duration // 0: none
		empty int
		raw   bool
		d     [2]time.Duration // raw: the range d must be in
		ms    [2]int           // not raw: the range ms must be in
	}{
		{"busy, no timer", 0, 0, true, [2]time.Duration{busyWait * ms, busyWait * ms}, [2]int{}},
		{"idle, no timer", 0, idleWaits, false, [2]time.Duration{}, [2]int{-1, -1}},
		{"busy, later timer", time.Hour, 0, true, [2]time.Duration{busyWait * ms, busyWait * ms}, [2]int{}},
		{"busy, sooner timer", 3 * ms, 0, true, [2]time.Duration{1, 3 * ms}, [2]int{}},
		{"idle, timer in an hour", time.Hour, idleWaits, false, [2]time.Duration{}, [2]int{3_599_990, 3_599_998}},
		{"idle, timer in a second", time.Second, idleWaits, false, [2]time.Duration{}, [2]int{990, 998}},
		{"idle, timer within keepPFor", 2 * ms, idleWaits, true, [2]time.Duration{1, 2 * ms}, [2]int{}},
		{"idle, due timer", -ms, idleWaits, true, [2]time.Duration{0, 0}, [2]int{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var raw bool
			var d time.Duration
			var gotMs int
			onLoop(t, l, func() {
				var tm *Timer
				if tc.timer != 0 {
					tm = l.After(tc.timer, func() {})
				}
				raw, d, gotMs = l.nextWait(tc.empty)
				if tm != nil {
					tm.Stop()
				}
			})
			if raw != tc.raw {
				t.Fatalf("raw: got %v; want %v", raw, tc.raw)
			}
			if raw && (d < tc.d[0] || d > tc.d[1]) {
				t.Errorf("raw wait: got %v; want %v to %v", d, tc.d[0], tc.d[1])
			}
			if !raw && (gotMs < tc.ms[0] || gotMs > tc.ms[1]) {
				t.Errorf("wait through the runtime: got %d ms; want %d to %d", gotMs, tc.ms[0], tc.ms[1])
			}
		})
	}
}

// TestRawWaitFor checks that a raw wait with a timeout ends once it has
// passed, and not before, with epoll_pwait2 and with the milliseconds
// fallback.
func TestRawWaitFor(t *testing.T) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatalf("epoll_create1: %v", err)
	}
	t.Cleanup(func() { syscall.Close(epfd) })
	events := make([]syscall.EpollEvent, 1)
	for _, fallback := range []bool{false, true} {
		noPwait2 := fallback
		start := time.Now()
		n, errno := rawEpollWaitFor(epfd, events, 1500*time.Microsecond, &noPwait2)
		took := time.Since(start)
		if errno != 0 || n != 0 {
			t.Fatalf("fallback %v: got %d events, errno %v; want 0, 0", fallback, n, errno)
		}
		if took < 1500*time.Microsecond {
			t.Errorf("fallback %v: waited %v; want 1.5ms or more", fallback, took)
		}
	}
}

// TestTimerReset moves a waiting timer later and earlier, and starts one
// that was stopped again, each to run once at its new time.
func TestTimerReset(t *testing.T) {
	g := newGroup(t, 1)
	l := g.loops[0]
	ran := make(chan string, 4)
	var later, earlier, stopped *Timer
	start := time.Now()
	onLoop(t, l, func() {
		later = l.After(10*time.Millisecond, func() { ran <- "later" })
		earlier = l.After(time.Hour, func() { ran <- "earlier" })
		stopped = l.After(5*time.Millisecond, func() { ran <- "stopped" })
		stopped.Stop()
		later.Reset(60 * time.Millisecond)
		earlier.Reset(20 * time.Millisecond)
		stopped.Reset(40 * time.Millisecond)
	})
	for _, want := range []struct {
		name string
		at   time.Duration
	}{{"earlier", 20 * time.Millisecond}, {"stopped", 40 * time.Millisecond}, {"later", 60 * time.Millisecond}} {
		select {
		case got := <-ran:
			if got != want.name {
				t.Errorf("got timer %q; want %q", got, want.name)
			}
			if since := time.Since(start); since < want.at {
				t.Errorf("timer %q ran after %v; want %v or more", got, since, want.at)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("timer %q did not run", want.name)
		}
	}
	select {
	case got := <-ran:
		t.Errorf("got timer %q again; want each once", got)
	case <-time.After(100 * time.Millisecond):
	}
}

// orderHandler notes, in a shared list, each time its socket is ready; the
// first of them to be ready sets a timer due at once.
type orderHandler struct {
	l     *Loop
	name  string
	order *[]string
	set   *bool
}

func (h *orderHandler) Ready(uint32) {
	*h.order = append(*h.order, h.name)
	if !*h.set {
		*h.set = true
		h.l.After(0, func() { *h.order = append(*h.order, "timer") })
	}
}

func (h *orderHandler) Stopped() {}

// TestTimerBetweenEvents checks that a timer due while a loop handles a
// batch of events runs after the event at hand, before the rest.
func TestTimerBetweenEvents(t *testing.T) {
	g := newGroup(t, 1)
	l := g.loops[0]
	a, pa := socketPair(t)
	b, pb := socketPair(t)
	t.Cleanup(func() {
		for _, fd := range []int{a, pa, b, pb} {
			syscall.Close(fd)
		}
	})
	var order []string
	var set bool
	done := make(chan error, 1)
	onLoop(t, l, func() {
		for _, h := range []struct {
			fd   int
			name string
		}{{a, "first"}, {b, "second"}} {
			if err := l.Add(h.fd, &orderHandler{l: l, name: h.name, order: &order, set: &set}, syscall.EPOLLIN|1<<31); err != nil { // EPOLLET
				t.Errorf("Add: %v", err)
			}
		}
		// Both become readable before the loop waits again: one batch.
		syscall.Write(pa, []byte("x"))
		syscall.Write(pb, []byte("x"))
		l.After(50*time.Millisecond, func() { done <- nil })
	})
	await(t, done, "the loop did not go on")
	var got []string
	onLoop(t, l, func() { got = append(got, order...) })
	if len(got) != 3 || got[1] != "timer" {
		t.Errorf("order: got %v; want an event, the timer, the other event", got)
	}
}

func TestTimerDue(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    time.Duration // the next timer, from the batch's start; 0: none
		event int
		want  bool
	}{
		{"no timer", 0, 0, false},
		{"no timer, sixteenth event", 0, timerCheckEvery - 1, false},
		{"near", nearTimer / 2, 0, true},
		{"near, later event", nearTimer / 2, 3, true},
		{"overdue", -time.Millisecond, 1, true},
		{"far", 10 * nearTimer, 0, false},
		{"far, later event", 10 * nearTimer, 3, false},
		{"far, sixteenth event", 10 * nearTimer, timerCheckEvery - 1, true},
		{"far, thirty-second event", 10 * nearTimer, 2*timerCheckEvery - 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &Loop{epoch: time.Now()}
			start := time.Hour // as read at the batch's first event
			if tc.in != 0 {
				heap.Push(&l.timers, &Timer{when: start + tc.in, loop: l})
			}
			if got := l.timerDue(&start, tc.event); got != tc.want {
				t.Errorf("timerDue after event %d, timer in %v: got %v; want %v", tc.event, tc.in, got, tc.want)
			}
			if start != time.Hour {
				t.Errorf("start: got %v; want it kept (%v)", start, time.Hour)
			}
		})
	}
	t.Run("start read once", func(t *testing.T) {
		l := &Loop{epoch: time.Now().Add(-time.Minute)}
		start := time.Duration(-1)
		l.timerDue(&start, 0)
		if start != -1 {
			t.Errorf("with no timer, start: got %v; want -1 (not read)", start)
		}
		heap.Push(&l.timers, &Timer{when: time.Hour, loop: l})
		l.timerDue(&start, 1)
		if start < time.Minute || start > time.Hour {
			t.Errorf("start: got %v; want the loop's clock, a minute or more", start)
		}
	})
}

// slowHandler takes a while over each event, as a loop's session ending
// does, and records it.
type slowHandler struct {
	name  string
	order *[]string
	take  time.Duration
}

func (h *slowHandler) Ready(uint32) {
	*h.order = append(*h.order, h.name)
	for end := time.Now().Add(h.take); time.Now().Before(end); {
	}
}

func (h *slowHandler) Stopped() {}

// TestTimerInLongBatch checks that a timer further off than nearTimer,
// which comes due while a loop is still at a long batch of events, runs
// within timerCheckEvery events, not after the whole batch.
func TestTimerInLongBatch(t *testing.T) {
	g := newGroup(t, 1)
	l := g.loops[0]
	const n = 3 * timerCheckEvery
	var order []string
	done := make(chan error, 1)
	onLoop(t, l, func() {
		for i := range n {
			a, pa := socketPair(t)
			t.Cleanup(func() { syscall.Close(a); syscall.Close(pa) })
			h := &slowHandler{name: "event", order: &order, take: nearTimer / 2}
			if err := l.Add(a, h, syscall.EPOLLIN|1<<31); err != nil { // EPOLLET
				t.Errorf("Add %d: %v", i, err)
			}
			syscall.Write(pa, []byte("x"))
		}
		// Due after about 2*nearTimer of the batch, 4 events.
		l.After(2*nearTimer, func() { order = append(order, "timer") })
		l.After(time.Duration(n)*nearTimer, func() { done <- nil })
	})
	await(t, done, "the loop did not go on")
	var got []string
	onLoop(t, l, func() { got = append(got, order...) })
	at := slices.Index(got, "timer")
	if at < 0 || at > timerCheckEvery {
		t.Errorf("the timer ran after %d of %d events; want it within the first %d", at, len(got)-1, timerCheckEvery)
	}
}

// TestThen checks that what timers queue with Then runs once every timer
// due with them has run, in the order queued, and that what such a
// function queues runs after it.
func TestThen(t *testing.T) {
	g := newGroup(t, 1)
	l := g.loops[0]
	var order []string
	done := make(chan error, 1)
	onLoop(t, l, func() {
		// Three timers due together: the loop runs them in one batch once
		// this work is done, their time having come meanwhile.
		for _, name := range []string{"a", "b", "c"} {
			l.After(0, func() {
				order = append(order, name)
				l.Then(func() {
					order = append(order, "then "+name)
					if name == "a" {
						l.Then(func() { order = append(order, "then of then a") })
					}
				})
			})
		}
		l.After(50*time.Millisecond, func() { done <- nil })
	})
	await(t, done, "the last timer did not run")
	want := []string{"a", "b", "c", "then a", "then b", "then c", "then of then a"}
	if !slices.Equal(order, want) {
		t.Errorf("got %q; want %q", order, want)
	}
}

// A pass over due timers also runs those due within timerSlack of it, but
// not one due later, nor one set during the pass, and no pass runs a
// timer early while none is due.
func TestTimerSlack(t *testing.T) {
	g := newGroup(t, 1)
	l := g.loops[0]
	onLoop(t, l, func() {
		var ran []string
		note := func(name string) func() { return func() { ran = append(ran, name) } }
		alone := l.After(timerSlack*4/5, note("alone"))
		l.runTimers()
		if len(ran) > 0 && l.clock() < alone.when {
			t.Errorf("with no timer due, a pass ran %q early", ran)
		}
		alone.Stop()

		ran = nil
		l.After(0, note("due"))
		l.After(timerSlack-10*time.Microsecond, note("within the slack"))
		later := l.After(50*time.Millisecond, note("later"))
		l.runTimers()
		if want := []string{"due", "within the slack"}; !slices.Equal(ran, want) {
			t.Errorf("the pass ran %q; want %q", ran, want)
		}
		later.Stop()

		ran = nil
		var set *Timer
		l.After(0, func() {
			ran = append(ran, "due")
			set = l.After(time.Microsecond, note("set during the pass"))
		})
		l.runTimers()
		if want := []string{"due"}; !slices.Equal(ran, want) {
			t.Errorf("the pass ran %q; want %q", ran, want)
		}
		set.Stop()
	})
}
