package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	gorilla "github.com/gorilla/websocket"

	"github.com/wschaos/wschaos/internal/stalled"
	"github.com/wschaos/wschaos/proxy"
)

// startRecordingEcho starts a gorilla echo upstream that sends what ended
// each of its connections on the returned channel.
func startRecordingEcho(t *testing.T) (*url.URL, <-chan closeResult) {
	t.Helper()
	ends := make(chan closeResult, 8)
	u := startGorillaServer(t, gorilla.Upgrader{}, func(c *gorilla.Conn, _ *http.Request) {
		for {
			typ, msg, err := c.ReadMessage()
			if err != nil {
				ends <- gorillaCloseResult(err)
				return
			}
			if err := c.WriteMessage(typ, msg); err != nil {
				ends <- closeResult{err: err}
				return
			}
		}
	}, nil)
	return u, ends
}

// echoOnce sends msg and checks that it comes back.
func echoOnce(t *testing.T, c *gorilla.Conn, msg string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(testTimeout))
	if err := c.WriteMessage(gorilla.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: got %v; want nil", err)
	}
	c.SetReadDeadline(time.Now().Add(testTimeout))
	_, back, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: got %v; want nil", err)
	}
	if string(back) != msg {
		t.Fatalf("echo: got %q; want %q", back, msg)
	}
}

// readClose reads from a gorilla connection in the background and reports
// how the connection ended.
func readClose(c *gorilla.Conn) <-chan closeResult {
	ch := make(chan closeResult, 1)
	go func() {
		c.SetReadDeadline(time.Now().Add(testTimeout))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				ch <- gorillaCloseResult(err)
				return
			}
		}
	}()
	return ch
}

func TestShutdownWhenPeersAnswer(t *testing.T) {
	const sessions = 3
	up, upEnds := startRecordingEcho(t)
	addr, p := startProxy(t, up)
	var clientEnds []<-chan closeResult
	for i := range sessions {
		c, _ := dialGorilla(t, addr, nil)
		echoOnce(t, c, "session "+string(rune('A'+i)))
		clientEnds = append(clientEnds, readClose(c))
	}

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: got %v; want nil", err)
	}
	for i, ch := range clientEnds {
		if got := waitResult(t, ch); got.code != gorilla.CloseGoingAway {
			t.Errorf("client %d: got %+v; want close %d", i, got, gorilla.CloseGoingAway)
		}
	}
	for i := range sessions {
		if got := waitResult(t, upEnds); got.code != gorilla.CloseGoingAway {
			t.Errorf("upstream %d: got %+v; want close %d", i, got, gorilla.CloseGoingAway)
		}
	}
	d := net.Dialer{Timeout: testTimeout}
	if c, err := d.Dial("tcp", strings.TrimPrefix(addr, "ws://")); err == nil {
		c.Close()
		t.Errorf("dial after Shutdown: got a connection; want an error")
	}
}

func TestShutdownForcesSilentSessions(t *testing.T) {
	tests := []struct {
		name   string
		answer string // which end answers the close frame, if any
	}{
		{"neither end answers", ""},
		{"only the client answers", "client"},
		{"only the upstream answers", "upstream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := startRawUpstream(t, rawUpstreamOptions{})
			addr, p := startProxy(t, up.URL)
			client, _ := dialRaw(t, addr, nil, nil)
			upstream := up.accept(t)

			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			shut := make(chan error, 1)
			start := time.Now()
			go func() { shut <- p.Shutdown(ctx) }()

			for _, end := range []struct {
				name string
				c    *rawConn
			}{{"client", client}, {"upstream", upstream}} {
				end.c.expectClose(t, 1001, "")
				if tt.answer == end.name {
					// The proxy may have given up already: a failed write
					// is no error here.
					end.c.Write(end.c.frame(true, ws.OpClose, ws.NewCloseFrameBody(1001, "")))
				}
			}
			select {
			case err := <-shut:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Shutdown: got %v; want %v", err, context.DeadlineExceeded)
				}
				// Left alone, the sessions would end by their own close
				// handshake timer, 2 s after the close frames: Shutdown
				// must end them when its context is done instead.
				if d := time.Since(start); d >= 2*time.Second {
					t.Errorf("Shutdown: returned after %v; want it to end the sessions once its 300ms context is done, before their 2s close timer", d.Round(time.Millisecond))
				}
			case <-time.After(testTimeout):
				t.Fatalf("Shutdown: got no return within %v; want %v", testTimeout, context.DeadlineExceeded)
			}
			client.expectEnd(t)
			upstream.expectEnd(t)
		})
	}
}

func TestIdleTimeout(t *testing.T) {
	tests := []struct {
		name   string
		active bool
	}{
		{"idle session is closed", false},
		{"active session stays open", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up, upEnds := startRecordingEcho(t)
			addr, _ := startProxy(t, up, func(p *proxy.Proxy) { p.IdleTimeout = 200 * time.Millisecond })
			c, _ := dialGorilla(t, addr, nil)
			if !tt.active {
				c.SetReadDeadline(time.Now().Add(testTimeout))
				_, _, err := c.ReadMessage()
				if got := gorillaCloseResult(err); got.code != gorilla.CloseGoingAway {
					t.Errorf("client: got %+v; want close %d", got, gorilla.CloseGoingAway)
				}
				if got := waitResult(t, upEnds); got.code != gorilla.CloseGoingAway {
					t.Errorf("upstream: got %+v; want close %d", got, gorilla.CloseGoingAway)
				}
				return
			}
			for i := range 10 { // every 50ms for 500ms
				echoOnce(t, c, "tick "+string(rune('0'+i)))
				time.Sleep(50 * time.Millisecond)
			}
			echoOnce(t, c, "still here")
			select {
			case got := <-upEnds:
				t.Errorf("upstream: got %+v; want the session open", got)
			default:
			}
		})
	}
}

func TestShutdownDoesNotSplitAFrameInTransit(t *testing.T) {
	up := startRawUpstream(t, rawUpstreamOptions{})
	addr, p := startProxy(t, up.URL)
	client, _ := dialRaw(t, addr, nil, nil)
	upstream := up.accept(t)

	payload := testPayload(64<<10, true)
	frame := client.frame(true, ws.OpBinary, payload)
	half := len(frame) / 2
	client.write(t, frame[:half])
	// The upstream has the frame's start before Shutdown begins.
	upstream.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := upstream.br.Peek(ws.MaxHeaderSize); err != nil {
		t.Fatalf("upstream read: got %v; want nil", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- p.Shutdown(ctx) }()

	client.expectClose(t, ws.StatusGoingAway, "")
	client.write(t, frame[half:]) // the rest of the frame, then the answer
	client.writeClose(t, ws.StatusGoingAway, "")

	f := upstream.readFrame(t)
	if f.Header.OpCode != ws.OpBinary || !bytes.Equal(f.Payload, payload) {
		t.Errorf("upstream frame: got %v with %s; want %v with the whole payload", f.Header.OpCode, diffBytes(f.Payload, payload), ws.OpBinary)
	}
	upstream.expectClose(t, ws.StatusGoingAway, "")
	upstream.writeClose(t, ws.StatusGoingAway, "")

	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: got %v; want nil", err)
		}
	case <-time.After(testTimeout):
		t.Errorf("Shutdown: got no return within %v; want nil", testTimeout)
	}
}

// Shutdown ends an upstream dial under way, in its TCP connect or in its
// handshake, instead of waiting for the handshake timeout.
func TestShutdownEndsDials(t *testing.T) {
	stalled := func(t *testing.T) (string, <-chan struct{}) {
		addr := stalled.Listener(t).String()
		dialed := make(chan struct{})
		// The SYN cannot be seen: give the proxy time to send it.
		time.AfterFunc(300*time.Millisecond, func() { close(dialed) })
		return addr, dialed
	}
	cases := []struct {
		name     string
		upstream func(t *testing.T) (addr string, dialed <-chan struct{})
		netDial  func(ctx context.Context, network, addr string) (net.Conn, error)
	}{
		{"handshake unanswered", func(t *testing.T) (string, <-chan struct{}) {
			ln := listenLocal(t)
			t.Cleanup(func() { ln.Close() })
			dialed := make(chan struct{})
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				t.Cleanup(func() { c.Close() }) // never answers
				close(dialed)
			}()
			return ln.Addr().String(), dialed
		}, nil},
		{"connect under way", stalled, nil},
		{"connect under way, NetDial set", stalled, (&net.Dialer{}).DialContext},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			upAddr, dialed := tc.upstream(t)
			addr, p := startProxy(t, &url.URL{Scheme: "ws", Host: upAddr}, func(p *proxy.Proxy) {
				p.HandshakeTimeout = 30 * time.Second
				p.NetDial = tc.netDial
			})
			conn, _ := dialTCP(t, addr)
			conn.Write(upgradeRequest(t, addr, nil))
			select {
			case <-dialed:
			case <-time.After(testTimeout):
				t.Fatal("the upstream was not dialed")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			p.Shutdown(ctx)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Shutdown with 100 ms to drain returned after %v; want it not to wait for the dial", took)
			}
		})
	}
}
