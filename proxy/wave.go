package proxy

import (
	"sync"
	"sync/atomic"
)

// A wave is one action taken on many sessions at once: an every rule's
// tick, or a manual fault on every matching session. What a client is sent
// is what the wave is judged by (the last client to see its close frame
// marks the wave's end), so a wave writes in two passes:
//
//	pass 1: for each session   client  <- close code / reset / FIN
//	pass 2: for each session   upstream <- its close frame (1001 mostly)
//
// Each pass is shared by waveWorkers goroutines. A session acted on
// outside a wave (w == nil) writes both sides at once.
type wave struct {
	mu    sync.Mutex
	later []func() // pass 2, in the order pass 1 queued it
}

// waveWorkers is how many goroutines share a pass: its work is mostly
// writes to sockets, which overlap well.
const waveWorkers = 16

// then queues f for the second pass, or runs it now outside a wave.
func (w *wave) then(f func()) {
	if w == nil {
		f()
		return
	}
	w.mu.Lock()
	w.later = append(w.later, f)
	w.mu.Unlock()
}

// run takes act on every session of the wave (pass 1), then runs what
// pass 1 queued (pass 2). It returns how many sessions act reported it
// acted on. During pass 1 the poller (if any) holds back the copiers of
// the closing sessions: the clients' answers are read once every client
// has been written to.
func (w *wave) run(pl *poller, sessions []*session, act func(*session) bool) int {
	pl.hold()
	var n atomic.Int64
	parallel(len(sessions), func(i int) {
		if act(sessions[i]) {
			n.Add(1)
		}
	})
	pl.resume()
	w.mu.Lock()
	later := w.later
	w.later = nil
	w.mu.Unlock()
	parallel(len(later), func(i int) { later[i]() })
	return int(n.Load())
}

// parallel calls f(0) ... f(n-1) on up to waveWorkers goroutines and waits
// for them.
func parallel(n int, f func(int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(waveWorkers, n) {
		wg.Go(func() { // goroutine "wave worker": ends with the pass
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				f(int(i))
			}
		})
	}
	wg.Wait()
}
