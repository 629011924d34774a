package proxy

import (
	"context"
	"net"
)

// Listen announces on the TCP address addr (as net.Listen does) with the
// settings the proxy is designed for:
//
//   - Accepted connections come without TCP keep-alive. The proxy turns it
//     on for a connection once the connection falls quiet (see keepAlive),
//     so that a short session does not pay four setsockopt calls for it.
//   - On Linux, a connection is accepted only once its first bytes have
//     arrived (TCP_DEFER_ACCEPT), as nginx's "listen ... deferred" does:
//     reading the request then finds it there instead of finding nothing,
//     parking and being woken. A client that connects and says nothing is
//     accepted about a second later, and the handshake timeout runs from
//     then.
//
// Serve works with any listener; one from net.Listen gives every
// connection keep-alive from the start.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1, Control: listenControl()}
	return lc.Listen(ctx, "tcp", addr)
}

// keepAlive turns on TCP keep-alive with Go's defaults (probes after 15 s
// of quiet) for the TCP connection under c's TLS and buffering wrappers.
// Keep-alive matters for a connection nothing is read from or written to:
// one with traffic finds a dead peer through its writes' retransmissions,
// or is talking to a live one.
func keepAlive(c net.Conn) {
	if k, ok := rawConn(c).(interface {
		SetKeepAliveConfig(net.KeepAliveConfig) error
	}); ok {
		k.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true})
	}
}
