//go:build linux

package proxy

import (
	"slices"
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

// NoDelayOnLoops returns, for each of p's loops, whether it has found the
// sockets it accepts taking TCP_NODELAY from the listening socket.
func NoDelayOnLoops(p *Proxy) []bool {
	p.mu.Lock()
	ls := p.lanes
	p.mu.Unlock()
	if ls == nil {
		return nil
	}
	got := make([]bool, len(ls.loops))
	ls.onLoops(func(ll *laneLoop) { got[slices.Index(ls.loops, ll)] = ll.noDelayInherited }) // each loop its own element
	return got
}
