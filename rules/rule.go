package rules

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Trigger says when a rule fires.
type Trigger uint8

// The triggers; a rule has exactly one.
const (
	OnConnect     Trigger = iota + 1 // at the upgrade
	After                            // a time after the session opened (or the rule was loaded)
	AfterMessages                    // right after the N-th whole data message in Direction
	AfterBytes                       // once N bytes of payload passed in Direction
	OnMessage                        // instead of delivering a message that matches Pattern
	Every                            // a clock: at each tick, every open matching session
)

var triggerNames = map[Trigger]string{
	OnConnect: "connect", After: "after", AfterMessages: "after_messages",
	AfterBytes: "after_bytes", OnMessage: "on_message", Every: "every",
}

func (t Trigger) String() string { return triggerNames[t] }

// ActionKind says what a rule does when it fires.
type ActionKind uint8

// The actions.
const (
	Close   ActionKind = iota + 1 // close frame with Code and Reason to To; 1001 to the other side
	Reset                         // TCP RST to To; 1001 to the other side
	Drop                          // TCP FIN without a close frame to To; 1001 to the other side
	Reject                        // refuse the upgrade with an HTTP Status
	Hang                          // stop relaying in Direction, TCP stays open
	Delay                         // hold every message in Direction for Latency (+ Jitter)
	TLSFail                       // abort the TLS handshake
)

var actionNames = map[ActionKind]string{
	Close: "close", Reset: "reset", Drop: "drop", Reject: "reject",
	Hang: "hang", Delay: "delay", TLSFail: "tls_fail",
}

func (a ActionKind) String() string { return actionNames[a] }

// Direction names who sent a message: the client (client to upstream), the
// upstream (upstream to client), or both. It is a bit set.
type Direction uint8

// The directions.
const (
	FromClient   Direction = 1
	FromUpstream Direction = 2
	FromBoth               = FromClient | FromUpstream
)

func (d Direction) String() string {
	switch d {
	case FromClient:
		return "client"
	case FromUpstream:
		return "upstream"
	}
	return "both"
}

// Target names who receives a close, reset or drop. It is a bit set.
type Target uint8

// The targets.
const (
	ToClient   Target = 1
	ToUpstream Target = 2
	ToBoth            = ToClient | ToUpstream
)

func (t Target) String() string {
	switch t {
	case ToClient:
		return "client"
	case ToUpstream:
		return "upstream"
	}
	return "both"
}

// Rule is a checked rule, ready to decide.
type Rule struct {
	Name  string
	Index int // its place in the file, from 0
	Match Match

	Trigger   Trigger
	After     time.Duration // After: the earliest time
	AfterMax  time.Duration // After: the latest; equal to After unless a range was written
	Count     int64         // AfterMessages: messages; AfterBytes: bytes
	Pattern   *regexp.Regexp
	Every     time.Duration
	Direction Direction // for AfterMessages, AfterBytes, OnMessage, Hang and Delay

	Probability float64 // in [0, 1]
	Limit       int64   // the most times it fires in total; 0: no limit

	Action Action

	spec Spec // as written, to tell a changed rule from an unchanged one
}

// Same reports whether r and o were written the same way, so that a reload
// can keep an unchanged rule's state.
func (r *Rule) Same(o *Rule) bool {
	return r.Name == o.Name && reflect.DeepEqual(r.spec, o.spec)
}

// Action is what a rule does.
type Action struct {
	Kind   ActionKind
	Code   int // Close: the close code; CodeNone for an empty close frame
	Reason string
	To     Target

	Status     int    // Reject
	RetryAfter int    // Reject: seconds for Retry-After; -1: none
	Body       string // Reject

	Duration time.Duration // Hang: reset the session after this long; 0: hang until the peers give up
	Latency  time.Duration // Delay
	Jitter   time.Duration // Delay: up to this much more, uniformly
}

// String is a one-line summary of r, as `wschaos validate` prints it.
func (r *Rule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: ", r.Name)
	switch r.Trigger {
	case OnConnect:
		b.WriteString("on connect")
	case After:
		if r.AfterMax != r.After {
			fmt.Fprintf(&b, "after %s..%s", r.After, r.AfterMax)
		} else {
			fmt.Fprintf(&b, "after %s", r.After)
		}
	case AfterMessages:
		fmt.Fprintf(&b, "after %d messages from %s", r.Count, r.Direction)
	case AfterBytes:
		fmt.Fprintf(&b, "after %d bytes from %s", r.Count, r.Direction)
	case OnMessage:
		fmt.Fprintf(&b, "on a message from %s matching %q", r.Direction, r.Pattern)
	case Every:
		fmt.Fprintf(&b, "every %s", r.Every)
	}
	if r.Probability < 1 {
		fmt.Fprintf(&b, ", probability %g", r.Probability)
	}
	if r.Limit > 0 {
		fmt.Fprintf(&b, ", at most %d times", r.Limit)
	}
	b.WriteString(" -> ")
	a := r.Action
	switch a.Kind {
	case Close:
		if a.Code == CodeNone {
			b.WriteString("close with an empty frame (1005)")
		} else {
			fmt.Fprintf(&b, "close %d", a.Code)
			if name := CodeName(a.Code); name != strconv.Itoa(a.Code) {
				fmt.Fprintf(&b, " (%s)", name)
			}
		}
		if a.Reason != "" {
			fmt.Fprintf(&b, " %q", a.Reason)
		}
		fmt.Fprintf(&b, " to %s", a.To)
	case Reset, Drop:
		fmt.Fprintf(&b, "%s to %s", a.Kind, a.To)
	case Reject:
		fmt.Fprintf(&b, "reject with %d", a.Status)
		if a.RetryAfter >= 0 {
			fmt.Fprintf(&b, ", Retry-After %d", a.RetryAfter)
		}
	case Hang:
		fmt.Fprintf(&b, "hang %s", r.Direction)
		if a.Duration > 0 {
			fmt.Fprintf(&b, ", reset after %s", a.Duration)
		}
	case Delay:
		fmt.Fprintf(&b, "delay %s by %s", r.Direction, a.Latency)
		if a.Jitter > 0 {
			fmt.Fprintf(&b, " + up to %s", a.Jitter)
		}
	case TLSFail:
		b.WriteString("fail the TLS handshake")
	}
	if m := r.Match.String(); m != "" {
		b.WriteString("; match " + m)
	}
	return b.String()
}
