//go:build linux

package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// onLoops runs a test's proxy with one loop, whatever WSCHAOS_TEST_LOOPS
// says.
func onLoops(p *proxy.Proxy) { p.Loops = 1 }

// TestLaneKeepAliveOnceQuiet checks that a session on a loop gets TCP
// keep-alive on both connections once it has been quiet a while, as a
// session whose copiers park does, and not while it is busy.
func TestLaneKeepAliveOnceQuiet(t *testing.T) {
	t.Parallel()
	up := startRawUpstream(t, rawUpstreamOptions{})
	ln := listenProxy(t)
	addr, p := startProxyOn(t, ln, up.URL, onLoops)
	client, _ := dialRaw(t, addr, nil, nil)
	upstream := up.accept(t)
	if got := proxy.OnLoop(p); got != 1 {
		t.Fatalf("sessions on loops: got %d; want 1", got)
	}
	toClient := [2]net.Addr{ln.Addr(), client.LocalAddr()}
	toUpstream := [2]net.Addr{upstream.RemoteAddr(), upstream.LocalAddr()}

	client.writeFrame(t, true, ws.OpText, []byte("busy"))
	if f := upstream.readFrame(t); string(f.Payload) != "busy" {
		t.Fatalf("relayed: got %q; want %q", f.Payload, "busy")
	}
	// A sweep needs two looks, half a second apart, to call a session
	// quiet; read right after a frame, the options cannot be set yet.
	before := [2]int{keepAliveOf(t, toClient[0], toClient[1]), keepAliveOf(t, toUpstream[0], toUpstream[1])}
	if before != [2]int{0, 0} {
		t.Errorf("SO_KEEPALIVE (client, upstream) of a session just used: got %v; want [0 0]", before)
	}
	waitUntil(t, "keep-alive on both connections", func() bool {
		return keepAliveOf(t, toClient[0], toClient[1]) == 1 && keepAliveOf(t, toUpstream[0], toUpstream[1]) == 1
	})
	if got := socketOption(t, toClient[0], toClient[1], 6 /* IPPROTO_TCP */, 4 /* TCP_KEEPIDLE */); got != 15 {
		t.Errorf("TCP_KEEPIDLE of the client's connection: got %d s; want 15 (Go's default)", got)
	}
	upstream.writeFrame(t, true, ws.OpText, []byte("still here"))
	if f := client.readFrame(t); string(f.Payload) != "still here" {
		t.Errorf("relayed once quiet: got %q; want %q", f.Payload, "still here")
	}
	if got := proxy.OnLoop(p); got != 1 {
		t.Errorf("sessions on loops: got %d; want 1", got)
	}
}

// TestLaneSweepsEndOnceKeptAlive checks that a loop stops sweeping once
// every session it relays has keep-alive on, and sweeps again for a new
// one: a sweep due every half second would keep an idle proxy's loop out
// of its idle wait (each timer run starts idleWaits raw waits again).
func TestLaneSweepsEndOnceKeptAlive(t *testing.T) {
	t.Parallel()
	up := startRawUpstream(t, rawUpstreamOptions{})
	ln := listenProxy(t)
	addr, p := startProxyOn(t, ln, up.URL, onLoops)
	keptAlive := func(client, upstream *rawConn) func() bool {
		return func() bool {
			return keepAliveOf(t, ln.Addr(), client.LocalAddr()) == 1 &&
				keepAliveOf(t, upstream.RemoteAddr(), upstream.LocalAddr()) == 1
		}
	}
	for i := range 2 {
		client, _ := dialRaw(t, addr, nil, nil)
		upstream := up.accept(t)
		if !proxy.SweepDue(p) {
			t.Errorf("session %d: got no sweep due on its loop; want one", i)
		}
		waitUntil(t, "keep-alive on both connections", keptAlive(client, upstream))
		waitUntil(t, "no sweep due once every session has keep-alive", func() bool { return !proxy.SweepDue(p) })
	}
	if got := proxy.OnLoop(p); got != 2 {
		t.Errorf("sessions on loops: got %d; want 2", got)
	}
}

// TestLaneKeepAliveInTurns checks that a loop turns keep-alive on for
// many sessions fallen quiet at once in turns of KeepAliveBatch, so that
// its other sockets and timers wait for one turn at most, and that every
// session has it in the end.
func TestLaneKeepAliveInTurns(t *testing.T) {
	t.Parallel()
	up := startRawUpstream(t, rawUpstreamOptions{})
	ln := listenProxy(t)
	addr, p := startProxyOn(t, ln, up.URL, onLoops)
	// Opened together, well within the half second between sweeps, the
	// sessions fall quiet at the same sweep: at most three sweeps' worth
	// of sessions could make no turn a full one.
	n := 3*proxy.KeepAliveBatch + 4
	var sockets [][2]net.Addr // local, remote: the proxy's side
	for range n {
		client, _ := dialRaw(t, addr, nil, nil)
		upstream := up.accept(t)
		sockets = append(sockets, [2]net.Addr{ln.Addr(), client.LocalAddr()},
			[2]net.Addr{upstream.RemoteAddr(), upstream.LocalAddr()})
	}
	if got := proxy.OnLoop(p); got != n {
		t.Fatalf("sessions on loops: got %d; want %d", got, n)
	}
	waitUntil(t, "keep-alive on every connection", func() bool {
		on := keepAliveOfAll(t)
		for _, sk := range sockets {
			if on[sk[0].String()+" "+sk[1].String()] != 1 {
				return false
			}
		}
		return true
	})
	if got := proxy.KeepAliveMost(p); got != proxy.KeepAliveBatch {
		t.Errorf("most sessions given keep-alive in one turn: got %d; want %d", got, proxy.KeepAliveBatch)
	}
}

// TestLaneNoKeepAliveBeforeFault checks that the sweep spares keep-alive
// a session an after rule will end (close, reset or drop) before
// keep-alive's first probe, 15 s, and gives it to a session whose rule ends
// it later, whose rule does not end it, or that no rule applies to.
func TestLaneNoKeepAliveBeforeFault(t *testing.T) {
	t.Parallel()
	up := startRawUpstream(t, rawUpstreamOptions{})
	specs := []rules.Spec{
		{Name: "soon", Match: rules.MatchSpec{Path: "/soon"}, After: "10s", Action: "close", Code: int64(4000)},
		{Name: "soon-reset", Match: rules.MatchSpec{Path: "/soon-reset"}, After: "10s", Action: "reset"},
		{Name: "later", Match: rules.MatchSpec{Path: "/later"}, After: "20s", Action: "close", Code: int64(4000)},
		{Name: "slow", Match: rules.MatchSpec{Path: "/slow"}, After: "10s", Action: "delay", Latency: "1ms"},
	}
	addr, p, _ := startRules(t, up.URL, compileRules(t, false, specs...), onLoops)
	tests := []struct {
		path string
		want int // SO_KEEPALIVE once the others have it
	}{
		{"/soon", 0},
		{"/soon-reset", 0},
		{"/later", 1},
		{"/slow", 1},
		{"/none", 1},
	}
	type sockets struct{ client, upstream [2]net.Addr } // the proxy's side: local, remote
	opened := make([]sockets, len(tests))
	for i, tt := range tests {
		client, _ := dialRaw(t, addr+tt.path, nil, nil)
		upstream := up.accept(t)
		opened[i] = sockets{[2]net.Addr{client.RemoteAddr(), client.LocalAddr()},
			[2]net.Addr{upstream.RemoteAddr(), upstream.LocalAddr()}}
	}
	if got := proxy.OnLoop(p); got != len(tests) {
		t.Fatalf("sessions on loops: got %d; want %d", got, len(tests))
	}
	keptAlive := func(i int) [2]int {
		sk := opened[i]
		return [2]int{keepAliveOf(t, sk.client[0], sk.client[1]), keepAliveOf(t, sk.upstream[0], sk.upstream[1])}
	}
	waitUntil(t, "keep-alive on the sessions that want it", func() bool {
		for i, tt := range tests {
			if tt.want == 1 && keptAlive(i) != [2]int{1, 1} {
				return false
			}
		}
		return true
	})
	// Opened together, every session fell quiet at the same sweep; one
	// more sweep has had its chance to get it wrong.
	time.Sleep(proxy.SweepEvery + 100*time.Millisecond)
	for i, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got := keptAlive(i); got != [2]int{tt.want, tt.want} {
				t.Errorf("SO_KEEPALIVE (client, upstream): got %v; want [%d %d]", got, tt.want, tt.want)
			}
		})
	}
}

// keepAliveOfAll returns SO_KEEPALIVE of every TCP socket of this
// process, by "local remote" address.
func keepAliveOfAll(t testing.TB) map[string]int {
	t.Helper()
	out := map[string]int{}
	eachSocket(t, func(fd int, local, remote string) bool {
		if v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); err == nil {
			out[local+" "+remote] = v
		}
		return true
	})
	return out
}

// TestLaneListenerClosedOnShutdown checks that the loops' copy of the
// listening socket is closed with the proxy: a connect after Close is
// refused, as it is on goroutines.
func TestLaneListenerClosedOnShutdown(t *testing.T) {
	for _, path := range bothPaths {
		t.Run(path.name, func(t *testing.T) {
			up := startRawUpstream(t, rawUpstreamOptions{})
			addr, p := startProxy(t, up.URL, path.opt)
			client, _ := dialRaw(t, addr, nil, nil)
			client.Close()
			if err := p.Close(); err != nil {
				t.Fatalf("Close: got %v; want nil", err)
			}
			u, _ := url.Parse(addr)
			if c, err := net.DialTimeout("tcp", u.Host, testTimeout); err == nil {
				c.Close()
				t.Errorf("dial after Close: got a connection; want it refused")
			}
		})
	}
}

// TestLoopsRaiseGOMAXPROCS checks that Serve leaves a P for everything but
// the loops when it starts them, and only then.
func TestLoopsRaiseGOMAXPROCS(t *testing.T) {
	old := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(old) })
	tests := []struct {
		name string
		opt  func(*proxy.Proxy)
		want int
	}{
		{"loops that do not apply (an idle timeout)", func(p *proxy.Proxy) { p.Loops, p.IdleTimeout = old+1, time.Hour }, old},
		{"loops that apply", func(p *proxy.Proxy) { p.Loops = old + 1 }, old + 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runtime.GOMAXPROCS(old)
			up := startRawUpstream(t, rawUpstreamOptions{})
			_, p := startProxy(t, up.URL, tc.opt)
			waitUntil(t, "the proxy is ready", p.Ready)
			if got := runtime.GOMAXPROCS(0); got != tc.want {
				t.Errorf("GOMAXPROCS: got %d; want %d", got, tc.want)
			}
		})
	}
}

// TestHeaderAt checks that a loop reads a frame header from bytes as
// gobwas/ws reads it from a stream, and that any shorter prefix is
// reported as not whole yet.
func TestHeaderAt(t *testing.T) {
	tests := []ws.Header{
		{Fin: true, OpCode: ws.OpText, Length: 5},
		{Fin: true, OpCode: ws.OpText, Length: 125, Masked: true, Mask: [4]byte{1, 2, 3, 4}},
		{Fin: false, OpCode: ws.OpBinary, Length: 126, Rsv: 4},
		{Fin: true, OpCode: ws.OpContinuation, Length: 65535, Masked: true, Mask: [4]byte{9, 8, 7, 6}},
		{Fin: true, OpCode: ws.OpBinary, Length: 65536},
		{Fin: true, OpCode: ws.OpClose, Length: 1 << 40, Masked: true, Mask: [4]byte{0xff, 0, 0xff, 0}},
	}
	for _, want := range tests {
		t.Run(fmt.Sprintf("%v/%d/masked=%v", want.OpCode, want.Length, want.Masked), func(t *testing.T) {
			var b bytes.Buffer
			if err := ws.WriteHeader(&b, want); err != nil {
				t.Fatal(err)
			}
			raw := append(b.Bytes(), "payload"...)
			got, size, ok, err := proxy.HeaderAt(raw)
			if err != nil || !ok || size != b.Len() || got != want {
				t.Errorf("HeaderAt: got %+v, size %d, ok %v, err %v; want %+v, size %d, ok true, nil", got, size, ok, err, want, b.Len())
			}
			for n := range b.Len() {
				if _, _, ok, err := proxy.HeaderAt(raw[:n]); ok || err != nil {
					t.Errorf("HeaderAt of %d of %d bytes: got ok %v, err %v; want not whole yet", n, b.Len(), ok, err)
				}
			}
		})
	}
	t.Run("length with its top bit set", func(t *testing.T) {
		raw := []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1}
		if _, _, _, err := proxy.HeaderAt(raw); err != ws.ErrHeaderLengthMSB {
			t.Errorf("HeaderAt: got %v; want %v", err, ws.ErrHeaderLengthMSB)
		}
	})
}

// FuzzHeaderAt checks that a loop reads any bytes as gobwas/ws's
// ReadHeader reads them from a stream: the same header and size when they
// hold a whole one, the same error, and "not whole yet" exactly where the
// stream would end early.
func FuzzHeaderAt(f *testing.F) {
	for _, seed := range [][]byte{
		{0x81, 5},
		{0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4},
		{0x02, 127, 0, 0, 0, 1, 0, 0, 0, 0},
		{0x88, 127, 0x80, 0, 0, 0, 0, 0, 0, 1},
		{0x88},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, size, ok, err := proxy.HeaderAt(raw)
		r := bytes.NewReader(raw)
		want, werr := ws.ReadHeader(r)
		switch {
		case werr == io.EOF || werr == io.ErrUnexpectedEOF:
			if ok || err != nil {
				t.Fatalf("HeaderAt(% x): got ok %v, err %v; want not whole yet, as ReadHeader's %v", raw, ok, err, werr)
			}
		case werr != nil:
			if err != werr {
				t.Fatalf("HeaderAt(% x): got err %v; want %v", raw, err, werr)
			}
		default:
			if !ok || err != nil || got != want || size != len(raw)-r.Len() {
				t.Fatalf("HeaderAt(% x): got %+v, size %d, ok %v, err %v; want %+v, size %d", raw, got, size, ok, err, want, len(raw)-r.Len())
			}
		}
	})
}

// TestLaneNoDelay checks that both of a loop session's connections have
// TCP_NODELAY, the client's from the listening socket without a
// setsockopt of its own: the loop finds it there at its first connection.
func TestLaneNoDelay(t *testing.T) {
	t.Parallel()
	up := startRawUpstream(t, rawUpstreamOptions{})
	ln := listenProxy(t)
	addr, p := startProxyOn(t, ln, up.URL, onLoops)
	for i := range 3 {
		client, _ := dialRaw(t, addr, nil, nil)
		upstream := up.accept(t)
		if got := socketOption(t, ln.Addr(), client.LocalAddr(), 6 /* IPPROTO_TCP */, 1 /* TCP_NODELAY */); got != 1 {
			t.Errorf("session %d: TCP_NODELAY of the client's connection: got %d; want 1", i, got)
		}
		if got := socketOption(t, upstream.RemoteAddr(), upstream.LocalAddr(), 6, 1); got != 1 {
			t.Errorf("session %d: TCP_NODELAY of the upstream's connection: got %d; want 1", i, got)
		}
	}
	if got := proxy.NoDelayOnLoops(p); !slices.Equal(got, []bool{true}) {
		t.Errorf("loops whose accepted sockets take TCP_NODELAY from the listener: got %v; want [true]", got)
	}
}
