package proxy

import (
	"sync"
	"testing"
)

func TestWaveWritesClientsBeforeUpstreams(t *testing.T) {
	for _, n := range []int{0, 1, 7, waveWorkers, 500} {
		t.Run("", func(t *testing.T) {
			var (
				mu    sync.Mutex
				order []int // 1: a pass-1 step, 2: a pass-2 step
			)
			note := func(pass int) {
				mu.Lock()
				order = append(order, pass)
				mu.Unlock()
			}
			w := &wave{}
			got := w.run(nil, make([]*session, n), func(*session) bool {
				note(1)
				w.then(func() { note(2) })
				return true
			})
			if got != n {
				t.Errorf("acted on: got %d; want %d", got, n)
			}
			if len(order) != 2*n {
				t.Fatalf("steps: got %d; want %d", len(order), 2*n)
			}
			for i, pass := range order {
				if want := 1 + i/max(n, 1); pass != want {
					t.Fatalf("step %d: got pass %d; want pass %d (every pass-1 step first)", i, pass, want)
				}
			}
		})
	}
}

func TestWaveCountsOnlyActedSessions(t *testing.T) {
	w := &wave{}
	sessions := make([]*session, 10)
	var mu sync.Mutex
	calls := 0
	got := w.run(nil, sessions, func(*session) bool {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return calls%2 == 0
	})
	if calls != 10 || got != 5 {
		t.Errorf("got %d calls and %d acted on; want 10 and 5", calls, got)
	}
}

func TestThenOutsideAWaveRunsAtOnce(t *testing.T) {
	var w *wave
	ran := false
	w.then(func() { ran = true })
	if !ran {
		t.Errorf("then on a nil wave: got not run; want run at once")
	}
}
