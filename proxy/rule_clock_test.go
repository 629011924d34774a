package proxy

import (
	"testing"
	"time"

	"github.com/wschaos/wschaos/rules"
)

// A loop writes a session's 101 at once, rather than with its batch's
// other writes, exactly when an after rule's time counts from it.
func TestTimesAfter(t *testing.T) {
	rule := func(tr rules.Trigger, hit bool) *sessionRule {
		return &sessionRule{lr: &liveRule{Rule: &rules.Rule{Trigger: tr}}, hit: hit}
	}
	tests := []struct {
		name string
		list []*sessionRule
		want bool
	}{
		{"no rules", nil, false},
		{"after, hit", []*sessionRule{rule(rules.After, true)}, true},
		{"after, not hit", []*sessionRule{rule(rules.After, false)}, false},
		{"connect", []*sessionRule{rule(rules.OnConnect, true)}, false},
		{"after_messages", []*sessionRule{rule(rules.AfterMessages, true)}, false},
		{"after_bytes", []*sessionRule{rule(rules.AfterBytes, true)}, false},
		{"on message", []*sessionRule{rule(rules.OnMessage, true)}, false},
		{"every", []*sessionRule{rule(rules.Every, true)}, false},
		{"after among others", []*sessionRule{rule(rules.Every, true), rule(rules.After, false), rule(rules.After, true)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &session{}
			s.rules.Store(&tt.list)
			if got := s.timesAfter(); got != tt.want {
				t.Errorf("timesAfter: got %v; want %v", got, tt.want)
			}
		})
	}
}

// A rule attached before the session opened counts its time from the
// opening; one loaded after that moment keeps its own start.
func TestOpenRules(t *testing.T) {
	opened := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		start time.Time
		want  time.Time
	}{
		{"attached before the 101", opened.Add(-3 * time.Millisecond), opened},
		{"attached at the opening", opened, opened},
		{"loaded after it", opened.Add(time.Millisecond), opened.Add(time.Millisecond)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sr := &sessionRule{lr: &liveRule{Rule: &rules.Rule{Trigger: rules.After}}, hit: true, start: tt.start}
			list := []*sessionRule{sr}
			s := &session{}
			s.rules.Store(&list)
			s.openRules(opened)
			if !sr.start.Equal(tt.want) {
				t.Errorf("start: got %v; want %v", sr.start, tt.want)
			}
		})
	}
}
