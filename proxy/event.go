package proxy

import (
	"time"
)

// EventKind says what an Event records.
type EventKind string

// The kinds of events. Every connection attempt ends up as exactly one of
// EventRefused or EventOpened, and every EventOpened is followed by one
// EventClosed with the same session id.
const (
	// EventRefused: an upgrade request that did not become a session (bad
	// request, upstream refused or unreachable). Status is the HTTP status
	// the client got.
	EventRefused EventKind = "refused"
	// EventOpened: the client got its 101 and frames flow.
	EventOpened EventKind = "opened"
	// EventClosed: the session ended; By, Why, Code and Reason say how.
	EventClosed EventKind = "closed"
	// EventFault: a rule fired on a session (or refused an attempt); Rule,
	// Trigger, Action, Code and Reason say which and how.
	EventFault EventKind = "fault"
)

// Event is one thing that happened to a connection attempt or session. It
// carries a time and the client's address, so that a client can be
// followed across its reconnects.
type Event struct {
	Time    time.Time
	Kind    EventKind
	Session uint64 // the attempt's id; refused attempts and sessions share one sequence
	Client  string // the client's address, host:port
	Path    string
	Query   string

	Subprotocol string // EventOpened and EventClosed
	Status      int    // EventRefused: the HTTP status answered

	Rule    string // EventFault
	Trigger string // EventFault
	Action  string // EventFault

	By     string // EventClosed: client, upstream or proxy; EventFault: rule
	Why    string // EventRefused and EventClosed
	Code   int    // EventClosed: the first close code sent, 0 if none
	Reason string // EventClosed: its reason

	Duration time.Duration // EventClosed
}

// EventSink receives a proxy's events. Event is called from the
// session's own goroutine and must not block for long.
type EventSink interface {
	Event(Event)
}

func (p *Proxy) emit(e Event) {
	if p.Events != nil {
		p.Events.Event(e)
	}
}
