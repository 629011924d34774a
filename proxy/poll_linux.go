//go:build linux

package proxy

import (
	"errors"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// poller waits, with one goroutine for the whole proxy, on the sources of
// copiers that have been quiet for parkAfter, so that an idle session has
// no goroutine and no stack: its copiers are parked here, and started
// again when their source becomes readable (or ends). The connections stay
// registered with the runtime's own poller too; this epoll set is separate
// and one-shot.
type poller struct {
	epfd   int
	file   *os.File        // owns epfd; waited on through the runtime's poller
	raw    syscall.RawConn // file's
	wake   [2]int          // a pipe: a byte written to wake[1] stops run
	mu     sync.Mutex
	parked map[int32]*copier // by file descriptor
	done   chan struct{}
	once   sync.Once

	// While a wave is in its first pass (holds > 0), a copier of a session
	// that is closing is not started when its source turns readable (most
	// likely with the answer to the wave's close frame): it waits in held
	// until the pass ends, so that reading the answers does not take the
	// CPU from the pass's writes. Both are guarded by mu.
	holds int
	held  []*copier

	// Sweeps end the idle waits of running copiers that have waited since
	// before the sweep two sweeps ago, so that they park (see
	// copier.waitIdle); list appends the open sessions to its argument.
	// swept and buf are run's own.
	sweeps atomic.Int64
	list   func([]*session) []*session
	swept  time.Time
	buf    []*session

	// Copiers that parked after running, since memory was last returned
	// to the system, and when that was; see release.
	parks    atomic.Int64
	seen     int64     // parks at the previous look: a burst is over when it stops growing
	looked   time.Time // the previous look
	released time.Time
}

const (
	// releaseParks is how many copiers must have parked since the last
	// release for the next one: a burst of sessions falling idle.
	releaseParks = 1024
	// releaseEvery is the least time between two releases.
	releaseEvery = 10 * time.Second
)

// release returns the memory of copiers that parked (their goroutines'
// stacks, mostly) to the system once a burst of them has parked and no
// more have for a while (run looks about every second): the
// runtime would keep it cached for a long while, and an idle proxy's
// resident size is what a sidecar is judged by. It costs a forced garbage
// collection, at most every releaseEvery.
func (pl *poller) release(now time.Time) {
	if now.Sub(pl.looked) < time.Second {
		return
	}
	pl.looked = now
	n := pl.parks.Load()
	burstOver := n == pl.seen
	pl.seen = n
	if n < releaseParks || !burstOver || now.Sub(pl.released) < releaseEvery {
		return
	}
	pl.parks.Store(0)
	pl.seen = 0
	pl.released = now
	debug.FreeOSMemory()
}

// newPoller returns a poller whose sweeps look at the sessions list
// appends to its argument.
func newPoller(list func([]*session) []*session) (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	// The epoll set is itself waited on through the runtime's poller (an
	// epoll fd is readable while it has events), so that the poller
	// goroutine never blocks a thread, and with it a P, in epoll_wait: a
	// P held in a blocking syscall delays the timers on its heap (the
	// after rules') until the runtime takes it back.
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, err
	}
	f := os.NewFile(uintptr(epfd), "wschaos-poller")
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close() // not taken by the runtime's poller: no parking
		return nil, err
	}
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	pl := &poller{epfd: epfd, file: f, raw: raw, list: list, parked: map[int32]*copier{}, done: make(chan struct{})}
	if err := syscall.Pipe2(pl.wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		f.Close()
		return nil, err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(pl.wake[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, pl.wake[0], &ev); err != nil {
		pl.closeFDs()
		return nil, err
	}
	return pl, nil
}

func (pl *poller) closeFDs() {
	pl.file.Close()
	syscall.Close(pl.wake[0])
	syscall.Close(pl.wake[1])
}

// run is the body of the "poller" goroutine: it starts the copiers whose
// source became readable, until stop. It waits through the runtime's
// poller, at most sweepEvery at a time, for its sweeps and for release.
func (pl *poller) run() {
	defer close(pl.done)
	events := make([]syscall.EpollEvent, 256)
	var n int
	collect := func(fd uintptr) bool {
		var err error
		n, err = syscall.EpollWait(int(fd), events, 0)
		if err != nil { // EINTR: nothing collected, wait again
			n = 0
		}
		return n > 0
	}
	for {
		pl.file.SetReadDeadline(time.Now().Add(sweepEvery))
		err := pl.raw.Read(collect)
		now := time.Now()
		pl.sweep(now)
		pl.release(now)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == pl.wake[0] {
				return
			}
			pl.mu.Lock()
			c := pl.parked[ev.Fd]
			delete(pl.parked, ev.Fd)
			held := c != nil && pl.holds > 0 && c.s.closing.Load()
			if held {
				pl.held = append(pl.held, c)
			}
			pl.mu.Unlock()
			if c != nil && !held {
				c.wake()
			}
		}
	}
}

// sweep, every sweepEvery, ends the idle waits of copiers that have been
// waiting since before the sweep two sweeps ago: at least parkAfter.
func (pl *poller) sweep(now time.Time) {
	if now.Sub(pl.swept) < sweepEvery {
		return
	}
	pl.swept = now
	n := pl.sweeps.Add(1)
	pl.buf = pl.list(pl.buf[:0])
	for _, s := range pl.buf {
		if s.lane.Load() != nil {
			continue // a loop relays it: no copiers yet
		}
		for _, c := range s.copiers {
			if c != nil { // none if it ended on its loop
				c.interruptIdle(n - 3)
			}
		}
	}
	clear(pl.buf)
}

// sweepCount returns how many sweeps there have been.
func (pl *poller) sweepCount() int64 { return pl.sweeps.Load() }

// hold keeps copiers of closing sessions parked until the matching resume.
func (pl *poller) hold() {
	if pl == nil {
		return
	}
	pl.mu.Lock()
	pl.holds++
	pl.mu.Unlock()
}

// resume ends a hold, and with the last one starts the copiers it kept.
// A kept copier that was started meanwhile (its session aborted) is left
// alone: wake starts a copier only from the parked state.
func (pl *poller) resume() {
	if pl == nil {
		return
	}
	pl.mu.Lock()
	pl.holds--
	var wake []*copier
	if pl.holds == 0 {
		wake, pl.held = pl.held, nil
	}
	pl.mu.Unlock()
	for _, c := range wake {
		c.wake()
	}
}

// stop ends run and releases the epoll set.
func (pl *poller) stop() {
	pl.once.Do(func() {
		syscall.Write(pl.wake[1], []byte{0})
		<-pl.done
		pl.closeFDs()
	})
}

// park registers c's source to start c when it becomes readable; it
// reports false if it cannot (c must then be started at once).
func (pl *poller) park(c *copier) bool {
	fd := c.src.fd
	if fd < 0 {
		return false
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.parked[int32(fd)] = c
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(fd)}
	err := syscall.EpollCtl(pl.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
	if errors.Is(err, syscall.EEXIST) {
		err = syscall.EpollCtl(pl.epfd, syscall.EPOLL_CTL_MOD, fd, &ev)
	}
	if err != nil {
		delete(pl.parked, int32(fd))
		return false
	}
	return true
}

// forget removes c's source from the set before its connection is closed,
// so that a reused descriptor is not taken for it.
func (pl *poller) forget(c *copier) {
	fd := c.src.fd
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.parked[int32(fd)] == c {
		delete(pl.parked, int32(fd))
	}
	syscall.EpollCtl(pl.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
}

// parkedCount returns how many copiers are parked.
func (pl *poller) parkedCount() int {
	if pl == nil {
		return 0
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return len(pl.parked)
}

// parkedAfterRun counts a copier that gave up its goroutine.
func (pl *poller) parkedAfterRun() { pl.parks.Add(1) }
