package gcfloor

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name        string
		live, floor uint64
		want        int
	}{
		{"nothing live: the runtime's minimum at the floor", 0, 16 * mib, 400},
		{"a few bytes live", 100, 16 * mib, 400},
		{"1 MiB live", mib, 16 * mib, 400},
		{"4 MiB live, the next collection at 16", 4 * mib, 16 * mib, 299},
		{"7 MiB live", 7 * mib, 16 * mib, 128},
		{"half the floor live: the default", 8 * mib, 16 * mib, basePercent},
		{"more than the floor live: the default", 64 * mib, 16 * mib, basePercent},
		{"no floor", mib, 0, basePercent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percent(tc.live, tc.floor); got != tc.want {
				t.Errorf("Percent(%d, %d): got %d; want %d", tc.live, tc.floor, got, tc.want)
			}
		})
	}
}

// gogc reads the GC percent in force.
func gogc(t *testing.T) int {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Skip("the runtime has no /gc/gogc:percent")
	}
	return int(s[0].Value.Uint64())
}

// waitPercent collects until the percent in force satisfies ok, for at
// most d: the cleanup that tunes it runs after a collection, on the
// runtime's goroutine for cleanups.
func waitPercent(t *testing.T, d time.Duration, ok func(int) bool) int {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		runtime.GC()
		p := gogc(t)
		if ok(p) || time.Now().After(deadline) {
			return p
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKeep sets the percent for a floor far above the test's heap, has
// the percent changed behind its back, and sees it set again after a
// collection, three times over (each collection's cleanup arms the next
// one's); once its context is done it leaves the percent alone.
func TestKeep(t *testing.T) {
	old := debug.SetGCPercent(basePercent)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	Keep(ctx, 64<<20)
	if got := gogc(t); got <= basePercent {
		t.Fatalf("percent right after Keep: got %d; want more than %d", got, basePercent)
	}
	for i := range 3 {
		debug.SetGCPercent(basePercent)
		if got := waitPercent(t, 5*time.Second, func(p int) bool { return p > basePercent }); got <= basePercent {
			t.Fatalf("percent after collections, time %d: got %d; want more than %d, set again", i+1, got, basePercent)
		}
	}
	cancel()
	// A cleanup armed before cancel may still run once, and sees the
	// context done.
	runtime.GC()
	runtime.GC()
	debug.SetGCPercent(basePercent)
	if got := waitPercent(t, time.Second, func(p int) bool { return p != basePercent }); got != basePercent {
		t.Errorf("percent after the context is done: got %d; want %d, left alone", got, basePercent)
	}
}
