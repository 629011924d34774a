//go:build linux

package rxtime

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// TestReceiveTime writes to one end of a loopback connection and checks
// that the other end's recvmsg brings a receive time between the write's
// start and the read's end, and that without Enable it brings none. The
// kernel may turn stamping on a moment after Enable (see the package
// comment): the test writes again, a bounded number of times, until a
// read has a time.
func TestReceiveTime(t *testing.T) {
	for _, tt := range []struct {
		name   string
		enable bool
	}{
		{"enabled", true},
		{"not enabled", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			w, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			raw, err := c.(syscall.Conn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			if tt.enable {
				if err := Enable(raw); err != nil {
					t.Fatalf("Enable: %v", err)
				}
			}
			buf, oob := make([]byte, 8), make([]byte, 128)
			tries := 1
			if tt.enable {
				tries = 100
			}
			for try := range tries {
				before := time.Now()
				if _, err := w.Write([]byte("x")); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				var oobn int
				var rerr error
				if err := raw.Read(func(fd uintptr) bool {
					_, oobn, _, _, rerr = syscall.Recvmsg(int(fd), buf, oob, 0)
					return rerr != syscall.EAGAIN
				}); err != nil || rerr != nil {
					t.Fatalf("recvmsg: %v %v", err, rerr)
				}
				after := time.Now()
				at, ok := FromControl(oob[:oobn])
				if !tt.enable {
					if ok {
						t.Errorf("FromControl without Enable: got %v; want no time", at)
					}
					return
				}
				if !ok {
					if try == tries-1 {
						t.Fatalf("FromControl: got no time in %d reads; want one", tries)
					}
					time.Sleep(10 * time.Millisecond)
					continue
				}
				if at.Before(before.Truncate(time.Microsecond)) || at.After(after) {
					t.Errorf("receive time: got %v; want between %v and %v", at, before, after)
				}
				return
			}
		})
	}
}
