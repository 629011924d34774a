//go:build linux

// Package rxtime reads the time at which the kernel received a socket's
// bytes (SO_TIMESTAMPNS, socket(7)), from the control messages recvmsg
// returns with them. On loopback the time is taken as the sender's write
// hands the segment over (net.core.netdev_tstamp_prequeue, on by
// default), so it tells when, and in which order, a process wrote to
// sockets, where the reading goroutines' clocks tell when they got to
// run. The first socket on a machine to ask turns stamping on a moment
// later (the kernel enables it from a work queue), so bytes that arrive
// right after the first Enable may come without a time.
package rxtime

import (
	"encoding/binary"
	"syscall"
	"time"
)

// Enable has the kernel note when bytes reach the socket behind raw.
func Enable(raw syscall.RawConn) error {
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return err
	}
	return serr
}

// FromControl returns the receive time among the control messages oob of
// a recvmsg, and false if they hold none.
func FromControl(oob []byte) (time.Time, bool) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, m := range msgs {
		if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
			return time.Unix(sec, nsec), true
		}
	}
	return time.Time{}, false
}
