package rules

import (
	"math"
	"slices"
	"sync"
	"testing"
	"time"
)

const sessions = 1000 // ordinals 1..sessions

// hits returns the ordinals in 1..sessions that r applies to.
func hits(r *Rule, seed uint64) []uint64 {
	var out []uint64
	for o := uint64(1); o <= sessions; o++ {
		if r.Hit(seed, o) {
			out = append(out, o)
		}
	}
	return out
}

func TestHitSeeded(t *testing.T) {
	r := &Rule{Name: "flaky", Probability: 0.3}
	a := hits(r, 42)
	t.Run("same seed, same sessions", func(t *testing.T) {
		if b := hits(r, 42); !slices.Equal(a, b) {
			t.Errorf("got %v; want %v", b, a)
		}
	})
	t.Run("same seed on an equal rule", func(t *testing.T) {
		same := &Rule{Name: "flaky", Probability: 0.3, Index: 7}
		if b := hits(same, 42); !slices.Equal(a, b) {
			t.Errorf("got %v; want %v", b, a)
		}
	})
	t.Run("another seed, other sessions", func(t *testing.T) {
		if b := hits(r, 43); slices.Equal(a, b) {
			t.Errorf("got the same %d sessions for seeds 42 and 43", len(b))
		}
	})
	t.Run("another rule, other sessions", func(t *testing.T) {
		other := &Rule{Name: "flaky2", Probability: 0.3}
		if b := hits(other, 42); slices.Equal(a, b) {
			t.Errorf("got the same %d sessions for two rules", len(b))
		}
	})
	t.Run("rate", func(t *testing.T) {
		// 0.3 of 1000 has a standard deviation of about 14.5; 60 is
		// over four of them.
		for seed := uint64(0); seed < 20; seed++ {
			n := len(hits(r, seed))
			if n < 240 || n > 360 {
				t.Errorf("seed %d: got %d hits of %d; want 300 ± 60", seed, n, sessions)
			}
		}
	})
	t.Run("a higher probability hits a superset", func(t *testing.T) {
		higher := &Rule{Name: "flaky", Probability: 0.6}
		b := hits(higher, 42)
		for _, o := range a {
			if !slices.Contains(b, o) {
				t.Errorf("session %d is hit at 0.3 but not at 0.6", o)
			}
		}
	})
}

func TestHitExact(t *testing.T) {
	for _, tt := range []struct {
		name string
		p    float64
		want int
	}{
		{name: "0", p: 0, want: 0},
		{name: "1", p: 1, want: sessions},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &Rule{Name: "exact", Probability: tt.p}
			for _, seed := range []uint64{0, 1, 42, math.MaxUint64} {
				if got := len(hits(r, seed)); got != tt.want {
					t.Errorf("seed %d: got %v; want %v", seed, got, tt.want)
				}
			}
		})
	}
}

func TestHitOrderIndependent(t *testing.T) {
	r := &Rule{Name: "flaky", Probability: 0.3}
	const seed = 7
	forward := hits(r, seed)

	var reverse []uint64
	for o := uint64(sessions); o >= 1; o-- {
		if r.Hit(seed, o) {
			reverse = append(reverse, o)
		}
	}
	slices.Sort(reverse)
	if !slices.Equal(forward, reverse) {
		t.Errorf("reverse order: got %v; want %v", reverse, forward)
	}

	// Concurrently, each goroutine with its own share of the ordinals in
	// a scattered order, and all of them on the same rule.
	got := make([]bool, sessions+1)
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for o := uint64(sessions - w); o >= 1 && o <= sessions; o -= workers {
				got[o] = r.Hit(seed, o)
			}
		})
	}
	wg.Wait()
	var concurrent []uint64
	for o, hit := range got {
		if hit {
			concurrent = append(concurrent, uint64(o))
		}
	}
	if !slices.Equal(forward, concurrent) {
		t.Errorf("concurrent: got %v; want %v", concurrent, forward)
	}
}

func TestDelay(t *testing.T) {
	t.Run("fixed", func(t *testing.T) {
		r := &Rule{Name: "fixed", Trigger: After, After: 30 * time.Second, AfterMax: 30 * time.Second}
		for o := uint64(1); o <= sessions; o++ {
			if got := r.Delay(1, o); got != r.After {
				t.Fatalf("ordinal %d: got %v; want %v", o, got, r.After)
			}
		}
	})
	t.Run("range", func(t *testing.T) {
		r := &Rule{Name: "ranged", Trigger: After, After: 10 * time.Second, AfterMax: 30 * time.Second}
		distinct := map[time.Duration]bool{}
		var first []time.Duration
		for o := uint64(1); o <= sessions; o++ {
			d := r.Delay(1, o)
			if d < r.After || d > r.AfterMax {
				t.Errorf("ordinal %d: got %v; want within [%v, %v]", o, d, r.After, r.AfterMax)
			}
			if again := r.Delay(1, o); again != d {
				t.Errorf("ordinal %d: got %v, then %v; want the same", o, d, again)
			}
			distinct[d] = true
			first = append(first, d)
		}
		if len(distinct) < sessions/2 {
			t.Errorf("got %d distinct delays of %d; want most of them different", len(distinct), sessions)
		}
		var other []time.Duration
		for o := uint64(1); o <= sessions; o++ {
			other = append(other, r.Delay(2, o))
		}
		if slices.Equal(first, other) {
			t.Errorf("seeds 1 and 2 give the same delays")
		}
	})
	t.Run("both ends of a narrow range", func(t *testing.T) {
		r := &Rule{Name: "narrow", Trigger: After, After: 5, AfterMax: 6}
		seen := map[time.Duration]int{}
		for o := uint64(1); o <= sessions; o++ {
			seen[r.Delay(1, o)]++
		}
		if len(seen) != 2 || seen[5] == 0 || seen[6] == 0 {
			t.Errorf("got %v; want both 5ns and 6ns and nothing else", seen)
		}
	})
	t.Run("widest range", func(t *testing.T) {
		r := &Rule{Name: "wide", Trigger: After, After: 0, AfterMax: math.MaxInt64}
		for o := uint64(1); o <= sessions; o++ {
			if d := r.Delay(1, o); d < 0 {
				t.Fatalf("ordinal %d: got %v; want within [0, %v]", o, d, r.AfterMax)
			}
		}
	})
}

func TestRand(t *testing.T) {
	r := &Rule{Name: "jittery"}
	seq := func(seed, ordinal uint64) []uint64 {
		src := r.Rand(seed, ordinal)
		out := make([]uint64, 8)
		for i := range out {
			out[i] = src.Uint64()
		}
		return out
	}
	a := seq(1, 5)
	if b := seq(1, 5); !slices.Equal(a, b) {
		t.Errorf("same seed and ordinal: got %v; want %v", b, a)
	}
	if b := seq(1, 6); slices.Equal(a, b) {
		t.Errorf("another ordinal gives the same sequence %v", b)
	}
	if b := seq(2, 5); slices.Equal(a, b) {
		t.Errorf("another seed gives the same sequence %v", b)
	}
	other := &Rule{Name: "jittery2"}
	if b := other.Rand(1, 5).Uint64(); b == a[0] {
		t.Errorf("another rule gives the same first draw %v", b)
	}
}

func TestJitterFrom(t *testing.T) {
	r := &Rule{Name: "jittery"}
	for _, tt := range []struct {
		name   string
		jitter time.Duration
	}{
		{name: "none", jitter: 0},
		{name: "one nanosecond", jitter: 1},
		{name: "50ms", jitter: 50 * time.Millisecond},
		{name: "the longest", jitter: math.MaxInt64},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := Action{Kind: Delay, Latency: time.Second, Jitter: tt.jitter}
			src := r.Rand(1, 1)
			seen := map[time.Duration]bool{}
			for range 200 {
				d := a.JitterFrom(src)
				if d < 0 || d > tt.jitter {
					t.Fatalf("got %v; want within [0, %v]", d, tt.jitter)
				}
				seen[d] = true
			}
			if tt.jitter > 0 && len(seen) < 2 {
				t.Errorf("got only %v; want varied draws", seen)
			}
			again := r.Rand(1, 1)
			src = r.Rand(1, 1)
			for range 20 {
				if x, y := a.JitterFrom(src), a.JitterFrom(again); x != y {
					t.Fatalf("same source: got %v and %v; want equal", x, y)
				}
			}
		})
	}
}
