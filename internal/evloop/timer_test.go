//go:build linux

package evloop

import (
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

func TestTimeout(t *testing.T) {
	g := newGroup(t, 1)
	l := g.loops[0]
	cases := []struct {
		name  string
		timer time.Duration // 0: none
		def   int
		check func(got int) bool
		want  string
	}{
		{"no timer, default", 0, busyWait, func(got int) bool { return got == busyWait }, "busyWait"},
		{"no timer, no limit", 0, -1, func(got int) bool { return got == -1 }, "-1"},
		{"later timer", time.Hour, busyWait, func(got int) bool { return got == busyWait }, "busyWait"},
		{"sooner timer", 3 * time.Millisecond, busyWait, func(got int) bool { return got >= 1 && got <= 3 }, "1 to 3"},
		{"timer, no limit", time.Hour, -1, func(got int) bool { return got > 3_500_000 }, "about an hour"},
		{"due timer", -time.Millisecond, -1, func(got int) bool { return got == 0 }, "0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got int
			onLoop(t, l, func() {
				var tm *Timer
				if tc.timer != 0 {
					tm = l.After(tc.timer, func() {})
				}
				got = l.timeout(tc.def)
				if tm != nil {
					tm.Stop()
				}
			})
			if !tc.check(got) {
				t.Errorf("got %d ms; want %s", got, tc.want)
			}
		})
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
