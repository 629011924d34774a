package control

import (
	"context"
	"sync"

	"github.com/wschaos/wschaos/proxy"
)

// EventLog keeps the last events of a proxy and streams new ones to
// followers. It is a proxy.EventSink.
type EventLog struct {
	mu   sync.Mutex
	ring []proxy.Event
	next int  // where the next event goes
	full bool // the ring has wrapped
	subs map[chan proxy.Event]struct{}
}

// followBuffer is how many events a follower may lag behind before it
// misses some.
const followBuffer = 1024

// NewEventLog returns a log that keeps the last n events (none if n < 1:
// it still streams them to followers).
func NewEventLog(n int) *EventLog {
	return &EventLog{ring: make([]proxy.Event, max(n, 0)), subs: map[chan proxy.Event]struct{}{}}
}

// Event records e and passes it to every follower; a follower that lags
// more than followBuffer events behind misses the newest.
func (l *EventLog) Event(e proxy.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ring) > 0 {
		l.ring[l.next] = e
		l.next++
		if l.next == len(l.ring) {
			l.next, l.full = 0, true
		}
	}
	for ch := range l.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// Last returns the kept events, oldest first.
func (l *EventLog) Last() []proxy.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastLocked()
}

func (l *EventLog) lastLocked() []proxy.Event {
	if !l.full {
		return append([]proxy.Event{}, l.ring[:l.next]...)
	}
	return append(append([]proxy.Event{}, l.ring[l.next:]...), l.ring[:l.next]...)
}

// Follow returns the events recorded from now on, until ctx is done; the
// channel is closed then.
func (l *EventLog) Follow(ctx context.Context) <-chan proxy.Event {
	_, ch := l.follow(ctx, false)
	return ch
}

// lastAndFollow is Last and Follow in one step: every event is either in
// the kept ones or on the channel, never in both.
func (l *EventLog) lastAndFollow(ctx context.Context) ([]proxy.Event, <-chan proxy.Event) {
	return l.follow(ctx, true)
}

func (l *EventLog) follow(ctx context.Context, last bool) ([]proxy.Event, <-chan proxy.Event) {
	ch := make(chan proxy.Event, followBuffer)
	var kept []proxy.Event
	l.mu.Lock()
	if last {
		kept = l.lastLocked()
	}
	l.subs[ch] = struct{}{}
	l.mu.Unlock()
	context.AfterFunc(ctx, func() {
		l.mu.Lock()
		delete(l.subs, ch)
		close(ch)
		l.mu.Unlock()
	})
	return kept, ch
}
