//go:build linux

package proxy_test

import (
	"bytes"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wschaos/wschaos/internal/rxtime"
)

// Comparing the kernel's receive times (internal/rxtime) at two test
// peers tells in which order the proxy wrote to them, which their reading
// goroutines cannot.

// stampReceives has the kernel note when bytes reach c.
func stampReceives(t testing.TB, c *rawConn) {
	t.Helper()
	raw, err := c.Conn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	if err := rxtime.Enable(raw); err != nil {
		t.Fatalf("set SO_TIMESTAMPNS: %v", err)
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
	at, ok := rxtime.FromControl(oob[:oobn])
	if !ok {
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
