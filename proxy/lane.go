package proxy

import "net"

// prefixConn is a connection whose first bytes were read already, by a
// loop that then handed it to goroutines.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// NetConn returns the connection under the prefix.
func (c *prefixConn) NetConn() net.Conn { return c.Conn }

// unprefixed returns the connection a frame reader reads, and the bytes
// it returns first: pending, then what is left of a prefix.
func unprefixed(c net.Conn, pending *[]byte) (net.Conn, []byte) {
	pc, ok := c.(*prefixConn)
	if !ok {
		return c, *pending
	}
	if len(pc.prefix) == 0 {
		return pc.Conn, *pending
	}
	b := append(append([]byte(nil), *pending...), pc.prefix...)
	pc.prefix = nil
	return pc.Conn, b
}
