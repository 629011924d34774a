//go:build linux

// Package evloop runs sockets on event loops: one epoll set per loop,
// waited on from a goroutine through raw syscalls, so that the runtime
// neither accounts for a busy loop's syscalls nor hands its P to another
// thread while it waits (see the README's "An event-loop prototype": that
// hand-off, not the waiting itself, is what made a Go relay cost more CPU
// per session than nginx).
//
//	            ┌──────────── Group ────────────┐
//	listener ──▶│ Loop 0: epoll ◀─ sockets ...  │──▶ Handler.Ready, on the loop
//	            │ Loop 1: epoll ◀─ sockets ...  │
//	            └───────────────┬───────────────┘
//	                            └──▶ Conn: handed to goroutines, through
//	                                 the runtime's netpoller
//
// A socket is the loop's, its events handled on the loop, until it is
// handed to goroutines as a Conn; from then on the runtime's netpoller
// wakes the goroutines that wait on it, as for any net.Conn.
//
// A loop that has seen an event recently waits in epoll_pwait through
// syscall.RawSyscall6, keeping its P; after idleWaits empty waits in a row
// it waits through the runtime instead, giving its P back, so that an idle
// proxy's loops cost nothing, until shortly before its next timer, which it
// waits for keeping its P again. A process with loops must leave a P free for
// everything else (GOMAXPROCS one more than the loops): goroutines and
// timers queued on a loop's P wait while the loop holds it, until sysmon
// preempts the loop, 10 ms or more.
package evloop

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Handler receives the events of one socket, on its loop, and is told
// when the loop stops.
type Handler interface {
	Ready(events uint32)
	Stopped()
}

// Loop is one event loop: an epoll set and the goroutine that waits on it.
type Loop struct {
	epfd int
	efd  int // eventfd: written to wake the loop for queued work

	// fds holds each registered socket's handler. Only the loop's
	// goroutine reads or writes it.
	fds handlers

	mu     sync.Mutex
	work   []func() // run on the loop; guarded by mu
	exited bool     // the loop has stopped and closed efd; guarded by mu
	spare  []func() // the loop's own, swapped with work
	woken  atomic.Bool
	stop   atomic.Bool
	done   chan struct{}
	events []syscall.EpollEvent
	timers timerHeap // the loop's own
	then   []func()  // run once the timers due now have run (Then)
	epoch  time.Time // the loop's clock (clock) counts from here

	noPwait2 bool // the kernel has no epoll_pwait2: waits are in milliseconds

	afterEvents func() // run after each batch of events (AfterEvents)

	set    uint64 // timers set so far (After, Reset): see runTimers
	ring   *ring  // SendAll's, made at its first call
	noRing bool   // io_uring is not to be had: SendAll calls sendto
}

const (
	// busyWait is how long, in milliseconds, a busy loop waits in one raw
	// epoll_pwait before it goes round again.
	busyWait = 10
	// idleWaits is how many empty raw waits in a row make a loop wait
	// through the runtime, without its P, until its next event.
	idleWaits = 20
	// nearTimer and timerCheckEvery bound the clock reads in a batch of
	// events (timerDue). Due timers run between a batch's events, not
	// after all of them; the loop looks after each event while its next
	// timer is due within nearTimer of the batch's start, and otherwise
	// after every timerCheckEvery events: a timer further off can come
	// due only in a batch that has run that long, and then waits for at
	// most that many events.
	nearTimer       = 2 * time.Millisecond
	timerCheckEvery = 16
	// keepPFor is how soon a timer must be due for an idle loop to wait
	// for it keeping its P: a thread back from a wait through the
	// runtime must get a P before it runs anything, which on a busy
	// process takes milliseconds. An idle loop waits through the runtime
	// until keepPFor before its next timer, then keeping its P.
	keepPFor = 2 * time.Millisecond
	// timerSlack is how early a timer may run: the timers due within it
	// of a timer that runs run with it, so that a burst of them is one
	// pass, its writes one SendAll, rather than a pass each, every one
	// of which may lose the CPU to a peer it woke.
	timerSlack = 250 * time.Microsecond
)

// Group is a set of loops.
type Group struct {
	loops []*Loop
	once  sync.Once
}

// NewGroup starts n loops, each a goroutine "evloop" (not locked to its
// thread: a locked goroutine preempted by sysmon, as a loop is every 10 ms
// it keeps its P, hands its thread over through futex calls);
// they end with Close.
func NewGroup(n int) (*Group, error) {
	if n < 1 {
		return nil, fmt.Errorf("evloop: %d loops", n)
	}
	g := &Group{}
	for range n {
		l, err := newLoop()
		if err != nil {
			g.Close()
			return nil, err
		}
		g.loops = append(g.loops, l)
		go l.run() // goroutine "evloop": ends with Close
	}
	return g, nil
}

// Close stops the loops; work queued on them runs, and then every handler
// still registered is told. Conns
// handed to goroutines are not the loops' any more and stay open.
func (g *Group) Close() error {
	g.once.Do(func() {
		for _, l := range g.loops {
			l.stop.Store(true)
			l.wake()
		}
		for _, l := range g.loops {
			<-l.done
		}
	})
	return nil
}

func newLoop() (*Loop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("evloop: epoll_create1: %w", err)
	}
	efd, _, errno := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		syscall.Close(epfd)
		return nil, fmt.Errorf("evloop: eventfd2: %w", errno)
	}
	l := &Loop{epfd: epfd, efd: int(efd), done: make(chan struct{}),
		events: make([]syscall.EpollEvent, 256), epoch: time.Now()}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(l.efd)}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, l.efd, &ev); err != nil {
		syscall.Close(l.efd)
		syscall.Close(epfd)
		return nil, fmt.Errorf("evloop: epoll_ctl: %w", err)
	}
	return l, nil
}

// submit queues f to run on the loop; f is dropped if the loop has
// stopped.
func (l *Loop) submit(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.exited {
		return
	}
	l.work = append(l.work, f)
	l.wakeLocked()
}

// wake makes the loop's wait return.
func (l *Loop) wake() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.exited {
		l.wakeLocked()
	}
}

// wakeLocked writes to the eventfd, once until the loop has looked at
// its work. l.mu is held and the loop has not exited: once it has, the
// eventfd's number may be another file's.
func (l *Loop) wakeLocked() {
	if l.woken.Swap(true) {
		return
	}
	one := uint64(1)
	syscall.Write(l.efd, (*[8]byte)(unsafe.Pointer(&one))[:])
}

// add registers fd for h; on the loop only.
func (l *Loop) add(fd int, h Handler, events uint32) error {
	l.fds.set(int32(fd), h)
	ev := syscall.EpollEvent{Events: events, Fd: int32(fd)}
	if errno := rawEpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); errno != 0 {
		l.fds.del(int32(fd))
		return errno
	}
	return nil
}

// forget drops fd's handler if it is still h (the number may have been
// reused by a socket registered since); on the loop only. Closing the
// socket has already taken it out of the epoll set.
func (l *Loop) forget(fd int, h Handler) {
	if l.fds.get(int32(fd)) == h {
		l.fds.del(int32(fd))
	}
}

// run is the body of a loop's goroutine.
func (l *Loop) run() {
	defer close(l.done)
	empty := 0
	for {
		var n int
		var errno syscall.Errno
		if raw, d, ms := l.nextWait(empty); raw {
			n, errno = rawEpollWaitFor(l.epfd, l.events, d, &l.noPwait2)
		} else {
			var err error
			n, err = syscall.EpollWait(l.epfd, l.events, ms)
			if err != nil {
				errno, _ = err.(syscall.Errno)
			}
		}
		if errno != 0 && errno != syscall.EINTR {
			panic(fmt.Sprintf("evloop: epoll_pwait: %v", errno)) // a bad epfd: a bug
		}
		if n > 0 {
			empty = 0
		} else {
			empty++
		}
		start := time.Duration(-1) // the batch's start on the loop's clock, read once it has a timer
		for i, ev := range l.events[:max(n, 0)] {
			if ev.Fd == int32(l.efd) {
				var b [8]byte
				rawRead(l.efd, b[:])
				continue
			}
			if h := l.fds.get(ev.Fd); h != nil {
				h.Ready(ev.Events)
			}
			// A timer due meanwhile waits for one socket's work, not
			// for the rest of the batch's.
			if l.timerDue(&start, i) && l.runTimers() {
				empty = 0
			}
		}
		if n > 0 && l.afterEvents != nil {
			l.afterEvents()
		}
		l.runWork()
		if l.runTimers() {
			empty = 0
		}
		if l.stop.Load() {
			l.closeAll()
			return
		}
	}
}

// nextWait says how the loop waits next, after empty waits in a row that
// saw no event: raw, keeping its P, for at most d; or through the runtime
// for at most ms milliseconds (-1: until an event), ending keepPFor or a
// little more before the next timer, which the raw wait then waits for.
func (l *Loop) nextWait(empty int) (raw bool, d time.Duration, ms int) {
	until, ok := l.untilTimer()
	if empty < idleWaits || ok && until < keepPFor+time.Millisecond {
		d = busyWait * time.Millisecond
		if ok && until < d {
			d = until
		}
		return true, d, 0
	}
	if !ok {
		return false, 0, -1
	}
	return false, 0, int((until - keepPFor) / time.Millisecond)
}

// AfterEvents has f run after each batch of events the loop handles,
// before the work goroutines queued and the timers due: the handlers can
// leave writes to it, to be made together. On the loop only.
func (l *Loop) AfterEvents(f func()) { l.afterEvents = f }

// runWork runs what goroutines have queued.
func (l *Loop) runWork() {
	if !l.woken.Load() {
		return
	}
	l.mu.Lock()
	work := l.work
	l.work = l.spare[:0]
	l.woken.Store(false)
	l.mu.Unlock()
	for i, f := range work {
		f()
		work[i] = nil
	}
	l.spare = work
}

// closeAll ends every socket still registered, when the loop stops. Work
// queued until then runs first: Submit reported it queued, and its caller
// may be waiting for it.
func (l *Loop) closeAll() {
	l.mu.Lock()
	l.exited = true
	work := l.work
	l.work = nil
	syscall.Close(l.efd)
	l.mu.Unlock()
	for _, f := range work {
		f()
	}
	l.fds.each(func(fd int32, h Handler) {
		h.Stopped()
		l.fds.del(fd)
	})
	syscall.Close(l.epfd)
	if l.ring != nil {
		l.ring.close()
		l.ring = nil
	}
}
