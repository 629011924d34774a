package control_test

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wschaos/wschaos/control"
	"github.com/wschaos/wschaos/proxy"
)

// sessions returns the session ids of events, in order.
func sessions(events []proxy.Event) []uint64 {
	ids := make([]uint64, 0, len(events))
	for _, e := range events {
		ids = append(ids, e.Session)
	}
	return ids
}

// idRange returns from, from+1, ..., to; empty if to < from.
func idRange(from, to uint64) []uint64 {
	ids := []uint64{}
	for id := from; id <= to; id++ {
		ids = append(ids, id)
	}
	return ids
}

func TestEventLogRing(t *testing.T) {
	tests := []struct {
		size int
		n    uint64 // events recorded, with sessions 1 to n
		want []uint64
	}{
		{size: 3, n: 0, want: []uint64{}},
		{size: 3, n: 1, want: []uint64{1}},
		{size: 3, n: 2, want: []uint64{1, 2}},
		{size: 3, n: 3, want: []uint64{1, 2, 3}},
		{size: 3, n: 4, want: []uint64{2, 3, 4}},
		{size: 3, n: 5, want: []uint64{3, 4, 5}},
		{size: 3, n: 6, want: []uint64{4, 5, 6}},
		{size: 3, n: 7, want: []uint64{5, 6, 7}},
		{size: 3, n: 100, want: []uint64{98, 99, 100}},
		{size: 1, n: 5, want: []uint64{5}},
		{size: 1000, n: 2500, want: idRange(1501, 2500)},
		{size: 0, n: 5, want: []uint64{}},
	}
	for _, tt := range tests {
		t.Run("size "+strconv.Itoa(tt.size)+", "+strconv.FormatUint(tt.n, 10)+" events", func(t *testing.T) {
			l := control.NewEventLog(tt.size)
			for id := uint64(1); id <= tt.n; id++ {
				l.Event(proxy.Event{Kind: proxy.EventOpened, Session: id})
			}
			got := l.Last()
			if got == nil {
				t.Fatalf("Last: got nil; want a slice")
			}
			if !slices.Equal(sessions(got), tt.want) {
				t.Errorf("Last: got sessions %v; want %v", sessions(got), tt.want)
			}
		})
	}

	t.Run("a copy", func(t *testing.T) {
		l := control.NewEventLog(2)
		l.Event(proxy.Event{Session: 1})
		got := l.Last()
		got[0].Session = 99
		l.Event(proxy.Event{Session: 2})
		if ids := sessions(l.Last()); !slices.Equal(ids, []uint64{1, 2}) {
			t.Errorf("Last after changing an earlier result: got %v; want [1 2]", ids)
		}
	})
}

// receive returns the next event on ch, within rigTimeout.
func receive(t *testing.T, ch <-chan proxy.Event) proxy.Event {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatalf("follow channel: got closed; want an event")
		}
		return e
	case <-time.After(rigTimeout):
		t.Fatalf("follow channel: got no event within %v; want one", rigTimeout)
		return proxy.Event{}
	}
}

// expectClosed drains ch and checks that it is closed within rigTimeout;
// it returns the events still buffered.
func expectClosed(t *testing.T, ch <-chan proxy.Event) []proxy.Event {
	t.Helper()
	var rest []proxy.Event
	timeout := time.After(rigTimeout)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				return rest
			}
			rest = append(rest, e)
		case <-timeout:
			t.Fatalf("follow channel: got still open %v after its context ended; want closed", rigTimeout)
			return nil
		}
	}
}

func TestEventLogFollow(t *testing.T) {
	l := control.NewEventLog(10)
	l.Event(proxy.Event{Kind: proxy.EventOpened, Session: 1}) // before: not followed

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := l.Follow(ctx)
	other, cancelOther := context.WithCancel(context.Background())
	defer cancelOther()
	ch2 := l.Follow(other)

	for id := uint64(2); id <= 4; id++ {
		l.Event(proxy.Event{Kind: proxy.EventClosed, Session: id})
	}
	for _, c := range []<-chan proxy.Event{ch, ch2} {
		for want := uint64(2); want <= 4; want++ {
			if e := receive(t, c); e.Session != want || e.Kind != proxy.EventClosed {
				t.Errorf("followed event: got %s of session %d; want closed of session %d", e.Kind, e.Session, want)
			}
		}
	}

	cancel()
	if rest := expectClosed(t, ch); len(rest) != 0 {
		t.Errorf("events after the last one sent: got %v; want none", sessions(rest))
	}
	// Events go on for the other follower, and to the ring.
	l.Event(proxy.Event{Kind: proxy.EventOpened, Session: 5})
	if e := receive(t, ch2); e.Session != 5 {
		t.Errorf("other follower: got session %d; want 5", e.Session)
	}
	if ids := sessions(l.Last()); !slices.Equal(ids, idRange(1, 5)) {
		t.Errorf("Last: got %v; want %v", ids, idRange(1, 5))
	}
	cancelOther()
	expectClosed(t, ch2)
	// With no followers left, recording still works.
	l.Event(proxy.Event{Kind: proxy.EventOpened, Session: 6})

	t.Run("context done already", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		expectClosed(t, l.Follow(ctx))
	})

	t.Run("no ring", func(t *testing.T) {
		l := control.NewEventLog(0)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch := l.Follow(ctx)
		l.Event(proxy.Event{Session: 7})
		if e := receive(t, ch); e.Session != 7 {
			t.Errorf("followed event: got session %d; want 7", e.Session)
		}
		if got := l.Last(); len(got) != 0 {
			t.Errorf("Last: got %v; want none", sessions(got))
		}
	})
}

// TestEventLogSlowFollower checks that a follower that reads nothing does
// not hold up Event: it misses the newest events and gets the oldest in
// order, while other followers go on getting theirs.
func TestEventLogSlowFollower(t *testing.T) {
	l := control.NewEventLog(10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow := l.Follow(ctx)

	const n = 10000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for id := uint64(1); id <= n; id++ {
			l.Event(proxy.Event{Kind: proxy.EventOpened, Session: id})
		}
	}()
	select {
	case <-done:
	case <-time.After(rigTimeout):
		t.Fatalf("Event with a follower that does not read: got blocked for %v; want it to return", rigTimeout)
	}
	if ids := sessions(l.Last()); !slices.Equal(ids, idRange(n-9, n)) {
		t.Errorf("Last: got %v; want %v", ids, idRange(n-9, n))
	}

	// A follower that reads gets the next event; the slow one, full, does
	// not.
	fastCtx, cancelFast := context.WithCancel(context.Background())
	defer cancelFast()
	fast := l.Follow(fastCtx)
	l.Event(proxy.Event{Kind: proxy.EventClosed, Session: n + 1})
	if e := receive(t, fast); e.Session != n+1 {
		t.Errorf("other follower: got session %d; want %d", e.Session, n+1)
	}

	cancel()
	got := sessions(expectClosed(t, slow))
	if len(got) == 0 || len(got) >= n {
		t.Fatalf("slow follower: got %d events; want some, fewer than %d", len(got), n)
	}
	if !slices.Equal(got, idRange(1, uint64(len(got)))) {
		t.Errorf("slow follower: got %v...; want the oldest events in order", got[:min(len(got), 10)])
	}
}

// TestEventLogConcurrent records, follows and reads at once; run with
// -race.
func TestEventLogConcurrent(t *testing.T) {
	l := control.NewEventLog(50)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				l.Event(proxy.Event{Session: uint64(w*1000 + i)})
			}
		}()
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				ctx, cancel := context.WithCancel(context.Background())
				ch := l.Follow(ctx)
				l.Last()
				cancel()
				for open := true; open; {
					select {
					case _, open = <-ch:
					case <-time.After(rigTimeout):
						t.Errorf("follow channel: got still open %v after its context ended; want closed", rigTimeout)
						return
					}
				}
			}
		}()
	}
	waitGroup(t, "writers and followers", &wg)
	if got := len(l.Last()); got != 50 {
		t.Errorf("Last: got %d events; want 50", got)
	}
}
