//go:build linux

package proxy_test

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// TestLaneRulesWaitOnLoop opens a session on a loop under one rule and
// checks where the session waits for it: on its loop for a rule that
// waits for a time, a tick or a count, on goroutines for one that acts as
// the session opens or looks at every message. Then it has the rule fire
// and checks what the client and the upstream see, which is what they see
// on goroutines.
func TestLaneRulesWaitOnLoop(t *testing.T) {
	tests := []struct {
		name   string
		spec   rules.Spec
		onLoop int
		fire   func(t *testing.T, client, upstream *rawConn) // up to the rule's firing, the session still where it was
		after  func(t *testing.T, client, upstream *rawConn)
	}{
		{
			name:   "after",
			spec:   rules.Spec{After: "1s", Action: "close", Code: int64(4001), Reason: ptr("after")},
			onLoop: 1,
			after:  closedWith(4001),
		},
		{
			name:   "every",
			spec:   rules.Spec{Every: "1s", Action: "close", Code: int64(4002), Reason: ptr("every")},
			onLoop: 1,
			after:  closedWith(4002),
		},
		{
			name:   "after_messages",
			spec:   rules.Spec{AfterMessages: ptr(int64(3)), Direction: "client", Action: "close", Code: int64(4003), Reason: ptr("count")},
			onLoop: 1,
			fire: func(t *testing.T, client, upstream *rawConn) {
				// A fragmented message counts once, at its last frame;
				// messages from the upstream count for nothing here.
				for _, m := range []string{"one", "two"} {
					client.writeFrame(t, true, ws.OpText, []byte(m))
					upstream.expectText(t, "upstream", m)
				}
				upstream.writeFrame(t, true, ws.OpText, []byte("back"))
				client.expectText(t, "client", "back")
				client.writeFrame(t, false, ws.OpText, []byte("thr"))
				upstream.readFrame(t)
			},
			after: func(t *testing.T, client, upstream *rawConn) {
				client.writeFrame(t, true, ws.OpContinuation, []byte("ee"))
				if f := upstream.readFrame(t); f.Header.OpCode != ws.OpContinuation || string(f.Payload) != "ee" {
					t.Fatalf("upstream: got %v %q; want the message's last frame, relayed before the close", f.Header.OpCode, f.Payload)
				}
				closedWith(4003)(t, client, upstream)
			},
		},
		{
			name:   "after_bytes",
			spec:   rules.Spec{AfterBytes: int64(10), Direction: "upstream", Action: "close", Code: int64(4004), Reason: ptr("bytes")},
			onLoop: 1,
			fire: func(t *testing.T, client, upstream *rawConn) {
				upstream.writeFrame(t, true, ws.OpText, []byte("123456"))
				client.expectText(t, "client", "123456")
				client.writeFrame(t, true, ws.OpText, []byte("client bytes count for nothing"))
				upstream.expectText(t, "upstream", "client bytes count for nothing")
			},
			after: func(t *testing.T, client, upstream *rawConn) {
				upstream.writeFrame(t, true, ws.OpText, []byte("7890"))
				client.expectText(t, "client", "7890")
				closedWith(4004)(t, client, upstream)
			},
		},
		{
			name:   "on_message, not matching",
			spec:   rules.Spec{Match: rules.MatchSpec{Path: "/elsewhere"}, OnMessage: ptr("crash"), Action: "close", Code: int64(4005)},
			onLoop: 1,
			after:  relays,
		},
		{
			name:   "on_message",
			spec:   rules.Spec{OnMessage: ptr("crash"), Action: "close", Code: int64(4005), Reason: ptr("inspected")},
			onLoop: 0,
			after: func(t *testing.T, client, upstream *rawConn) {
				relays(t, client, upstream)
				client.writeFrame(t, true, ws.OpText, []byte("crash"))
				closedWith(4005)(t, client, upstream)
			},
		},
		{
			name:   "connect",
			spec:   rules.Spec{On: "connect", Action: "delay", Direction: "upstream", Latency: "1ms"},
			onLoop: 0,
			after:  relays,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := tt.spec
			spec.Name = "rule"
			client, upstream, p, _, _ := rulePair(t, []rules.Spec{spec}, onLoops)
			if got := proxy.OnLoop(p); got != tt.onLoop {
				t.Fatalf("sessions on loops once open: got %d; want %d", got, tt.onLoop)
			}
			if tt.fire != nil {
				tt.fire(t, client, upstream)
				if got := proxy.OnLoop(p); got != tt.onLoop {
					t.Fatalf("sessions on loops before the rule fires: got %d; want %d", got, tt.onLoop)
				}
			}
			tt.after(t, client, upstream)
		})
	}
}

// closedWith checks that the rule closed the client with code and the
// upstream with 1001, as a close rule to the client does.
func closedWith(code ws.StatusCode) func(t *testing.T, client, upstream *rawConn) {
	return func(t *testing.T, client, upstream *rawConn) {
		t.Helper()
		client.expectClose(t, code, "")
		upstream.expectClose(t, ws.StatusGoingAway, "")
	}
}

// relays checks that a message goes each way.
func relays(t *testing.T, client, upstream *rawConn) {
	t.Helper()
	client.writeFrame(t, true, ws.OpText, []byte("up"))
	upstream.expectText(t, "upstream", "up")
	upstream.writeFrame(t, true, ws.OpText, []byte("down"))
	client.expectText(t, "client", "down")
}

// TestLaneRulesReject checks that a loop refuses an upgrade a reject rule
// applies to as goroutines do: the rule's status, Retry-After and body,
// a fault and a refused event, and the upstream never dialed; an attempt
// the rule does not apply to opens on the loop.
func TestLaneRulesReject(t *testing.T) {
	up, dials := startCountingEcho(t)
	set := compileRules(t, false, rules.Spec{Name: "busy", On: "connect", Match: rules.MatchSpec{Path: "/busy"},
		Action: "reject", Status: ptr(int64(503)), RetryAfter: ptr(int64(7)), Body: ptr("try later")})
	addr, p, ev := startRules(t, up, set, onLoops)

	conn, br := dialTCP(t, addr)
	conn.Write(upgradeRequest(t, addr+"/busy", nil))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("answer: got %v; want 503", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "7" || string(body) != "try later" {
		t.Errorf("answer: got %d, Retry-After %q, body %q; want 503, 7, %q", resp.StatusCode, resp.Header.Get("Retry-After"), body, "try later")
	}
	refused := ev.waitOne(t, proxy.EventRefused, 0)
	if refused.Refusal != proxy.RefusedRule || refused.Status != 503 || refused.Path != "/busy" || !strings.Contains(refused.Why, "busy") {
		t.Errorf("refused event: got %+v; want step %q, status 503, path /busy, why naming the rule", refused, proxy.RefusedRule)
	}
	if f := ev.waitOne(t, proxy.EventFault, refused.Session); f.Rule != "busy" || f.Status != 503 {
		t.Errorf("fault event: got %+v; want rule busy, status 503", f)
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("upstream connections: got %d; want 0", n)
	}

	client, _ := dialRaw(t, addr+"/open", nil, nil)
	relaysEcho(t, client)
	if got := proxy.OnLoop(p); got != 1 {
		t.Errorf("sessions on loops: got %d; want 1", got)
	}
}

// relaysEcho checks that a message comes back through an echo upstream.
func relaysEcho(t *testing.T, client *rawConn) {
	t.Helper()
	client.writeFrame(t, true, ws.OpText, []byte("echo me"))
	client.expectText(t, "client", "echo me")
}

// TestLaneAfterRuleAcrossReloads checks an after rule whose timer a loop
// runs, across reloads: a session that leaves its loop for another rule
// still has the after rule fire when it was due, counted from the
// session's opening; a rule a reload removed does not fire.
func TestLaneAfterRuleAcrossReloads(t *testing.T) {
	after := rules.Spec{Name: "after", After: "1s", Action: "close", Code: int64(4001)}
	inspect := rules.Spec{Name: "inspect", OnMessage: ptr("never sent"), Action: "close", Code: int64(4002)}
	t.Run("leaves its loop", func(t *testing.T) {
		t.Parallel()
		client, upstream, p, ev, id := rulePair(t, []rules.Spec{after}, onLoops)
		opened := ev.waitOne(t, proxy.EventOpened, id).Time
		if got := proxy.OnLoop(p); got != 1 {
			t.Fatalf("sessions on loops: got %d; want 1", got)
		}
		p.SetRules(compileRules(t, false, after, inspect))
		if got := proxy.OnLoop(p); got != 0 {
			t.Fatalf("sessions on loops after the on_message rule: got %d; want 0", got)
		}
		relays(t, client, upstream)
		closedWith(4001)(t, client, upstream)
		fault := ev.waitOne(t, proxy.EventFault, id)
		if fault.Rule != "after" {
			t.Errorf("fault: got rule %q; want after", fault.Rule)
		}
		// Timed by the proxy's own clocks; a timer never runs early.
		if d := fault.Time.Sub(opened); d < time.Second-10*time.Millisecond {
			t.Errorf("fired %v after the session opened; want 1s or later", d)
		}
	})
	t.Run("removed", func(t *testing.T) {
		t.Parallel()
		client, upstream, p, _, _ := rulePair(t, []rules.Spec{after}, onLoops)
		p.SetRules(nil)
		if got := proxy.OnLoop(p); got != 1 {
			t.Fatalf("sessions on loops: got %d; want 1", got)
		}
		client.expectSilence(t, 1500*time.Millisecond, "client")
		relays(t, client, upstream)
	})
}

// TestLaneCloseFaultOnLoop checks a close rule that fires on a session
// its loop relays, with nothing under way: the loop sends both close
// frames itself and keeps the session through the close handshake,
// relaying nothing more, and the session ends as on goroutines.
func TestLaneCloseFaultOnLoop(t *testing.T) {
	spec := rules.Spec{Name: "restart", After: "200ms", Action: "close", Code: int64(1012), Reason: ptr("service restart")}
	t.Run("answered", func(t *testing.T) {
		t.Parallel()
		client, upstream, p, ev, id := rulePair(t, []rules.Spec{spec}, onLoops)
		cf, _, _ := client.readCloseFrame(t)
		uf, code, _ := upstream.readCloseFrame(t)
		if code != ws.StatusGoingAway {
			t.Errorf("upstream's close code: got %v; want 1001", code)
		}
		if got := proxy.OnLoop(p); got != 1 {
			t.Errorf("sessions on loops during the close handshake: got %d; want 1", got)
		}
		// Frames after the proxy's close go nowhere.
		client.writeFrame(t, true, ws.OpText, []byte("late from the client"))
		upstream.writeFrame(t, true, ws.OpText, []byte("late from the upstream"))
		client.answerClose(t, cf)
		upstream.answerClose(t, uf)
		for _, c := range []*rawConn{client, upstream} {
			if f, err := c.tryReadFrame(testTimeout); err == nil {
				t.Errorf("got a frame (opcode %v, payload %q) after the close; want the connection closed", f.Header.OpCode, f.Payload)
			}
		}
		closed := ev.waitOne(t, proxy.EventClosed, id)
		if closed.By != "proxy" || closed.Code != 1012 || closed.Reason != "service restart" || !strings.Contains(closed.Why, "restart") {
			t.Errorf("closed event: got by %q, code %d, reason %q, why %q; want proxy, 1012, service restart, the rule", closed.By, closed.Code, closed.Reason, closed.Why)
		}
		if closed.ClientCode != 1012 || closed.UpstreamCode != 1001 {
			t.Errorf("closed event: got client code %d, upstream code %d; want their answers, 1012 and 1001", closed.ClientCode, closed.UpstreamCode)
		}
		if f := ev.waitOne(t, proxy.EventFault, id); f.Rule != "restart" || f.Code != 1012 {
			t.Errorf("fault event: got %+v; want rule restart, code 1012", f)
		}
	})
	t.Run("unanswered", func(t *testing.T) {
		t.Parallel()
		client, upstream, _, ev, id := rulePair(t, []rules.Spec{spec}, onLoops)
		client.readCloseFrame(t)
		upstream.readCloseFrame(t)
		// Neither answers: the close handshake's grace ends the session.
		client.expectEnd(t)
		upstream.expectEnd(t)
		if closed := ev.waitOne(t, proxy.EventClosed, id); closed.Code != 1012 || closed.Duration < 2*time.Second {
			t.Errorf("closed event: got code %d after %v; want 1012 after the grace of 2s", closed.Code, closed.Duration)
		}
	})
}

// TestLaneAfterBurst has an after rule fire on many sessions of one loop
// opened together, their timers due close together: every client gets
// the rule's code and every upstream 1001, each firing is logged, and
// once both answer every session ends with their codes, on its loop.
func TestLaneAfterBurst(t *testing.T) {
	t.Parallel()
	const n = 40
	up := startRawUpstream(t, rawUpstreamOptions{})
	logger, logs := observedLogger(t)
	spec := rules.Spec{Name: "burst", After: "300ms", Action: "close", Code: int64(4000), Reason: ptr("burst")}
	addr, p, ev := startRules(t, up.URL, compileRules(t, false, spec), onLoops, func(p *proxy.Proxy) { p.Logger = logger })
	clients, upstreams := make([]*rawConn, n), make([]*rawConn, n)
	for i := range n {
		clients[i], _ = dialRaw(t, addr, nil, nil)
		upstreams[i] = up.accept(t)
	}
	if got := proxy.OnLoop(p); got != n {
		t.Fatalf("sessions on loops: got %d; want %d", got, n)
	}
	for i := range n {
		cf, code, _ := clients[i].readCloseFrame(t)
		if code != 4000 {
			t.Errorf("client %d: got close code %v; want 4000", i, code)
		}
		uf, code, _ := upstreams[i].readCloseFrame(t)
		if code != ws.StatusGoingAway {
			t.Errorf("upstream %d: got close code %v; want 1001", i, code)
		}
		clients[i].answerClose(t, cf)
		upstreams[i].answerClose(t, uf)
	}
	closed := ev.waitN(t, proxy.EventClosed, 0, n)
	for _, e := range filter(closed, proxy.EventClosed, 0) {
		if e.Code != 4000 || e.ClientCode != 4000 || e.UpstreamCode != 1001 {
			t.Errorf("session %d's closed event: got code %d, client code %d, upstream code %d; want 4000, 4000, 1001", e.Session, e.Code, e.ClientCode, e.UpstreamCode)
		}
	}
	if fired := waitLogs(t, logs, "fault fired", n); len(fired) != n {
		t.Errorf("fault fired lines: got %d; want %d", len(fired), n)
	}
	if got := proxy.OnLoop(p); got != 0 {
		t.Errorf("sessions on loops once ended: got %d; want 0", got)
	}
}

// TestLaneAfterRulesTogether has two after rules fire on one session at
// the same moment, the first a close and the second one the loop cannot
// carry out (a delay: the session leaves its loop), in either order: the
// client gets the close rule's code, the upstream 1001, and the session
// ends with them once both answer.
func TestLaneAfterRulesTogether(t *testing.T) {
	closing := rules.Spec{Name: "close", After: "200ms", Action: "close", Code: int64(4000)}
	delaying := rules.Spec{Name: "delay", After: "200ms", Action: "delay", Direction: "upstream", Latency: "1ms"}
	for _, tt := range []struct {
		name  string
		specs []rules.Spec
	}{
		{"close first", []rules.Spec{closing, delaying}},
		{"delay first", []rules.Spec{delaying, closing}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client, upstream, _, ev, id := rulePair(t, tt.specs, onLoops)
			cf, code, _ := client.readCloseFrame(t)
			if code != 4000 {
				t.Errorf("client: got close code %v; want 4000", code)
			}
			uf, code, _ := upstream.readCloseFrame(t)
			if code != ws.StatusGoingAway {
				t.Errorf("upstream: got close code %v; want 1001", code)
			}
			client.answerClose(t, cf)
			upstream.answerClose(t, uf)
			if e := ev.waitOne(t, proxy.EventClosed, id); e.Code != 4000 || e.ClientCode != 4000 || e.UpstreamCode != 1001 {
				t.Errorf("closed event: got code %d, client code %d, upstream code %d; want 4000, 4000, 1001", e.Code, e.ClientCode, e.UpstreamCode)
			}
		})
	}
}

// TestLaneLeaveWhileDraining has a session leave its loop in the middle
// of a frame the loop was dropping after the proxy's close: the copiers
// drop the rest of it too, and the close handshake ends the session.
func TestLaneLeaveWhileDraining(t *testing.T) {
	spec := rules.Spec{Name: "restart", After: "100ms", Action: "close", Code: int64(1012)}
	client, upstream, p, ev, id := rulePair(t, []rules.Spec{spec}, onLoops)
	cf, _, _ := client.readCloseFrame(t)
	uf, _, _ := upstream.readCloseFrame(t)
	payload := []byte(strings.Repeat("x", 64<<10))
	frame := client.frame(true, ws.OpBinary, payload)
	client.write(t, frame[:len(frame)-len(payload)+10])
	// The loop reads the frame's start at once; had it not by the time
	// the session leaves, the copiers would read the whole frame.
	time.Sleep(50 * time.Millisecond)
	p.InjectMatching(nil, proxy.Manual{Action: rules.Close, Code: 4000}) // the session leaves its loop, and is closing already
	if got := proxy.OnLoop(p); got != 0 {
		t.Fatalf("sessions on loops: got %d; want 0", got)
	}
	client.write(t, frame[len(frame)-len(payload)+10:])
	client.answerClose(t, cf)
	upstream.answerClose(t, uf)
	if f, err := upstream.tryReadFrame(testTimeout); err == nil {
		t.Errorf("upstream: got a frame (opcode %v, %d bytes) after the close; want the connection closed", f.Header.OpCode, len(f.Payload))
	}
	if closed := ev.waitOne(t, proxy.EventClosed, id); closed.Code != 1012 || closed.ClientCode != 1012 {
		t.Errorf("closed event: got code %d, client code %d; want 1012 and the client's answer, 1012", closed.Code, closed.ClientCode)
	}
}

// TestLanesNotUsed checks that a proxy asked for loops whose settings keep
// sessions off them says why once, and serves every session on
// goroutines.
func TestLanesNotUsed(t *testing.T) {
	up := startGorillaEcho(t)
	byName := *up
	byName.Host = "localhost:" + up.Port()
	tests := []struct {
		name     string
		upstream *url.URL
		opt      func(*proxy.Proxy)
		why      string
	}{
		{"upstream by name", &byName, func(*proxy.Proxy) {}, "an upstream given by name"},
		{"idle timeout", up, func(p *proxy.Proxy) { p.IdleTimeout = time.Hour }, "an idle timeout"},
		{"frame size limit", up, func(p *proxy.Proxy) { p.MaxFrameSize = 1 << 20 }, "a frame size limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, logs := observedLogger(t)
			addr, p := startProxy(t, tt.upstream, onLoops, tt.opt, func(p *proxy.Proxy) { p.Logger = log })
			client, _ := dialRaw(t, addr, nil, nil)
			relaysEcho(t, client)
			if got := proxy.OnLoop(p); got != 0 {
				t.Errorf("sessions on loops: got %d; want 0", got)
			}
			entries := waitLogs(t, logs, "event loops not used: every session on goroutines", 1)
			if got := entries[0].ContextMap()["why"]; len(entries) != 1 || got != tt.why {
				t.Errorf("log: got %d lines, why %v; want one, why %q", len(entries), got, tt.why)
			}
		})
	}
}

// TestRemovedAfterRuleStaysRemoved removes an after rule by a reload and
// then has the session leave its loop (for an on_message rule): the
// removed rule does not fire, on either path.
func TestRemovedAfterRuleStaysRemoved(t *testing.T) {
	after := rules.Spec{Name: "after", After: "800ms", Action: "close", Code: int64(4001)}
	inspect := rules.Spec{Name: "inspect", OnMessage: ptr("never sent"), Action: "close", Code: int64(4002)}
	for _, m := range bothPaths {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			client, upstream, p, _, _ := rulePair(t, []rules.Spec{after}, m.opt)
			p.SetRules(nil)
			p.SetRules(compileRules(t, false, inspect))
			client.expectSilence(t, 1500*time.Millisecond, "client")
			relays(t, client, upstream)
		})
	}
}

// TestCloseFaultPeerEnds has the upstream end its connection, with a FIN
// or an RST, instead of answering the 1001 of a close rule to the client:
// that is not passed on to the client, which still gets to answer its
// close frame, on either path.
func TestCloseFaultPeerEnds(t *testing.T) {
	spec := rules.Spec{Name: "restart", After: "200ms", Action: "close", Code: int64(4001)}
	for _, m := range bothPaths {
		for _, rst := range []bool{false, true} {
			name := m.name + "/fin"
			if rst {
				name = m.name + "/rst"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				client, upstream, _, ev, id := rulePair(t, []rules.Spec{spec}, m.opt)
				cf, _, _ := client.readCloseFrame(t)
				upstream.readCloseFrame(t)
				tcp := upstream.Conn.(*net.TCPConn)
				if rst {
					tcp.SetLinger(0)
					tcp.Close()
				} else {
					tcp.CloseWrite()
				}
				client.expectSilence(t, 300*time.Millisecond, "client")
				client.answerClose(t, cf)
				if f, err := client.tryReadFrame(testTimeout); err == nil {
					t.Errorf("client: got a frame (opcode %v) after its answer; want the connection closed", f.Header.OpCode)
				} else if isResetErr(err) {
					t.Errorf("client: got %v; want its connection closed after its answer", err)
				}
				if closed := ev.waitOne(t, proxy.EventClosed, id); closed.Code != 4001 || closed.ClientCode != 4001 {
					t.Errorf("closed event: got code %d, client code %d; want 4001 and the client's answer, 4001", closed.Code, closed.ClientCode)
				}
			})
		}
	}
}

// TestEveryCloseNoneToBoth checks an every tick's close with code none to
// both sides, on either path: empty close frames, 1005 in the event.
func TestEveryCloseNoneToBoth(t *testing.T) {
	spec := rules.Spec{Name: "tick", Every: "300ms", Action: "close", Code: "none", To: "both"}
	for _, m := range bothPaths {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			client, upstream, _, ev, id := rulePair(t, []rules.Spec{spec}, m.opt)
			cf, uf := client.readFrame(t), upstream.readFrame(t)
			if cf.Header.OpCode != ws.OpClose || len(cf.Payload) != 0 || uf.Header.OpCode != ws.OpClose || len(uf.Payload) != 0 {
				t.Fatalf("got client %v %q, upstream %v %q; want empty close frames", cf.Header.OpCode, cf.Payload, uf.Header.OpCode, uf.Payload)
			}
			client.answerClose(t, cf)
			upstream.answerClose(t, uf)
			if closed := ev.waitOne(t, proxy.EventClosed, id); closed.Code != 0 || closed.ClientCode != 1005 || closed.UpstreamCode != 1005 {
				t.Errorf("closed event: got code %d, client %d, upstream %d; want 0, 1005, 1005", closed.Code, closed.ClientCode, closed.UpstreamCode)
			}
		})
	}
}

// TestShutdownDuringCloseFault shuts the proxy down while a close rule's
// handshake is under way: no second close frame, and Shutdown returns
// once both peers answer, on either path.
func TestShutdownDuringCloseFault(t *testing.T) {
	spec := rules.Spec{Name: "restart", After: "100ms", Action: "close", Code: int64(4001)}
	for _, m := range bothPaths {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			client, upstream, p, ev, id := rulePair(t, []rules.Spec{spec}, m.opt)
			cf, _, _ := client.readCloseFrame(t)
			uf, _, _ := upstream.readCloseFrame(t)
			done := make(chan error, 1)
			go func() { done <- p.Shutdown(testContext(t)) }()
			time.Sleep(100 * time.Millisecond) // Shutdown under way
			client.answerClose(t, cf)
			upstream.answerClose(t, uf)
			for _, c := range []*rawConn{client, upstream} {
				if f, err := c.tryReadFrame(testTimeout); err == nil {
					t.Errorf("got a second frame (opcode %v, payload %q); want the connection closed", f.Header.OpCode, f.Payload)
				}
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Shutdown: got %v; want nil", err)
				}
			case <-time.After(testTimeout):
				t.Fatalf("Shutdown: got no return within %v", testTimeout)
			}
			if closed := ev.waitOne(t, proxy.EventClosed, id); closed.Code != 4001 {
				t.Errorf("closed event: got code %d; want 4001", closed.Code)
			}
		})
	}
}

// TestKillFaultAlike fires reset and drop rules, after a time and at a
// tick, to the client and to the upstream, on either path: the side the
// rule names gets an RST or a FIN and no close frame, the other a 1001 it
// answers, and the session ends as the rule said. On a loop the session
// waits for the rule there, and the loop carries it out.
func TestKillFaultAlike(t *testing.T) {
	for _, m := range bothPaths {
		for _, trigger := range []string{"after", "every"} {
			for _, action := range []string{"reset", "drop"} {
				for _, to := range []string{"client", "upstream"} {
					testKillFault(t, m.name, m.opt, trigger, action, to)
				}
			}
		}
	}
}

// testKillFault is one case of TestKillFaultAlike.
func testKillFault(t *testing.T, path string, opt func(*proxy.Proxy), trigger, action, to string) {
	t.Run(path+"/"+trigger+"/"+action+"/"+to, func(t *testing.T) {
		t.Parallel()
		spec := rules.Spec{Name: "cut", Action: action, To: to}
		if trigger == "after" {
			spec.After = "300ms"
		} else {
			spec.Every = "300ms"
		}
		client, upstream, p, ev, id := rulePair(t, []rules.Spec{spec}, opt)
		want := 0
		if path == "loops" {
			want = 1
		}
		if got := proxy.OnLoop(p); got != want {
			t.Fatalf("sessions on loops before the rule fires: got %d; want %d", got, want)
		}
		cut, other := client, upstream
		if to == "upstream" {
			cut, other = upstream, client
		}
		f, code, _ := other.readCloseFrame(t)
		if code != ws.StatusGoingAway {
			t.Errorf("the other side's close code: got %v; want 1001", code)
		}
		if got := proxy.OnLoop(p); got != want {
			t.Errorf("sessions on loops once the rule fired: got %d; want %d", got, want)
		}
		_, err := cut.tryReadFrame(testTimeout)
		switch {
		case action == "reset" && !isResetErr(err):
			t.Errorf("the rule's side: got %v; want a reset", err)
		case action == "drop" && err != io.EOF:
			t.Errorf("the rule's side: got %v; want EOF (a FIN, no close frame)", err)
		}
		other.answerClose(t, f)
		closed := ev.waitOne(t, proxy.EventClosed, id)
		how := "tcp fin"
		if action == "reset" {
			how = "tcp reset"
		}
		if closed.By != "proxy" || closed.Why != "rule cut: "+how {
			t.Errorf("closed event: got by %q, why %q; want proxy, %q", closed.By, closed.Why, "rule cut: "+how)
		}
	})
}

// TestLaneAfterDueTogetherClientsFirst has an after rule come due on
// several sessions of one loop at once (the loop held past their time):
// every client gets its close frame before any upstream gets its 1001, by
// the times their kernels received them, and each session then ends with
// its close handshakes.
func TestLaneAfterDueTogetherClientsFirst(t *testing.T) {
	t.Parallel()
	const n = 4
	up := startRawUpstream(t, rawUpstreamOptions{})
	spec := rules.Spec{Name: "together", After: "300ms", Action: "close", Code: int64(4000)}
	addr, p, ev := startRules(t, up.URL, compileRules(t, false, spec), onLoops)
	clients, upstreams := make([]*rawConn, n), make([]*rawConn, n)
	for i := range n {
		clients[i], _ = dialRaw(t, addr, nil, nil)
		upstreams[i] = up.accept(t)
		stampReceives(t, clients[i])
		stampReceives(t, upstreams[i])
	}
	release := proxy.HoldLoop(p, 0)
	time.Sleep(600 * time.Millisecond) // past every session's 300 ms
	release()
	var lastClient, firstUpstream time.Time
	for i := range n {
		cf, at := readStampedFrame(t, clients[i])
		if code, _ := ws.ParseCloseFrameData(cf.Payload); cf.Header.OpCode != ws.OpClose || code != 4000 {
			t.Fatalf("client %d: got %v %q; want a close frame with 4000", i, cf.Header.OpCode, cf.Payload)
		}
		if at.After(lastClient) {
			lastClient = at
		}
		uf, at := readStampedFrame(t, upstreams[i])
		if code, _ := ws.ParseCloseFrameData(uf.Payload); uf.Header.OpCode != ws.OpClose || code != ws.StatusGoingAway {
			t.Fatalf("upstream %d: got %v %q; want a close frame with 1001", i, uf.Header.OpCode, uf.Payload)
		}
		if firstUpstream.IsZero() || at.Before(firstUpstream) {
			firstUpstream = at
		}
		clients[i].answerClose(t, cf)
		upstreams[i].answerClose(t, uf)
	}
	if lastClient.After(firstUpstream) {
		t.Errorf("the last client's close frame arrived %v after the first upstream's; want every client's first", lastClient.Sub(firstUpstream))
	}
	for _, e := range filter(ev.waitN(t, proxy.EventClosed, 0, n), proxy.EventClosed, 0) {
		if e.Code != 4000 || e.ClientCode != 4000 || e.UpstreamCode != 1001 {
			t.Errorf("session %d's closed event: got code %d, client code %d, upstream code %d; want 4000, 4000, 1001", e.Session, e.Code, e.ClientCode, e.UpstreamCode)
		}
	}
}
