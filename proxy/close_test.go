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
