//go:build linux

package proxy_test

import (
	"bytes"
	"encoding/binary"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// The kernel's receive time of a segment (SO_TIMESTAMPNS) on loopback is
// taken as the sender's write hands it over (net.core.netdev_tstamp_prequeue,
// on by default), so comparing the times at two test peers tells in which
// order the proxy wrote to them, which their reading goroutines cannot.

// stampReceives has the kernel note when bytes reach c.
func stampReceives(t testing.TB, c *rawConn) {
	t.Helper()
	raw, err := c.Conn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		t.Fatalf("set SO_TIMESTAMPNS: %v %v", err, serr)
	}
}

// readStampedFrame reads the next frame, which must arrive whole in one
// read, from c's socket itself, and returns it, unmasked, with the time
// its bytes reached c (stampReceives).
func readStampedFrame(t testing.TB, c *rawConn) (ws.Frame, time.Time) {
	t.Helper()
	if n := c.br.Buffered(); n > 0 {
		t.Fatalf("stamped read: %d bytes already read ahead; want none", n)
	}
	raw, err := c.Conn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(testTimeout))
	defer c.SetReadDeadline(time.Time{})
	buf, oob := make([]byte, 256), make([]byte, 128)
	var n, oobn int
	var rerr error
	if err := raw.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = syscall.Recvmsg(int(fd), buf, oob, 0)
		return rerr != syscall.EAGAIN
	}); err != nil || rerr != nil || n == 0 {
		t.Fatalf("stamped read: got %d bytes (%v, %v); want a frame", n, err, rerr)
	}
	var at time.Time
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatalf("control messages: %v", err)
	}
	for _, m := range msgs {
		if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SCM_TIMESTAMPNS && len(m.Data) == 16 {
			at = time.Unix(int64(binary.NativeEndian.Uint64(m.Data[:8])), int64(binary.NativeEndian.Uint64(m.Data[8:])))
		}
	}
	if at.IsZero() {
		t.Fatalf("stamped read: got no receive time with %d bytes", n)
	}
	r := bytes.NewReader(buf[:n])
	f, err := ws.ReadFrame(r)
	if err != nil || r.Len() > 0 {
		t.Fatalf("stamped read: got %v and %d bytes more; want one whole frame", err, r.Len())
	}
	if f.Header.Masked {
		ws.Cipher(f.Payload, f.Header.Mask, 0)
	}
	return f, at
}
