//go:build linux

package proxy

import (
	"sync"
	"sync/atomic"
)

// SweepDue reports whether one of p's loops has a keep-alive sweep
// scheduled.
func SweepDue(p *Proxy) bool {
	p.mu.Lock()
	ls := p.lanes
	p.mu.Unlock()
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

// NoDelayOnLoops returns, for each of p's loops, whether the sockets it
// accepts take TCP_NODELAY from the listening socket: 0 before its first
// connection, 1 if they do, -1 if the loop sets it on each.
func NoDelayOnLoops(p *Proxy) []int8 {
	p.mu.Lock()
	ls := p.lanes
	p.mu.Unlock()
	if ls == nil {
		return nil
	}
	got := make([]int8, len(ls.loops))
	var mu sync.Mutex
	ls.onLoops(func(ll *laneLoop) {
		mu.Lock()
		defer mu.Unlock()
		for i := range ls.loops {
			if ls.loops[i] == ll {
				got[i] = ll.noDelay
			}
		}
	})
	return got
}
