//go:build linux

package evloop

import (
	"io"
	"net"
	"testing"
)

// BenchmarkRoundTrip echoes 64-byte messages over one connection whose
// server end is a goroutine reading and writing a Conn ("evloop") or a
// connection from net.Listen ("net"): the cost of a goroutine's wait woken
// by a loop against one woken by the runtime's netpoller.
func BenchmarkRoundTrip(b *testing.B) {
	for _, tc := range []struct {
		name   string
		listen func(b *testing.B) net.Listener
	}{
		{"evloop", func(b *testing.B) net.Listener {
			g, err := NewGroup(1)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { g.Close() })
			ln, err := g.Listen("127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			return ln
		}},
		{"net", func(b *testing.B) net.Listener {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			return ln
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ln := tc.listen(b)
			b.Cleanup(func() { ln.Close() })
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				buf := make([]byte, 64)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg := make([]byte, 64)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
