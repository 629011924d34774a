//go:build linux

package evloop

import (
	"container/heap"
	"time"
)

// Timer is a function a loop runs once its time has come, on the loop:
// the close handshake's deadlines and the rules' timers of the sessions a
// loop relays, which must not wait for a goroutine to be scheduled. The
// loop's epoll timeout is the time until its next timer.
type Timer struct {
	when  time.Duration // on the loop's clock
	set   uint64        // the loop's count of timers set when this one was
	f     func()
	index int // in the loop's heap; -1 when not in it
	loop  *Loop
}

// timerHeap orders a loop's timers by when, earliest first.
type timerHeap []*Timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].when < h[j].when }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*Timer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}

// After schedules f to run on the loop once d has passed. It must be
// called on the loop: from a handler, a timer or queued work.
func (l *Loop) After(d time.Duration, f func()) *Timer {
	t := &Timer{when: l.clock() + d, set: l.set, f: f, loop: l}
	l.set++
	heap.Push(&l.timers, t)
	return t
}

// Reset has t run once d has passed from now, whether it was waiting, had
// run or was stopped. On the loop only.
func (t *Timer) Reset(d time.Duration) {
	t.when = t.loop.clock() + d
	t.set = t.loop.set
	t.loop.set++
	if t.index >= 0 {
		heap.Fix(&t.loop.timers, t.index)
		return
	}
	heap.Push(&t.loop.timers, t)
}

// Stop keeps t from running and reports whether it did; false if t has
// run or was stopped. On the loop only.
func (t *Timer) Stop() bool {
	if t.index < 0 {
		return false
	}
	heap.Remove(&t.loop.timers, t.index)
	return true
}

// Until returns how long until t runs (0 or less if it is due), and
// false if it is not waiting: it has run or was stopped. On the loop
// only.
func (t *Timer) Until() (time.Duration, bool) {
	if t.index < 0 {
		return 0, false
	}
	return t.when - t.loop.clock(), true
}

// clock is the loop's time: how long it has run, on the monotonic clock.
// It reads the clock once, where time.Now reads the wall clock too.
func (l *Loop) clock() time.Duration { return time.Since(l.epoch) }

// untilTimer returns how long until the loop's next timer is due (0 if
// it is), and false if the loop has no timer.
func (l *Loop) untilTimer() (time.Duration, bool) {
	if len(l.timers) == 0 {
		return 0, false
	}
	return max(l.timers[0].when-l.clock(), 0), true
}

// timerDue reports whether the loop looks for due timers after the i-th
// event of a batch: after each while its next timer is due within
// nearTimer of the batch's start, otherwise after every timerCheckEvery
// events. *start is the batch's start on the loop's clock, read at the
// first event that finds a timer (-1 until then).
func (l *Loop) timerDue(start *time.Duration, i int) bool {
	if len(l.timers) == 0 {
		return false
	}
	if *start < 0 {
		*start = l.clock()
	}
	return l.timers[0].when-*start < nearTimer || i%timerCheckEvery == timerCheckEvery-1
}

// runTimers runs the timers that are due, with those due within
// timerSlack of them, then what they queued with Then; it reports whether
// any ran. A timer set while they run is not run early, and ends the
// early runs where it comes: a timer set to run at once (After(0)) runs
// after the loop has looked at its sockets, as it did without the slack.
func (l *Loop) runTimers() bool {
	if len(l.timers) == 0 {
		return false
	}
	now, set := l.clock(), l.set
	if l.timers[0].when > now {
		return false
	}
	// The first timer is due: the loop runs at least it.
	for len(l.timers) > 0 && (l.timers[0].when <= now || l.timers[0].when <= now+timerSlack && l.timers[0].set < set) {
		t := heap.Pop(&l.timers).(*Timer)
		t.f()
	}
	for len(l.then) > 0 {
		then := l.then
		l.then = nil
		for _, f := range then {
			f()
		}
	}
	return true
}

// Then queues f to run once the timer running now, and every other timer
// due with it, has run: before the loop looks at its sockets again. What
// such an f queues with Then runs after it. From a timer only.
func (l *Loop) Then(f func()) { l.then = append(l.then, f) }
