package proxy

import (
	"testing"

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
