//go:build linux

package proxy_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	gorilla "github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"github.com/wschaos/wschaos/proxy"
)

// listenProxy listens with proxy.Listen on an ephemeral loopback port.
func listenProxy(t testing.TB) net.Listener {
	t.Helper()
	ln, err := proxy.Listen(testContext(t), "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: got %v; want nil", err)
	}
	return ln
}

// sockaddrString formats a socket address as net.Addr.String does.
func sockaddrString(sa syscall.Sockaddr) string {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
	case *syscall.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)).String()
	}
	return ""
}

// socketOption reads an integer option of the TCP socket of this process
// whose local and remote addresses are local and remote: a socket the
// proxy holds, found from what the other end sees.
func socketOption(t testing.TB, local, remote net.Addr, level, opt int) int {
	t.Helper()
	v, found := 0, false
	eachSocket(t, func(fd int, l, r string) bool {
		if l != local.String() || r != remote.String() {
			return true
		}
		var err error
		if v, err = syscall.GetsockoptInt(fd, level, opt); err != nil {
			t.Fatalf("getsockopt of %v -> %v: got %v; want nil", local, remote, err)
		}
		found = true
		return false
	})
	if !found {
		t.Fatalf("no socket %v -> %v in this process", local, remote)
	}
	return v
}

// eachSocket calls f with every connected socket of this process and its
// local and remote addresses, until f returns false.
func eachSocket(t testing.TB, f func(fd int, local, remote string) bool) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("read /proc/self/fd: got %v; want nil", err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sa, err := syscall.Getsockname(fd)
		if err != nil {
			continue
		}
		pa, err := syscall.Getpeername(fd)
		if err != nil {
			continue
		}
		if !f(fd, sockaddrString(sa), sockaddrString(pa)) {
			return
		}
	}
}

func keepAliveOf(t testing.TB, local, remote net.Addr) int {
	t.Helper()
	return socketOption(t, local, remote, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
}

// TestKeepAliveOnceQuiet checks that a session's connections, accepted from
// Listen and dialed by the default dialer, get TCP keep-alive when they
// fall quiet (their copiers park) and not before.
func TestKeepAliveOnceQuiet(t *testing.T) {
	t.Parallel()
	up := startRawUpstream(t, rawUpstreamOptions{})
	ln := listenProxy(t)
	addr, p := startProxyOn(t, ln, up.URL, onGoroutines) // TestLaneKeepAliveOnceQuiet for loops
	client, _ := dialRaw(t, addr, nil, nil)
	upstream := up.accept(t)

	// The proxy's two sockets, named by what the test's ends see.
	toClient := [2]net.Addr{ln.Addr(), client.LocalAddr()}
	toUpstream := [2]net.Addr{upstream.RemoteAddr(), upstream.LocalAddr()}

	client.writeFrame(t, true, ws.OpText, []byte("busy"))
	if f := upstream.readFrame(t); string(f.Payload) != "busy" {
		t.Fatalf("relayed: got %q; want %q", f.Payload, "busy")
	}
	before := [2]int{keepAliveOf(t, toClient[0], toClient[1]), keepAliveOf(t, toUpstream[0], toUpstream[1])}
	// A copier parks after a second of quiet at the least: if none has
	// yet, the options above were read before any could be set.
	if proxy.ParkedCopiers(p) == 0 {
		if before != [2]int{0, 0} {
			t.Errorf("SO_KEEPALIVE (client, upstream) of a session just used: got %v; want [0 0]", before)
		}
	} else {
		t.Logf("a copier parked before the options were read: not checked before parking")
	}

	waitUntil(t, "both copiers parked", func() bool { return proxy.ParkedCopiers(p) == 2 })
	after := [2]int{keepAliveOf(t, toClient[0], toClient[1]), keepAliveOf(t, toUpstream[0], toUpstream[1])}
	if after != [2]int{1, 1} {
		t.Errorf("SO_KEEPALIVE (client, upstream) once quiet: got %v; want [1 1]", after)
	}
	if got := socketOption(t, toClient[0], toClient[1], syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE); got != 15 {
		t.Errorf("TCP_KEEPIDLE of the client's connection: got %d s; want 15 (Go's default)", got)
	}

	// Parked or not, the session relays.
	upstream.writeFrame(t, true, ws.OpText, []byte("still here"))
	if f := client.readFrame(t); string(f.Payload) != "still here" {
		t.Errorf("relayed after parking: got %q; want %q", f.Payload, "still here")
	}
}

// TestKeepAliveWhenNotParkable checks that a connection whose copier cannot
// park (TLS, on the proxy's listener or to the upstream) gets keep-alive
// when its session opens, and that a plain HTTP connection gets it when
// net/http takes it.
func TestKeepAliveWhenNotParkable(t *testing.T) {
	t.Parallel()
	t.Run("TLS session", func(t *testing.T) {
		t.Parallel()
		cert, pool := selfSigned(t)
		ln := listenProxy(t)
		addr, _ := startProxyOn(t, ln, startGorillaEcho(t), func(p *proxy.Proxy) {
			p.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		})
		host := addr[len("ws://"):]
		c, err := dialWSS(t, host, "127.0.0.1", &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatalf("wss dial: got %v; want nil", err)
		}
		// The session opens once the answer to the client is written.
		waitUntil(t, "SO_KEEPALIVE of the TLS client's connection is 1", func() bool {
			return keepAliveOf(t, ln.Addr(), c.LocalAddr()) == 1
		})
	})
	t.Run("wss upstream", func(t *testing.T) {
		t.Parallel()
		seen := make(chan string, 1) // the proxy's address, as the upstream sees it
		srv := serveHTTPS(t, gorillaHandler(gorilla.Upgrader{}, func(c *gorilla.Conn, r *http.Request) {
			seen <- r.RemoteAddr
			gorillaEcho(c, r)
		}, nil))
		up := wsURLOf(t, srv)
		addr, _ := startProxy(t, up, func(p *proxy.Proxy) {
			p.TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
		})
		c, _ := dialGorilla(t, addr, nil)
		echoOnce(t, c, "over TLS")
		local, err := net.ResolveTCPAddr("tcp", <-seen)
		if err != nil {
			t.Fatalf("upstream's RemoteAddr: got %v; want host:port", err)
		}
		waitUntil(t, "SO_KEEPALIVE of the wss upstream's connection is 1", func() bool {
			return keepAliveOf(t, local, srv.Listener.Addr()) == 1
		})
	})
	t.Run("plain HTTP", func(t *testing.T) {
		t.Parallel()
		origin := serveHTTP(t, func(_ *handlers, w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "page") })
		ln := listenProxy(t)
		addr, _ := startProxyOn(t, ln, wsURLOf(t, origin))
		local := make(chan net.Addr, 1)
		tr := &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, a)
			if err == nil {
				local <- c.LocalAddr()
			}
			return c, err
		}}
		t.Cleanup(tr.CloseIdleConnections)
		resp, err := (&http.Client{Transport: tr, Timeout: testTimeout}).Get(httpURL(addr) + "/page")
		if err != nil {
			t.Fatalf("GET: got %v; want nil", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "page" {
			t.Fatalf("body: got %q; want %q", body, "page")
		}
		if got := keepAliveOf(t, ln.Addr(), <-local); got != 1 {
			t.Errorf("SO_KEEPALIVE of a plain HTTP connection: got %d; want 1", got)
		}
	})
}

// TestListenDefersAccept checks TCP_DEFER_ACCEPT on Listen's socket: the
// handshake timeout runs from the request's first bytes, not from the TCP
// connect, and a client that says nothing is still accepted, later, and
// then ended by the handshake timeout.
func TestListenDefersAccept(t *testing.T) {
	t.Parallel()
	ln := listenProxy(t)
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: got %v; want nil", err)
	}
	var deferSecs int
	var gerr error
	raw.Control(func(fd uintptr) {
		deferSecs, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT)
	})
	if gerr != nil || deferSecs <= 0 {
		t.Errorf("TCP_DEFER_ACCEPT of the listener: got %d, %v; want > 0", deferSecs, gerr)
	}

	const handshakeTimeout = 300 * time.Millisecond
	addr, _ := startProxyOn(t, ln, startGorillaEcho(t), func(p *proxy.Proxy) { p.HandshakeTimeout = handshakeTimeout })

	t.Run("request after a pause longer than the handshake timeout", func(t *testing.T) {
		t.Parallel()
		conn, br := dialTCP(t, addr)
		time.Sleep(2 * handshakeTimeout)
		c := &rawConn{Conn: conn, br: br, client: true}
		c.write(t, upgradeRequest(t, addr, nil))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatalf("upgrade response: got %v; want 101", err)
		}
		c.SetDeadline(time.Time{})
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade status: got %d; want 101", resp.StatusCode)
		}
		if got := probe(t, c, "late but whole"); !got.echoed {
			t.Errorf("session: got close %d; want the echo", got.code)
		}
	})
	t.Run("silent client", func(t *testing.T) {
		t.Parallel()
		conn, _ := dialTCP(t, addr) // reads end within testTimeout
		start := time.Now()
		n, err := conn.Read(make([]byte, 1))
		var ne net.Error
		if n != 0 || err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("read on a silent connection: got %d bytes, %v; want the proxy to end it within %v", n, err, testTimeout)
		}
		t.Logf("ended by the proxy after %v", time.Since(start).Round(time.Millisecond))
	})
}

// TestDialControlAckWithData holds the default dialer's Control to what
// it is for: a connection dialed with it and written to at once sends two
// segments (SYN, then the data with the handshake's last ACK), where one
// dialed without it sends three, counted by the kernel (tcpi_segs_out).
// A write late enough for the delayed ACK's timer (up to 200 ms) to send
// the ACK alone is tried again, up to three times.
func TestDialControlAckWithData(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	segsOut := func(t *testing.T, d *net.Dialer) uint32 {
		t.Helper()
		c, err := d.DialContext(testContext(t), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("dial: got %v; want nil", err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("GET")); err != nil {
			t.Fatalf("write: got %v; want nil", err)
		}
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var info *unix.TCPInfo
		var ierr error
		if err := rc.Control(func(fd uintptr) {
			info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		}); err != nil || ierr != nil {
			t.Fatalf("TCP_INFO: got %v, %v; want nil", err, ierr)
		}
		return info.Segs_out
	}
	if got := segsOut(t, &net.Dialer{}); got != 3 {
		t.Fatalf("a plain dial and a write: got %d segments sent; want 3 (SYN, ACK, data)", got)
	}
	var got uint32
	for range 3 {
		if got = segsOut(t, &net.Dialer{Control: proxy.DialControl}); got == 2 {
			return
		}
	}
	t.Errorf("a dial with DialControl and a write at once: got %d segments sent; want 2 (SYN, then the data with the ACK)", got)
}
