//go:build linux

package proxy

import (
	"fmt"
	"syscall"

	"github.com/wschaos/wschaos/internal/evloop"
)

// listenControl sets TCP_DEFER_ACCEPT on a listening socket (tcp(7)): the
// kernel hands over a connection once data has arrived on it or, for a
// silent client, after the next SYN-ACK retransmission (1 s) is answered.
func listenControl() func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, 1)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("set TCP_DEFER_ACCEPT: %w", serr)
		}
		return nil
	}
}

// dialControl clears TCP_QUICKACK on an upstream socket before it
// connects, as the loops' dial does (evloop.Connect): Linux then sends the
// handshake's last ACK with the request, which follows at once, rather
// than on its own. A failure only costs that segment.
func dialControl(_, _ string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) { evloop.ClearQuickAck(int(fd)) })
}
