//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// clientDialer opens the harness's WebSocket client connections, spreading
// them over several loopback source addresses so that ephemeral ports do
// not run out when tens of thousands of sessions come and go.
type clientDialer struct {
	srcs  []netip.Addr
	next  atomic.Uint64
	stamp bool // connections keep the kernel's receive times (stampConn)
}

func newClientDialer(n int) *clientDialer {
	d := &clientDialer{}
	for i := range n {
		d.srcs = append(d.srcs, netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)}))
	}
	return d
}

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (Linux 4.2): the source
// port is chosen at connect, for the whole 4-tuple, rather than at bind,
// so that a port can serve several destinations.
const ipBindAddressNoPort = 24

func (d *clientDialer) netDial(ctx context.Context, _, addr string) (net.Conn, error) {
	src := d.srcs[d.next.Add(1)%uint64(len(d.srcs))]
	nd := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: src.AsSlice()},
		Control: func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) {
				syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			})
		},
	}
	c, err := nd.DialContext(ctx, "tcp4", addr)
	if err != nil || !d.stamp {
		return c, err
	}
	sc, err := newStampConn(c.(*net.TCPConn))
	if err != nil {
		c.Close()
		return nil, err
	}
	return sc, nil
}

// wsConn is a client's WebSocket connection.
type wsConn struct {
	c  net.Conn
	br *bufio.Reader
}

// dial opens a WebSocket session to url within timeout.
func (d *clientDialer) dial(ctx context.Context, url string, timeout time.Duration) (*wsConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wd := ws.Dialer{NetDial: d.netDial}
	c, br, _, err := wd.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	if br == nil {
		br = bufio.NewReaderSize(c, 4<<10)
	}
	return &wsConn{c: c, br: br}, nil
}

// clientFrame compiles a masked frame as a client sends it. The same bytes
// can be written any number of times.
func clientFrame(op ws.OpCode, payload []byte) []byte {
	f := ws.NewFrame(op, true, append([]byte(nil), payload...))
	f = ws.MaskFrameInPlace(f)
	b, err := ws.CompileFrame(f)
	if err != nil {
		panic(err)
	}
	return b
}

var clientClose = clientFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))

// closeError is a close frame received where a message was expected.
type closeError struct {
	code   ws.StatusCode
	reason string
}

func (e *closeError) Error() string { return fmt.Sprintf("close frame %d %q", e.code, e.reason) }

// readMessage reads one whole data message; its payload goes into buf if
// it fits, or is discarded when buf is nil. It returns the payload length.
// A close frame is returned as a *closeError.
func (w *wsConn) readMessage(buf []byte) (int, error) {
	n := 0
	for {
		h, err := ws.ReadHeader(w.br)
		if err != nil {
			return n, err
		}
		if h.OpCode == ws.OpClose {
			var p [ws.MaxControlFramePayloadSize]byte
			body := p[:min(h.Length, int64(len(p)))]
			if _, err := io.ReadFull(w.br, body); err != nil {
				return n, err
			}
			code, reason := ws.ParseCloseFrameData(body)
			return n, &closeError{code, reason}
		}
		if h.OpCode.IsControl() {
			if _, err := w.br.Discard(int(h.Length)); err != nil {
				return n, err
			}
			continue
		}
		if buf != nil && n+int(h.Length) <= len(buf) {
			if _, err := io.ReadFull(w.br, buf[n:n+int(h.Length)]); err != nil {
				return n, err
			}
		} else if _, err := w.br.Discard(int(h.Length)); err != nil {
			return n, err
		}
		n += int(h.Length)
		if h.Fin {
			return n, nil
		}
	}
}

// echo sends frame and waits for the message to come back.
func (w *wsConn) echo(frame []byte, want int, timeout time.Duration) error {
	w.c.SetDeadline(time.Now().Add(timeout))
	defer w.c.SetDeadline(time.Time{})
	if _, err := w.c.Write(frame); err != nil {
		return err
	}
	n, err := w.readMessage(nil)
	if err != nil {
		return err
	}
	if n != want {
		return fmt.Errorf("echo of %d bytes came back with %d", want, n)
	}
	return nil
}

// closeGracefully sends a close frame, waits for the answer and for the
// server to close TCP first (so TIME_WAIT stays on its side), then closes.
func (w *wsConn) closeGracefully(timeout time.Duration) {
	defer w.c.Close()
	w.c.SetDeadline(time.Now().Add(timeout))
	if _, err := w.c.Write(clientClose); err != nil {
		return
	}
	for {
		_, err := w.readMessage(nil)
		var ce *closeError
		if errors.As(err, &ce) {
			break
		}
		if err != nil {
			return
		}
	}
	io.Copy(io.Discard, w.c) // until the server's FIN, or the deadline
}

// answerClose replies to a close frame the server sent and closes.
func (w *wsConn) answerClose(timeout time.Duration) {
	defer w.c.Close()
	w.c.SetDeadline(time.Now().Add(timeout))
	if _, err := w.c.Write(clientClose); err != nil {
		return
	}
	io.Copy(io.Discard, w.br)
}
