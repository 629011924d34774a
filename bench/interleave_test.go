//go:build linux

package main

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestAppendCounted(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	got := [][]echoed{
		{{at(100), 1 * time.Millisecond}, {at(200), 2 * time.Millisecond}, {at(700), 3 * time.Millisecond}},
		{{at(199), 4 * time.Millisecond}, {at(700), 5 * time.Millisecond}, {at(701), 6 * time.Millisecond}},
		nil,
	}
	tests := []struct {
		name     string
		from, to time.Time
		want     []time.Duration
	}{
		{"window of a slice", at(200), at(700), []time.Duration{2, 3, 5}},
		{"ends included", at(100), at(701), []time.Duration{1, 2, 3, 4, 5, 6}},
		{"empty window", at(300), at(600), nil},
		{"before every echo", at(0), at(99), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := make([]time.Duration, len(tt.want))
			for i, ms := range tt.want {
				want[i] = ms * time.Millisecond
			}
			c := appendCounted(nil, got, tt.from, tt.to)
			slices.Sort(c)
			if !slices.Equal(c, want) {
				t.Errorf("got %v; want %v", c, want)
			}
		})
	}
	t.Run("appends", func(t *testing.T) {
		c := appendCounted([]time.Duration{time.Second}, got, at(0), at(100))
		if want := []time.Duration{time.Second, time.Millisecond}; !slices.Equal(c, want) {
			t.Errorf("got %v; want %v", c, want)
		}
	})
}

func TestSliceOrder(t *testing.T) {
	for n := range 7 {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			seq := sliceOrder(n)
			want := n * (n - 1)
			if n == 1 {
				want = 1
			}
			if len(seq) != want {
				t.Fatalf("got %d slices %v; want %d", len(seq), seq, want)
			}
			if n < 2 {
				return
			}
			if seq[0] != 0 {
				t.Errorf("got first %d; want 0", seq[0])
			}
			slicesOf := make([]int, n)
			follows := map[[2]int]int{}
			for i, v := range seq {
				slicesOf[v]++
				// The block repeats: its last slice precedes its first.
				follows[[2]int{seq[(i+len(seq)-1)%len(seq)], v}]++
			}
			for v, c := range slicesOf {
				if c != n-1 {
					t.Errorf("target %d: got %d slices; want %d", v, c, n-1)
				}
			}
			for a := range n {
				for b := range n {
					want := 1
					if a == b {
						want = 0
					}
					if got := follows[[2]int{a, b}]; got != want {
						t.Errorf("%d then %d: got %d times; want %d (%v)", a, b, got, want, seq)
					}
				}
			}
		})
	}
}
