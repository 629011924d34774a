package proxy_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

func TestOnConnectTrigger(t *testing.T) {
	t.Parallel()
	spec := rules.Spec{Name: "at-once", On: "connect", Action: "close", Code: int64(4000), Reason: ptr("at once")}
	addr, _, ev := startRules(t, startGorillaEcho(t), compileRules(t, false, spec))
	c, _ := dialRaw(t, addr, nil, nil)
	// The close follows the 101 before anything else: the client's first
	// frame is answered by the close, not by the echo.
	if got := probe(t, c, "hello"); got.echoed || got.code != 4000 {
		t.Errorf("first frame: got %+v; want close 4000", got)
	}
	checkFault(t, ev, 1, proxy.Event{Rule: "at-once", Trigger: "connect", Action: "close", Code: 4000, Reason: "at once", By: "rule"})
}

func TestAfterTrigger(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		after    string
		sessions int
	}{
		{"fixed", "300ms", 1},
		{"range", "300ms..600ms", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := rules.Spec{Name: "later", After: tt.after, Action: "close", Code: int64(4000)}
			set := compileRules(t, false, spec)
			r, _ := set.Lookup("later")
			addr, p, ev := startRules(t, startGorillaEcho(t), set)
			type open struct {
				c     *rawConn
				dial  time.Time
				delay time.Duration
			}
			var sessions []open
			for i := range tt.sessions {
				dial := time.Now()
				c, _ := dialRaw(t, addr, nil, nil)
				id := uint64(i + 1)
				delay := r.Delay(p.Seed, id)
				if delay < r.After || delay > r.AfterMax {
					t.Errorf("session %d: drawn delay %v; want within [%v, %v]", id, delay, r.After, r.AfterMax)
				}
				// The session is alive before its time.
				if got := probe(t, c, "early"); !got.echoed {
					t.Fatalf("session %d: got close %d at once; want the echo", id, got.code)
				}
				echoed := time.Now()
				info, err := p.Session(id)
				if err != nil {
					t.Fatalf("Session(%d): got %v; want nil", id, err)
				}
				// The session opened once its 101 was written: after the
				// dial, and before anything it relayed, the echo first.
				if len(info.Rules) != 1 || !info.Rules[0].Hit {
					t.Fatalf("session %d rules: got %+v; want later, hit", id, info.Rules)
				}
				if at := info.Rules[0].FiresAt; at.Before(dial.Add(delay)) || at.After(echoed.Add(delay)) {
					t.Errorf("session %d fires at: got %v after the dial; want %v after the session opened, between the dial and the first echo (%v)",
						id, at.Sub(dial), delay, echoed.Sub(dial))
				}
				sessions = append(sessions, open{c, dial, delay})
			}
			for i, s := range sessions {
				_, code, _ := s.c.readCloseFrame(t)
				if elapsed := time.Since(s.dial); elapsed < s.delay {
					t.Errorf("session %d: closed %v after it was dialed; want at least %v", i+1, elapsed, s.delay)
				}
				if code != 4000 {
					t.Errorf("session %d: got close %d; want 4000", i+1, code)
				}
				checkFault(t, ev, uint64(i+1), proxy.Event{Rule: "later", Trigger: "after", Action: "close", Code: 4000, By: "rule"})
			}
		})
	}
}

// fragmentedWithPing sends a text message as two fragments with a ping
// between them.
func fragmentedWithPing(t *testing.T, c *rawConn, a, b string) {
	t.Helper()
	c.writeFrame(t, false, ws.OpText, []byte(a))
	c.writeFrame(t, true, ws.OpPing, []byte("between"))
	c.writeFrame(t, true, ws.OpContinuation, []byte(b))
}

// expectFragmentedWithPing reads what fragmentedWithPing sent.
func expectFragmentedWithPing(t *testing.T, c *rawConn, who, a, b string) {
	t.Helper()
	for _, want := range []struct {
		op      ws.OpCode
		fin     bool
		payload string
	}{{ws.OpText, false, a}, {ws.OpPing, true, "between"}, {ws.OpContinuation, true, b}} {
		f := c.readFrame(t)
		if f.Header.OpCode != want.op || f.Header.Fin != want.fin || string(f.Payload) != want.payload {
			t.Fatalf("%s: got %v fin %v %q; want %v fin %v %q", who, f.Header.OpCode, f.Header.Fin, f.Payload, want.op, want.fin, want.payload)
		}
	}
}

func TestAfterMessagesTrigger(t *testing.T) {
	t.Parallel()
	tests := []struct {
		direction string
		n         int64
	}{
		{"client", 3},
		{"upstream", 2},
	}
	for _, tt := range tests {
		t.Run("direction "+tt.direction, func(t *testing.T) {
			t.Parallel()
			spec := rules.Spec{Name: "count", AfterMessages: ptr(tt.n), Direction: tt.direction,
				Action: "close", Code: int64(4000), To: "both"}
			client, upstream, _, ev, id := rulePair(t, []rules.Spec{spec})
			from, to, other, otherTo := client, upstream, upstream, client
			if tt.direction == "upstream" {
				from, to, other, otherTo = upstream, client, client, upstream
			}
			// Messages the other way do not count.
			for range tt.n + 2 {
				other.writeFrame(t, true, ws.OpText, []byte("other way"))
				otherTo.expectText(t, "other direction", "other way")
			}
			// The first message is fragmented, with a ping between its
			// fragments: it counts once, and the ping not at all.
			fragmentedWithPing(t, from, "fir", "st")
			expectFragmentedWithPing(t, to, "receiver", "fir", "st")
			for i := int64(2); i <= tt.n; i++ {
				from.writeFrame(t, true, ws.OpBinary, []byte{byte(i)})
				// The N-th message is delivered before the action.
				if f := to.readFrame(t); f.Header.OpCode != ws.OpBinary || !bytes.Equal(f.Payload, []byte{byte(i)}) {
					t.Fatalf("message %d: got %v %q; want binary %q", i, f.Header.OpCode, f.Payload, []byte{byte(i)})
				}
			}
			for _, c := range []*rawConn{client, upstream} {
				if _, code, _ := c.readCloseFrame(t); code != 4000 {
					t.Errorf("close: got %d; want 4000", code)
				}
			}
			checkFault(t, ev, id, proxy.Event{Rule: "count", Trigger: "after_messages", Action: "close", Code: 4000, By: "rule"})
		})
	}
}

func TestAfterBytesTrigger(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		size      any
		direction string
		frames    []int // payload sizes sent; the last crosses the threshold
	}{
		{"bytes from client", int64(100), "client", []int{60, 0, 39, 1}},
		{"KiB from upstream", "1KiB", "upstream", []int{400, 400, 400}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := rules.Spec{Name: "volume", AfterBytes: tt.size, Direction: tt.direction, Action: "close", Code: int64(4000)}
			client, upstream, _, ev, id := rulePair(t, []rules.Spec{spec})
			from, to, other, otherTo := client, upstream, upstream, client
			if tt.direction == "upstream" {
				from, to, other, otherTo = upstream, client, client, upstream
			}
			big := bytes.Repeat([]byte("o"), 2000)
			other.writeFrame(t, true, ws.OpBinary, big)
			if f := otherTo.readFrame(t); len(f.Payload) != len(big) {
				t.Fatalf("other direction: got %d bytes; want %d", len(f.Payload), len(big))
			}
			for i, n := range tt.frames {
				p := bytes.Repeat([]byte{byte('a' + i)}, n)
				from.writeFrame(t, true, ws.OpBinary, p)
				if f := to.readFrame(t); f.Header.OpCode != ws.OpBinary || !bytes.Equal(f.Payload, p) {
					t.Fatalf("frame %d: got %v with %d bytes; want binary with %d", i, f.Header.OpCode, len(f.Payload), n)
				}
			}
			if _, code, _ := client.readCloseFrame(t); code != 4000 {
				t.Errorf("client: got close %d; want 4000", code)
			}
			if _, code, _ := upstream.readCloseFrame(t); code != 1001 {
				t.Errorf("upstream: got close %d; want 1001", code)
			}
			checkFault(t, ev, id, proxy.Event{Rule: "volume", Trigger: "after_bytes", Action: "close", Code: 4000, By: "rule"})
		})
	}
}

// onMessageKill is an on_message rule: a client message starting with
// "kill" closes the session with 4000 instead of being delivered.
var onMessageKill = rules.Spec{Name: "kill-switch", OnMessage: ptr("^kill"), Direction: "client",
	Action: "close", Code: int64(4000), Reason: ptr("killed")}

// maskedFrame returns a client frame masked with mask.
func maskedFrame(fin bool, op ws.OpCode, mask [4]byte, payload []byte) []byte {
	return buildFrame(ws.Header{Fin: fin, OpCode: op, Masked: true, Mask: mask}, payload)
}

// expectKilled checks that a matching message ended the session: the
// upstream's next frame is the 1001, not the message.
func expectKilled(t *testing.T, client, upstream *rawConn, ev *eventLog, id uint64) {
	t.Helper()
	if _, code, reason := client.readCloseFrame(t); code != 4000 || reason != "killed" {
		t.Errorf("client: got close %d %q; want 4000 %q", code, reason, "killed")
	}
	if _, code, _ := upstream.readCloseFrame(t); code != 1001 {
		t.Errorf("upstream: got close %d; want 1001 and no part of the message", code)
	}
	checkFault(t, ev, id, proxy.Event{Rule: "kill-switch", Trigger: "on_message", Action: "close", Code: 4000, Reason: "killed", By: "rule"})
}

func TestOnMessageTrigger(t *testing.T) {
	t.Parallel()
	const maxInspect = 64
	withLimit := func(p *proxy.Proxy) { p.MaxInspectSize = maxInspect }

	t.Run("matching message is not delivered", func(t *testing.T) {
		t.Parallel()
		for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary} {
			client, upstream, _, ev, id := rulePair(t, []rules.Spec{onMessageKill}, withLimit)
			client.write(t, maskedFrame(false, op, [4]byte{1, 2, 3, 4}, []byte("ki")))
			client.write(t, maskedFrame(true, ws.OpContinuation, [4]byte{5, 6, 7, 8}, []byte("ll -9")))
			expectKilled(t, client, upstream, ev, id)
		}
	})

	t.Run("non-matching message is relayed byte-exact", func(t *testing.T) {
		t.Parallel()
		client, upstream, _, ev, id := rulePair(t, []rules.Spec{onMessageKill}, withLimit)
		// Three fragments, each with its own mask, then a single frame.
		sent := [][]byte{
			maskedFrame(false, ws.OpText, [4]byte{0x11, 0x22, 0x33, 0x44}, []byte("please ")),
			maskedFrame(false, ws.OpContinuation, [4]byte{0xa0, 0xb1, 0xc2, 0xd3}, []byte("do not ")),
			maskedFrame(true, ws.OpContinuation, [4]byte{0xde, 0xad, 0xbe, 0xef}, []byte("kill me")),
			maskedFrame(true, ws.OpBinary, [4]byte{9, 8, 7, 6}, []byte("skill")),
		}
		sendEach(t, client, upstream, sent)
		// Upstream messages are not inspected by a client rule.
		upstream.writeFrame(t, true, ws.OpText, []byte("kill the client?"))
		client.expectText(t, "client", "kill the client?")
		// The rule still works on this session.
		client.writeFrame(t, true, ws.OpText, []byte("kill"))
		expectKilled(t, client, upstream, ev, id)
	})

	t.Run("message larger than MaxInspectSize passes uninspected", func(t *testing.T) {
		t.Parallel()
		client, upstream, _, ev, id := rulePair(t, []rules.Spec{onMessageKill}, withLimit)
		long := "kill " + strings.Repeat("x", maxInspect)
		sent := [][]byte{
			// One frame over the limit.
			maskedFrame(true, ws.OpText, [4]byte{1, 1, 1, 1}, []byte(long)),
			// Fragments that go over the limit together.
			maskedFrame(false, ws.OpText, [4]byte{2, 2, 2, 2}, []byte(long[:40])),
			maskedFrame(true, ws.OpContinuation, [4]byte{3, 3, 3, 3}, []byte(long[40:])),
		}
		sendEach(t, client, upstream, sent)
		if n := len(ev.of(proxy.EventFault, id)); n != 0 {
			t.Errorf("fault events for uninspected messages: got %d; want 0", n)
		}
		client.writeFrame(t, true, ws.OpText, []byte("kill"))
		expectKilled(t, client, upstream, ev, id)
	})

	t.Run("control frames between held fragments are relayed at once", func(t *testing.T) {
		t.Parallel()
		client, upstream, _, ev, id := rulePair(t, []rules.Spec{onMessageKill}, withLimit)
		client.writeFrame(t, false, ws.OpText, []byte("ki"))
		client.writeFrame(t, true, ws.OpPing, []byte("still there?"))
		// The ping is relayed while the message is held.
		if f := upstream.readFrame(t); f.Header.OpCode != ws.OpPing || string(f.Payload) != "still there?" {
			t.Fatalf("upstream: got %v %q; want the ping first", f.Header.OpCode, f.Payload)
		}
		client.writeFrame(t, true, ws.OpContinuation, []byte("ll"))
		expectKilled(t, client, upstream, ev, id)
	})
}

// TestCountingSeesUninspectedMessages: a message too large to inspect is
// still a message (and bytes) for after_messages and after_bytes rules.
func TestCountingSeesUninspectedMessages(t *testing.T) {
	t.Parallel()
	const maxInspect = 16
	specs := []rules.Spec{
		onMessageKill,
		{Name: "count", AfterMessages: ptr[int64](2), Direction: "client", Action: "close", Code: int64(4002)},
	}
	client, upstream, _, ev, id := rulePair(t, specs, func(p *proxy.Proxy) { p.MaxInspectSize = maxInspect })
	long := bytes.Repeat([]byte("L"), 4*maxInspect)
	client.writeFrame(t, true, ws.OpBinary, long)
	if f := upstream.readFrame(t); !bytes.Equal(f.Payload, long) {
		t.Fatalf("upstream: got %d bytes; want %d", len(f.Payload), len(long))
	}
	client.writeFrame(t, true, ws.OpText, []byte("second"))
	upstream.expectText(t, "upstream", "second")
	if _, code, _ := client.readCloseFrame(t); code != 4002 {
		t.Errorf("client: got close %d; want 4002 after the second message", code)
	}
	checkFault(t, ev, id, proxy.Event{Rule: "count", Trigger: "after_messages", Action: "close", Code: 4002, By: "rule"})
}

func TestEveryTrigger(t *testing.T) {
	t.Parallel()
	const every = 500 * time.Millisecond
	log, logs := observedLogger(t)
	addr, p, ev := startRules(t, startGorillaEcho(t), nil, func(p *proxy.Proxy) { p.Logger = log })
	var first []*rawConn
	for range 3 {
		c, _ := dialRaw(t, addr, nil, nil)
		if got := probe(t, c, "hi"); !got.echoed {
			t.Fatalf("before the rule: got close %d; want the echo", got.code)
		}
		first = append(first, c)
	}
	// The clock starts with the rule, once all three are open.
	p.SetRules(compileRules(t, false, rules.Spec{Name: "tick", Every: every.String(), Action: "close", Code: int64(4000)}))
	for i, c := range first {
		if _, code, _ := c.readCloseFrame(t); code != 4000 {
			t.Errorf("session %d: got close %d; want 4000", i+1, code)
		}
	}
	ticks := waitLogs(t, logs, "clock ticked", 1)
	if got := ticks[0].ContextMap()["sessions"]; got != int64(3) {
		t.Fatalf("first clock tick: got %v sessions; want 3", got)
	}
	firstTick := ev.waitN(t, proxy.EventFault, 0, 3)

	// A session opened after the tick gets the action at the next one.
	late, _ := dialRaw(t, addr, nil, nil)
	if got := probe(t, late, "hi"); !got.echoed {
		t.Fatalf("late session: got close %d at once; want the echo", got.code)
	}
	if _, code, _ := late.readCloseFrame(t); code != 4000 {
		t.Errorf("late session: got close %d; want 4000", code)
	}
	lateFault := ev.waitOne(t, proxy.EventFault, 4)
	for _, f := range firstTick {
		if !lateFault.Time.After(f.Time) {
			t.Errorf("late session's fault at %v; want after the first tick's (%v)", lateFault.Time, f.Time)
		}
	}
	ticks = waitLogs(t, logs, "clock ticked", 2)
	if len(ticks) != 2 || ticks[1].ContextMap()["sessions"] != int64(1) {
		t.Errorf("clock ticks: got %v; want a second tick that closed 1 session", ticks)
	}
	checkFault(t, ev, 4, proxy.Event{Rule: "tick", Trigger: "every", Action: "close", Code: 4000, By: "rule"})
}

// sendEach writes each of frames from client in a write of its own and
// checks that upstream receives exactly their bytes, in order.
func sendEach(t *testing.T, client, upstream *rawConn, frames [][]byte) {
	t.Helper()
	var all []byte
	for _, f := range frames {
		client.write(t, f)
		all = append(all, f...)
	}
	if got := upstream.readBytes(t, len(all)); !bytes.Equal(got, all) {
		t.Errorf("upstream bytes: got %x; want %x", got, all)
	}
}
