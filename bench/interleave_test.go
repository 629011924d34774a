//go:build linux

package main

import (
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

func TestCycleOrder(t *testing.T) {
	runs := []string{"direct", "wschaos", "nginx"}
	var seq []string
	for cycle := range 4 {
		seq = append(seq, cycleOrder(runs, cycle)...)
	}
	want := []string{
		"direct", "wschaos", "nginx",
		"nginx", "wschaos", "direct",
		"direct", "wschaos", "nginx",
		"nginx", "wschaos", "direct",
	}
	if !slices.Equal(seq, want) {
		t.Errorf("got %v; want %v", seq, want)
	}
	if !slices.Equal(runs, []string{"direct", "wschaos", "nginx"}) {
		t.Errorf("runs changed to %v", runs)
	}
	// Over two cycles every target runs right after each of its
	// neighbours once (a target's slices follow whatever ran before).
	after := map[[2]string]int{}
	for i := 1; i < 6; i++ {
		after[[2]string{seq[i-1], seq[i]}]++
	}
	for _, p := range [][2]string{{"direct", "wschaos"}, {"nginx", "wschaos"}} {
		if after[p] != 1 {
			t.Errorf("%s then %s: got %d times; want 1", p[0], p[1], after[p])
		}
	}
}
