package proxy_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/gobwas/ws"
	gorilla "github.com/gorilla/websocket"

	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// closeOnConnect is a rule that closes every session it hits with 4000 as
// soon as the client has its 101.
func closeOnConnect(name string) rules.Spec {
	return rules.Spec{Name: name, On: "connect", Action: "close", Code: int64(4000)}
}

// openSequentially opens n sessions one after the other, so that the i-th
// is the proxy's i-th upgrade attempt, and returns the ordinals of those a
// rule closed at once.
func openSequentially(t *testing.T, addr string, n int) []uint64 {
	t.Helper()
	var hit []uint64
	for i := range n {
		c, _ := dialRaw(t, addr, nil, nil)
		got := probe(t, c, "hi")
		if !got.echoed {
			if got.code != 4000 {
				t.Fatalf("session %d: got close %d; want 4000 or the echo", i+1, got.code)
			}
			hit = append(hit, uint64(i+1))
		}
		c.Close()
	}
	return hit
}

func TestProbabilityZeroAndOne(t *testing.T) {
	t.Parallel()
	const n = 8
	for _, tt := range []struct {
		p       float64
		wantHit int
	}{{0, 0}, {1, n}} {
		t.Run(fmt.Sprint(tt.p), func(t *testing.T) {
			t.Parallel()
			spec := closeOnConnect("maybe")
			spec.Probability = ptr(tt.p)
			addr, p, ev := startRules(t, startGorillaEcho(t), compileRules(t, false, spec), func(p *proxy.Proxy) { p.Seed = 12345 })
			if hit := openSequentially(t, addr, n); len(hit) != tt.wantHit {
				t.Errorf("sessions hit: got %v; want %d of %d", hit, tt.wantHit, n)
			}
			if got := p.RuleInfos()[0].Fired; got != int64(tt.wantHit) {
				t.Errorf("fired: got %d; want %d", got, tt.wantHit)
			}
			if got := len(ev.of(proxy.EventFault, 0)); got != tt.wantHit {
				t.Errorf("fault events: got %d; want %d", got, tt.wantHit)
			}
		})
	}
}

func TestSeedDecidesWhichSessionsAreHit(t *testing.T) {
	t.Parallel()
	const n = 30
	spec := closeOnConnect("coin")
	spec.Probability = ptr(0.5)
	hits := func(seed uint64) []uint64 {
		t.Helper()
		addr, _, _ := startRules(t, startGorillaEcho(t), compileRules(t, false, spec), func(p *proxy.Proxy) { p.Seed = seed })
		return openSequentially(t, addr, n)
	}
	r, _ := compileRules(t, false, spec).Lookup("coin")
	want := func(seed uint64) []uint64 {
		var out []uint64
		for i := uint64(1); i <= n; i++ {
			if r.Hit(seed, i) {
				out = append(out, i)
			}
		}
		return out
	}
	a, b, c := hits(42), hits(42), hits(43)
	if !slices.Equal(a, b) {
		t.Errorf("seed 42 twice: got %v and %v; want the same sessions hit", a, b)
	}
	if slices.Equal(a, c) {
		t.Errorf("seeds 42 and 43: got %v for both; want different sessions hit", a)
	}
	if len(a) == 0 || len(a) == n {
		t.Errorf("seed 42, probability 0.5: got %d of %d sessions hit; want some but not all", len(a), n)
	}
	if w := want(42); !slices.Equal(a, w) {
		t.Errorf("seed 42: got %v; want %v (rules.Rule.Hit)", a, w)
	}
	if w := want(43); !slices.Equal(c, w) {
		t.Errorf("seed 43: got %v; want %v (rules.Rule.Hit)", c, w)
	}
}

func TestLimitAcrossSessions(t *testing.T) {
	t.Parallel()
	spec := closeOnConnect("twice")
	spec.Limit = ptr[int64](2)
	addr, p, ev := startRules(t, startGorillaEcho(t), compileRules(t, false, spec))
	if hit := openSequentially(t, addr, 5); !slices.Equal(hit, []uint64{1, 2}) {
		t.Errorf("sessions hit: got %v; want [1 2]", hit)
	}
	info := p.RuleInfos()[0]
	if info.Fired != 2 || info.Limit != 2 {
		t.Errorf("rule info: got fired %d limit %d; want 2 2", info.Fired, info.Limit)
	}
	if got := len(ev.of(proxy.EventFault, 0)); got != 2 {
		t.Errorf("fault events: got %d; want 2", got)
	}
}

func TestFirstRuleToEndSessionWins(t *testing.T) {
	t.Parallel()
	t.Run("two on-connect closes", func(t *testing.T) {
		t.Parallel()
		first, second := closeOnConnect("first"), closeOnConnect("second")
		first.Code, second.Code = int64(4001), int64(4002)
		addr, p, ev := startRules(t, startGorillaEcho(t), compileRules(t, false, first, second))
		c, _ := dialRaw(t, addr, nil, nil)
		if got := probe(t, c, "hi"); got.code != 4001 {
			t.Errorf("client: got %+v; want close 4001", got)
		}
		c.Close()
		ev.waitOne(t, proxy.EventClosed, 1)
		checkFault(t, ev, 1, proxy.Event{Rule: "first", Trigger: "connect", Action: "close", Code: 4001, By: "rule"})
		if infos := p.RuleInfos(); infos[0].Fired != 1 || infos[1].Fired != 0 {
			t.Errorf("fired: got %d and %d; want 1 and 0", infos[0].Fired, infos[1].Fired)
		}
	})
	t.Run("two after rules due at the same time", func(t *testing.T) {
		t.Parallel()
		const n = 6
		a := rules.Spec{Name: "a", After: "200ms", Action: "close", Code: int64(4001)}
		b := rules.Spec{Name: "b", After: "200ms", Action: "reset"}
		addr, _, ev := startRules(t, startGorillaEcho(t), compileRules(t, false, a, b))
		var clients []*rawConn
		for range n {
			c, _ := dialRaw(t, addr, nil, nil)
			clients = append(clients, c)
		}
		for _, c := range clients {
			// A close frame or a reset, whichever rule won.
			c.tryReadFrame(testTimeout)
			c.Close()
		}
		ev.waitN(t, proxy.EventClosed, 0, n)
		evs := ev.snapshot()
		for id := uint64(1); id <= n; id++ {
			if faults := filter(evs, proxy.EventFault, id); len(faults) != 1 {
				t.Errorf("session %d: got %d fault events (%+v); want 1", id, len(faults), faults)
			}
		}
	})
}

func TestRuleFiresOncePerSession(t *testing.T) {
	t.Parallel()
	const every = 100 * time.Millisecond
	spec := rules.Spec{Name: "slow-clock", Every: every.String(), Action: "delay", Latency: "1ms"}
	addr, p, ev := startRules(t, startGorillaEcho(t), compileRules(t, false, spec))
	var clients []*rawConn
	for range 2 {
		c, _ := dialRaw(t, addr, nil, nil)
		clients = append(clients, c)
	}
	ev.waitN(t, proxy.EventFault, 0, 2)
	time.Sleep(5 * every) // several more ticks
	for i, c := range clients {
		if got := probe(t, c, "still open"); !got.echoed {
			t.Errorf("session %d: got close %d; want the echo", i+1, got.code)
		}
		if n := len(ev.of(proxy.EventFault, uint64(i+1))); n != 1 {
			t.Errorf("session %d: got %d fault events; want 1", i+1, n)
		}
	}
	if got := p.RuleInfos()[0].Fired; got != 2 {
		t.Errorf("fired: got %d; want 2", got)
	}
}

// upgrade is an upgrade request as a test sends it.
type upgrade struct {
	path   string // with the query
	header http.Header
	local  string // the client's address; empty: 127.0.0.1
}

func TestMatchSelectsSessions(t *testing.T) {
	t.Parallel()
	offer := func(protos string) http.Header { return http.Header{"Sec-WebSocket-Protocol": {protos}} }
	tests := []struct {
		name      string
		match     rules.MatchSpec
		hit, miss upgrade
	}{
		{"path", rules.MatchSpec{Path: "/chat/*"},
			upgrade{path: "/chat/room/1"}, upgrade{path: "/chat"}},
		{"query, any value", rules.MatchSpec{Query: map[string]string{"room": "bl?e"}},
			upgrade{path: "/?room=red&room=blue"}, upgrade{path: "/?room=red&other=blue"}},
		{"header, name in any case", rules.MatchSpec{Header: map[string]string{"x-TENANT": "acme*"}},
			upgrade{path: "/", header: http.Header{"X-Tenant": {"acme-eu"}}}, upgrade{path: "/", header: http.Header{"X-Tenant": {"globex"}}}},
		{"subprotocol the upstream chose", rules.MatchSpec{Subprotocol: "b.*"},
			upgrade{path: "/", header: offer("b.v1")}, upgrade{path: "/", header: offer("a.v1, b.v1")}},
		{"client", rules.MatchSpec{Client: "127.0.0.2"},
			upgrade{path: "/", local: "127.0.0.2"}, upgrade{path: "/", local: "127.0.0.1"}},
		{"client CIDR", rules.MatchSpec{Client: "127.0.0.0/31"},
			upgrade{path: "/", local: "127.0.0.1"}, upgrade{path: "/", local: "127.0.0.2"}},
		{"every key must hold", rules.MatchSpec{Path: "/chat/*", Header: map[string]string{"X-Tenant": "acme"}},
			upgrade{path: "/chat/1", header: http.Header{"X-Tenant": {"acme"}}}, upgrade{path: "/chat/1"}},
	}
	// The upstream prefers a.v1: offered both, it chooses a.v1.
	up := startGorillaServer(t, gorilla.Upgrader{Subprotocols: []string{"a.v1", "b.v1"}}, gorillaEcho, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := closeOnConnect("picky")
			spec.Match = tt.match
			addr, _, ev := startRules(t, up, compileRules(t, false, spec))
			for _, u := range []struct {
				name string
				req  upgrade
				hit  bool
			}{{"matching", tt.hit, true}, {"not matching", tt.miss, false}} {
				c, resp := openRaw(t, addr+u.req.path, u.req.local, u.req.header)
				if resp.StatusCode != http.StatusSwitchingProtocols {
					t.Fatalf("%s upgrade: got status %d; want 101", u.name, resp.StatusCode)
				}
				if got := probe(t, c, "hi"); got.echoed == u.hit {
					t.Errorf("%s session %+v: got %+v; want hit %v", u.name, u.req, got, u.hit)
				}
				c.Close()
			}
			if n := len(ev.of(proxy.EventFault, 0)); n != 1 {
				t.Errorf("fault events: got %d; want 1", n)
			}
		})
	}
}

// TestRulesInteract: rules are independent; one rule's action does not
// stop another from seeing what it needs, nor break the protocol.
func TestRulesInteract(t *testing.T) {
	t.Parallel()
	delayClient := func(latency time.Duration) rules.Spec {
		return rules.Spec{Name: "slow", On: "connect", Action: "delay", Direction: "client", Latency: latency.String()}
	}

	t.Run("a delayed direction is not inspected", func(t *testing.T) {
		t.Parallel()
		// Documented: once a delay holds a direction's frames, on_message
		// rules no longer see that direction; the message is delivered late.
		client, upstream, _, _, _ := rulePair(t, []rules.Spec{delayClient(50 * time.Millisecond), onMessageKill})
		client.writeFrame(t, true, ws.OpText, []byte("kill"))
		f, err := upstream.tryReadFrame(2 * time.Second)
		if err != nil || f.Header.OpCode != ws.OpText || string(f.Payload) != "kill" {
			t.Fatalf("upstream: got %v %q (error %v); want the delayed text %q", f.Header.OpCode, f.Payload, err, "kill")
		}
	})

	t.Run("a delay that starts while a message is held keeps it whole", func(t *testing.T) {
		t.Parallel()
		later := rules.Spec{Name: "slow-later", After: "100ms", Action: "delay", Direction: "client", Latency: "50ms"}
		client, upstream, _, ev, id := rulePair(t, []rules.Spec{onMessageKill, later})
		client.writeFrame(t, false, ws.OpText, []byte("hel"))
		if f := ev.waitOne(t, proxy.EventFault, id); f.Rule != "slow-later" {
			t.Fatalf("fault: got %+v; want slow-later", f)
		}
		client.writeFrame(t, true, ws.OpContinuation, []byte("lo"))
		for _, want := range []struct {
			op      ws.OpCode
			payload string
		}{{ws.OpText, "hel"}, {ws.OpContinuation, "lo"}} {
			f, err := upstream.tryReadFrame(time.Second)
			if err != nil || f.Header.OpCode != want.op || string(f.Payload) != want.payload {
				t.Fatalf("upstream: got %v %q (error %v); want %v %q", f.Header.OpCode, f.Payload, err, want.op, want.payload)
			}
		}
	})

	t.Run("after_messages acts after a delayed message is delivered", func(t *testing.T) {
		t.Parallel()
		count := rules.Spec{Name: "count", AfterMessages: ptr[int64](1), Direction: "client", Action: "close", Code: int64(4000), To: "both"}
		client, upstream, _, _, _ := rulePair(t, []rules.Spec{delayClient(200 * time.Millisecond), count})
		client.writeFrame(t, true, ws.OpText, []byte("first"))
		f := upstream.readFrame(t)
		if f.Header.OpCode != ws.OpText || string(f.Payload) != "first" {
			code, _ := ws.ParseCloseFrameData(f.Payload)
			t.Errorf("upstream: got %v (code %d) first; want the message, then the close", f.Header.OpCode, code)
		}
	})

	t.Run("no data frame follows the proxy's close frame", func(t *testing.T) {
		t.Parallel()
		client, upstream, p, _, id := rulePair(t, []rules.Spec{delayClient(300 * time.Millisecond)})
		client.writeFrame(t, true, ws.OpText, []byte("held"))
		// Once the proxy has read it, the message is held.
		waitUntil(t, "the proxy read the client's message", func() bool {
			info, err := p.Session(id)
			return err == nil && info.Client2Upstream.Messages == 1
		})
		if err := p.Inject(id, proxy.Manual{Action: rules.Close, Code: 4001}); err != nil {
			t.Fatalf("Inject: got %v; want nil", err)
		}
		// The held message may come before the close frame, or never;
		// nothing may come after it.
		for {
			f := upstream.readFrame(t)
			if f.Header.OpCode == ws.OpClose {
				break
			}
			if string(f.Payload) != "held" {
				t.Fatalf("upstream: got %v %q; want the held message or the close", f.Header.OpCode, f.Payload)
			}
		}
		upstream.expectSilence(t, time.Second, "upstream after the close frame")
	})
}

func TestRefusedEvents(t *testing.T) {
	t.Parallel()
	forbidden := serveHTTP(t, func(_ *handlers, w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "go away", http.StatusForbidden)
	})
	reject := rules.Spec{Name: "refuse", Match: rules.MatchSpec{Path: "/rejected"}, On: "connect",
		Action: "reject", Status: ptr[int64](429)}
	addr, _, ev := startRules(t, wsURLOf(t, forbidden), compileRules(t, false, reject))

	tests := []struct {
		name        string
		path        string
		version     string // Sec-WebSocket-Version; empty: 13
		wantStatus  int
		wantRefusal string
	}{
		{"reject rule", "/rejected", "", 429, proxy.RefusedRule},
		{"bad version", "/bad", "8", 426, proxy.RefusedBadRequest},
		{"upstream refuses", "/upstream", "", 403, proxy.RefusedUpstream},
	}
	for i, tt := range tests {
		var resp *http.Response
		if tt.version == "" {
			_, resp = openRaw(t, addr+tt.path, "", nil)
		} else {
			conn, br := dialTCP(t, addr)
			fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
				"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: %s\r\n\r\n", tt.path, testKey, tt.version)
			var err error
			if resp, err = http.ReadResponse(br, nil); err != nil {
				t.Fatalf("%s: read response: got %v; want nil", tt.name, err)
			}
		}
		if resp.StatusCode != tt.wantStatus {
			t.Errorf("%s: got status %d; want %d", tt.name, resp.StatusCode, tt.wantStatus)
		}
		e := ev.waitOne(t, proxy.EventRefused, uint64(i+1))
		if e.Status != tt.wantStatus || e.Refusal != tt.wantRefusal || e.Path != tt.path {
			t.Errorf("%s: got refused event %+v; want status %d, refusal %q, path %q", tt.name, e, tt.wantStatus, tt.wantRefusal, tt.path)
		}
	}
	if n := len(ev.of(proxy.EventOpened, 0)); n != 0 {
		t.Errorf("opened events: got %d; want 0", n)
	}
}

func TestClosedEventCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		rule             []rules.Spec
		end              func(t *testing.T, client, upstream *rawConn)
		wantBy           string
		wantClient, want int
	}{
		{"client closes", nil, func(t *testing.T, client, upstream *rawConn) {
			client.writeClose(t, 1000, "done")
			f, _, _ := upstream.readCloseFrame(t)
			upstream.answerClose(t, f)
		}, "", 1000, 1000},
		{"upstream closes", nil, func(t *testing.T, client, upstream *rawConn) {
			upstream.writeFrame(t, true, ws.OpClose, ws.NewCloseFrameBody(4005, "later"))
			f, _, _ := client.readCloseFrame(t)
			client.answerClose(t, f)
		}, "", 4005, 4005},
		{"rule sends an empty close frame", []rules.Spec{{Name: "none", On: "connect", Action: "close", Code: "none"}},
			func(t *testing.T, client, upstream *rawConn) {
				for _, c := range []*rawConn{client, upstream} {
					f, _, _ := c.readCloseFrame(t)
					c.answerClose(t, f)
				}
			}, "proxy", 1005, 1001},
		{"client resets", nil, func(t *testing.T, client, upstream *rawConn) {
			resetConn(t, client.Conn)
			if err := upstream.expectEnd(t); !isResetErr(err) {
				t.Errorf("upstream: got %v; want a reset", err)
			}
		}, "client", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client, upstream, _, ev, id := rulePair(t, tt.rule)
			tt.end(t, client, upstream)
			e := ev.waitOne(t, proxy.EventClosed, id)
			if tt.wantBy == "" {
				e.By = "" // who closes first: TestClosedEventNamesWhoClosedFirst
			}
			if e.By != tt.wantBy || e.ClientCode != tt.wantClient || e.UpstreamCode != tt.want {
				t.Errorf("closed event: got by %q, client %d, upstream %d; want by %q, client %d, upstream %d",
					e.By, e.ClientCode, e.UpstreamCode, tt.wantBy, tt.wantClient, tt.want)
			}
		})
	}
}

// TestClosedEventNamesWhoClosedFirst: the closed event names the side that
// started the close handshake, with its code, however fast the other side
// answers.
func TestClosedEventNamesWhoClosedFirst(t *testing.T) {
	t.Parallel()
	const n = 30
	up := startRawUpstream(t, rawUpstreamOptions{})
	addr, _, ev := startRules(t, up.URL, nil)
	for i := range n {
		client, _ := dialRaw(t, addr, nil, nil)
		upstream := up.accept(t)
		client.writeClose(t, 4000, "client leaving")
		upstream.readCloseFrame(t)
		upstream.writeClose(t, 1000, "ack")
		client.readCloseFrame(t)
		e := ev.waitOne(t, proxy.EventClosed, uint64(i+1))
		if e.By != "client" || e.Code != 4000 || e.Reason != "client leaving" {
			t.Errorf("session %d closed event: got by %q code %d %q; want by client, code 4000 %q", i+1, e.By, e.Code, e.Reason, "client leaving")
		}
	}
}

// match.subprotocol is matched against the upstream's choice: when the
// upstream chose none, what the client offered does not count.
func TestSubprotocolMatchWhenUpstreamChoseNone(t *testing.T) {
	up := startRawUpstream(t, rawUpstreamOptions{}) // answers without Sec-WebSocket-Protocol
	set := compileRules(t, false, rules.Spec{
		Name: "gql-only", On: "connect", Match: rules.MatchSpec{Subprotocol: "graphql-ws"},
		Action: "close", Code: int64(1008), Reason: ptr("policy"),
	})
	addr, _, ev := startRules(t, up.URL, set)
	client, resp := dialRaw(t, addr, http.Header{"Sec-Websocket-Protocol": {"graphql-ws"}}, nil)
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "" {
		t.Fatalf("chosen subprotocol: got %q; want none", got)
	}
	up.accept(t)
	id := ev.waitOne(t, proxy.EventOpened, 0).Session
	client.expectSilence(t, 300*time.Millisecond, "client")
	if f := ev.of(proxy.EventFault, id); len(f) != 0 {
		t.Errorf("faults: got %+v; want none (the upstream chose no subprotocol)", f)
	}
}
