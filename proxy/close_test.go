package proxy_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gobwas/ws"
	gorilla "github.com/gorilla/websocket"

	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// closeResult is what one end learnt of a close handshake.
type closeResult struct {
	code   int
	reason string
	err    error // set when the end saw no close frame
}

func gorillaCloseResult(err error) closeResult {
	var ce *gorilla.CloseError
	if errors.As(err, &ce) {
		return closeResult{code: ce.Code, reason: ce.Text}
	}
	return closeResult{err: err}
}

func coderCloseResult(err error) closeResult {
	var ce coder.CloseError
	if errors.As(err, &ce) {
		return closeResult{code: int(ce.Code), reason: ce.Reason}
	}
	return closeResult{err: err}
}

// waitResult waits, bounded, for the upstream's view of the close.
func waitResult(t *testing.T, ch <-chan closeResult) closeResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(testTimeout):
		t.Fatalf("upstream: got no close within %v; want one", testTimeout)
		return closeResult{}
	}
}

func TestCloseCodeAndReasonPassThrough(t *testing.T) {
	codes := []int{1000, 1001, 1011, 3000, 4999}
	type closeCase struct {
		code   int
		reason string
		byUp   bool // the upstream starts the close handshake
	}
	libs := []struct {
		name string
		run  func(t *testing.T, tc closeCase)
	}{
		{"gorilla", func(t *testing.T, tc closeCase) {
			atUpstream := make(chan closeResult, 1)
			up := startGorillaServer(t, gorilla.Upgrader{}, func(c *gorilla.Conn, _ *http.Request) {
				if tc.byUp {
					c.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(tc.code, tc.reason), time.Now().Add(testTimeout))
				}
				c.SetReadDeadline(time.Now().Add(testTimeout))
				_, _, err := c.ReadMessage()
				atUpstream <- gorillaCloseResult(err)
			}, nil)
			addr, _ := startProxy(t, up)
			c, _ := dialGorilla(t, addr, nil)
			if !tc.byUp {
				if err := c.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(tc.code, tc.reason), time.Now().Add(testTimeout)); err != nil {
					t.Fatalf("write close: got %v; want nil", err)
				}
			}
			c.SetReadDeadline(time.Now().Add(testTimeout))
			_, _, err := c.ReadMessage()
			atClient := gorillaCloseResult(err)

			// The side that starts gets the code back (gorilla answers a
			// close with its code and no reason); the other side gets code
			// and reason.
			wantClient, wantUp := closeResult{code: tc.code, reason: tc.reason}, closeResult{code: tc.code}
			if !tc.byUp {
				wantClient, wantUp = wantUp, wantClient
			}
			if atClient != wantClient {
				t.Errorf("client: got %+v; want %+v", atClient, wantClient)
			}
			if got := waitResult(t, atUpstream); got != wantUp {
				t.Errorf("upstream: got %+v; want %+v", got, wantUp)
			}
		}},
		{"coder", func(t *testing.T, tc closeCase) {
			atUpstream := make(chan closeResult, 1)
			up := startCoderServer(t, coder.AcceptOptions{}, func(c *coder.Conn, r *http.Request) {
				if tc.byUp {
					// Close returns nil once the peer answered with the
					// same code.
					atUpstream <- closeResult{code: tc.code, err: c.Close(coder.StatusCode(tc.code), tc.reason)}
					return
				}
				_, _, err := c.Read(r.Context())
				atUpstream <- coderCloseResult(err)
			})
			addr, _ := startProxy(t, up)
			c, _ := dialCoder(t, addr, nil)
			wantBoth := closeResult{code: tc.code, reason: tc.reason} // coder answers with code and reason
			if tc.byUp {
				_, _, err := c.Read(testContext(t))
				if got := coderCloseResult(err); got != wantBoth {
					t.Errorf("client: got %+v; want %+v", got, wantBoth)
				}
				if got, want := waitResult(t, atUpstream), (closeResult{code: tc.code}); got != want {
					t.Errorf("upstream close handshake: got %+v; want %+v", got, want)
				}
				return
			}
			if err := c.Close(coder.StatusCode(tc.code), tc.reason); err != nil {
				t.Errorf("client close handshake: got %v; want nil", err)
			}
			if got := waitResult(t, atUpstream); got != wantBoth {
				t.Errorf("upstream: got %+v; want %+v", got, wantBoth)
			}
		}},
	}
	for _, lib := range libs {
		for _, byUp := range []bool{false, true} {
			for _, code := range codes {
				dir := "client closes"
				if byUp {
					dir = "upstream closes"
				}
				tc := closeCase{code: code, reason: "reason for " + strconv.Itoa(code), byUp: byUp}
				t.Run(lib.name+"/"+dir+"/"+strconv.Itoa(code), func(t *testing.T) { lib.run(t, tc) })
			}
		}
	}
}

// resetConn ends c with an RST instead of a FIN.
func resetConn(t *testing.T, c net.Conn) {
	t.Helper()
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		t.Fatalf("conn: got %T; want *net.TCPConn", c)
	}
	if err := tcp.SetLinger(0); err != nil {
		t.Fatalf("SetLinger: got %v; want nil", err)
	}
	tcp.Close()
}

// openSession opens a session between raw ends and passes a frame each
// way, so that the session is in the middle of its life.
func openSession(t *testing.T) (client, upstream *rawConn) {
	t.Helper()
	client, upstream = rawPair(t)
	client.writeFrame(t, true, ws.OpText, []byte("up"))
	if f := upstream.readFrame(t); string(f.Payload) != "up" {
		t.Fatalf("upstream got %q; want %q", f.Payload, "up")
	}
	upstream.writeFrame(t, true, ws.OpText, []byte("down"))
	if f := client.readFrame(t); string(f.Payload) != "down" {
		t.Fatalf("client got %q; want %q", f.Payload, "down")
	}
	return client, upstream
}

func TestTCPEndWithoutCloseFrameIsMirrored(t *testing.T) {
	tests := []struct {
		name    string
		closer  string // client or upstream
		reset   bool   // RST rather than FIN
		wantErr error  // what the other end's read returns
	}{
		{"upstream RST", "upstream", true, syscall.ECONNRESET},
		{"upstream FIN", "upstream", false, io.EOF},
		{"client RST", "client", true, syscall.ECONNRESET},
		{"client FIN", "client", false, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, upstream := openSession(t)
			closer, other, otherName := client, upstream, "upstream"
			if tt.closer == "upstream" {
				closer, other, otherName = upstream, client, "client"
			}
			if tt.reset {
				resetConn(t, closer.Conn)
			} else {
				closer.Close()
			}
			if err := other.expectEnd(t); !errors.Is(err, tt.wantErr) {
				t.Errorf("%s read: got %v; want %v", otherName, err, tt.wantErr)
			}
		})
	}
}

func TestUpstreamGoneWithoutCloseFrameGorillaClient(t *testing.T) {
	tests := []struct {
		name  string
		reset bool
	}{
		{"RST", true},
		{"FIN", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := startRawUpstream(t, rawUpstreamOptions{})
			addr, _ := startProxy(t, up.URL)
			c, _ := dialGorilla(t, addr, nil)
			upstream := up.accept(t)
			if err := c.WriteMessage(gorilla.TextMessage, []byte("hello")); err != nil {
				t.Fatalf("write: got %v; want nil", err)
			}
			if f := upstream.readFrame(t); string(f.Payload) != "hello" {
				t.Fatalf("upstream got %q; want %q", f.Payload, "hello")
			}
			if tt.reset {
				resetConn(t, upstream.Conn)
			} else {
				upstream.Close()
			}
			c.SetReadDeadline(time.Now().Add(testTimeout))
			_, _, err := c.ReadMessage()
			// gorilla reports a FIN as close 1006 with io.ErrUnexpectedEOF's
			// text, and passes a reset on as the read error itself.
			var ce *gorilla.CloseError
			switch {
			case errors.As(err, &ce):
				if ce.Code != gorilla.CloseAbnormalClosure || ce.Text != io.ErrUnexpectedEOF.Error() {
					t.Errorf("close: got %d %q; want %d %q", ce.Code, ce.Text, gorilla.CloseAbnormalClosure, io.ErrUnexpectedEOF.Error())
				}
			case tt.reset && errors.Is(err, syscall.ECONNRESET):
			default:
				t.Errorf("read: got %v; want close 1006 (or a reset after an RST)", err)
			}
		})
	}
}

// A message held for an on_message rule, whose payload is still arriving
// when the proxy closes the session, does not follow the proxy's own close
// frame to the upstream.
func TestHeldMessageAfterProxyClose(t *testing.T) {
	spec := rules.Spec{Name: "never", OnMessage: ptr("^never-matches$"), Direction: "client",
		Action: "close", Code: int64(4000), Reason: ptr("x")}
	client, upstream, p, _, id := rulePair(t, []rules.Spec{spec})
	frame := client.frame(true, ws.OpText, []byte("hello, upstream"))
	client.write(t, frame[:8]) // header and part of the payload
	time.Sleep(100 * time.Millisecond)

	if err := p.Inject(id, proxy.Manual{Action: rules.Close, Code: 4001, Reason: "by hand"}); err != nil {
		t.Fatalf("Inject: got %v; want nil", err)
	}
	client.expectClose(t, 4001, "by hand")
	upstream.expectClose(t, ws.StatusGoingAway, "")
	client.write(t, frame[8:]) // the rest of the message
	time.Sleep(100 * time.Millisecond)
	if f, err := upstream.tryReadFrame(300 * time.Millisecond); err == nil {
		t.Errorf("upstream: got a %v frame %q after the proxy's close frame; want nothing more", f.Header.OpCode, f.Payload)
	}
}

// A session whose last frame passed early on is closed about IdleTimeout
// after that frame (checked every quarter of it), not nearly twice as late.
func TestIdleTimeoutAfterEarlyFrame(t *testing.T) {
	const idle = time.Second
	client, upstream := rawPair(t, func(p *proxy.Proxy) { p.IdleTimeout = idle })
	time.Sleep(50 * time.Millisecond)
	client.writeFrame(t, true, ws.OpText, []byte("only message"))
	upstream.expectText(t, "upstream", "only message")
	last := time.Now()
	f, err := client.tryReadFrame(3 * idle)
	if err != nil || f.Header.OpCode != ws.OpClose {
		t.Fatalf("client: got %v %v; want a close frame", f.Header.OpCode, err)
	}
	if waited := time.Since(last); waited > idle+idle/2 {
		t.Errorf("idle close: came %v after the last frame; want about %v (the idle timeout)", waited.Round(time.Millisecond), idle)
	}
}

// A session whose close handshake is under way (the client's close frame
// relayed, the upstream's answer not yet come) is already ending: a manual
// fault is refused with ErrEnding (409 from the API), not sent on top.
func TestInjectDuringRelayedCloseHandshake(t *testing.T) {
	client, upstream, p, _, id := rulePair(t, nil)
	sendFirst(t, client, upstream)
	client.writeClose(t, ws.StatusNormalClosure, "bye")
	upstream.expectClose(t, ws.StatusNormalClosure, "bye") // the upstream has not answered yet
	time.Sleep(100 * time.Millisecond)
	err := p.Inject(id, proxy.Manual{Action: rules.Close, Code: 4001, Reason: "by hand"})
	if !errors.Is(err, proxy.ErrEnding) {
		t.Errorf("Inject while the close handshake is under way: got %v; want %v", err, proxy.ErrEnding)
	}
}
