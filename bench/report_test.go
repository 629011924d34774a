//go:build linux

package main

import (
	"slices"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{7}, 7},
		{[]float64{1, 3}, 2},
		{[]float64{1, 2, 10}, 2},
		{[]float64{1, 2, 4, 10}, 3},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v): got %v; want %v", tc.in, got, tc.want)
		}
	}
}

// TestRounds checks how figures measured in several rounds are reported:
// the median with its range in the note, ratios of the medians, ratios to
// wschaos round by round, and a failed round counted and failing the run.
func TestRounds(t *testing.T) {
	type add struct {
		target string
		v      float64
		err    string // markAll with statusError instead of add
	}
	type want struct {
		target       string
		status       string
		value        float64
		vsWschaos    float64 // 0: none
		note         string
		samples      []float64
		failedRounds int
		byRound      []float64
	}
	for _, tc := range []struct {
		name       string
		adds       []add
		want       []want
		wantFailed bool
	}{
		{
			name: "one round",
			adds: []add{{target: "wschaos", v: 140}, {target: "nginx", v: 100}},
			want: []want{
				{target: "wschaos", status: statusOK, value: 140, vsWschaos: 1, note: "first"},
				{target: "nginx", status: statusOK, value: 100, vsWschaos: 100.0 / 140, note: "first"},
			},
		},
		{
			name: "three rounds",
			adds: []add{
				{target: "wschaos", v: 140}, {target: "nginx", v: 100},
				{target: "nginx", v: 90}, {target: "wschaos", v: 180},
				{target: "wschaos", v: 120}, {target: "nginx", v: 95},
			},
			want: []want{
				{target: "wschaos", status: statusOK, value: 140, vsWschaos: 1,
					note: "median of 3 rounds, 120 to 180; first", samples: []float64{140, 180, 120}},
				{target: "nginx", status: statusOK, value: 95, vsWschaos: 95.0 / 140,
					note: "median of 3 rounds, 90 to 100; first; × wschaos by round 0.500 to 0.792", samples: []float64{100, 90, 95},
					byRound: []float64{100.0 / 140, 90.0 / 180, 95.0 / 120}},
			},
		},
		{
			// Ratios by round need every round of both.
			name: "a round of wschaos fails",
			adds: []add{
				{target: "wschaos", v: 140}, {target: "nginx", v: 100},
				{target: "wschaos", err: "start: boom"}, {target: "nginx", v: 90},
				{target: "wschaos", v: 120}, {target: "nginx", v: 95},
			},
			want: []want{
				{target: "wschaos", status: statusOK, value: 130, vsWschaos: 1,
					note:    "median of 2 rounds, 120 to 140; first; a round failed: start: boom",
					samples: []float64{140, 120}, failedRounds: 1},
				{target: "nginx", status: statusOK, value: 95, vsWschaos: 95.0 / 130,
					note: "median of 3 rounds, 90 to 100; first", samples: []float64{100, 90, 95}},
			},
			wantFailed: true,
		},
		{
			name: "a later round fails",
			adds: []add{{target: "wschaos", v: 140}, {target: "wschaos", err: "start: boom"}, {target: "wschaos", v: 160}},
			want: []want{
				{target: "wschaos", status: statusOK, value: 150, vsWschaos: 1,
					note:    "median of 2 rounds, 140 to 160; first; a round failed: start: boom",
					samples: []float64{140, 160}, failedRounds: 1},
			},
			wantFailed: true,
		},
		{
			name: "the first round fails",
			adds: []add{{target: "wschaos", err: "start: boom"}, {target: "wschaos", v: 160}},
			want: []want{
				{target: "wschaos", status: statusOK, value: 160, vsWschaos: 1,
					note: "first; a round failed: start: boom", failedRounds: 1},
			},
			wantFailed: true,
		},
		{
			name: "every round fails",
			adds: []add{{target: "wschaos", err: "start: boom"}, {target: "wschaos", err: "start: boom"}},
			want: []want{
				{target: "wschaos", status: statusError, note: "start: boom"},
			},
			wantFailed: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The workload's first figure: markAll notes why on it only.
			const fig = "new sessions/s"
			r := &report{}
			for _, a := range tc.adds {
				if a.err != "" {
					r.markAll("connect", a.target, statusError, a.err)
					continue
				}
				r.add("connect", fig, a.target, a.v, "first")
			}
			r.computeRatios()
			var got []want
			for _, x := range r.Results {
				if x.Figure != fig {
					continue
				}
				w := want{target: x.Target, status: x.Status, note: x.Note, samples: x.Samples, failedRounds: x.FailedRounds,
					byRound: x.VsWschaosByRound}
				if x.Value != nil {
					w.value = *x.Value
				}
				if x.VsWschaos != nil {
					w.vsWschaos = *x.VsWschaos
				}
				got = append(got, w)
			}
			eq := func(a, b want) bool {
				return a.target == b.target && a.status == b.status && a.value == b.value && a.vsWschaos == b.vsWschaos &&
					a.note == b.note && slices.Equal(a.samples, b.samples) && a.failedRounds == b.failedRounds &&
					slices.Equal(a.byRound, b.byRound)
			}
			if !slices.EqualFunc(got, tc.want, eq) {
				t.Errorf("results:\n got %+v;\nwant %+v", got, tc.want)
			}
			if got := r.failed(); got != tc.wantFailed {
				t.Errorf("failed: got %v; want %v", got, tc.wantFailed)
			}
		})
	}
}
