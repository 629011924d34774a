package proxy

import (
	"time"
)

// EventKind says what an Event records.
type EventKind string

// The kinds of events. Every upgrade attempt ends up as exactly one of
// EventRefused or EventOpened, and every EventOpened is followed by one
// EventClosed with the same session id.
const (
	// EventRefused: an upgrade request that did not become a session.
	// Refusal says at which step, Status what the client got.
	EventRefused EventKind = "refused"
	// EventOpened: the client got its 101 and frames flow.
	EventOpened EventKind = "opened"
	// EventClosed: the session ended; By, Why, Code and Reason say how.
	EventClosed EventKind = "closed"
	// EventFault: a rule or a person fired a fault on a session (or
	// refused an attempt, or failed a TLS handshake); Rule, Trigger,
	// Action, Code and Reason say which and how.
	EventFault EventKind = "fault"
)

// The steps at which an upgrade attempt can be refused.
const (
	RefusedBadRequest  = "bad_request" // not a valid opening handshake
	RefusedRule        = "rule"        // a reject rule
	RefusedUpstream    = "upstream"    // the upstream answered anything but 101
	RefusedUnreachable = "unreachable" // the upstream could not be dialed
	RefusedTimeout     = "timeout"     // the upstream did not answer in time
	RefusedClient      = "client"      // the client's 101 could not be written
	RefusedProxy       = "proxy"       // the proxy could not take the connection on (a resource ran out): no answer
)

// Event is one thing that happened to a connection attempt or session. It
// carries a time and the client's address, so that a client can be
// followed across its reconnects.
type Event struct {
	Time    time.Time `json:"time"`
	Kind    EventKind `json:"kind"`
	Session uint64    `json:"session,omitempty"` // the attempt's id; refused attempts and sessions share one sequence
	Client  string    `json:"client"`            // the client's address, host:port
	Path    string    `json:"path,omitempty"`
	Query   string    `json:"query,omitempty"`

	Subprotocol string `json:"subprotocol,omitempty"`
	Status      int    `json:"status,omitempty"`  // EventRefused, and EventFault of a reject: the HTTP status answered
	Refusal     string `json:"refusal,omitempty"` // EventRefused: one of the Refused* steps

	Rule    string `json:"rule,omitempty"`    // EventFault: the rule, or "manual"
	Trigger string `json:"trigger,omitempty"` // EventFault
	Action  string `json:"action,omitempty"`  // EventFault

	By     string `json:"by,omitempty"`     // EventClosed: client, upstream or proxy; EventFault: rule or manual
	Why    string `json:"why,omitempty"`    // EventRefused and EventClosed
	Code   int    `json:"code,omitempty"`   // EventClosed: the first close code sent; EventFault: the code sent (1005 for an empty frame)
	Reason string `json:"reason,omitempty"` // its reason

	// EventClosed: how long the session lasted; EventOpened: how long its
	// handshake took.
	Duration time.Duration `json:"duration_ns,omitempty"`

	ClientCode   int `json:"client_code,omitempty"`   // EventClosed: the code of the close frame the client sent; 1005 for an empty one
	UpstreamCode int `json:"upstream_code,omitempty"` // EventClosed: the same for the upstream
}

// EventSink receives a proxy's events. Event is called from the
// session's own goroutine and must not block for long.
type EventSink interface {
	Event(Event)
}

// Sinks sends every event to each of its sinks in turn.
type Sinks []EventSink

// Event implements EventSink.
func (s Sinks) Event(e Event) {
	for _, sink := range s {
		sink.Event(e)
	}
}

func (p *Proxy) emit(e Event) {
	if p.Events != nil {
		p.Events.Event(e)
	}
}
