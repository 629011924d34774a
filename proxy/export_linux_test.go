//go:build linux

package proxy

import (
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/wschaos/wschaos/internal/evloop"
)

// lanesOf returns p's loops, nil if it runs none (yet).
func lanesOf(p *Proxy) *lanes {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lanes
}

// SweepDue reports whether one of p's loops has a keep-alive sweep
// scheduled.
func SweepDue(p *Proxy) bool {
	ls := lanesOf(p)
	if ls == nil {
		return false
	}
	var due atomic.Bool
	ls.onLoops(func(ll *laneLoop) {
		if ll.sweeping != nil {
			due.Store(true)
		}
	})
	return due.Load()
}

// HeaderAt parses a frame header from bytes, as a loop does.
var HeaderAt = headerAt

// NoDelayOnLoops returns, for each of p's loops, whether it has found the
// sockets it accepts taking TCP_NODELAY from the listening socket.
func NoDelayOnLoops(p *Proxy) []bool {
	ls := lanesOf(p)
	if ls == nil {
		return nil
	}
	got := make([]bool, len(ls.loops))
	ls.onLoops(func(ll *laneLoop) { got[slices.Index(ls.loops, ll)] = ll.noDelayInherited }) // each loop its own element
	return got
}

// WithCopiers returns how many of p's sessions have their copiers: those
// on loops looked at on their loops, the others once off them.
func WithCopiers(p *Proxy) (onLoops, offLoops int) {
	ls := lanesOf(p)
	var on atomic.Int64
	if ls != nil {
		ls.onLoops(func(ll *laneLoop) {
			for lsess := range ll.sess {
				if lsess.s.copiers[0] != nil {
					on.Add(1)
				}
			}
		})
	}
	for _, s := range p.openSessions() {
		if s.lane.Load() == nil && s.copiers[0] != nil {
			offLoops++
		}
	}
	return int(on.Load()), offLoops
}

// DialControl is the default dialer's Control.
var DialControl = dialControl

// FailAccepts has p's loops fail every accept with EMFILE, as a process
// out of descriptors sees, while fail returns true, leaving the
// connection in the listener's backlog. It returns the accepts the loops
// try from then on, failed or not, and false if p runs no loops (yet).
func FailAccepts(p *Proxy, fail func() bool) (tried *atomic.Int64, ok bool) {
	ls := lanesOf(p)
	if ls == nil {
		return nil, false
	}
	tried = new(atomic.Int64)
	ls.onLoops(func(ll *laneLoop) {
		ll.accept = func(lfd int) (int, net.Addr, syscall.Errno) {
			tried.Add(1)
			if fail() {
				return -1, nil, syscall.EMFILE
			}
			return evloop.Accept(lfd)
		}
	})
	return tried, true
}

// FailHandOffs has p's loops fail every hand-over of a socket to
// goroutines, closing the socket as evloop.NewConn does when the runtime's
// netpoller will not take it. It reports false if p runs no loops (yet).
func FailHandOffs(p *Proxy) bool {
	ls := lanesOf(p)
	if ls == nil {
		return false
	}
	ls.onLoops(func(ll *laneLoop) {
		ll.newConn = func(fd int, _, _ net.Addr) (*evloop.Conn, error) {
			syscall.Close(fd)
			return nil, syscall.ENOSPC // epoll_ctl past max_user_watches
		}
	})
	return true
}

// KeepAliveBatch is how many sessions a loop turns keep-alive on for in
// one turn.
const KeepAliveBatch = keepAliveBatch

// KeepAliveMost returns the most sessions one turn of any of p's loops
// has turned keep-alive on for.
func KeepAliveMost(p *Proxy) int {
	ls := lanesOf(p)
	if ls == nil {
		return 0
	}
	var most atomic.Int64
	ls.onLoops(func(ll *laneLoop) {
		for {
			m := most.Load()
			if int64(ll.mostKept) <= m || most.CompareAndSwap(m, int64(ll.mostKept)) {
				return
			}
		}
	})
	return int(most.Load())
}

// LoopOf returns the index among p's loops of the loop that relays the
// session whose client is at client (the client's own address), or -1.
func LoopOf(p *Proxy, client net.Addr) int {
	for _, s := range p.openSessions() {
		if ls := s.lane.Load(); ls != nil && ls.caddr.String() == client.String() {
			return slices.Index(ls.ll.ls.loops, ls.ll)
		}
	}
	return -1
}

// HoldLoop has p's i-th loop run nothing, neither its sockets' events nor
// work handed to it, until release is called. It returns once the loop
// is held.
func HoldLoop(p *Proxy, i int) (release func()) {
	ls := lanesOf(p)
	held, gate := make(chan struct{}), make(chan struct{})
	if !ls.loops[i].l.Submit(func() { close(held); <-gate }) {
		panic("HoldLoop: the loop has stopped")
	}
	<-held
	var once sync.Once
	return func() { once.Do(func() { close(gate) }) }
}

// SweepEvery is how often a loop looks for sessions fallen quiet.
const SweepEvery = laneSweepEvery
