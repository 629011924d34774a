//go:build linux

package evloop

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestSubmitRunsOnceQueued checks Submit's promise while the loop stops:
// work it reported queued runs, even when Close comes right after it.
// Callers wait for such work (the proxy's onLoops waits for every loop's
// part), and would wait forever for work a stopping loop dropped.
func TestSubmitRunsOnceQueued(t *testing.T) {
	for range 200 {
		g, err := NewGroup(1)
		if err != nil {
			t.Fatal(err)
		}
		l := g.loops[0]
		var queued, ran atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for l.Submit(func() { ran.Add(1) }) {
					queued.Add(1)
				}
			})
		}
		g.Close()
		wg.Wait()
		if q, r := queued.Load(), ran.Load(); r != q {
			t.Fatalf("work run: got %d; want the %d Submit reported queued", r, q)
		}
	}
}
