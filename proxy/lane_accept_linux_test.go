//go:build linux

package proxy

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/wschaos/wschaos/internal/evloop"
)

// TestGiveNoDelay follows a loop's look at TCP_NODELAY across the race
// startLanes has with clients: a connection the kernel queued before the
// listener had the option lacks it and gets it from the loop, the first
// one queued after has it and ends the looking; a loop that finds
// noDelayChecks sockets without stops looking and sets it on each.
func TestGiveNoDelay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	lfd := listenerFD(t, ln)
	accept := func() int {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		for range 200 { // Dial may return before the kernel queues the connection
			fd, _, errno := evloop.Accept(lfd)
			if errno == 0 {
				t.Cleanup(func() { syscall.Close(fd) })
				return fd
			}
			if errno != syscall.EAGAIN {
				t.Fatalf("Accept: got %v; want 0", errno)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatal("Accept: nothing queued after 1 s")
		return -1
	}
	check := func(step string, ll *laneLoop, fd int, wantInherited bool, wantMissed int) {
		t.Helper()
		if on, errno := evloop.NoDelay(fd); errno != 0 || !on {
			t.Errorf("%s: TCP_NODELAY: got %v, %v; want true, 0", step, on, errno)
		}
		if ll.noDelayInherited != wantInherited || ll.noDelayMissed != wantMissed {
			t.Errorf("%s: inherited, missed: got %v, %d; want %v, %d", step, ll.noDelayInherited, ll.noDelayMissed, wantInherited, wantMissed)
		}
	}

	ll := &laneLoop{}
	early := accept() // queued while the listener has no TCP_NODELAY
	ll.giveNoDelay(early)
	check("queued before the listener's option", ll, early, false, 1)

	evloop.SetNoDelay(lfd)
	later := accept()
	ll.giveNoDelay(later)
	check("queued after", ll, later, true, 1)

	gaveUp := &laneLoop{noDelayMissed: noDelayChecks - 1}
	syscall.SetsockoptInt(lfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 0)
	last := accept()
	gaveUp.giveNoDelay(last)
	check("the last look", gaveUp, last, false, noDelayChecks)
	next := accept()
	gaveUp.giveNoDelay(next)
	check("after it", gaveUp, next, false, noDelayChecks)
}

// listenerFD is ln's socket, which stays ln's.
func listenerFD(t *testing.T, ln net.Listener) int {
	t.Helper()
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}
