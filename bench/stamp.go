//go:build linux

package main

import (
	"io"
	"net"
	"syscall"
	"time"

	"github.com/wschaos/wschaos/internal/rxtime"
)

// The fault workloads time a close frame's arrival at the client by the
// kernel's receive time of its bytes (SO_TIMESTAMPNS), not by when a
// client goroutine got to read it: the harness's thousands of clients
// share the machine's cores with the proxy, and a real client would be on
// a host of its own. The goroutine-side times are kept too, as notes.

// stampConn is a client connection that reads through recvmsg and keeps
// the kernel's receive time of the bytes its latest read returned.
type stampConn struct {
	*net.TCPConn
	raw syscall.RawConn
	oob [64]byte
	at  time.Time // receive time of the latest read's bytes; zero if none came with them
}

// newStampConn turns on receive timestamps for c.
func newStampConn(c *net.TCPConn) (*stampConn, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	if err := rxtime.Enable(raw); err != nil {
		return nil, err
	}
	return &stampConn{TCPConn: c, raw: raw}, nil
}

func (c *stampConn) Read(p []byte) (int, error) {
	var n, oobn int
	var err error
	if rerr := c.raw.Read(func(fd uintptr) bool {
		n, oobn, _, _, err = syscall.Recvmsg(int(fd), p, c.oob[:], 0)
		return err != syscall.EAGAIN
	}); rerr != nil {
		return 0, rerr // a deadline, or the connection closed
	}
	switch {
	case err != nil:
		return 0, err
	case n == 0:
		return 0, io.EOF
	}
	c.at, _ = rxtime.FromControl(c.oob[:oobn])
	return n, nil
}

// arrived returns when the bytes of c's latest read reached the client's
// kernel, or now if c does not keep receive times.
func arrived(c net.Conn) (t time.Time, stamped bool) {
	if sc, ok := c.(*stampConn); ok && !sc.at.IsZero() {
		return sc.at, true
	}
	return time.Now(), false
}
