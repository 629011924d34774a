// Package stalled gives tests a TCP peer that a connect cannot reach.
package stalled

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// Listener returns the address of a loopback listener that never accepts
// and whose queue is full: a connect to it stays under way (the kernel
// drops its SYNs), with no packet leaving loopback. It is closed when t
// ends.
func Listener(t testing.TB) netip.AddrPort {
	t.Helper()
	syscall.ForkLock.RLock() // no child started meanwhile inherits fd
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*syscall.SockaddrInet4).Port))
	for range 4 { // fill the queue: these complete and are never accepted
		c, err := net.DialTimeout("tcp", addr.String(), 200*time.Millisecond)
		if err != nil {
			break // the queue is full
		}
		t.Cleanup(func() { c.Close() })
	}
	return addr
}
