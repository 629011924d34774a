//go:build linux

package proxy_test

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// manyOnLoops opens n sessions through a proxy with one loop in front of
// an echo upstream, checks that they are on the loops, and returns their
// clients.
func manyOnLoops(t *testing.T, n int, opts ...func(*proxy.Proxy)) (string, *proxy.Proxy, *eventLog, []*rawConn) {
	t.Helper()
	up := startGorillaEcho(t)
	addr, p, ev := startRules(t, up, nil, append([]func(*proxy.Proxy){onLoops}, opts...)...)
	clients := make([]*rawConn, n)
	for i := range clients {
		clients[i], _ = dialRaw(t, addr, nil, nil)
	}
	for _, c := range clients {
		c.writeFrame(t, true, ws.OpText, []byte("hi"))
		c.expectText(t, "echo", "hi")
	}
	if got := proxy.OnLoop(p); got != n {
		t.Fatalf("sessions on loops: got %d; want %d", got, n)
	}
	return addr, p, ev, clients
}

// within runs f and fails the test if it does not return within d.
func within(t *testing.T, what string, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: got no return within %v\n%s", what, d, proxyStacks())
	}
}

// answerAll has every client answer the close frame it gets, in parallel.
func answerAll(t *testing.T, clients []*rawConn, code ws.StatusCode) {
	t.Helper()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			f, err := c.tryReadFrame(testTimeout)
			if err != nil || f.Header.OpCode != ws.OpClose {
				t.Errorf("client: got %v (%v); want a close frame", f.Header.OpCode, err)
				return
			}
			if got, _ := ws.ParseCloseFrameData(f.Payload); got != code {
				t.Errorf("close code: got %v; want %v", got, code)
			}
			c.Write(c.frame(true, ws.OpClose, f.Payload))
		})
	}
	wg.Wait()
}

// TestLaneManyInjectMatching closes every session of a loop by hand, as
// the control plane's "close all": each leaves its loop, gets its close
// frame, and ends once, counted.
func TestLaneManyInjectMatching(t *testing.T) {
	checkGoroutines(t)
	const n = 300
	_, p, ev, clients := manyOnLoops(t, n)
	var got int
	within(t, "InjectMatching", 3*testTimeout, func() {
		got = p.InjectMatching(nil, proxy.Manual{Action: rules.Close, Code: 4000, Reason: "all"})
	})
	if got != n {
		t.Errorf("InjectMatching: got %d; want %d", got, n)
	}
	answerAll(t, clients, 4000)
	allEnded(t, p, ev, n)
}

// TestLaneManySetRules loads rules over a loop's sessions. A counting
// rule leaves them on the loop, which counts their messages; an on_message
// rule, which only the copiers carry out, has every one leave the loop,
// and only then are their copiers made. They go on relaying throughout.
func TestLaneManySetRules(t *testing.T) {
	checkGoroutines(t)
	const n = 300
	_, p, _, clients := manyOnLoops(t, n)
	count := rules.Spec{Name: "late", AfterMessages: ptr(int64(1000)), Direction: "client", Action: "close", Code: int64(4001)}
	within(t, "SetRules", 3*testTimeout, func() { p.SetRules(compileRules(t, false, count)) })
	if got := proxy.OnLoop(p); got != n {
		t.Errorf("sessions on loops after a counting rule: got %d; want %d", got, n)
	}
	if on, off := proxy.WithCopiers(p); on != 0 || off != 0 {
		t.Errorf("sessions with copiers: got %d on loops and %d off them; want none", on, off)
	}
	for _, c := range clients {
		c.writeFrame(t, true, ws.OpText, []byte("again"))
		c.expectText(t, "echo", "again")
	}
	for _, info := range p.Sessions() {
		if len(info.Rules) != 1 || info.Rules[0].Counted != 1 {
			t.Fatalf("session %d's rules: got %+v; want late, one message counted", info.ID, info.Rules)
		}
	}
	inspect := rules.Spec{Name: "poison", OnMessage: ptr("poison"), Action: "close", Code: int64(4002)}
	within(t, "SetRules", 3*testTimeout, func() { p.SetRules(compileRules(t, false, count, inspect)) })
	if got := proxy.OnLoop(p); got != 0 {
		t.Errorf("sessions on loops after an on_message rule: got %d; want 0", got)
	}
	if on, off := proxy.WithCopiers(p); on != 0 || off != n {
		t.Errorf("sessions with copiers: got %d on loops and %d off them; want 0 and %d", on, off, n)
	}
	for _, c := range clients {
		c.writeFrame(t, true, ws.OpText, []byte("once more"))
		c.expectText(t, "echo", "once more")
	}
}

// TestLaneManyShutdown shuts down a proxy whose loop relays many idle
// sessions: each gets 1001 and ends, counted, and nothing is left running.
func TestLaneManyShutdown(t *testing.T) {
	checkGoroutines(t)
	const n = 300
	_, p, ev, clients := manyOnLoops(t, n)
	var wg sync.WaitGroup
	wg.Go(func() { answerAll(t, clients, 1001) })
	within(t, "Shutdown", 3*testTimeout, func() {
		if err := p.Shutdown(testContext(t)); err != nil {
			t.Errorf("Shutdown: got %v; want nil", err)
		}
	})
	wg.Wait()
	allEnded(t, p, ev, n)
}

// TestLaneManyClose closes a proxy whose loop relays many idle sessions.
func TestLaneManyClose(t *testing.T) {
	checkGoroutines(t)
	const n = 300
	_, p, ev, _ := manyOnLoops(t, n)
	within(t, "Close", 3*testTimeout, func() { p.Close() })
	allEnded(t, p, ev, n)
}

// TestLaneManyEveryReload loads an every rule over a loop's sessions: its
// tick closes each of them, the loop sending the close frames.
func TestLaneManyEveryReload(t *testing.T) {
	checkGoroutines(t)
	const n = 300
	_, p, ev, clients := manyOnLoops(t, n)
	within(t, "SetRules", 3*testTimeout, func() {
		p.SetRules(compileRules(t, false, rules.Spec{Name: "tick", Every: "1s", Action: "close", Code: int64(4000)}))
	})
	// The sessions wait for the tick on their loop, which closes them.
	if got := proxy.OnLoop(p); got != n {
		t.Errorf("sessions on loops before the tick: got %d; want %d", got, n)
	}
	frames := make([]ws.Frame, n)
	for i, c := range clients {
		var code ws.StatusCode
		if frames[i], code, _ = c.readCloseFrame(t); code != 4000 {
			t.Fatalf("client %d: got close code %v; want 4000", i, code)
		}
	}
	if got := proxy.OnLoop(p); got != n {
		t.Errorf("sessions on loops in their close handshakes: got %d; want %d", got, n)
	}
	for i, c := range clients {
		c.answerClose(t, frames[i])
	}
	ev.waitN(t, proxy.EventClosed, 0, n)
	waitUntil(t, "no session open", func() bool { return p.Stats().Active == 0 })
}

// TestLaneManyStatsWhileLeaving reads Stats and Sessions while a loop's
// sessions leave it and end.
func TestLaneManyStatsWhileLeaving(t *testing.T) {
	const n = 300
	_, p, ev, clients := manyOnLoops(t, n)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			st := p.Stats()
			if st.Active > n || st.Total != n {
				t.Errorf("Stats: got %+v; want Active at most %d, Total %d", st, n, n)
				return
			}
			if got := len(p.Sessions()); got > n {
				t.Errorf("Sessions: got %d; want at most %d", got, n)
				return
			}
		}
	})
	var got int
	within(t, "InjectMatching", 3*testTimeout, func() {
		got = p.InjectMatching(nil, proxy.Manual{Action: rules.Reset})
	})
	close(stop)
	wg.Wait()
	if got != n {
		t.Errorf("InjectMatching: got %d; want %d", got, n)
	}
	for _, c := range clients {
		c.expectEnd(t)
	}
	ev.waitN(t, proxy.EventClosed, 0, n)
	waitUntil(t, "no session open", func() bool { return p.Stats().Active == 0 })
}

// TestLaneIdleLoopRelaysAndTimes checks a loop that has gone to its idle
// wait, its one session quiet and kept alive: a frame still goes through,
// and the close handshake's timer still ends the session.
func TestLaneIdleLoopRelaysAndTimes(t *testing.T) {
	t.Parallel()
	up := startRawUpstream(t, rawUpstreamOptions{})
	addr, p, ev := startRules(t, up.URL, nil, onLoops)
	client, _ := dialRaw(t, addr, nil, nil)
	upstream := up.accept(t)
	waitUntil(t, "no sweep due", func() bool { return !proxy.SweepDue(p) })
	time.Sleep(time.Second) // idle
	client.writeFrame(t, true, ws.OpText, []byte("wake"))
	upstream.expectText(t, "upstream", "wake")
	time.Sleep(time.Second) // idle again
	if err := client.Conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// The FIN is mirrored; the upstream says nothing more, and closeGrace
	// later the proxy closes its connection.
	upstream.expectEnd(t)
	ev.waitOne(t, proxy.EventClosed, 0)
}

// allEnded waits for n session-ended events and for no session to be
// open (a session is forgotten right after its event), and checks that
// the proxy counted n sessions in all.
func allEnded(t *testing.T, p *proxy.Proxy, ev *eventLog, n int) {
	t.Helper()
	ev.waitN(t, proxy.EventClosed, 0, n)
	waitUntil(t, "no session open", func() bool { return p.Stats().Active == 0 })
	if st := p.Stats(); st.Total != uint64(n) {
		t.Errorf("Stats.Total: got %d; want %d", st.Total, n)
	}
}

// TestLaneTickClientsFirstOnEveryLoop checks that an every rule's tick
// over sessions on two loops writes to every client, on both loops,
// before it writes to any upstream: here one loop is held when the tick
// comes, and the other's upstreams must hear nothing until it is let go.
func TestLaneTickClientsFirstOnEveryLoop(t *testing.T) {
	checkGoroutines(t)
	up := startRawUpstream(t, rawUpstreamOptions{})
	addr, p, ev := startRules(t, up.URL, nil, func(p *proxy.Proxy) { p.Loops = 2 })
	type pair struct{ client, upstream *rawConn }
	var on [2][]pair
	open := func() {
		t.Helper()
		c, _ := dialRaw(t, addr, nil, nil)
		u := up.accept(t)
		l := -1
		waitUntil(t, "the session on a loop", func() bool { l = proxy.LoopOf(p, c.LocalAddr()); return l >= 0 })
		on[l] = append(on[l], pair{c, u})
	}
	// A held loop takes no connection, so that one is opened on the
	// other whichever the listener's wake-up favours.
	for i := range 2 {
		release := proxy.HoldLoop(p, i)
		for range 3 {
			open()
		}
		release()
	}
	for i := range on {
		if len(on[i]) < 3 {
			t.Fatalf("sessions on loop %d: got %d; want at least 3", i, len(on[i]))
		}
	}

	p.SetRules(compileRules(t, false, rules.Spec{Name: "tick", Every: "500ms", Action: "close", Code: int64(4000)}))
	release := proxy.HoldLoop(p, 1)
	defer release()
	first := make([]ws.Frame, len(on[0]))
	for i, s := range on[0] {
		var code ws.StatusCode
		if first[i], code, _ = s.client.readCloseFrame(t); code != 4000 {
			t.Fatalf("loop 0's client %d: got close %v; want 4000", i, code)
		}
	}
	// Loop 0 is done with its clients; loop 1, held, has not begun.
	for i, s := range on[0] {
		s.upstream.expectSilence(t, 300*time.Millisecond/time.Duration(len(on[0])), fmt.Sprintf("loop 0's upstream %d while loop 1 is held", i))
	}
	release()
	for l, list := range on {
		for i, s := range list {
			var f ws.Frame
			if l == 0 {
				f = first[i]
			} else {
				var code ws.StatusCode
				if f, code, _ = s.client.readCloseFrame(t); code != 4000 {
					t.Fatalf("loop 1's client %d: got close %v; want 4000", i, code)
				}
			}
			s.client.answerClose(t, f)
			f, code, _ := s.upstream.readCloseFrame(t)
			if code != ws.StatusGoingAway {
				t.Fatalf("loop %d's upstream %d: got close %v; want 1001", l, i, code)
			}
			s.upstream.answerClose(t, f)
		}
	}
	ev.waitN(t, proxy.EventClosed, 0, len(on[0])+len(on[1]))
}
