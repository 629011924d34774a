//go:build linux

package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// smallBuffers is the socket buffer size of the narrow paths below: with
// it, a few tens of kilobytes fill what the kernel holds between the
// proxy and a peer that does not read.
const smallBuffers = 4 << 10

// setSockBuf sets a socket option (SO_SNDBUF or SO_RCVBUF) of c's socket.
func setSockBuf(t testing.TB, c syscall.Conn, opt, n int) {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: got %v; want nil", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, n) }); err != nil {
		t.Fatalf("Control: got %v; want nil", err)
	}
	if serr != nil {
		t.Fatalf("setsockopt: got %v; want nil", serr)
	}
}

// narrowPair opens a session on a loop whose client end reads through a
// narrow path: the proxy's socket to the client sends from a small buffer
// (the listener's, which accepted sockets inherit) and the client's
// receives into one, so that the loop holds relayed bytes the client has
// not taken as soon as the client stops reading.
func narrowPair(t *testing.T, opts ...func(*proxy.Proxy)) (client, upstream *rawConn, p *proxy.Proxy, ev *eventLog) {
	t.Helper()
	up := startRawUpstream(t, rawUpstreamOptions{})
	ln := listenLocal(t)
	setSockBuf(t, ln.(*net.TCPListener), syscall.SO_SNDBUF, smallBuffers)
	ev = newEventLog(t)
	addr, p := startProxyOn(t, ln, up.URL, append([]func(*proxy.Proxy){onLoops, func(p *proxy.Proxy) { p.Events = ev }}, opts...)...)
	u, _ := url.Parse(addr)
	d := net.Dialer{Timeout: testTimeout, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, smallBuffers)
		}); err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", u.Host)
	if err != nil {
		t.Fatalf("dial %s: got %v; want nil", u.Host, err)
	}
	client, _ = upgradeRaw(t, conn, addr, nil, nil)
	upstream = up.accept(t)
	if got := proxy.OnLoop(p); got != 1 {
		t.Fatalf("sessions on loops: got %d; want 1", got)
	}
	return client, upstream, p, ev
}

// writeAsync writes b to c on a goroutine of its own, within testTimeout;
// the returned channel gets the write's error.
func writeAsync(c *rawConn, b []byte) <-chan error {
	done := make(chan error, 1)
	go func() { // goroutine: one write, bounded by its deadline
		c.SetWriteDeadline(time.Now().Add(testTimeout))
		_, err := c.Write(b)
		done <- err
	}()
	return done
}

// A close frame that follows a message its destination is slow to read
// reaches it whole, after the message, and ends the close handshake then:
// a loop that counts it as delivered once it has read it closes the
// connections with the frame still unwritten. So it does when the session
// leaves its loop (Shutdown) before the client has taken it: the copiers
// write it, and end the handshake.
func TestLaneCloseFrameBehindSlowReader(t *testing.T) {
	for _, shutdown := range []bool{false, true} {
		name := "on the loop"
		if shutdown {
			name = "left for shutdown"
		}
		t.Run(name, func(t *testing.T) {
			client, upstream, p, _ := narrowPair(t)
			client.writeClose(t, ws.StatusNormalClosure, "bye")
			upstream.expectClose(t, ws.StatusNormalClosure, "bye")

			// The answer comes behind a message the narrow path cannot
			// hold, in the same write, so that the loop reads the close
			// frame while the client still has to take the message. The
			// loop is held until every byte is with its kernel: woken by
			// a first part alone, it would relay that, find the client
			// full and leave the close frame unread.
			msg := bytes.Repeat([]byte("m"), 48<<10)
			release := proxy.HoldLoop(p, 0)
			werr := <-writeAsync(upstream, append(upstream.frame(true, ws.OpBinary, msg),
				upstream.frame(true, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye back"))...))
			waitUntil(t, "the upstream's bytes all with the proxy's kernel", func() bool {
				info := tcpInfoOf(t, upstream)
				return info.Notsent_bytes == 0 && info.Unacked == 0
			})
			release()
			time.Sleep(200 * time.Millisecond) // the client reads late
			shut := make(chan error, 1)
			if shutdown {
				go func() { // goroutine: Shutdown, bounded by its context
					ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
					defer cancel()
					shut <- p.Shutdown(ctx)
				}()
				waitUntil(t, "the session off its loop", func() bool { return proxy.OnLoop(p) == 0 })
			}

			f := client.readFrame(t)
			if f.Header.OpCode != ws.OpBinary || !bytes.Equal(f.Payload, msg) {
				t.Fatalf("client: got %v frame of %d bytes; want the %d-byte binary message", f.Header.OpCode, len(f.Payload), len(msg))
			}
			client.expectClose(t, ws.StatusNormalClosure, "bye back")
			if err := client.expectEnd(t); err != io.EOF {
				t.Errorf("client after the close frame: got %v; want %v", err, io.EOF)
			}
			if werr != nil {
				t.Errorf("upstream write: got %v; want nil", werr)
			}
			if shutdown {
				if err := <-shut; err != nil {
					t.Errorf("Shutdown: got %v; want nil (the handshake over)", err)
				}
			}
		})
	}
}

// A manual close on a session whose loop is in the middle of relaying a
// frame reaches each side after the frame, never inside it: the copiers
// the session leaves to finish the frame before the proxy's close frame
// goes out, as they do when they relay the frame from its start.
func TestLaneLeaveMidFrameKeepsFrameWhole(t *testing.T) {
	for _, from := range []string{"client", "upstream"} {
		t.Run("from "+from, func(t *testing.T) {
			up := startRawUpstream(t, rawUpstreamOptions{})
			addr, p, ev := startRules(t, up.URL, nil, onLoops)
			payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<10)
			// The race this looks for, between the copier that takes
			// the frame over and the close frame, is lost or won in
			// microseconds: a few sessions give it its chances.
			for i := range 20 {
				client, _ := dialRaw(t, addr, nil, nil)
				upstream := up.accept(t)
				id := ev.waitN(t, proxy.EventOpened, 0, i+1)[i].Session
				src, dst, wantCode := client, upstream, ws.StatusGoingAway
				if from == "upstream" {
					src, dst, wantCode = upstream, client, 4001
				}
				frame := src.frame(true, ws.OpBinary, payload)
				head := len(frame) - len(payload)/2
				src.write(t, frame[:head])
				dst.SetReadDeadline(time.Now().Add(testTimeout))
				h, err := ws.ReadHeader(dst.br)
				if err != nil {
					t.Fatalf("session %d: read header: got %v; want nil", id, err)
				}
				got := make([]byte, h.Length)
				n := head - (len(frame) - int(h.Length))
				if _, err := io.ReadFull(dst.br, got[:n]); err != nil {
					t.Fatalf("session %d: read the first %d payload bytes: got %v; want nil", id, n, err)
				}
				if got := proxy.OnLoop(p); got != 1 {
					t.Fatalf("session %d: sessions on loops: got %d; want 1", id, got)
				}
				if err := p.Inject(id, proxy.Manual{Action: rules.Close, Code: 4001, Reason: "by hand"}); err != nil {
					t.Fatalf("session %d: Inject: got %v; want nil", id, err)
				}
				src.write(t, frame[head:])
				if _, err := io.ReadFull(dst.br, got[n:]); err != nil {
					t.Fatalf("session %d: read the rest of the payload: got %v; want nil", id, err)
				}
				dst.SetReadDeadline(time.Time{})
				if h.Masked {
					ws.Cipher(got, h.Mask, 0)
				}
				if !bytes.Equal(got, payload) {
					i := 0
					for i < len(got) && got[i] == payload[i] {
						i++
					}
					t.Fatalf("session %d: payload: got %q at byte %d; want %q", id, got[i:min(i+16, len(got))], i, payload[i:i+16])
				}
				dst.expectClose(t, wantCode, "")
			}
		})
	}
}

// What has a session leave its loop returns while the loop holds bytes
// the session's client does not read: the session leaves with them, and
// the copiers write them, as they would have been writing them on
// goroutines, before the proxy's own close frame.
func TestLaneLeaveWhileClientDoesNotRead(t *testing.T) {
	tests := []struct {
		name string
		act  func(p *proxy.Proxy, id uint64) error
		// after checks what the client gets once it reads again
		after func(t *testing.T, client, upstream *rawConn)
	}{
		{"inject", func(p *proxy.Proxy, id uint64) error {
			return p.Inject(id, proxy.Manual{Action: rules.Close, Code: 4001, Reason: "by hand"})
		}, func(t *testing.T, client, _ *rawConn) {
			client.expectClose(t, 4001, "by hand")
		}},
		{"set rules", func(p *proxy.Proxy, _ uint64) error {
			p.SetRules(compileRules(t, false, rules.Spec{Name: "never", OnMessage: ptr("^never-matches$"),
				Direction: "upstream", Action: "close", Code: int64(4000)}))
			return nil
		}, func(t *testing.T, client, upstream *rawConn) {
			upstream.writeFrame(t, true, ws.OpText, []byte("after"))
			client.expectText(t, "client", "after")
		}},
		{"shutdown", func(p *proxy.Proxy, _ uint64) error {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("Shutdown: got %v; want %v", err, context.DeadlineExceeded)
			}
			return nil
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, upstream, p, ev := narrowPair(t)
			id := ev.waitOne(t, proxy.EventOpened, 0).Session
			msg := bytes.Repeat([]byte("m"), 256<<10)
			written := writeAsync(upstream, upstream.frame(true, ws.OpBinary, msg))
			time.Sleep(200 * time.Millisecond) // the loop is left holding bytes

			done := make(chan error, 1)
			go func() { done <- tt.act(p, id) }() // goroutine: bounded by the select below
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("%s: got %v; want nil", tt.name, err)
				}
			case <-time.After(testTimeout):
				t.Fatalf("%s: got no return within %v while the client did not read; want a return\n%s", tt.name, testTimeout, proxyStacks())
			}
			if tt.after == nil {
				return
			}
			f := client.readFrame(t)
			if f.Header.OpCode != ws.OpBinary || !bytes.Equal(f.Payload, msg) {
				t.Fatalf("client: got %v frame of %d bytes; want the %d-byte binary message", f.Header.OpCode, len(f.Payload), len(msg))
			}
			if err := <-written; err != nil {
				t.Fatalf("upstream write: got %v; want nil", err)
			}
			tt.after(t, client, upstream)
		})
	}
}

// Rules loaded while a loop waits for the upstream's answer apply to the
// session as they do on goroutines, whose handshake attaches the rules
// loaded by then, on-connect ones included: the reload found no session
// to attach them to, and the session, which leaves its loop for them,
// must take them itself.
func TestLaneRulesLoadedDuringUpstreamHandshake(t *testing.T) {
	for _, spec := range []rules.Spec{closeAfter("after", 100*time.Millisecond), closeOnConnect("connect")} {
		t.Run(spec.Name, func(t *testing.T) {
			up, requested, release := startSlowUpstream(t)
			addr, p, _ := startRules(t, up, nil, onLoops)

			conn, br := dialTCP(t, addr)
			client := &rawConn{Conn: conn, br: br, client: true}
			client.write(t, upgradeRequest(t, addr, nil))
			select {
			case <-requested:
			case <-time.After(testTimeout):
				t.Fatalf("upstream: got no upgrade request within %v; want one", testTimeout)
			}
			p.SetRules(compileRules(t, false, spec))
			close(release)

			client.SetReadDeadline(time.Now().Add(testTimeout))
			resp, err := http.ReadResponse(client.br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: got %v (%v); want 101", resp, err)
			}
			client.SetReadDeadline(time.Time{})
			client.expectClose(t, 4000, "")
		})
	}
}

// startSlowUpstream starts an upstream that answers its one upgrade
// request with 101 once release is closed; requested is closed once it
// has read the request.
func startSlowUpstream(t *testing.T) (u *url.URL, requested <-chan struct{}, release chan<- struct{}) {
	t.Helper()
	ln := listenLocal(t)
	req, rel := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	var conn net.Conn
	wg.Add(1)
	go func() { // goroutine: the upstream's one handshake, bounded by deadlines
		defer wg.Done()
		var err error
		conn, err = ln.Accept()
		if err != nil {
			close(req)
			return
		}
		conn.SetDeadline(time.Now().Add(testTimeout))
		r, err := http.ReadRequest(bufio.NewReader(conn))
		close(req)
		if err != nil {
			return
		}
		select {
		case <-rel:
		case <-time.After(testTimeout):
			return
		}
		fmt.Fprintf(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			acceptKey(r.Header.Get("Sec-WebSocket-Key")))
		conn.SetDeadline(time.Time{})
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		if conn != nil {
			conn.Close()
		}
	})
	return &url.URL{Scheme: "ws", Host: ln.Addr().String()}, req, rel
}

// TestLaneLastCloseFrameCarriesFIN holds a loop to sending the close
// frame that completes a close handshake in the segment that carries the
// connection's FIN, one segment less for the peer's kernel and the
// proxy's. The side that closed first counts the segments without
// payload that reach it (tcpi_segs_in less tcpi_data_segs_in) from its
// peer's answer to the FIN: none when the FIN came with the answer, one
// at least when it came alone. A delayed ACK of its own close frame, sent
// by the proxy's kernel in between, adds one; a session with none is
// looked for among five.
func TestLaneLastCloseFrameCarriesFIN(t *testing.T) {
	for _, first := range []string{"client", "upstream"} {
		t.Run(first+" first", func(t *testing.T) {
			var got []uint32
			for range 5 {
				client, upstream := rawPair(t, onLoops)
				src, dst := client, upstream
				if first == "upstream" {
					src, dst = upstream, client
				}
				src.writeClose(t, ws.StatusNormalClosure, "")
				dst.expectClose(t, ws.StatusNormalClosure, "")
				before := bareSegmentsIn(t, src)
				dst.writeClose(t, ws.StatusNormalClosure, "")
				src.expectClose(t, ws.StatusNormalClosure, "")
				if err := src.expectEnd(t); err != io.EOF {
					t.Fatalf("end after the close handshake: got %v; want EOF", err)
				}
				n := bareSegmentsIn(t, src) - before
				if n == 0 {
					return
				}
				got = append(got, n)
			}
			t.Errorf("segments without payload between the answering close frame and the FIN, five sessions: got %v; want 0 in one at least", got)
		})
	}
}

// bareSegmentsIn returns how many segments without payload (ACKs, a FIN
// alone) c's socket has received.
func bareSegmentsIn(t *testing.T, c *rawConn) uint32 {
	t.Helper()
	info := tcpInfoOf(t, c)
	return info.Segs_in - info.Data_segs_in
}

// tcpInfoOf returns the kernel's TCP_INFO of c's socket.
func tcpInfoOf(t *testing.T, c *rawConn) *unix.TCPInfo {
	t.Helper()
	raw, err := c.Conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: got %v; want nil", err)
	}
	var info *unix.TCPInfo
	var ierr error
	if err := raw.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		t.Fatalf("Control: got %v; want nil", err)
	}
	if ierr != nil {
		t.Fatalf("TCP_INFO: got %v; want nil", ierr)
	}
	return info
}

// TestLaneWritesOfOneBatch has the clients of many sessions on one loop
// write at the same moment, so that the loop reads several in one batch
// of events and writes what it read after the batch, from one buffer
// (sendPending): each upstream must get its own client's messages, whole
// and in order, and each client its upstream's answers.
func TestLaneWritesOfOneBatch(t *testing.T) {
	const sessions, rounds = 32, 20
	up := startRawUpstream(t, rawUpstreamOptions{})
	addr, p := startProxy(t, up.URL, onLoops)
	clients := make([]*rawConn, sessions)
	upstreams := make([]*rawConn, sessions)
	for i := range sessions {
		clients[i], _ = dialRaw(t, addr, nil, nil)
		upstreams[i] = up.accept(t)
	}
	if got := proxy.OnLoop(p); got != sessions {
		t.Fatalf("sessions on loops: got %d; want %d", got, sessions)
	}
	// Lengths that differ by session and round put each message at
	// another place in the loop's buffer.
	message := func(who string, i, r int) []byte {
		return append(fmt.Appendf(nil, "%s %d round %d ", who, i, r), bytes.Repeat([]byte{byte('a' + i%26)}, (i*37+r*11)%700)...)
	}
	// exchange has every one of from write its message at once, then
	// checks that each of to got its own.
	exchange := func(r int, who string, op ws.OpCode, from, to []*rawConn) {
		t.Helper()
		writes := make([]<-chan error, len(from))
		for i, c := range from {
			writes[i] = writeAsync(c, c.frame(true, op, message(who, i, r)))
		}
		for i, w := range writes {
			if err := <-w; err != nil {
				t.Fatalf("round %d: %s %d: write: got %v; want nil", r, who, i, err)
			}
		}
		for i, c := range to {
			want := message(who, i, r)
			if got := c.readFrame(t); got.Header.OpCode != op || !bytes.Equal(got.Payload, want) {
				t.Fatalf("round %d: from %s %d: got %v %s; want %v %q", r, who, i, got.Header.OpCode, diffBytes(got.Payload, want), op, want[:20])
			}
		}
	}
	for r := range rounds {
		exchange(r, "client", ws.OpBinary, clients, upstreams)
		exchange(r, "upstream", ws.OpText, upstreams, clients)
	}
}
